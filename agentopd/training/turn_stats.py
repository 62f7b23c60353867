"""Per-turn statistics of the learner's own forward passes (``turn/<t>/target_nll``, ``top1_agree``)."""

from __future__ import annotations

from collections import defaultdict

import torch

from agentopd.training import distributed, losses
from agentopd.training.batching import Batch
from agentopd.training.distributed import SINGLE, World


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

    def wrap(self, objective):
        """`objective` as the learner's loss function, feeding this accumulator on the way."""

        def loss_fn(logits_NV: torch.Tensor, batch: Batch):
            sel = (batch.mask != 0).to(logits_NV.device)
            targets_1N = batch.target_ids.to(logits_NV.device)[sel][None]
            logp_N = losses.token_logprobs(logits_NV[None], targets_1N)[0]
            self.add(batch, logits_NV.detach(), logp_N.detach())
            return objective(logits_NV, batch)

        return loss_fn

    def metrics(self, world: World = SINGLE) -> dict[str, float]:
        """Per-turn means over every rank's tokens (collective under torchrun)."""
        if world.distributed:
            flat = {f"{name}/{t}": float(v) for name, d in (("nll", self.nll), ("n", self.n), ("agree", self.agree),
                                                             ("n_agree", self.n_agree)) for t, v in d.items()}
            tot = distributed.all_sum(flat, world)
            merged = {name: {int(k.rsplit("/", 1)[1]): v for k, v in tot.items() if k.rsplit("/", 1)[0] == name}
                      for name in ("nll", "n", "agree", "n_agree")}
            self.nll = defaultdict(float, merged["nll"])
            self.n = defaultdict(int, {t: int(v) for t, v in merged["n"].items()})
            self.agree = defaultdict(int, {t: int(v) for t, v in merged["agree"].items()})
            self.n_agree = defaultdict(int, {t: int(v) for t, v in merged["n_agree"].items()})
        out = {}
        for t in sorted(self.n):
            out[f"turn/{t}/target_nll"] = self.nll[t] / self.n[t]
            if self.n_agree.get(t):
                out[f"turn/{t}/top1_agree"] = self.agree[t] / self.n_agree[t]
        if self.n_agree:
            out["teacher/top1_agree"] = sum(self.agree.values()) / sum(self.n_agree.values())
        return out
