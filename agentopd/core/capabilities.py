"""What a teacher can give and what an objective needs, declared before anything loads."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Signal(str, enum.Enum):
    """Kinds of teacher signal, from the most to the least informative."""

    FULL_LOGITS = "full_logits"
    """The whole next-token distribution at every student token (a white-box model)."""
    TOPK_LOGPROBS = "topk_logprobs"
    """The top-k log-probs at every student token (what a served model returns)."""
    SAMPLED_LOGPROBS = "sampled_logprobs"
    """The log-prob of each token the student sampled (prompt logprobs)."""
    TEXT = "text"
    """A relabelled next turn written for the student's own state (an oracle, a black-box model)."""
    DEMOS = "demonstrations"
    """Whole episodes the teacher plays itself (the SFT baseline's data)."""


IMPLIED: dict[Signal, frozenset[Signal]] = {
    Signal.FULL_LOGITS: frozenset({Signal.FULL_LOGITS, Signal.TOPK_LOGPROBS, Signal.SAMPLED_LOGPROBS}),
    Signal.TOPK_LOGPROBS: frozenset({Signal.TOPK_LOGPROBS, Signal.SAMPLED_LOGPROBS}),
    Signal.SAMPLED_LOGPROBS: frozenset({Signal.SAMPLED_LOGPROBS}),
    Signal.TEXT: frozenset({Signal.TEXT}),
    Signal.DEMOS: frozenset({Signal.DEMOS}),
}
"""A teacher that gives the key also gives each signal in its value (full logits contain the top-k
and the sampled token's log-prob)."""


def expand(gives: frozenset[Signal]) -> frozenset[Signal]:
    """Every signal a teacher declaring `gives` can provide."""
    return frozenset(s for g in gives for s in IMPLIED[g])


@dataclass(frozen=True)
class SignalRequest:
    """What an objective asks a teacher for, with the parameters the teacher needs to give it."""

    kind: Signal
    topk: int = 0
    """For TOPK_LOGPROBS: how many log-probs per target."""
    temperature: float = 1.0
    """For TOPK_LOGPROBS: the temperature of those log-probs (the objective's)."""
