"""Foundation benchmarks: rollout throughput (batch 1 vs 32), env step overhead, Python-tool latency.

Run: python benchmarks/foundation.py [--quick] > benchmarks/out/foundation.json
Numbers go into benchmarks/RESULTS.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from agentopd.envs.registry import agentopd_env_ids, make_env


def env_overhead(n_episodes: int) -> dict[str, dict[str, float]]:
    """Seconds per env.step with the oracle as a scripted agent (the agent's own time excluded)."""
    out = {}
    for env_id in agentopd_env_ids():
        env = make_env(env_id, split="test")
        step_times = []
        for i, task in enumerate(env.unwrapped.tasks[:n_episodes]):
            env.reset(seed=i, options={"task": task.id})
            while True:
                action = env.unwrapped.oracle_action()
                t = time.perf_counter()
                _, _, term, trunc, _ = env.step(action)
                step_times.append(time.perf_counter() - t)
                if term or trunc:
                    break
        out[env_id] = {"steps": len(step_times), "median_ms": 1e3 * statistics.median(step_times),
                       "p95_ms": 1e3 * sorted(step_times)[int(0.95 * len(step_times))]}
    return out


def python_tool_latency(n: int) -> dict[str, float]:
    from agentopd.tools.python_sandbox import run_python, sandbox_info

    run_python("print(1)")  # warm up
    times = []
    for _ in range(n):
        t = time.perf_counter()
        res = run_python("print(1)")
        times.append(time.perf_counter() - t)
        assert res.stdout.strip() == "1", res
    times.sort()
    return {"calls": n, "median_ms": 1e3 * statistics.median(times), "p95_ms": 1e3 * times[int(0.95 * n)],
            "isolation": str(sandbox_info())}


def throughput(batch_sizes: list[int], new_tokens: int) -> dict[str, dict[str, float]]:
    """Sampled tokens/s of HFPolicy on real Calc prompts (first turn), at several batch sizes."""
    from agentopd.inference.hf import HFPolicy
    from agentopd.inference.sampling import SamplingParams
    from agentopd.rollout.render import Conversation, Renderer

    policy = HFPolicy.from_spec("smollm2-135m", max_batch=max(batch_sizes))
    renderer = Renderer(policy.tokenizer)
    env = make_env("agentopd/Calc-v0", split="test")
    prompts = []
    for i in range(max(batch_sizes)):
        obs, _ = env.reset(seed=i, options={"task": i})
        prompts.append(Conversation.start(renderer, obs).token_ids)
    # No stop tokens: every row generates `new_tokens`, so batch sizes compare like for like.
    policy.stop_token_ids = [-1]
    out = {}
    for b in batch_sizes:
        params = SamplingParams(max_new_tokens=new_tokens, temperature=1.0, seed=0)
        t = time.perf_counter()
        samples = policy.sample(prompts[:b], params)
        dt = time.perf_counter() - t
        n = sum(len(s.token_ids) for s in samples)
        out[f"batch_{b}"] = {"prompt_tokens_mean": sum(map(len, prompts[:b])) / b, "sampled_tokens": n,
                             "seconds": dt, "tokens_per_s": n / dt}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = ap.parse_args()
    res = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "env_step_overhead": env_overhead(5 if args.quick else 50),
        "python_tool_latency": python_tool_latency(10 if args.quick else 200),
        "rollout_throughput": throughput([1, 32] if not args.quick else [1, 2], 8 if args.quick else 64),
    }
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
