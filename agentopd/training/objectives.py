"""Objectives: one per method's loss, each declaring the teacher signal it needs.

An objective is called by the learner on each micro-batch with the student's logits at the
batch's targets (``batch.mask != 0``, row-major) and returns the loss (mean over those targets)
and its ``loss/`` metrics. It reads the teacher's signal from the batch (put there by the
teacher's relabelling); it never calls a teacher or a model. The math is in `losses`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from agentopd.core.capabilities import Signal, SignalRequest
from agentopd.training import losses
from agentopd.training.batching import Batch


class Objective(Protocol):
    """(logits_NV at the batch's targets, batch) -> (loss, metrics)."""

    needs: ClassVar[Signal]

    @property
    def request(self) -> SignalRequest:
        """What to ask the teacher for."""
        ...

    def __call__(self, logits_NV: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]: ...


def _targets(logits_NV: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(selection (B, T-1), target ids (1, N), weights (1, N)) on the logits' device."""
    sel_BT = (batch.mask != 0).to(logits_NV.device)
    return sel_BT, batch.target_ids.to(logits_NV.device)[sel_BT][None], batch.mask.to(logits_NV.device)[sel_BT][None]


@dataclass(frozen=True)
class ReverseKLPG:
    """Sampled-token reverse KL as the advantage, A = -c (log mu - log pi_T), in a clipped
    importance-weighted policy-gradient step (REFERENCES section 1)."""

    kl_coef: float = 1.0
    clip_eps: float = 0.2
    """0 disables clipping."""
    discount: float = 0.0
    needs: ClassVar[Signal] = Signal.SAMPLED_LOGPROBS

    @property
    def request(self) -> SignalRequest:
        return SignalRequest(self.needs)

    def __call__(self, logits_NV: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        sel_BT, targets_1N, _ = _targets(logits_NV, batch)
        logp_N = losses.token_logprobs(logits_NV[None], targets_1N)[0]
        # back to the (B, T-1) layout: the discount runs over positions within a row
        logp_BT = torch.zeros(sel_BT.shape, dtype=logp_N.dtype, device=sel_BT.device).masked_scatter(sel_BT, logp_N)
        dev = sel_BT.device
        if batch.teacher_logp is None:
            raise ValueError("reverse_kl_pg needs the teacher's sampled-token logprobs on the batch")
        out = losses.reverse_kl_pg(logp_BT, batch.old_logp.to(dev), batch.teacher_logp.to(dev),
                                   batch.mask.to(dev), kl_coef=self.kl_coef,
                                   clip_eps=self.clip_eps or None, discount=self.discount)
        return out.loss, out.metrics


@dataclass(frozen=True)
class SkillSD:
    """Skill-SD: clipped GRPO on the env reward (the rows' group-normalised ``advantage``) plus
    ``kl_weight`` times an importance-weighted k3 estimate of KL(student || skill-conditioned
    teacher) on the sampled tokens (REFERENCES section 4)."""

    kl_weight: float = 0.001
    """lambda; 0.001 was best in the paper (0.01 unstable)."""
    clip_eps: float = 0.2
    """0 disables clipping."""
    needs: ClassVar[Signal] = Signal.SAMPLED_LOGPROBS

    @property
    def request(self) -> SignalRequest:
        return SignalRequest(self.needs)

    def __call__(self, logits_NV: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.teacher_logp is None:
            raise ValueError("skill_sd needs the teacher's sampled-token logprobs on the batch")
        sel_BT, targets_1N, w_1N = _targets(logits_NV, batch)
        logp_1N = losses.token_logprobs(logits_NV[None], targets_1N)
        dev = sel_BT.device
        # no positional structure (no discount), so the (1, N) target layout is enough
        old_1N, tea_1N, adv_1N = (x.to(dev)[sel_BT][None] for x in
                                  (batch.old_logp, batch.teacher_logp, batch.advantage))
        out = losses.grpo_k3(logp_1N, old_1N, tea_1N, adv_1N, w_1N, kl_weight=self.kl_weight,
                             clip_eps=self.clip_eps or None)
        return out.loss, out.metrics


@dataclass(frozen=True)
class GKD:
    """Generalized JSD(beta) over the full vocabulary at every student token (REFERENCES section 2)."""

    beta: float = 0.5
    temperature: float = 0.9
    needs: ClassVar[Signal] = Signal.FULL_LOGITS

    @property
    def request(self) -> SignalRequest:
        return SignalRequest(self.needs)

    def __call__(self, logits_NV: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        _, _, w_1N = _targets(logits_NV, batch)
        t_logp_NV = batch.teacher_target_logp(logits_NV.device)
        out = losses.gkd_jsd(logits_NV[None], t_logp_NV[None], w_1N, beta=self.beta, temperature=self.temperature)
        return out.loss, out.metrics


@dataclass(frozen=True)
class GKDTopK:
    """JSD(beta) over the teacher's top-K tokens plus a tail bucket (what a served teacher allows)."""

    k: int
    beta: float = 0.5
    temperature: float = 0.9
    needs: ClassVar[Signal] = Signal.TOPK_LOGPROBS

    @property
    def request(self) -> SignalRequest:
        return SignalRequest(self.needs, topk=self.k, temperature=self.temperature)

    def __call__(self, logits_NV: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        _, _, w_1N = _targets(logits_NV, batch)
        ids_1NK, lp_1NK = batch.teacher_topk(logits_NV.device)
        out = losses.gkd_jsd_topk(logits_NV[None], ids_1NK, lp_1NK, w_1N, beta=self.beta,
                                  temperature=self.temperature)
        return out.loss, out.metrics


@dataclass(frozen=True)
class CrossEntropy:
    """Cross-entropy on expert targets: DAgger's relabelled turns, SFT's demonstrations."""

    needs: ClassVar[Signal] = Signal.TEXT

    @property
    def request(self) -> SignalRequest:
        return SignalRequest(self.needs)

    def __call__(self, logits_NV: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        _, targets_1N, w_1N = _targets(logits_NV, batch)
        out = losses.cross_entropy(logits_NV[None], targets_1N, w_1N)
        return out.loss, out.metrics
