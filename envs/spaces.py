"""Gymnasium spaces for chat environments: observations are message lists, actions are text."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

ROLES = ("system", "user", "assistant", "tool")


class TextSpace(gym.Space[str]):
    """Any string up to `max_length` characters (an assistant turn)."""

    def __init__(self, max_length: int = 100_000, seed: int | None = None):
        super().__init__(shape=None, dtype=None, seed=seed)
        self.max_length = max_length

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        n = int(self.np_random.integers(0, 40))
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz 0123456789"))
        return "".join(self.np_random.choice(letters, size=n))

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"TextSpace(max_length={self.max_length})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextSpace) and other.max_length == self.max_length


class MessagesSpace(gym.Space[list]):
    """A list of chat messages ``{"role": ..., "content": str}`` (tool messages add ``name``)."""

    def __init__(self, seed: int | None = None):
        super().__init__(shape=None, dtype=None, seed=seed)

    def contains(self, x: Any) -> bool:
        if not isinstance(x, list):
            return False
        for m in x:
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                return False
            if not isinstance(m.get("content"), str):
                return False
        return True

    def sample(self, mask: Any = None, probability: Any = None) -> list:
        return [{"role": "user", "content": TextSpace(seed=int(self.np_random.integers(1 << 30))).sample()}]

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MessagesSpace()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MessagesSpace)
