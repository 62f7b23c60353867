"""Real families end to end: a tiny model over the Qwen3 tokenizer (thinking format, hermes
calls) and over the Llama 3 tokenizer (llama3_json calls) through `agentopd eval` and a train
step, with the renderer detected and the env asking for the family's call format."""

import json

import pytest
from typer.testing import CliRunner

from agentopd.cli import app

pytestmark = pytest.mark.slow


def _family_dir(tmp_path_factory, name):
    from helpers_models import tiny_model_from

    from agentopd.inference.tokenizers import family_tokenizer

    try:
        tok = family_tokenizer(name)
    except (ImportError, FileNotFoundError) as e:  # the package with its BPE file is a dev dependency
        pytest.skip(f"no {name} tokenizer here: {e}")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    d = tmp_path_factory.mktemp(name.replace(".", ""))
    tiny_model_from(tok, seed=0, hidden=32, layers=1).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.mark.parametrize("family, renderer, tool_format, head", [
    ("qwen3", "qwen3", "hermes", "<|im_start|>system\n"),
    ("llama3", "llama3", "llama3_json", "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"),
])
def test_eval_and_a_train_step_in_the_family_format(tmp_path_factory, tmp_path, family, renderer, tool_format, head):
    d = _family_dir(tmp_path_factory, family)
    r = CliRunner().invoke(app, ["eval", "--env", "agentopd/Calc-v0", "--model", f"hf:{d}", "--n", "2",
                                 "--max-new-tokens", "8", "--dtype", "float32", "--tool-format", tool_format,
                                 "--out", str(tmp_path / "eval")])
    assert r.exit_code == 0, r.output
    eps = [json.loads(x) for x in (tmp_path / "eval" / "episodes.jsonl").read_text().splitlines()]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(d))
    text = tok.decode(eps[0]["token_ids"], skip_special_tokens=False)
    assert text.startswith(head)
    system = eps[0]["messages"][0]["content"]
    assert ('<tool_call>' in system) == (tool_format == "hermes")  # the env asks for the family's calls
    # one warm-start (oracle demonstrations) step and one OPD step with the self teacher
    r = CliRunner().invoke(app, ["train", "--student", f"hf:{d}", "--renderer", renderer, "--tool-format", tool_format,
                                 "--steps", "1", "--warm-start-steps", "1", "--episodes-per-step", "2",
                                 "--warm-start-episodes", "2", "--max-new-tokens", "8",
                                 "--eval-every", "0", "--dtype", "float32", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["demo/success"] == 1.0  # the oracle's calls parse in the family's format
    assert "teacher/reverse_kl" in lines[-1] or "loss/kl" in lines[-1]


def test_unknown_renderer_and_tool_format_are_one_line_errors(tmp_path):
    for flag, value, want in (("--renderer", "mistral", "renderer 'mistral'"),
                              ("--tool-format", "xml", "tool_format 'xml'")):
        r = CliRunner().invoke(app, ["train", flag, value, "--out", str(tmp_path / "x")])
        assert r.exit_code == 2 and want in r.output and "Traceback" not in r.output
