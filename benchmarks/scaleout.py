"""Step time of one process, of overlapped rollouts, and of two gloo ranks under torchrun (issue 14).

Each configuration is a real `agentopd train` run on the same settings (the main job's student
and `self` teacher on calc, no warm start, no evals); the step time is the sum of the step's
`time/` phases (rollout, or the wait for an overlapped one; teacher; learner; weight sync), the
first step left out (it pays one-off costs). On a 2-core CPU two ranks share the same two cores,
so this measures the launcher's overhead here, not a speedup.

    .venv/bin/python benchmarks/scaleout.py [--steps 4] [--episodes 8] [--out benchmarks/out/scaleout]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

PHASES = ("time/rollout_s", "time/teacher_s", "time/learner_s", "time/sync_s")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(name: str, launcher: list[str], extra: list[str], args, threads: int) -> dict:
    out = Path(args.out) / name
    shutil.rmtree(out, ignore_errors=True)
    cmd = launcher + ["train", "--env", args.env, "--steps", str(args.steps), "--episodes-per-step", str(args.episodes),
                      "--max-new-tokens", str(args.max_new_tokens), "--warm-start-steps", "0", "--eval-every", "0",
                      "--no-eval-at-start", "--ckpt-every", str(args.steps), "--out", str(out)] + extra
    t = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{name} failed:\n{p.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [sum(r.get(k, 0.0) for k in PHASES) for r in rows[1:]]
    mean = {k: statistics.mean(r.get(k, 0.0) for r in rows[1:]) for k in PHASES}
    return {"name": name, "step_s": statistics.mean(steps), "step_s_each": steps, "wall_s": wall, **mean,
            "staleness": [r.get("rollout/staleness") for r in rows],
            "ratio_std": [r.get("rollout/importance_ratio_std") for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="agentopd/Calc-v0")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", default="benchmarks/out/scaleout")
    ap.add_argument("--only", default="single,overlap,torchrun2")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    one = [sys.executable, "-m", "agentopd"]
    two = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_port()),
           "-m", "agentopd"]
    configs = {"single": (one, [], cores), "overlap": (one, ["--overlap-rollouts"], cores),
               "torchrun2": (two, [], max(1, cores // 2))}
    results = [run(n, *configs[n][:2], args, configs[n][2]) for n in args.only.split(",")]
    base = results[0]["step_s"]
    print(f"{'config':<10} {'step s':>7} {'x first':>8} {'rollout':>8} {'teacher':>8} {'learner':>8} {'sync':>6} {'wall s':>7}")
    for r in results:
        print(f"{r['name']:<10} {r['step_s']:7.1f} {r['step_s'] / base:8.2f} {r['time/rollout_s']:8.1f} "
              f"{r['time/teacher_s']:8.1f} {r['time/learner_s']:8.1f} {r['time/sync_s']:6.2f} {r['wall_s']:7.0f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
