"""Making envs by id, Gymnasium's way, and reading their capabilities through wrappers.

Accepted everywhere an env id goes:

- a registered id: ``agentopd/Calc-v0``, or any id another package registered;
- ``module:EnvId`` (Gymnasium's syntax): imports ``module`` (which registers its envs) and makes
  ``EnvId``;
- ``class:pkg.module:Class``: a `gymnasium.Env` subclass, registered on the fly with a turn limit.

Installed packages can also register envs through the ``agentopd.envs`` entry-point group: each
entry point names a module (or a callable) that registers its envs when loaded. They are loaded
the first time an id is not found, so ``agentopd train --env theirs/Env-v0`` works with no import.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import Any

import gymnasium as gym

import agentopd  # noqa: F401  (registers agentopd/* ids)

DEFAULT_MAX_TURNS = 12
ENTRY_POINT_GROUP = "agentopd.envs"
CLASS_PREFIX = "class:"
_plugins_loaded = False


def load_plugins() -> list[str]:
    """Load every ``agentopd.envs`` entry point once; return their names."""
    global _plugins_loaded
    names = []
    if not _plugins_loaded:
        _plugins_loaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
            except Exception as e:  # noqa: BLE001 - a broken plugin must not hide the others
                raise ValueError(f"env plugin {ep.name!r} ({ep.value}) failed to load: {e}") from e
            if callable(obj):
                obj()
            names.append(ep.name)
    return names


def resolve_env_id(env_id: str) -> str:
    """The registered id that `env_id` names, importing or registering what it needs."""
    if env_id.startswith(CLASS_PREFIX):
        module, sep, attr = env_id[len(CLASS_PREFIX):].rpartition(":")
        if not sep or not module:
            raise ValueError(f"class env {env_id!r} must read class:pkg.module:Class")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot import env class {env_id!r}: {e}") from e
        # gymnasium reads "a:b" in an id as "import a, make b", so register under a plain id.
        entry_id = f"entrypoint/{module}.{attr}"
        if entry_id not in gym.registry:
            gym.register(id=entry_id, entry_point=cls, max_episode_steps=getattr(cls, "max_turns", DEFAULT_MAX_TURNS))
        return entry_id
    if ":" in env_id:
        module, _, name = env_id.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"cannot import env module {module!r} of {env_id!r}: {e}") from e
        if name not in gym.registry:
            raise ValueError(f"importing {module!r} did not register {name!r} (module:EnvId imports the module, "
                             "then makes the id it registered; for a class use class:pkg.module:Class)")
        return name
    if env_id not in gym.registry:
        load_plugins()
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown env {env_id!r}.{hint} Registered agentopd envs: {', '.join(agentopd_env_ids())}. "
            "Register yours with gymnasium.register(...) and pass module:EnvId, declare an "
            f"'{ENTRY_POINT_GROUP}' entry point in your package, or pass class:pkg.module:Class.")
    return env_id


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` for any of the accepted id forms (env checker off: `check-env` runs it)."""
    return gym.make(resolve_env_id(env_id), disable_env_checker=True, **kwargs)


def agentopd_env_ids() -> list[str]:
    """Every registered env id in the agentopd namespace."""
    return sorted(k for k in gym.registry if k.startswith("agentopd/"))


def env_attr(env: gym.Env, name: str) -> Any:
    """An env capability (``tasks``, ``oracle_action``, ``skill_card``), read through the wrapper
    stack so that a wrapper can override it (Gymnasium's `get_wrapper_attr`)."""
    try:
        return env.get_wrapper_attr(name)
    except AttributeError:
        raise AttributeError(f"env {env.spec.id if env.spec else type(env.unwrapped).__name__} has no "
                             f"{name!r}: agentopd envs provide tasks, oracle_action and skill_card "
                             "(subclass agentopd.envs.base.ToolEnv)") from None
