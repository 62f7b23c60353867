"""Environment families, registered with gymnasium under the ``agentopd/`` namespace.

``import agentopd`` registers them; ``gymnasium.make("agentopd/Calc-v0")`` then works.
Entry points are lazy strings, so nothing heavy is imported until an env is made.
"""

from __future__ import annotations

import gymnasium as gym

# id -> (entry point, turn budget). The budget is gymnasium's max_episode_steps: one step is
# one assistant turn, so TimeLimit is exactly a turn limit and sets `truncated`.
FAMILIES: dict[str, tuple[str, int]] = {
    "agentopd/Calc-v0": ("agentopd.envs.calc:CalcEnv", 12),
    "agentopd/Files-v0": ("agentopd.envs.files:FilesEnv", 14),
    "agentopd/SQL-v0": ("agentopd.envs.sql:SQLEnv", 12),
    "agentopd/Python-v0": ("agentopd.envs.python:PythonEnv", 12),
}


def register_all() -> None:
    for env_id, (entry_point, max_turns) in FAMILIES.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_turns)


register_all()
