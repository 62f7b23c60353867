"""The token path against the model's own floor, in one run (RESULTS.md, issue 10).

Measures on SmolLM2-135M and calc first-turn prompts:
- the floor: one prefill of the same tokens the sampler produces (B=32 rows x N new tokens, one
  forward, no cache), in fp32 and under bf16 (autocast, and bf16 weights): transformers' forward
  (the issue's floor) and the decode engine's own ragged prefill (oneDNN-packed weights on a
  CPU, but attention row by row);
- the 32- and 64-row bounds: one forward of 32 (64) single-token rows, the linear-layer work
  of a decode step with no attention (a 32-row matmul is less efficient than a 2,048-row one),
  through transformers' linears and through the engine's own (packed on a CPU);
- the batch-1 bound: weight bytes / measured memory read bandwidth;
- the sampler (`HFPolicy`, the decode engine and transformers' forward) at batch 1, 8, 32, 64,
  decode tokens/s (prefill timed apart), with every row forced to its full length;
- the teacher's scoring and the learner's step on the sampled rows, in tokens/s.
Each rate is also printed as a fraction of the fp32 floor (the faster of the two fp32 prefills). Writes benchmarks/out/token_path.json.

Where `--dtype auto` resolves to bf16 (a CPU with native bf16 units that measures it faster, or
CUDA), also: the 32/64-row bounds in bf16, the sampler in the auto dtype at batch 1, 32 and 64
(bf16 weights, as `agentopd eval` loads them, and fp32 weights under autocast, as training runs
them), and the teacher and learner under bf16 autocast; all still as fractions of the fp32 floor.

Usage: .venv/bin/python benchmarks/token_path.py [--new-tokens 64] [--quick] [--reps 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

import agentopd  # noqa: F401  (sets OMP_WAIT_POLICY before torch)
from agentopd.core.rows import TrainRow
from agentopd.envs.registry import make_env
from agentopd.inference.dtypes import cpu_bf16_units, cpu_matmul_seconds, resolve_dtype
from agentopd.inference.hf import HFPolicy
from agentopd.inference.models import load_causal_lm, load_tokenizer
from agentopd.inference.sampling import SamplingParams
from agentopd.rollout.render import Conversation, Renderer
from agentopd.teachers.local import HFTeacher
from agentopd.training.learner import Learner, OptimConfig
from agentopd.training.objectives import ReverseKLPG

OUT = Path(__file__).parent / "out" / "token_path.json"


def prompts(tok, n: int) -> list[list[int]]:
    env = make_env("agentopd/Calc-v0", split="train")
    r = Renderer(tok)
    out = []
    for i in range(n):
        obs, _ = env.reset(seed=i, options={"task": env.unwrapped.tasks[i].id})
        out.append(list(Conversation.start(r, obs).token_ids))
    return out


def timed(f, reps: int = 1) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def read_bandwidth() -> float:
    """GB/s of a streaming read (sum) over 1 GiB, far past any cache."""
    x = torch.randn(1 << 28)
    x.sum()
    return x.numel() * 4 / timed(lambda: x.sum(), 3) / 1e9


def sampler_rate(pol: HFPolicy, ps: list[list[int]], B: int, new: int, reps: int = 1) -> dict[str, float]:
    """Decode tokens/s at batch B: a run of `new + 1` tokens minus a run of 1 (the prefill),
    each the fastest of `reps`."""
    pol.stop_token_ids = []  # every row runs its full length: a fixed amount of work
    batch = ps[:B]

    def run(n):
        pol.invalidate()
        return pol.sample(batch, SamplingParams(max_new_tokens=n, temperature=1.0, seed=0))

    run(2)  # warm up
    t1 = timed(lambda: run(1), reps)
    tn = timed(lambda: run(new + 1), reps)
    return {"decode_tok_s": B * new / (tn - t1), "prefill_s": t1, "end_to_end_tok_s": B * (new + 1) / tn}


@torch.no_grad()
def forward_rate(model, ids: torch.Tensor, dtype: torch.dtype | None = None) -> float:
    """Tokens/s of one no-cache forward over `ids` (B, T), logits at the last position only."""
    ctx = torch.autocast("cpu", dtype=dtype) if dtype is not None else torch.autocast("cpu", enabled=False)
    with ctx:
        model(input_ids=ids[:2, :8], use_cache=False, logits_to_keep=1)
        return ids.numel() / timed(lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1), 2)


@torch.no_grad()
def engine_rate(model, ids: torch.Tensor, dtype: torch.dtype | None = None) -> float:
    """Tokens/s of the decode engine's ragged prefill of the B rows of `ids` (B, T) from empty."""
    from agentopd.inference.engine import DecodeEngine

    eng = DecodeEngine(model, dtype)

    def run():
        eng.release()
        eng.prefill([(row, 0, None, False) for row in ids.tolist()])

    run()
    return ids.numel() / timed(run, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="fewer settings (a smoke run)")
    ap.add_argument("--reps", type=int, default=2, help="each sampler timing is the fastest of this many runs")
    ap.add_argument("--out", type=Path, default=OUT, help=f"the JSON written (default {OUT})")
    args = ap.parse_args()
    auto_bf16 = resolve_dtype("auto") == torch.bfloat16
    new = args.new_tokens
    tok = load_tokenizer("smollm2-135m")
    model = load_causal_lm("smollm2-135m").eval()
    ps = prompts(tok, 64)
    res: dict = {"machine": {
        "cpu": subprocess.run("lscpu | grep 'Model name' | cut -d: -f2", shell=True, capture_output=True,
                              text=True).stdout.strip(),
        "threads": torch.get_num_threads(), "bf16_units": cpu_bf16_units(), "torch": torch.__version__,
        "python": platform.python_version(), "auto_dtype": str(resolve_dtype("auto")),
        "matmul_s": cpu_matmul_seconds()},
        "prompt_tokens_mean": sum(map(len, ps)) / len(ps), "new_tokens": new}

    # The floor: the sampler's own output tokens in one prefill.
    eng = HFPolicy(model, tok, max_batch=64)
    eng.stop_token_ids = []
    sampled = eng.sample(ps[:32], SamplingParams(max_new_tokens=new, temperature=1.0, seed=0))
    ids = torch.tensor([list(s.token_ids) for s in sampled])
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    floor = {"fp32": forward_rate(model, ids), "bf16_autocast": forward_rate(model, ids, torch.bfloat16),
             "bf16_weights": forward_rate(bf16_model, ids), "engine_fp32": engine_rate(model, ids)}
    if auto_bf16:
        floor["engine_bf16"] = engine_rate(model, ids, torch.bfloat16)
    rows32 = torch.tensor([[s.token_ids[0]] for s in sampled])
    rows64 = torch.cat([rows32, rows32])
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bw = read_bandwidth()
    bounds = {"rows32_tok_s": forward_rate(model, rows32), "rows64_tok_s": forward_rate(model, rows64),
              # the same rows through the engine's own (packed) linears: the bound of its decode step
              "rows32_engine_tok_s": engine_rate(model, rows32), "rows64_engine_tok_s": engine_rate(model, rows64),
              "read_bandwidth_GBs": bw, "weight_bytes": weight_bytes, "batch1_tok_s": bw * 1e9 / weight_bytes}
    if auto_bf16:  # what the auto dtype's decode step is bounded by
        bounds |= {"rows32_bf16_tok_s": forward_rate(bf16_model, rows32), "rows64_bf16_tok_s": forward_rate(bf16_model, rows64),
                   "rows32_engine_bf16_tok_s": engine_rate(bf16_model, rows32),
                   "rows64_engine_bf16_tok_s": engine_rate(bf16_model, rows64),
                   "batch1_bf16_tok_s": bw * 1e9 / (weight_bytes / 2)}
    res["floor_tok_s"], res["bounds"] = floor, bounds

    batches = (1, 32) if args.quick else (1, 8, 32, 64)
    res["sampler"] = {"engine": {B: sampler_rate(eng, ps, B, new, args.reps) for B in batches}}
    hf = HFPolicy(model, tok, max_batch=64, engine="hf")
    res["sampler"]["hf"] = {B: sampler_rate(hf, ps, B, min(new, 32)) for B in (1, 32)}
    if auto_bf16:
        bw_pol = HFPolicy(bf16_model, tok, max_batch=64, dtype=torch.bfloat16)
        res["sampler"]["engine_bf16_weights"] = {B: sampler_rate(bw_pol, ps, B, new, args.reps) for B in (1, 32, 64)}
        del bw_pol
    if not args.quick:  # bf16 compute on fp32 weights (a training run's sampler); slow without bf16 units
        bf = HFPolicy(model, tok, max_batch=64, dtype=torch.bfloat16)
        res["sampler"]["engine_bf16"] = ({B: sampler_rate(bf, ps, B, new, args.reps) for B in (32, 64)} if auto_bf16
                                         else {32: sampler_rate(bf, ps, 32, min(new, 16))})
    del bf16_model

    # Teacher scoring and the learner on the sampled rows (prompt + continuation, loss on the latter).
    rows = [TrainRow(tuple(p) + s.token_ids, (0,) * len(p) + (1,) * len(s.token_ids),
                     (0.0,) * len(p) + s.logprobs, (-1,) * len(p) + (0,) * len(s.token_ids))
            for p, s in zip(ps[:32], sampled)]
    targets = sum(r.n_targets for r in rows)
    nodes = len({tuple(r.input_ids[: i + 1]) for r in rows for i in range(len(r.input_ids))})
    teacher = HFTeacher(model, tok, tok)
    t = timed(lambda: teacher.score(rows), 2)
    scored = teacher.score(rows)
    res["teacher"] = {"targets": targets, "tree_nodes": nodes, "s": t, "node_tok_s": nodes / t,
                      "target_tok_s": targets / t}
    learner = Learner(copy.deepcopy(model), OptimConfig(lr=1e-7), 10, pad_id=tok.pad_token_id or 0)
    obj = ReverseKLPG()
    learner.step(scored, obj)
    t = timed(lambda: learner.step(scored, obj), 2)
    res["learner"] = {"s": t, "node_tok_s": nodes / t, "target_tok_s": targets / t}
    if auto_bf16:  # the teacher and learner as a run in the auto dtype has them
        teacher.autocast = True
        t = timed(lambda: teacher.score(rows), 2)
        res["teacher_bf16"] = {"s": t, "node_tok_s": nodes / t, "target_tok_s": targets / t}
        learner = Learner(copy.deepcopy(model), OptimConfig(lr=1e-7, autocast="bf16"), 10, pad_id=tok.pad_token_id or 0)
        learner.step(scored, obj)
        t = timed(lambda: learner.step(scored, obj), 2)
        res["learner_bf16"] = {"s": t, "node_tok_s": nodes / t, "target_tok_s": targets / t}

    f = floor["fp32"]
    print(f"machine: {res['machine']}")
    print(f"floor fp32 {f:.0f} tok/s | bf16 autocast {floor['bf16_autocast']:.0f} | bf16 weights "
          f"{floor['bf16_weights']:.0f}; the engine's own prefill: fp32 {floor['engine_fp32']:.0f}"
          + (f", bf16 {floor['engine_bf16']:.0f}" if "engine_bf16" in floor else ""))
    f = max(f, floor["engine_fp32"])  # fractions below are of the faster of the two fp32 prefills
    print(f"fractions below are of the fp32 floor {f:.0f} tok/s")
    print(f"32-row bound {bounds['rows32_tok_s']:.0f} tok/s ({bounds['rows32_tok_s'] / f:.0%} of floor), 64-row "
          f"{bounds['rows64_tok_s']:.0f} ({bounds['rows64_tok_s'] / f:.0%}); through the engine's linears "
          f"{bounds['rows32_engine_tok_s']:.0f} ({bounds['rows32_engine_tok_s'] / f:.0%}) and "
          f"{bounds['rows64_engine_tok_s']:.0f} ({bounds['rows64_engine_tok_s'] / f:.0%}); batch-1 bound "
          f"{bounds['batch1_tok_s']:.1f} tok/s ({bw:.1f} GB/s over {weight_bytes / 1e6:.0f} MB)")
    for name, by_b in res["sampler"].items():
        for B, r in by_b.items():
            b1 = bounds["batch1_bf16_tok_s"] if name == "engine_bf16_weights" else bounds["batch1_tok_s"]
            extra = f", {r['decode_tok_s'] / b1:.0%} of its dtype's batch-1 bound" if B == 1 else ""
            print(f"sampler {name:11s} B={B:2d}: {r['decode_tok_s']:6.1f} tok/s decode ({r['decode_tok_s'] / f:.0%} "
                  f"of floor{extra}), prefill {r['prefill_s']:.2f} s")
    if auto_bf16:
        print(f"bf16 bounds: 32-row {bounds['rows32_bf16_tok_s']:.0f} tok/s ({bounds['rows32_bf16_tok_s'] / f:.0%}), "
              f"64-row {bounds['rows64_bf16_tok_s']:.0f} ({bounds['rows64_bf16_tok_s'] / f:.0%}); through the engine's "
              f"linears {bounds['rows32_engine_bf16_tok_s']:.0f} ({bounds['rows32_engine_bf16_tok_s'] / f:.0%}) and "
              f"{bounds['rows64_engine_bf16_tok_s']:.0f} ({bounds['rows64_engine_bf16_tok_s'] / f:.0%}); batch-1 "
              f"{bounds['batch1_bf16_tok_s']:.1f}")
    for name in ("teacher", "learner", "teacher_bf16", "learner_bf16"):
        if name not in res:
            continue
        r = res[name]
        print(f"{name}: {r['s']:.2f} s, {r['node_tok_s']:.0f} tree tok/s ({r['node_tok_s'] / f:.0%} of floor)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
