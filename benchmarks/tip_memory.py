"""TIP's memory claim on this machine (issue 13): the learner's peak memory for one step of
reverse_kl_pg on the same rows with all tokens, 50% and 20% (TIP selection), each in a fresh
process (peak RSS is per process), after a tiny first step has allocated the optimizer state. SmolLM2-135M student, its own weights as the teacher
(full-vocabulary log-probs, which TIP's JSD reads), 8 rows of real calc episodes.

Usage: .venv/bin/python benchmarks/tip_memory.py [--rows 8] [--out benchmarks/out/tip_memory.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import agentopd  # noqa: F401  (sets OMP_WAIT_POLICY before torch)


def one(ratio: float, n_rows: int) -> dict:
    import torch

    from agentopd.core.capabilities import Signal, SignalRequest
    from agentopd.envs.registry import make_env
    from agentopd.inference.hf import HFPolicy
    from agentopd.inference.models import load_causal_lm, load_tokenizer
    from agentopd.inference.sampling import SamplingParams
    from agentopd.rollout.runner import RolloutConfig, run_episodes
    from agentopd.teachers.local import HFTeacher
    from agentopd.training.learner import Learner, OptimConfig
    from agentopd.training.objectives import ReverseKLPG
    from agentopd.training.selection import select_tokens

    torch.manual_seed(0)
    tok = load_tokenizer("smollm2-135m")
    model = load_causal_lm("smollm2-135m", dtype="float32")
    teacher = HFTeacher(load_causal_lm("smollm2-135m", dtype="float32"), tok, tok)
    eps = run_episodes(lambda: make_env("agentopd/Calc-v0", split="train"), HFPolicy(model, tok),
                       list(range(n_rows)), list(range(n_rows)),
                       RolloutConfig(SamplingParams(96, 1.0, seed=0), max_context_tokens=4096), "agentopd/Calc-v0")
    rows = teacher.relabel(eps, SignalRequest(Signal.FULL_LOGITS))
    n_all = sum(r.n_targets for r in rows)
    if ratio < 1:
        rows, _ = select_tokens(model, rows, ratio, seed=0)
    learner = Learner(model, OptimConfig(lr=1e-6, max_tokens_per_micro=2048), total_steps=2, pad_id=tok.pad_token_id or 0)
    # a first step on a 2-token slice allocates AdamW's state (2 x the weights) at a small peak, so
    # the measured step's extra memory is activations, logits and gradients
    tiny = [rows[0].__class__(rows[0].input_ids[:2], (0, 1), (0.0, 0.0), (-1, 0),
                              signal=rows[0].signal.__class__((0.0, -1.0), (-1, 0)))]
    learner.step(tiny, ReverseKLPG())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    learner.step(rows, ReverseKLPG())
    step_s = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"ratio": ratio, "targets_all": n_all, "targets_kept": sum(r.n_targets for r in rows),
            "row_tokens": sum(len(r.input_ids) for r in rows), "rss_before_step_mb": round(before),
            "peak_rss_mb": round(peak), "step_extra_mb": round(peak - before), "step_s": round(step_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "tip_memory.json"))
    ap.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one(a.one, a.rows)))
        return
    results = []
    for ratio in (1.0, 0.5, 0.2):
        r = subprocess.run([sys.executable, __file__, "--one", str(ratio), "--rows", str(a.rows)],
                           capture_output=True, text=True, check=True)
        results.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    base = results[0]["step_extra_mb"]
    for r in results:
        r["step_extra_vs_all"] = round(r["step_extra_mb"] / base, 3) if base else None
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
