"""Sampler A/B between two checkouts, interleaved, on a noisy shared CPU (RESULTS.md, issue 10).

A 2-core cloud VM's speed drifts by 10-30% within minutes (a code-independent bound measured
1.6x apart in two runs ten minutes apart), so one run per code says little. This runs the two
checkouts alternately, each in a fresh process, for several rounds and several settings, and
prints per-setting medians and the paired ratios.

Each measurement: SmolLM2-135M, the first B calc first-turn prompts of `token_path.prompts`,
temperature 1, every row forced to `--new-tokens`; decode tokens/s = B x new / (a run of
new + 1 tokens minus the faster of two 1-token runs, the prefill).

Usage: .venv/bin/python benchmarks/sampler_ab.py --a /path/to/checkout_a --b /path/to/checkout_b
           [--rounds 4] [--settings bfloat16:32,bfloat16:64,autocast:32,float32:32,float32:64]
           [--out FILE.jsonl]
  (settings: `bfloat16` = bf16 weights, as `agentopd eval` loads them on a bf16 CPU;
   `autocast` = fp32 weights sampled in bf16, as `agentopd train` samples; `float32`.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def measure(dtype: str, B: int, new: int) -> float:
    """One measurement in this process (the checkout on PYTHONPATH is the code measured)."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from token_path import prompts

    from agentopd.inference.hf import HFPolicy
    from agentopd.inference.models import load_causal_lm, load_tokenizer
    from agentopd.inference.sampling import SamplingParams

    tok = load_tokenizer("smollm2-135m")
    ps = prompts(tok, B)
    if dtype == "autocast":
        pol = HFPolicy(load_causal_lm("smollm2-135m", dtype="float32").eval(), tok, max_batch=B, dtype=torch.bfloat16)
    else:
        pol = HFPolicy(load_causal_lm("smollm2-135m", dtype=dtype).eval(), tok, max_batch=B)
    pol.stop_token_ids = []

    def run(n: int) -> float:
        pol.invalidate()
        t = time.perf_counter()
        pol.sample(ps[:B], SamplingParams(max_new_tokens=n, temperature=1.0, seed=0))
        return time.perf_counter() - t

    run(2)
    t1 = min(run(1), run(1))
    return B * new / (run(new + 1) - t1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", type=Path, help="checkout A (its agentopd is imported)")
    ap.add_argument("--b", type=Path, help="checkout B")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--settings", default="bfloat16:32,bfloat16:64,autocast:32,float32:32,float32:64")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None, help="append one JSON line per measurement")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # DTYPE:B: a child measurement
    args = ap.parse_args()
    if args.one:
        dtype, B = args.one.split(":")
        print(json.dumps({"tok_s": measure(dtype, int(B), args.new_tokens)}))
        return
    if args.a is None or args.b is None:
        ap.error("--a and --b (two checkouts) are required")
    settings = [(s.split(":")[0], int(s.split(":")[1])) for s in args.settings.split(",")]
    rows = []
    for r in range(args.rounds):
        for dtype, B in settings:
            for name, root in (("a", args.a), ("b", args.b)):
                env = dict(os.environ, PYTHONPATH=str(root.resolve()))
                out = subprocess.run([sys.executable, __file__, "--one", f"{dtype}:{B}", "--new-tokens",
                                      str(args.new_tokens)], env=env, cwd=root, capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"{name} {dtype}:{B} failed:\n{out.stderr[-2000:]}")
                row = {"code": name, "root": str(root), "round": r, "dtype": dtype, "B": B,
                       "tok_s": round(json.loads(out.stdout.strip().splitlines()[-1])["tok_s"], 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.out:
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
    for dtype, B in settings:
        a = [r["tok_s"] for r in rows if (r["dtype"], r["B"], r["code"]) == (dtype, B, "a")]
        b = [r["tok_s"] for r in rows if (r["dtype"], r["B"], r["code"]) == (dtype, B, "b")]
        print(f"{dtype:9s} B={B:2d}: a median {statistics.median(a):6.1f}  b median {statistics.median(b):6.1f}  "
              f"b/a {statistics.median(b) / statistics.median(a):.2f}  paired {[round(y / x, 2) for x, y in zip(a, b)]}")


if __name__ == "__main__":
    main()
