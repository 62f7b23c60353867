"""The teacher contract."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from agentopd.core.capabilities import Signal, SignalRequest
from agentopd.core.rows import TrainRow
from agentopd.core.types import Episode


class TeacherError(RuntimeError):
    """A teacher cannot give what was asked for these episodes."""


class Teacher(Protocol):
    """Relabels a step's episodes into training rows."""

    name: str
    gives: frozenset[Signal]
    """The signals it declares (see `agentopd.core.capabilities.expand` for the implied ones)."""
    needs_skill_card: bool
    """Whether episodes must carry their task's skill card (`RolloutConfig.record_skill_card`)."""

    def relabel(self, episodes: Sequence[Episode], request: SignalRequest) -> list[TrainRow]: ...


def same_tokenizer(a, b) -> bool:
    return a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id
