"""Env overhead as a fraction of episode wall time, with the local (threads) and Ray env pools
(issue 14).

The oracle plays EPISODES training episodes of calc and of python (its tool code runs in the
sandbox) through `run_episodes`, lock-step, optionally after MODEL_MS of simulated decoding per
turn. A timing pool wraps the real one and adds up the wall time the runner waits on it
(resets, steps, the oracle's calls, closes): that is the env time, of which the steps (a batch
stepping in parallel) are one part; the rest is the model's (simulated) time and the runner's
own (rendering, tokenizing). The oracle asks each env for its action one at a time, a round trip
each under Ray; a student's turns do not. Ray runs twice: cold (the pool's
actors start, as on the first batch of a run) and warm (the actors the first pool parked).
Envs and seeds are the same in every row, so every row plays the same episodes (checked).

Usage: .venv/bin/python benchmarks/env_pool.py [EPISODES] [MODEL_MS]   (defaults: 32 0)
"""

from __future__ import annotations

import functools
import sys
import time
from concurrent.futures import Future
from typing import Any

import agentopd  # noqa: F401  (sets OMP_WAIT_POLICY before torch)
from agentopd.envs.registry import make_env
from agentopd.inference.models import load_tokenizer
from agentopd.rollout.env_pool import EnvHandle, EnvPool, Reset, StepResult, make_env_pool
from agentopd.rollout.oracle import OraclePolicy
from agentopd.rollout.runner import RolloutConfig, run_episodes

ENVS = ("agentopd/Calc-v0", "agentopd/Python-v0")


class TimedPool(EnvPool):
    """Another pool, with the wall time spent waiting on it added up: `seconds` in all, `steps`
    in lock-step batches of steps."""

    def __init__(self, inner: EnvPool):
        super().__init__(inner.step_timeout_s)
        self.inner, self.seconds, self.steps = inner, 0.0, 0.0
        self._handles: dict[int, EnvHandle] = {}

    def _timed(self, fn, *args):
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - t

    def make(self, make_env) -> EnvHandle:
        handle = EnvHandle(self, next(self._keys))
        self._handles[handle.key] = self._timed(self.inner.make, make_env)
        return handle

    def reset(self, env, seed, options=None, skill_card=False) -> Reset:
        return self._timed(self.inner.reset, self._handles[env.key], seed, options, skill_card)

    def submit(self, env, action) -> Future[StepResult | str]:
        return self.inner.submit(self._handles[env.key], action)

    def step(self, envs, actions) -> list[StepResult | str]:
        before = self.seconds
        try:
            return self._timed(self.inner.step, [self._handles[e.key] for e in envs], actions)
        finally:
            self.steps += self.seconds - before

    def call(self, env, name, *args) -> Any:
        return self._timed(self.inner.call, self._handles[env.key], name, *args)

    def view(self, env) -> EnvHandle:
        return env  # so the oracle's calls come through `call`, timed

    def close_env(self, env) -> None:
        self._timed(self.inner.close_env, self._handles.pop(env.key))

    def close(self) -> None:
        self._timed(self.inner.close)


class SlowOracle(OraclePolicy):
    """The oracle after `ms` of simulated decoding per turn (one batched call)."""

    def __init__(self, ms: float):
        self.ms, self.seconds = ms, 0.0

    def respond(self, states, params):
        t = time.perf_counter()
        time.sleep(self.ms / 1000)
        self.seconds += time.perf_counter() - t
        return super().respond(states, params)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    model_ms = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    tok = load_tokenizer("smollm2-135m")
    t = time.perf_counter()
    from agentopd.rollout.ray_pool import init_ray, stop_workers

    init_ray()
    print(f"ray.init: {time.perf_counter() - t:.1f} s (once per process; not in the rows)")
    cfg = RolloutConfig()
    rows, same = [], True
    for env_id in ENVS:
        make = functools.partial(make_env, env_id, split="train")
        first = None
        for label, kind in (("threads", "threads"), ("ray cold", "ray"), ("ray warm", "ray")):
            policy = SlowOracle(model_ms)
            if label == "ray cold":
                stop_workers()  # no actor parked by an earlier row
            t = time.perf_counter()
            pool = TimedPool(make_env_pool(kind, cfg.env_workers, cfg.env_step_timeout_s, n))
            eps = run_episodes(make, policy, list(range(n)), list(range(n)), cfg, env_id, tokenizer=tok, pool=pool)
            pool.close()
            wall = time.perf_counter() - t
            turns = sum(e.num_turns for e in eps)
            first = first or eps
            same &= eps == first
            rows.append((env_id.split("/")[1], label, n, turns, wall, pool.seconds, pool.steps, policy.seconds))
    print(f"\nOracle episodes, lock-step, {model_ms:g} ms of simulated decoding per turn; env = time the "
          "runner waited on the pool\n")
    print("| env | pool | episodes | turns | wall s | env s | env / wall | steps s | steps / wall | model s "
          "| runner s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for env, label, eps_n, turns, wall, env_s, step_s, model_s in rows:
        print(f"| {env} | {label} | {eps_n} | {turns} | {wall:.2f} | {env_s:.2f} | {env_s / wall:.0%} | "
              f"{step_s:.2f} | {step_s / wall:.0%} | {model_s:.2f} | {wall - env_s - model_s:.2f} |")
    print(f"\nsame episodes in every row: {same}")


if __name__ == "__main__":
    main()
