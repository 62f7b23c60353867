"""Which training tasks a step plays: the hook a curriculum implements."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from agentopd.core.types import Episode


@dataclass(frozen=True)
class TaskBatch:
    """The tasks of one training step."""

    task_ids: tuple[str, ...]
    """Task ids, one episode each."""
    seeds: tuple[int, ...]
    """Env seed of each episode."""
    rng: random.Random
    """The step's own random stream, for any further per-step draw of a recipe (GKD's lambda)."""


class TaskSampler(Protocol):
    """Chooses each step's tasks; a curriculum also learns from the step's episodes."""

    def sample(self, step: int, n: int) -> TaskBatch: ...

    def update(self, step: int, episodes: Sequence[Episode]) -> dict[str, float]:
        """Curriculum state after the step (metrics under ``curriculum/``)."""
        ...


class UniformTasks:
    """`n` distinct training tasks uniformly at random, from a per-step seed, so a resumed run
    samples the same tasks as an uninterrupted one."""

    def __init__(self, task_ids: Sequence[str], seed: int):
        self.task_ids = list(task_ids)
        self.seed = seed

    def sample(self, step: int, n: int) -> TaskBatch:
        rng = random.Random(self.seed * 1_000_003 + step)
        ids = rng.sample(self.task_ids, min(n, len(self.task_ids)))
        return TaskBatch(tuple(ids), tuple(rng.randrange(2**31) for _ in ids), rng)

    def update(self, step: int, episodes: Sequence[Episode]) -> dict[str, float]:
        return {}
