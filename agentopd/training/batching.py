"""Rows -> micro-batch tensors, with the teacher's signal laid out for the objectives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from agentopd.core.rows import TrainRow


@dataclass(frozen=True)
class Batch:
    """Right-padded tensors for one micro-batch (targets shifted: position t predicts t+1).

    ``N`` below is the number of target positions (``mask != 0``), row-major: the order of the
    learner's logits."""

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    target_ids: torch.Tensor  # (B, T-1) long: input_ids[:, 1:]
    mask: torch.Tensor  # (B, T-1) float: loss on target position
    old_logp: torch.Tensor  # (B, T-1) float
    advantage: torch.Tensor  # (B, T-1) float: the row's advantage on every position (0 on padding)
    teacher_logp: torch.Tensor | None  # (B, T-1) float: the teacher's log-prob of each token
    turn_of: torch.Tensor  # (B, T-1) long
    rows: tuple[TrainRow, ...]

    def teacher_topk(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's top-k ids and log-probs at the targets: (1, N, K) each."""
        sigs = [r.signal for r in self.rows]
        if any(s is None or s.topk_ids is None for s in sigs):
            raise ValueError("rows carry no teacher top-k: relabel with a TOPK_LOGPROBS request")
        ids = torch.tensor([k for s in sigs for k in s.topk_ids or ()], device=device)  # type: ignore[union-attr]
        lp = torch.tensor([k for s in sigs for k in s.topk_logp or ()], device=device)  # type: ignore[union-attr]
        return ids[None], lp[None]

    def teacher_target_logp(self, device: torch.device) -> torch.Tensor:
        """The teacher's full-vocabulary log-probs at the targets: (N, V)."""
        parts = [r.signal.target_logp if r.signal is not None else None for r in self.rows]
        if any(p is None for p in parts):
            raise ValueError("rows carry no teacher logits: relabel with a FULL_LOGITS request")
        return torch.cat([p.to(device) for p in parts])  # type: ignore[union-attr]


def collate(rows: Sequence[TrainRow], pad_id: int) -> Batch:
    """Pad rows to one length; shift everything so index t scores token t+1."""
    T = max(len(r.input_ids) for r in rows)
    B = len(rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.float32)
    old = torch.zeros((B, T), dtype=torch.float32)
    adv = torch.zeros((B, T), dtype=torch.float32)
    tl = torch.zeros((B, T), dtype=torch.float32)
    turn = torch.full((B, T), -1, dtype=torch.long)
    have_teacher = all(r.teacher_logp is not None for r in rows)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids)
        attn[i, :n] = 1
        mask[i, :n] = torch.tensor(r.loss_mask, dtype=torch.float32)
        old[i, :n] = torch.tensor(r.old_logp)
        adv[i, :n] = r.advantage
        turn[i, :n] = torch.tensor(r.turn_of)
        if have_teacher:
            tl[i, :n] = torch.tensor(r.teacher_logp)
    # position 0 can never be a target: nothing predicts it
    return Batch(ids, attn, ids[:, 1:], mask[:, 1:], old[:, 1:], adv[:, 1:],
                 tl[:, 1:] if have_teacher else None, turn[:, 1:], tuple(rows))


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
