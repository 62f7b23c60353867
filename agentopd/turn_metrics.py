"""Per-turn error accumulation: every metric split by assistant-turn index (``turn/<t>/...``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from agentopd.metrics import on_track
from agentopd.rows import Batch, TrainRow
from agentopd.types import Episode


def episode_turn_metrics(episodes: Sequence[Episode], rows: Sequence[TrainRow]) -> dict[str, float]:
    """Per turn t: teacher reverse KL on the student's tokens (mean of log mu - log pi_T, when
    the teacher gives logprobs), oracle-action match, tool-error rate, fraction still on track."""
    out: dict[str, float] = {}
    kl_sum: dict[int, float] = defaultdict(float)
    kl_n: dict[int, int] = defaultdict(int)
    for r in rows:
        if r.teacher_logp is None:
            continue
        for lp, tl, m, t in zip(r.old_logp, r.teacher_logp, r.loss_mask, r.turn_of):
            if m and t >= 0:
                kl_sum[t] += lp - tl
                kl_n[t] += 1
    for t in sorted(kl_n):
        out[f"turn/{t}/teacher_kl"] = kl_sum[t] / kl_n[t]
    if kl_n:
        out["teacher/reverse_kl"] = sum(kl_sum.values()) / sum(kl_n.values())
    horizon = max((e.num_turns for e in episodes), default=0)
    for t in range(horizon):
        reached = [e.turns[t] for e in episodes if e.num_turns > t]
        out[f"turn/{t}/episodes"] = float(len(reached))
        out[f"turn/{t}/oracle_match"] = sum(bool(x.oracle_ok) for x in reached) / len(reached)
        calls = sum(len(x.tool_results) for x in reached)
        errs = sum(1 for x in reached for r in x.tool_results if r.error)
        out[f"turn/{t}/tool_error_rate"] = errs / calls if calls else 0.0
        out[f"turn/{t}/on_track"] = sum(on_track(e, t) for e in episodes) / len(episodes)
    return out


class TurnAccumulator:
    """Collects per-turn statistics from the learner's own forward passes: the NLL of the
    targets and, when the teacher gave its argmax, student/teacher top-1 agreement."""

    def __init__(self) -> None:
        self.nll: dict[int, float] = defaultdict(float)
        self.n: dict[int, int] = defaultdict(int)
        self.agree: dict[int, int] = defaultdict(int)
        self.n_agree: dict[int, int] = defaultdict(int)

    def add(self, batch: Batch, logits_NV: torch.Tensor, logp_N: torch.Tensor) -> None:
        """`logits_NV`, `logp_N`: at the batch's target positions (``mask != 0``), row-major."""
        sel = batch.mask != 0  # (B, T-1)
        turns_N = batch.turn_of[sel]
        student_top1_N = logits_NV.argmax(-1).cpu()
        logp_N = logp_N.cpu()
        teacher_top1_N = None
        tops = [r.teacher_top1 for r in batch.rows if r.teacher_top1 is not None]
        if len(tops) == len(batch.rows):
            T = batch.input_ids.shape[1]
            full = torch.full((len(batch.rows), T), -1, dtype=torch.long)
            for i, top in enumerate(tops):
                full[i, : len(top)] = torch.tensor(top)
            teacher_top1_N = full[:, 1:][sel]
        for t in turns_N.unique().tolist():
            m = turns_N == t
            self.nll[t] += float(-logp_N[m].sum())
            self.n[t] += int(m.sum())
            if teacher_top1_N is not None:
                self.agree[t] += int((student_top1_N[m] == teacher_top1_N[m]).sum())
                self.n_agree[t] += int(m.sum())

    def metrics(self) -> dict[str, float]:
        out = {}
        for t in sorted(self.n):
            out[f"turn/{t}/target_nll"] = self.nll[t] / self.n[t]
            if self.n_agree.get(t):
                out[f"turn/{t}/top1_agree"] = self.agree[t] / self.n_agree[t]
        if self.n_agree:
            out["teacher/top1_agree"] = sum(self.agree.values()) / sum(self.n_agree.values())
        return out
