"""Which training tasks a step plays, and how: the hook a curriculum implements.

`UniformTasks` samples tasks; TCOD's temporal curricula (REFERENCES section 3) wrap it and add
a plan to each step's batch: a turn window (f2b: the episode is cut after W student turns), an
oracle replay length per episode (b2f: the expert acts first, the student finishes), or a window
that widens when the teacher's KL at its frontier turn is small (kl). Step numbers here count
the method's steps (a warm start's SFT steps are not part of the curriculum).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
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
    window: int = 0
    """End each episode after this many student turns (0 = the env's budget)."""
    replay: tuple[int, ...] | None = None
    """Per episode: how many oracle turns the env plays before the student acts (None = none)."""


class TaskSampler(Protocol):
    """Chooses each step's tasks; a curriculum also learns from the step's episodes."""

    def sample(self, step: int, n: int) -> TaskBatch: ...

    def update(self, step: int, episodes: Sequence[Episode], metrics: dict[str, float]) -> dict[str, float]:
        """Learn from the step (its episodes and metrics, e.g. ``turn/<t>/teacher_kl``); returns
        the curriculum's state (metrics under ``curriculum/``)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


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

    def update(self, step: int, episodes: Sequence[Episode], metrics: dict[str, float]) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ForwardWindow(UniformTasks):
    """TCOD f2b: at method step s the student acts for W(s) = min(1 + s // every, max_window)
    turns, then the episode is cut."""

    def __init__(self, task_ids: Sequence[str], seed: int, every: int, max_window: int, offset: int = 0):
        super().__init__(task_ids, seed)
        self.every, self.max_window, self.offset = every, max_window, offset

    def window(self, step: int) -> int:
        return min(1 + (step - self.offset) // self.every, self.max_window)

    def sample(self, step: int, n: int) -> TaskBatch:
        return replace(super().sample(step, n), window=self.window(step))

    def update(self, step: int, episodes: Sequence[Episode], metrics: dict[str, float]) -> dict[str, float]:
        return {"curriculum/window": float(self.window(step))} | frontier_kl(metrics, self.window(step))


class BackwardReplay(UniformTasks):
    """TCOD b2f: at method step s the oracle first replays k = max(0, (N - 1) - s // every) of
    its N turns on the task, then the student acts; `expert_turns(task_ids)` gives each task's N."""

    def __init__(self, task_ids: Sequence[str], seed: int, every: int,
                 expert_turns: Callable[[Sequence[str]], Sequence[int]], offset: int = 0):
        super().__init__(task_ids, seed)
        self.every, self.expert_turns, self.offset = every, expert_turns, offset
        self._last: tuple[int, ...] = ()

    def back(self, step: int) -> int:
        return (step - self.offset) // self.every

    def sample(self, step: int, n: int) -> TaskBatch:
        batch = super().sample(step, n)
        j = self.back(step)
        self._last = tuple(max(0, (N - 1) - j) for N in self.expert_turns(batch.task_ids))
        return replace(batch, replay=self._last)

    def update(self, step: int, episodes: Sequence[Episode], metrics: dict[str, float]) -> dict[str, float]:
        k = self._last or (0,)
        return {"curriculum/replayed_turns": sum(k) / len(k), "curriculum/back": float(self.back(step))}


class KLWindow(UniformTasks):
    """A TCOD window driven by the teacher (none of the published frameworks has it): it starts
    at one student turn and widens by one, up to `max_window`, after a step whose mean teacher
    KL (log mu - log pi_T per token) at the frontier turn W-1 is under `threshold`, or in which
    no episode reached the frontier (the window did not bind)."""

    def __init__(self, task_ids: Sequence[str], seed: int, threshold: float, max_window: int):
        super().__init__(task_ids, seed)
        self.threshold, self.max_window, self.w = threshold, max_window, 1

    def sample(self, step: int, n: int) -> TaskBatch:
        return replace(super().sample(step, n), window=self.w)

    def update(self, step: int, episodes: Sequence[Episode], metrics: dict[str, float]) -> dict[str, float]:
        out = {"curriculum/window": float(self.w)} | frontier_kl(metrics, self.w)
        kl = out.get("curriculum/frontier_kl")
        if self.w < self.max_window and (kl is None or kl < self.threshold):
            self.w += 1
        return out

    def state_dict(self) -> dict:
        return {"window": self.w}

    def load_state_dict(self, state: dict) -> None:
        self.w = int(state.get("window", 1))


def frontier_kl(metrics: dict[str, float], window: int) -> dict[str, float]:
    """The teacher's mean KL at the window's last turn (``curriculum/frontier_kl``), when any
    episode reached it."""
    kl = metrics.get(f"turn/{window - 1}/teacher_kl")
    return {} if kl is None else {"curriculum/frontier_kl": kl}
