"""Making envs by id: registered gymnasium ids or ``"package.module:Class"`` entry points."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Protocol, cast

import gymnasium as gym

import agentopd  # noqa: F401  (registers agentopd/* ids)
from agentopd.types import Task

DEFAULT_MAX_TURNS = 12


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` for registered ids; entry points ``pkg.mod:Class`` are imported,
    registered on the fly and made the same way (with a turn limit)."""
    if env_id not in gym.registry and ":" in env_id:
        module, _, attr = env_id.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot import env entry point {env_id!r}: {e}") from e
        # gymnasium reads "a:b" in an id as "import a, make b", so register under a plain id.
        entry_id = f"entrypoint/{module}.{attr}"
        if entry_id not in gym.registry:
            max_turns = getattr(cls, "max_turns", DEFAULT_MAX_TURNS)
            gym.register(id=entry_id, entry_point=cls, max_episode_steps=max_turns)
        env_id = entry_id
    if env_id not in gym.registry:
        ours = sorted(k for k in gym.registry if k.startswith("agentopd/"))
        raise ValueError(
            f"unknown env {env_id!r}. Registered agentopd envs: {', '.join(ours)}. "
            "Register yours with gymnasium.register(...) in a module you import, or pass "
            "'package.module:Class'."
        )
    return gym.make(env_id, disable_env_checker=True, **kwargs)


def agentopd_env_ids() -> list[str]:
    """Every registered env id in the agentopd namespace."""
    return sorted(k for k in gym.registry if k.startswith("agentopd/"))


class ToolEnvAPI(Protocol):
    """What agentopd reads from an unwrapped tool env beyond gymnasium's `Env` (see
    `envs/base.py:ToolEnv`, which every registered family subclasses)."""

    tasks: Sequence[Task]

    def oracle_action(self) -> str: ...

    def skill_card(self) -> dict[str, Any]: ...


def tool_api(env: gym.Env) -> ToolEnvAPI:
    """`env.unwrapped`, typed as a tool env."""
    return cast(ToolEnvAPI, env.unwrapped)
