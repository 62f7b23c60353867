"""Training rows: what the learner consumes, built from episodes by a teacher's relabeling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TrainRow:
    """One training sequence (an episode, or one relabeled turn of it)."""

    input_ids: tuple[int, ...]
    """The token sequence the student is trained on."""
    loss_mask: tuple[int, ...]
    """1 where the token is a training target (student-sampled, or an oracle's target)."""
    old_logp: tuple[float, ...]
    """Sampler logprob of each token (0.0 where not sampled): mu in the importance ratio."""
    turn_of: tuple[int, ...]
    """Assistant-turn index of each token (-1 outside assistant turns): for per-turn metrics."""
    teacher_logp: tuple[float, ...] | None = None
    """Teacher logprob of each token (white-box and self teachers)."""
    teacher_top1: tuple[int, ...] | None = None
    """Teacher argmax next-token id at each position's prediction (aligned with input_ids)."""
    teacher_topk_ids: tuple[tuple[int, ...], ...] | None = None
    """The teacher's top-k token ids at each target position (``loss_mask[p + 1] == 1``), in
    order: what a served teacher returns instead of full logits (top-k GKD)."""
    teacher_topk_logp: tuple[tuple[float, ...], ...] | None = None
    """Their log-probs (at the GKD temperature), aligned with `teacher_topk_ids`."""
    teacher_ids: tuple[int, ...] | None = None
    """The teacher's own view of the sequence (self teacher: with the skill card), when it
    differs from input_ids; aligned by `teacher_offset`."""
    teacher_offset: int = 0
    """teacher position = student position + teacher_offset (for positions after the prefix)."""
    episode: int = -1
    """Index of the source episode in the step's batch."""

    def __post_init__(self) -> None:
        n = len(self.input_ids)
        if not (len(self.loss_mask) == len(self.old_logp) == len(self.turn_of) == n):
            raise ValueError("TrainRow fields must all have the length of input_ids")
        if self.teacher_logp is not None and len(self.teacher_logp) != n:
            raise ValueError("teacher_logp must have the length of input_ids")
        if self.teacher_topk_ids is not None and not (
                len(self.teacher_topk_ids) == len(self.teacher_topk_logp or ()) == sum(self.loss_mask[1:])):
            raise ValueError("teacher_topk_ids/logp need one entry per target position")

    @property
    def n_targets(self) -> int:
        return sum(self.loss_mask)


@dataclass(frozen=True)
class Batch:
    """Right-padded tensors for one micro-batch (targets shifted: position t predicts t+1)."""

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    target_ids: torch.Tensor  # (B, T-1) long: input_ids[:, 1:]
    mask: torch.Tensor  # (B, T-1) float: loss on target position
    old_logp: torch.Tensor  # (B, T-1) float
    teacher_logp: torch.Tensor | None  # (B, T-1) float
    turn_of: torch.Tensor  # (B, T-1) long
    rows: tuple[TrainRow, ...]


def collate(rows: Sequence[TrainRow], pad_id: int) -> Batch:
    """Pad rows to one length; shift everything so index t scores token t+1."""
    T = max(len(r.input_ids) for r in rows)
    B = len(rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.float32)
    old = torch.zeros((B, T), dtype=torch.float32)
    tl = torch.zeros((B, T), dtype=torch.float32)
    turn = torch.full((B, T), -1, dtype=torch.long)
    have_teacher = all(r.teacher_logp is not None for r in rows)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids)
        attn[i, :n] = 1
        mask[i, :n] = torch.tensor(r.loss_mask, dtype=torch.float32)
        old[i, :n] = torch.tensor(r.old_logp)
        turn[i, :n] = torch.tensor(r.turn_of)
        if have_teacher:
            tl[i, :n] = torch.tensor(r.teacher_logp)
    # position 0 can never be a target: nothing predicts it
    return Batch(ids, attn, ids[:, 1:], mask[:, 1:], old[:, 1:], tl[:, 1:] if have_teacher else None,
                 turn[:, 1:], tuple(rows))


def micro_batches(rows: Sequence[TrainRow], max_tokens: int) -> list[list[TrainRow]]:
    """Group rows (sorted by length) so each group's padded size B*T stays under `max_tokens`
    (a single longer row gets a group of its own)."""
    order = sorted(rows, key=lambda r: len(r.input_ids))
    groups: list[list[TrainRow]] = []
    cur: list[TrainRow] = []
    for r in order:
        if cur and (len(cur) + 1) * len(r.input_ids) > max_tokens:
            groups.append(cur)
            cur = []
        cur.append(r)
    if cur:
        groups.append(cur)
    return groups
