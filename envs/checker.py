"""`check_env`: does an env honour the agentopd contract?

First Gymnasium's own checker (`gymnasium.utils.env_checker.check_env`: API, spaces, seeding),
then agentopd's named checks: capabilities (tasks, oracle, skill card, read through wrappers);
observations are chat messages; step info holds a `TurnInfo`; malformed and unknown tool calls
come back as tool errors instead of exceptions; seeded determinism of whole oracle transcripts;
and the oracle solving every task of every split with every oracle turn passing its check.
The checker drives the raw env on purpose: it checks the contract the rollout runner relies on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym

from agentopd.core.turn_info import EnvContractError, TurnInfo
from agentopd.envs.registry import env_attr, make_env
from agentopd.tools.formats import HermesFormat

STEP_INFO_KEYS = (*TurnInfo.REQUIRED, "tool_errors")
SKILL_KEYS = ("success_analysis", "mistake_analysis", "golden_workflow")


def check_env(env_id: str, max_tasks: int | None = None, splits: tuple[str, ...] = ("train", "test"),
              log: Callable[[str], None] = lambda s: None, workers: int = 4) -> list[str]:
    """Return a list of problems (empty when the env passes): Gymnasium's checker, then ours."""
    env = make_env(env_id, split=splits[0])
    try:
        problems = gymnasium_checker(env)
        log(f"{env_id}: gymnasium's env checker " + ("passed" if not problems else "failed"))
        problems += check_capabilities(env)
        if problems:
            return problems
        for check in (check_reset, check_malformed_calls, check_determinism):
            problems += check(env)
    finally:
        env.close()
    for split in splits:
        problems += check_oracle_solves(env_id, split, max_tasks, workers, log)
    return problems


def check_capabilities(env: gym.Env) -> list[str]:
    """Tasks, oracle and skill card, reachable through the wrapper stack."""
    out = []
    for attr in ("oracle_action", "skill_card", "tasks"):
        try:
            env_attr(env, attr)
        except AttributeError:
            out.append(f"env has no {attr!r} (agentopd envs need an oracle, a skill card and tasks)")
    return out


def check_reset(env: gym.Env) -> list[str]:
    """The opening observation is chat messages starting with the system prompt; the skill card."""
    obs, info = env.reset(seed=123)
    card = env_attr(env, "skill_card")()
    return [msg for ok, msg in (
        (env.observation_space.contains(obs), f"reset observation not in observation_space: {obs!r:.200}"),
        (isinstance(info, dict) and "task_id" in info, "reset info must be a dict with 'task_id'"),
        (bool(obs) and obs[0]["role"] == "system", "first message must be the system prompt"),
        (isinstance(card, dict) and all(k in card for k in SKILL_KEYS), f"skill_card needs keys {SKILL_KEYS}"),
    ) if not ok]


def check_malformed_calls(env: gym.Env) -> list[str]:
    """Unknown tools and broken JSON come back as tool errors with a TurnInfo, never exceptions."""
    out = []
    fmt = getattr(env.unwrapped, "tool_format", None)
    for bad in getattr(fmt, "malformed", None) or HermesFormat.malformed:
        env.reset(seed=123)
        try:
            step = env.step(bad)
        except Exception as e:  # noqa: BLE001
            out.append(f"step raised {type(e).__name__} on a malformed tool call {bad!r}: {e}")
            continue
        if not (isinstance(step, tuple) and len(step) == 5):
            out.append("step must return (obs, reward, terminated, truncated, info)")
            continue
        o, r, term, trunc, inf = step
        out += [msg for ok, msg in (
            (env.observation_space.contains(o), "step observation not in observation_space"),
            (isinstance(r, (int, float)), "reward must be a number"),
            (isinstance(term, bool) and isinstance(trunc, bool), "terminated/truncated must be bools"),
            (all(k in inf for k in STEP_INFO_KEYS), f"step info needs keys {STEP_INFO_KEYS}"),
            (inf.get("tool_errors", 0) >= 1, f"malformed call {bad!r} did not count as a tool error"),
            (any(m["role"] == "tool" for m in o), f"malformed call {bad!r} got no tool message back"),
        ) if not ok]
        try:
            TurnInfo.from_info(inf, term)
        except EnvContractError as e:
            out.append(str(e))
    return out


def check_determinism(env: gym.Env) -> list[str]:
    """Same seed -> same task and the same whole transcript under the oracle."""
    oracle = env_attr(env, "oracle_action")

    def transcript(seed: int) -> list:
        o, i = env.reset(seed=seed)
        msgs = [i["task_id"], *o]
        for _ in range(30):
            o, r, term, trunc, i = env.step(oracle())
            msgs += [*o, r]
            if term or trunc:
                break
        return msgs

    return [] if transcript(7) == transcript(7) else ["same seed gave different transcripts (not deterministic)"]


def check_oracle_solves(env_id: str, split: str, max_tasks: int | None, workers: int,
                        log: Callable[[str], None]) -> list[str]:
    """The oracle solves every task of the split, every turn passing its own per-turn check
    (threads: one env each; sandboxed tools overlap)."""
    env = make_env(env_id, split=split)
    tasks = [t.id for t in list(env_attr(env, "tasks"))[:max_tasks]]
    env.close()
    shares = [tasks[k::workers] for k in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        failed = [f for part in pool.map(_oracle_failures, [env_id] * workers, [split] * workers, shares)
                  for f in part]
    log(f"{env_id} {split}: oracle solved {len(tasks) - len(failed)}/{len(tasks)} tasks")
    return [f"oracle failed {len(failed)} {split} task(s): {', '.join(sorted(failed)[:5])}"] if failed else []


def gymnasium_checker(env: gym.Env) -> list[str]:
    """Gymnasium's own env checker on the unwrapped env; its errors and warnings as problems."""
    from gymnasium.utils.env_checker import check_env as gym_check_env

    out = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            gym_check_env(env.unwrapped, skip_render_check=True)
        except Exception as e:  # noqa: BLE001 - reported, not raised
            out.append(f"gymnasium's env checker: {type(e).__name__}: {e}")
    out += [f"gymnasium's env checker warned: {w.message}" for w in caught]
    return out


def _oracle_failures(env_id: str, split: str, task_ids: Sequence[str]) -> list[str]:
    """Play each task with the oracle; describe each task it fails or any turn it fails."""
    env = make_env(env_id, split=split)
    failed = []
    try:
        for task_id in task_ids:
            env.reset(seed=0, options={"task": task_id})
            info: dict[str, Any] = {}
            bad_turn = None
            for _ in range(64):
                obs, r, term, trunc, info = env.step(env_attr(env, "oracle_action")())
                if info.get("oracle_ok") is False and bad_turn is None:
                    bad_turn = info.get("turn")
                if term or trunc:
                    break
            if not info.get("success") or bad_turn is not None:
                failed.append(f"{task_id} (success={info.get('success')}, first failing turn={bad_turn})")
    finally:
        env.close()
    return failed
