"""Training rows: what a teacher's relabelling makes of episodes, and what the learner consumes."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TeacherSignal:
    """A logit teacher's view of one row's target tokens (``loss_mask[p] == 1``)."""

    token_logp: tuple[float, ...]
    """Teacher log-prob of each token of the row (0.0 where not a target): sampled-token signal."""
    top1: tuple[int, ...]
    """Teacher argmax next-token id predicting each token (-1 where not a target)."""
    topk_ids: tuple[tuple[int, ...], ...] | None = None
    """Top-k token ids at each target, in order (top-k signal; what a served teacher returns)."""
    topk_logp: tuple[tuple[float, ...], ...] | None = None
    """Their log-probs (at the objective's temperature), aligned with `topk_ids`."""
    target_logp: Any = None
    """Full-vocabulary log-probs at each target, a (n_targets, V) tensor on the teacher's device
    (full-logit signal), computed in the same forward as the rest, so the learner never calls
    the teacher again."""


@dataclass(frozen=True)
class TrainRow:
    """One training sequence (an episode, or one relabelled turn of it)."""

    input_ids: tuple[int, ...]
    """The token sequence the student is trained on."""
    loss_mask: tuple[int, ...]
    """1 where the token is a training target (student-sampled, or an expert's target)."""
    old_logp: tuple[float, ...]
    """Sampler logprob of each token (0.0 where not sampled): mu in the importance ratio."""
    turn_of: tuple[int, ...]
    """Assistant-turn index of each token (-1 outside assistant turns): for per-turn metrics."""
    signal: TeacherSignal | None = None
    """The teacher's scores of the targets (logit teachers); None for expert-target rows."""
    episode: int = -1
    """Index of the source episode in the step's batch."""
    advantage: float = 0.0
    """Episode-level advantage (group-normalised env reward, see `group_advantages`), applied to
    every target token of the row; 0 for objectives that use none."""

    def __post_init__(self) -> None:
        n = len(self.input_ids)
        if not (len(self.loss_mask) == len(self.old_logp) == len(self.turn_of) == n):
            raise ValueError("TrainRow fields must all have the length of input_ids")
        if not math.isfinite(self.advantage):
            raise ValueError(f"TrainRow advantage must be finite, got {self.advantage}")
        s = self.signal
        if s is not None:
            if len(s.token_logp) != n or len(s.top1) != n:
                raise ValueError("teacher token_logp/top1 must have the length of input_ids")
            if s.topk_ids is not None and not (len(s.topk_ids) == len(s.topk_logp or ()) == sum(self.loss_mask[1:])):
                raise ValueError("teacher topk_ids/logp need one entry per target position")
            if s.target_logp is not None and s.target_logp.shape[0] != sum(self.loss_mask[1:]):
                raise ValueError("teacher target_logp needs one row per target position")

    @property
    def n_targets(self) -> int:
        return sum(self.loss_mask)

    @property
    def teacher_logp(self) -> tuple[float, ...] | None:
        """The teacher's log-prob of each token, when a logit teacher scored the row."""
        return self.signal.token_logp if self.signal is not None else None

    @property
    def teacher_top1(self) -> tuple[int, ...] | None:
        return self.signal.top1 if self.signal is not None else None


def episode_row(ep, index: int = -1) -> TrainRow:
    """An `Episode` itself as a training row (on-policy objectives, demonstrations)."""
    turn_of = [-1] * len(ep.token_ids)
    for t in ep.turns:
        for i in range(t.start, t.end):
            turn_of[i] = t.index
    return TrainRow(ep.token_ids, ep.loss_mask, ep.logprobs, tuple(turn_of), episode=index)


def group_advantages(rewards: Sequence[float], groups: Sequence[Hashable], eps: float = 1e-6) -> list[float]:
    """GRPO advantages: ``A_i = (R_i - mean_g(R)) / (std_g(R) + eps)`` over the group ``g`` of
    episode i (``groups[i]``, e.g. the task id: the G rollouts of one task in a step).

    ``std_g`` is the population standard deviation over the group. A group whose rewards are all
    equal (a group of one included) gets advantage 0 for every member: no signal, not a division
    by ``eps``. Returned in the order of ``rewards``. Raises ValueError on a length mismatch, a
    non-finite reward or a negative ``eps``.
    """
    if len(rewards) != len(groups):
        raise ValueError(f"group_advantages: {len(rewards)} rewards but {len(groups)} group keys")
    if not eps >= 0:
        raise ValueError(f"group_advantages: eps must be >= 0, got {eps}")
    members: dict[Hashable, list[int]] = {}
    for i, (r, g) in enumerate(zip(rewards, groups)):
        if not math.isfinite(r):
            raise ValueError(f"group_advantages: reward {i} is not finite ({r})")
        members.setdefault(g, []).append(i)
    out = [0.0] * len(rewards)
    for idx in members.values():
        rs = [float(rewards[i]) for i in idx]
        if all(r == rs[0] for r in rs):  # exact test: a float mean of equal values may be off by 1 ulp
            continue
        mean = sum(rs) / len(rs)
        std = math.sqrt(sum((r - mean) ** 2 for r in rs) / len(rs))
        for i, r in zip(idx, rs):
            out[i] = (r - mean) / (std + eps)
    return out
