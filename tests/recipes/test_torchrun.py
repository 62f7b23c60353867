"""`torchrun --nproc-per-node 2 -m agentopd train` on the CPU (gloo, FSDP2): the same steps as
one process, metrics and checkpoints written once, and the checkpoint resumes in one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(tiny_dir, out: Path, steps: int) -> list[str]:
    return ["train", "--env", "agentopd/Calc-v0", "--student", f"hf:{tiny_dir}", "--teacher", "oracle",
            "--loss", "dagger", "--steps", str(steps), "--episodes-per-step", "4", "--max-new-tokens", "8",
            "--eval-every", "2", "--eval-n", "4", "--warm-start-steps", "0", "--lr", "3e-3", "--out", str(out)]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    # the error lines and the end of stderr: a rank that aborts (SIGABRT) says why only in its own
    # output (e.g. "terminate called after ..."), which the lines naming an Error leave out
    why = [x for x in (p.stdout + p.stderr).splitlines() if "Error" in x or "error:" in x]
    assert p.returncode == 0, "\n".join(why[-20:]) + "\n--- stderr, last 4000 characters:\n" + p.stderr[-4000:]
    return p


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_ranks_train_like_one_process_and_resume_in_one(tiny_dir, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_port())]
    two = _run(torchrun + ["-m", "agentopd"] + _args(tiny_dir, tmp_path / "two", 2))
    assert "torchrun: 2 ranks" in two.stdout
    assert two.stdout.count("compute dtype") == 1  # rank 0 speaks for the run
    _run([sys.executable, "-m", "agentopd"] + _args(tiny_dir, tmp_path / "one", 2))

    m2, m1 = _metrics(tmp_path / "two"), _metrics(tmp_path / "one")
    assert [r["step"] for r in m2] == [r["step"] for r in m1] == [0, 1, 2]  # one line a step, not one a rank
    for a, b in zip(m2[1:], m1[1:]):
        # each rank played half of the step's episodes under their global keys, so the step saw the same
        # episodes; the loss is the mean over both ranks' tokens
        assert a["learner/target_tokens"] == b["learner/target_tokens"]
        assert a["rollout/episodes"] == b["rollout/episodes"] == 4
        assert a["loss/ce"] == pytest.approx(b["loss/ce"], rel=1e-4)
        assert a["learner/grad_norm"] == pytest.approx(b["learner/grad_norm"], rel=1e-3)
    assert m2[-1]["eval/success"] == m1[-1]["eval/success"] and m2[-1]["eval/episodes"] == 4

    # the two-rank checkpoint is a plain one: one process resumes it
    _run([sys.executable, "-m", "agentopd"] + _args(tiny_dir, tmp_path / "two", 3) + ["--resume"])
    assert (tmp_path / "two" / "latest").read_text() == "step_3"
    assert [r["step"] for r in _metrics(tmp_path / "two")] == [0, 1, 2, 3]
