"""Text-level episodes driven by an env's oracle (for `--model oracle` and demonstrations)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym

from agentopd.registry import tool_api
from agentopd.types import Episode, StopReason, Task, TurnRecord


def oracle_episode(make_env: Callable[[], gym.Env], task: Task | str | None, seed: int, env_id: str = "") -> Episode:
    """Play one episode with the env's oracle as the agent."""
    env = make_env()
    try:
        obs, info = env.reset(seed=seed, options={"task": task} if task is not None else None)
        messages = list(obs)
        task_id = info["task_id"]
        turns: list[TurnRecord] = []
        reward, stop, success, req = 0.0, StopReason.ERROR, False, ()
        while True:
            action = tool_api(env).oracle_action()
            messages.append({"role": "assistant", "content": action})
            obs, r, terminated, truncated, info = env.step(action)
            reward += float(r)
            turns.append(TurnRecord(len(turns), 0, 0, action, tuple(info.get("tool_calls", ())),
                                    tuple(info.get("tool_results", ())), int(info.get("request_index", 0)),
                                    info.get("oracle_ok"), float(r), "stop"))
            req = tuple(info.get("request_success", req))
            if terminated:
                stop, success = StopReason(info.get("stop_reason", StopReason.DONE)), bool(info.get("success"))
                break
            if truncated:
                stop = StopReason.TURN_LIMIT
                break
            messages.extend(obs)
        return Episode(env_id, task_id, seed, (), (), (), tuple(turns),
                       tuple(messages), reward, success and stop == StopReason.DONE, stop, req)
    finally:
        env.close()


def run_oracle_episodes(make_env: Callable[[], gym.Env], tasks: Sequence[Task | str | None],
                        seeds: Sequence[int], env_id: str = "", workers: int = 8,
                        on_done: Callable[[], None] | None = None) -> list[Episode]:
    def one(args):
        ep = oracle_episode(make_env, args[0], args[1], env_id)
        if on_done:
            on_done()
        return ep

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, zip(tasks, seeds, strict=True)))
