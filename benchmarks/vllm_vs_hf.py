"""Rollout tokens/s of the hf student against the vllm student on the same episodes (RESULTS.md).

Both backends play the same env tasks with the same seeds and sampling parameters through the
same runner (continuous batching: `HFPolicy.open` and `VLLMPolicy.open`), on the same machine,
in one process, at the same torch thread count; repeats alternate between the backends so that
load from other processes falls on both alike. A rate is sampled tokens (the episodes' loss-mask
tokens) over the rollout's wall time, env steps included. The two samplers draw different random
numbers, so at temperature > 0 the episodes differ in length; --temperature 0 makes them (nearly)
the same token streams. Also timed: each engine's start, the first rollout (warm-up, not in the
rate) and, for vllm, one weight sync (`VLLMPolicy.load_weights` from the learner's model).

Usage: .venv/bin/python benchmarks/vllm_vs_hf.py [--episodes 16] [--max-new-tokens 64]
       [--max-turns 4] [--repeats 2] [--threads N] [--temperature 1.0]
Writes benchmarks/out/vllm_vs_hf.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import agentopd  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

OUT = Path(__file__).parent / "out" / "vllm_vs_hf.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--env", default="agentopd/Calc-v0")
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-turns", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()

    import torch

    from agentopd.envs.registry import env_attr, make_env
    from agentopd.inference.hf import HFPolicy
    from agentopd.inference.models import load_causal_lm, load_tokenizer
    from agentopd.inference.sampling import SamplingParams
    from agentopd.inference.vllm import VLLMPolicy
    from agentopd.rollout.runner import RolloutConfig, cached_renderer, run_episodes

    if args.threads:
        torch.set_num_threads(args.threads)
    tok = load_tokenizer(args.model)
    stops = cached_renderer(tok).stop_token_ids
    t = time.perf_counter()
    model = load_causal_lm(args.model, dtype="float32").eval()
    hf = HFPolicy(model, tok, max_batch=args.max_batch, stop_token_ids=stops)
    start = {"hf": time.perf_counter() - t}
    t = time.perf_counter()
    vl = VLLMPolicy(args.model, tok, max_batch=args.max_batch, stop_token_ids=stops,
                    max_model_len=2048, kv_cache_gib=1.0)
    start["vllm"] = time.perf_counter() - t
    sync_s = vl.load_weights(model)
    policies = {"hf": hf, "vllm": vl}

    env = make_env(args.env, split="test")
    tasks = [t.id for t in env_attr(env, "tasks")][: args.episodes]
    env.close()
    seeds = list(range(len(tasks)))

    def play(policy, rep: int) -> dict[str, float]:
        cfg = RolloutConfig(SamplingParams(args.max_new_tokens, args.temperature, seed=rep), max_context_tokens=2048)
        t0 = time.perf_counter()
        eps = run_episodes(lambda: make_env(args.env, split="test", max_episode_steps=args.max_turns), policy,
                           tasks, seeds, cfg, args.env)
        wall = time.perf_counter() - t0
        toks = sum(sum(e.loss_mask) for e in eps)
        return {"wall_s": wall, "tokens": toks, "turns": sum(e.num_turns for e in eps),
                "success": sum(e.success for e in eps) / len(eps), "tokens_per_s": toks / wall}

    warm = {name: play(p, 0)["wall_s"] for name, p in policies.items()}  # first-call costs, not in the rate
    runs: dict[str, list[dict[str, float]]] = {"hf": [], "vllm": []}
    for rep in range(1, args.repeats + 1):
        for name in (("hf", "vllm") if rep % 2 else ("vllm", "hf")):
            runs[name].append(play(policies[name], rep))
            r = runs[name][-1]
            print(f"rep {rep} {name:4s}: {r['tokens']} tokens, {r['turns']} turns in {r['wall_s']:.1f}s "
                  f"= {r['tokens_per_s']:.1f} tok/s (success {r['success']:.2f})", flush=True)

    def total(name: str) -> dict[str, float]:
        toks, wall = sum(r["tokens"] for r in runs[name]), sum(r["wall_s"] for r in runs[name])
        return {"tokens": toks, "wall_s": wall, "tokens_per_s": toks / wall,
                "turns": sum(r["turns"] for r in runs[name])}

    result = {
        "args": vars(args), "torch_threads": torch.get_num_threads(),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_avg_1m_at_end": os.getloadavg()[0]},
        "start_s": start, "warmup_rollout_s": warm, "vllm_sync_s": sync_s,
        "hf": total("hf"), "vllm": total("vllm"), "runs": runs,
    }
    result["vllm_over_hf"] = result["vllm"]["tokens_per_s"] / result["hf"]["tokens_per_s"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"hf {result['hf']['tokens_per_s']:.1f} tok/s, vllm {result['vllm']['tokens_per_s']:.1f} tok/s "
          f"(x{result['vllm_over_hf']:.2f}); start hf {start['hf']:.1f}s vllm {start['vllm']:.1f}s; "
          f"vllm weight sync {sync_s:.2f}s; threads {torch.get_num_threads()}; "
          f"load avg {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    vl.close()


if __name__ == "__main__":
    main()
