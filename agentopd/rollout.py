"""Batched multi-turn rollouts: many episodes advance together, one policy call per turn.

Per turn: every live episode's token prefix goes to the policy in one batch; the envs are then
stepped in parallel (threads: tool calls such as the Python sandbox wait on subprocesses);
episodes that end drop out. Each episode becomes a token-in / token-out `Episode`.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import gymnasium as gym

from agentopd.policy import Policy, SamplingParams
from agentopd.render import Conversation, Renderer
from agentopd.types import Episode, StopReason, Task, TurnRecord


@dataclass(frozen=True)
class RolloutConfig:
    """Budgets and sampling for one batch of episodes."""

    sampling: SamplingParams = SamplingParams()
    max_context_tokens: int = 4096
    """Episode token budget: an episode whose prefix cannot fit one more full turn ends with
    ``StopReason.TOKEN_LIMIT`` (truncated)."""
    env_workers: int = 8
    """Threads stepping envs in parallel."""


@dataclass
class _Live:
    env: gym.Env
    conv: Conversation
    task_id: str
    seed: int
    turns: list[TurnRecord]
    reward: float = 0.0
    stop: StopReason | None = None
    success: bool = False
    request_success: tuple[bool, ...] = ()
    error: str | None = None


def run_episodes(
    make_env: Callable[[], gym.Env],
    policy: Policy,
    tasks: Sequence[Task | str | None],
    seeds: Sequence[int],
    cfg: RolloutConfig = RolloutConfig(),
    env_id: str = "",
    on_turn: Callable[[int, int], None] | None = None,
) -> list[Episode]:
    """Roll out one episode per (task, seed) with `policy`. Never raises for env/tool failures:
    such episodes end with ``StopReason.ERROR`` and the error text."""
    renderer = Renderer(policy.tokenizer)
    live: list[_Live] = []
    for task, seed in zip(tasks, seeds, strict=True):
        env = make_env()
        obs, info = env.reset(seed=seed, options={"task": task} if task is not None else None)
        live.append(_Live(env, Conversation.start(renderer, obs), info["task_id"], seed, []))
    pool = ThreadPoolExecutor(max_workers=max(1, cfg.env_workers))
    turn = 0
    try:
        while True:
            active = [ep for ep in live if ep.stop is None]
            if not active:
                break
            for ep in active:  # the next turn must fit in the budget
                if len(ep.conv.token_ids) + cfg.sampling.max_new_tokens > cfg.max_context_tokens:
                    ep.stop = StopReason.TOKEN_LIMIT
            active = [ep for ep in active if ep.stop is None]
            if not active:
                break
            params = SamplingParams(**{**cfg.sampling.__dict__, "seed": cfg.sampling.seed * 1000 + turn})
            samples = policy.sample([ep.conv.token_ids for ep in active], params)
            spans = [ep.conv.add_assistant(s.token_ids, s.logprobs) for ep, s in zip(active, samples)]
            results = list(pool.map(_safe_step, [ep.env for ep in active], [sp[2] for sp in spans]))
            for ep, s, (start, end, text), res in zip(active, samples, spans, results):
                if isinstance(res, str):  # infrastructure failure inside the env
                    ep.stop, ep.error = StopReason.ERROR, res
                    continue
                obs, reward, terminated, truncated, info = res
                ep.reward += float(reward)
                ep.turns.append(TurnRecord(
                    index=len(ep.turns), start=start, end=end, text=text,
                    tool_calls=tuple(info.get("tool_calls", ())),
                    tool_results=tuple(info.get("tool_results", ())),
                    request_index=int(info.get("request_index", 0)),
                    oracle_ok=info.get("oracle_ok"), reward=float(reward),
                    finish_reason=s.finish_reason,
                ))
                ep.request_success = tuple(info.get("request_success", ep.request_success))
                if terminated:
                    ep.stop = StopReason(info.get("stop_reason", StopReason.DONE))
                    ep.success = bool(info.get("success", False))
                elif truncated:
                    ep.stop = StopReason.TURN_LIMIT
                else:
                    ep.conv.add_observation(obs)
            turn += 1
            if on_turn is not None:
                on_turn(turn, sum(ep.stop is None for ep in live))
    finally:
        pool.shutdown(wait=True)
        for ep in live:
            ep.env.close()
    return [_finish(ep, env_id) for ep in live]


def _safe_step(env: gym.Env, action: str):
    try:
        return env.step(action)
    except Exception:  # noqa: BLE001 - becomes an ERROR episode, never a silent zero
        return traceback.format_exc(limit=5)


def _finish(ep: _Live, env_id: str) -> Episode:
    c = ep.conv
    return Episode(
        env_id=env_id, task_id=ep.task_id, seed=ep.seed,
        token_ids=tuple(c.token_ids), logprobs=tuple(c.logprobs), loss_mask=tuple(c.loss_mask),
        turns=tuple(ep.turns), messages=tuple(c.messages), reward=ep.reward,
        success=ep.success and ep.stop == StopReason.DONE,
        stop_reason=ep.stop or StopReason.ERROR, request_success=ep.request_success, error=ep.error,
    )
