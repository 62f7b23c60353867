"""A killed `agentopd eval --out` keeps every episode that had ended, and `--resume` plays only the
rest, with the same draws: the same episodes as one uninterrupted eval."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentopd.cli import app
from agentopd.core.types import Episode
from agentopd.recipes.eval import EvalConfig, run_eval

HERE = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _args(tiny_dir, out, n=4):
    return ["eval", "--env", "agentopd/Calc-v0", "--model", f"hf:{tiny_dir}", "--n", str(n), "--k", "2",
            "--temperature", "1.0", "--max-new-tokens", "12", "--batch-size", "3", "--dtype", "float32",
            "--out", str(out)]


def _lines(out):
    return [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def whole(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "whole"
    assert runner.invoke(app, _args(tiny_dir, out)).exit_code == 0
    return out


def test_a_killed_eval_keeps_its_episodes_and_resumes_to_the_same_ones(tiny_dir, whole, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(HERE / "helpers_kill.py"), "eval_episode", "4", "--",
                           *_args(tiny_dir, out)], capture_output=True, text=True, cwd=HERE)
    assert proc.returncode == -9, proc.stderr[-2000:]
    written = (out / "episodes.jsonl").read_text().splitlines()
    assert len(written) == 4 and not (out / "summary.json").exists()  # 3 whole lines and the one cut short
    again = runner.invoke(app, _args(tiny_dir, out))  # without --resume: refused, nothing overwritten
    assert again.exit_code == 2 and "add --resume" in again.output
    assert (out / "episodes.jsonl").read_text().splitlines() == written
    res = runner.invoke(app, [*_args(tiny_dir, out), "--resume"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["eval/episodes_resumed"] == 3
    _same_episodes(_lines(out), _lines(whole))
    assert summary["tasks"] == json.loads((whole / "summary.json").read_text())["tasks"]


def _same_episodes(got, want):
    """Token for token and in the same order; a logprob may differ by float noise (the rows batched
    with it differ) and by its rounding to 5 decimals in the file."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        lg, lw = g.pop("logprobs"), w.pop("logprobs")
        assert g == w
        assert lg == pytest.approx(lw, abs=1e-4)


def test_resume_refuses_other_options_and_replays_nothing_when_finished(tiny_dir, whole, tmp_path):
    res = runner.invoke(app, [*_args(tiny_dir, whole, n=5), "--resume"])
    assert res.exit_code == 2 and "n=4 (now 5)" in res.output
    before = _lines(whole)
    # a finished eval resumed: no episode is played again, the same summary comes back
    summary, episodes = run_eval(_cfg(tiny_dir, whole))
    assert [e.to_json() for e in episodes] == before
    assert _lines(whole) == before
    res = runner.invoke(app, ["eval", "--env", "agentopd/Calc-v0", "--model", "oracle", "--resume"])
    assert res.exit_code == 2 and "give --out" in res.output


def _cfg(tiny_dir, out):
    return EvalConfig(env="agentopd/Calc-v0", model=f"hf:{tiny_dir}", n=4, k=2, temperature=1.0, max_new_tokens=12,
                      batch_size=8, dtype="float32", out=str(out), resume=True)


def test_episodes_round_trip_through_their_json(whole):
    for obj in _lines(whole):
        ep = Episode.from_json(obj)
        assert ep.to_json() == obj
        assert ep.turns and all(t.text for t in ep.turns)
