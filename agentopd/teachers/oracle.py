"""DAgger's teacher: the env's expert action for every state the student reached.

The env already computed that action in `step` (`TurnInfo.oracle_action`, recorded on each
`TurnRecord`), so relabelling replays nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentopd.core.capabilities import Signal, SignalRequest
from agentopd.core.rows import TrainRow
from agentopd.core.types import Episode, TurnRecord
from agentopd.teachers.base import TeacherError

TEXT = SignalRequest(Signal.TEXT)


@dataclass(frozen=True)
class OracleTeacher:
    """Each student turn becomes a row: the student's own prefix, the expert's turn as target."""

    tokenizer: Any  # a transformers tokenizer
    only_diverged: bool = False
    """Train only on turns where the student's action failed the per-turn oracle check."""
    name: str = "oracle"
    gives: frozenset[Signal] = frozenset({Signal.TEXT, Signal.DEMOS})
    needs_skill_card: bool = False

    def relabel(self, episodes: Sequence[Episode], request: SignalRequest = TEXT) -> list[TrainRow]:
        if request.kind != Signal.TEXT:
            raise TeacherError(f"the oracle gives text relabels, not {request.kind.value}")
        rows = []
        for i, ep in enumerate(episodes):
            for t in ep.turns:
                if self.only_diverged and t.oracle_ok:
                    continue
                if t.oracle_action is None:
                    raise TeacherError(f"env {ep.env_id or '?'} gave no oracle_action in its step info "
                                       f"(task {ep.task_id}, turn {t.index}): DAgger needs an env with an oracle")
                rows.append(text_row(self.tokenizer, ep, i, t, t.oracle_action))
        return rows


def text_row(tokenizer, ep: Episode, index: int, turn: TurnRecord, target: str) -> TrainRow:
    """A relabelled turn as a row: the student's own prefix up to `turn`, then `target` (and the
    end-of-turn token) as the only training targets."""
    ids = tokenizer.encode(target, add_special_tokens=False) + [tokenizer.eos_token_id]
    prefix = ep.token_ids[: turn.start]
    n = len(prefix) + len(ids)
    return TrainRow(tuple(prefix) + tuple(ids), (0,) * len(prefix) + (1,) * len(ids), (0.0,) * n,
                    (-1,) * len(prefix) + (turn.index,) * len(ids), episode=index)
