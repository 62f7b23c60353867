"""Damaged runs: killed at any point, or with damaged checkpoints, a run resumes from what is
intact (at most one step lost), with no duplicate or torn metrics and the weights of an
uninterrupted run; it never restarts silently."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from agentopd.core.config import UserError
from agentopd.recipes import TrainConfig
from agentopd.recipes import train as run_train

HERE = Path(__file__).resolve().parents[1]
STEPS = 3


def _args(tiny_dir, out):
    return ["train", "--student", f"hf:{tiny_dir}", "--teacher", "oracle", "--loss", "dagger", "--steps", str(STEPS),
            "--episodes-per-step", "2", "--max-new-tokens", "8", "--eval-every", "0", "--ckpt-every", "1",
            "--keep-checkpoints", "3", "--lr", "1e-3", "--max-context-tokens", "2048", "--warm-start-steps", "0", "--out", str(out)]


def _cfg(tiny_dir, out, **kw):
    base = dict(student=f"hf:{tiny_dir}", teacher="oracle", loss="dagger", steps=STEPS, episodes_per_step=2,
                max_new_tokens=8, eval_every=0, ckpt_every=1, keep_checkpoints=3, lr=1e-3,
                max_context_tokens=2048, out=str(out), warm_start_steps=0)
    return TrainConfig(**{**base, **kw})


def _weights(path):
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


@pytest.fixture(scope="module")
def whole(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    run_train(_cfg(tiny_dir, out))
    return out


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)


def _clean_metrics(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines]  # every line parses: nothing torn
    assert steps == list(range(1, STEPS + 1)), steps  # no duplicates, none missing


@pytest.mark.slow
@pytest.mark.parametrize("point", ["rollout", "teacher", "learner", "checkpoint", "metrics"])
def test_killed_at_any_point_resumes_to_the_same_weights(point, tiny_dir, whole, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(HERE / "helpers_kill.py"), point, "2", "--", *_args(tiny_dir, run)],
                          capture_output=True, text=True, cwd=HERE)
    assert proc.returncode == -9, proc.stderr[-2000:]  # it was killed
    done = sorted(int(p.name[5:]) for p in run.glob("step_*") if (p / "manifest.json").exists())
    assert done and max(done) >= 1  # the kill came in step 2 (or its checkpoint): at most one step lost
    proc = subprocess.run([sys.executable, "-m", "agentopd.cli", *_args(tiny_dir, run), "--resume"],
                          capture_output=True, text=True, cwd=HERE)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (run / "latest").read_text() == f"step_{STEPS}"
    _clean_metrics(run)
    _same_weights(whole / f"step_{STEPS}", run / f"step_{STEPS}")


def test_a_truncated_checkpoint_falls_back_to_the_newest_intact_one(tiny_dir, whole, tmp_path):
    run = tmp_path / "run"
    run_train(_cfg(tiny_dir, run, steps=2))
    state = run / "step_2" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])  # torn
    run_train(_cfg(tiny_dir, run, resume=True))
    _clean_metrics(run)
    _same_weights(whole / f"step_{STEPS}", run / f"step_{STEPS}")


def test_latest_pointing_nowhere_or_no_intact_checkpoint_never_restarts_silently(tiny_dir, tmp_path):
    run = tmp_path / "run"
    run_train(_cfg(tiny_dir, run, steps=1))
    (run / "latest").write_text("step_7")  # names a step that is not there: step_1 is used
    run_train(_cfg(tiny_dir, run, steps=2, resume=True))
    assert (run / "latest").read_text() == "step_2"
    for p in run.glob("step_*"):
        (p / "model.safetensors").write_bytes(b"")  # every checkpoint damaged
    with pytest.raises(UserError, match="no intact checkpoint"):
        run_train(_cfg(tiny_dir, run, steps=3, resume=True))
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2  # nothing overwritten
