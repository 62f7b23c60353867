"""Stepping the envs of a batch in parallel: threads on this machine (tool calls such as the
Python sandbox and SQLite wait on subprocesses or release the GIL)."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, SupportsFloat

import gymnasium as gym

StepResult = tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]
"""Gymnasium's (obs, reward, terminated, truncated, info)."""


class ThreadEnvPool:
    """Steps many envs at once; an env that raises yields its traceback text instead of a result."""

    def __init__(self, workers: int = 8):
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers))

    def step(self, envs: Sequence[gym.Env], actions: Sequence[str]) -> list[StepResult | str]:
        return list(self._pool.map(_safe_step, envs, actions))

    def submit(self, env: gym.Env, action: str) -> Future[StepResult | str]:
        """Step one env in the background (continuous batching: the others keep decoding)."""
        return self._pool.submit(_safe_step, env, action)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> ThreadEnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _safe_step(env: gym.Env, action: str) -> StepResult | str:
    try:
        return env.step(action)
    except Exception:  # noqa: BLE001 - becomes an ERROR episode, never a silent zero
        return traceback.format_exc(limit=5)
