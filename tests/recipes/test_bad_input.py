"""Bad CLI and config input: each is exit code 2, a message naming the problem and what would
work, no traceback, and nothing written (issue 9's list)."""

import json

import pytest
from typer.testing import CliRunner

from agentopd.cli import app

runner = CliRunner()
TRAIN = ["train", "--steps", "1", "--episodes-per-step", "1", "--eval-every", "0"]

# (arguments after `agentopd`, a phrase the message must contain)
BAD_TRAIN = [
    (["--env", "agentopd/Calc-v1"], "Did you mean 'agentopd/Calc-v0'"),
    (["--env", "agentopd/Nope-v0"], "unknown env"),
    (["--env", "no_such_module:agentopd/Calc-v0"], "cannot import env module"),
    (["--env", "class:no.such:Env"], "cannot import env class"),
    (["--student", "hf:/no/such/model"], "does not exist"),
    (["--student", "hf:./tests"], "holds no config.json"),
    (["--teacher", "hf:/no/such/teacher", "--loss", "gkd"], "does not exist"),
    (["--student", "vllm:/no/such/model"], "does not exist"),
    (["--student", "openai:m@http://127.0.0.1:9/v1"], "trains an hf:<model> student"),
    (["--teacher", "gpt-9"], "unknown teacher"),
    (["--loss", "ppo"], "unknown loss"),
    (["--teacher", "oracle", "--loss", "gkd"], "needs teacher logprobs"),
    (["--autocast", "fp8"], "use auto, none or bf16"),
    (["--dtype", "fp16"], "use auto, float32 or bfloat16"),
    (["--schedule", "nope"], "use constant or cosine"),
    (["--lr", "-1"], "lr must be > 0"),
    (["--ckpt-every", "0"], "ckpt_every must be >= 1"),
    (["--eval-n", "0"], "eval_n must be >= 1"),
    (["--max-new-tokens", "0"], "max_new_tokens must be >= 1"),
    (["--max-context-tokens", "50", "--max-new-tokens", "96"], "must exceed max_new_tokens"),
    (["--gkd-beta", "2", "--loss", "gkd"], "gkd_beta must be in [0, 1]"),
    (["--discount", "-0.5"], "discount must be in [0, 1]"),
    (["--temperature", "-1"], "temperature must be >= 0"),
    (["--device", "gpu"], "use cpu, cuda"),
    (["--steps", "0"], "must be >= 1"),
    (["--max-turns", "-2"], "max_turns must be >= 0"),
    (["--gkd-topk", "5"], "gkd_topk"),
    (["--warm-start-steps", "-1"], "warm_start_steps must be >= 0"),
    (["--warm-start-steps", "2", "--warm-start-from", "teacher"], "hf:<model> teacher"),
    (["--curriculum", "backwards"], "curriculum 'backwards'"),
    (["--curriculum", "f2b", "--teacher", "oracle", "--loss", "sft"], "use it with --loss reverse_kl_pg"),
    (["--curriculum", "kl", "--teacher", "oracle"], "needs a logit teacher"),
    (["--loss", "skill_sd", "--teacher", "oracle"], "use --teacher self"),
    (["--loss", "skill_sd", "--group-size", "3"], "must be a multiple"),
    (["--skill-writer", "gpt-9"], "use rules, self or hf:<model>"),
    (["--teacher-temperature", "0"], "teacher_temperature must be > 0"),
    (["--eval-stop-repeats", "-1"], "eval_stop_repeats must be >= 0"),
]


def _run(args, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, [*TRAIN, "--out", str(out), *args])
    return result, out


@pytest.mark.parametrize("args, phrase", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_train_input(args, phrase, tmp_path):
    result, out = _run(args, tmp_path)
    text = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2, result.output
    assert "error:" in text and phrase in text, text
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists(), "a refused run wrote its directory"


@pytest.mark.parametrize("content, phrase", [
    ("5", "must hold one JSON object"), ("null", "must hold one JSON object"), ('"steps"', "must hold one JSON object"),
    ("{not json", "cannot parse config file"), ('{"stepz": 3}', "unknown config key"), ('{"lr": "fast"}', "expects float"),
    (None, "is not a file"),
])
def test_bad_config_file(content, phrase, tmp_path):
    path = tmp_path / "c.json"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    result, out = _run(["--config", str(path)], tmp_path)
    assert result.exit_code == 2 and phrase in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and not out.exists()


def test_unwritable_or_file_out(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    result = runner.invoke(app, [*TRAIN, "--out", str(f)])
    assert result.exit_code == 2 and "is a file" in result.output


@pytest.mark.parametrize("args, phrase", [
    (["--n", "0"], "n must be >= 1"), (["--n", "-1"], "n must be >= 1"), (["--batch-size", "0"], "batch_size must be >= 1"),
    (["--split", "dev"], "use train or test"), (["--model", "hf:/no/such/model"], "does not exist"),
    (["--model", "vllm:/no/such/model"], "does not exist"), (["--model", "openai:m"], "needs a base url"), (["--env", "agentopd/Clac-v0"], "Did you mean"),
    (["--temperature", "-1"], "temperature must be >= 0"), (["--dtype", "half"], "use auto, float32 or bfloat16"),
    (["--stop-repeats", "-1"], "stop_repeats must be >= 0"),
])
def test_bad_eval_input(args, phrase, tmp_path):
    base = {"--env": "agentopd/Calc-v0", "--model": "oracle"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    flat = [x for kv in base.items() for x in kv]
    result = runner.invoke(app, ["eval", *flat, "--out", str(tmp_path / "ev")])
    assert result.exit_code == 2, result.output
    assert phrase in " ".join(result.output.split()) and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_eval_out_that_is_a_file_is_refused_before_rolling_out(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    result = runner.invoke(app, ["eval", "--env", "agentopd/Calc-v0", "--model", "oracle", "--out", str(f)])
    assert result.exit_code == 2 and "is a file" in result.output


def test_report_on_empty_torn_or_garbage_metrics(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["report", str(empty)])
    assert result.exit_code == 2 and "no metrics.jsonl" in result.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.jsonl").write_text('{"step": 1, "loss/ce": 2.0}\ngarbage\n{"step": 2, "loss/ce": 1.0}\n')
    result = runner.invoke(app, ["report", str(bad)])
    assert result.exit_code == 2 and "metrics.jsonl:2" in result.output and "Traceback" not in result.output
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss/ce": 2.0}) + '\n{"step": 2, "loss/')
    result = runner.invoke(app, ["report", str(torn)])  # a killed run's torn last line is skipped
    assert result.exit_code == 0, result.output
