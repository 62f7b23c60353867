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
from agentopd.training import divergences, losses
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


def _buckets(logits_NV: torch.Tensor, batch: Batch, topk: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(logS, logT) at the targets: the teacher's full distribution, or its top-K + a tail."""
    if topk > 0:
        ids_1NK, lp_1NK = batch.teacher_topk(logits_NV.device)
        return divergences.topk_buckets(logits_NV, ids_1NK[0], lp_1NK[0], temperature)
    return divergences.full_buckets(logits_NV, batch.teacher_target_logp(logits_NV.device), temperature)


def _bucket_request(topk: int, temperature: float) -> SignalRequest:
    if topk > 0:
        return SignalRequest(Signal.TOPK_LOGPROBS, topk=topk, temperature=temperature)
    return SignalRequest(Signal.FULL_LOGITS)


@dataclass(frozen=True)
class AdaptiveKL:
    """AKL (REFERENCES section 5): forward and reverse KL weighted by the teacher's head/tail gaps,
    over the full vocabulary or the teacher's top-K plus a tail bucket."""

    mu: float = 0.5
    topk: int = 0
    temperature: float = 1.0

    @property
    def needs(self) -> Signal:
        return Signal.TOPK_LOGPROBS if self.topk > 0 else Signal.FULL_LOGITS

    @property
    def request(self) -> SignalRequest:
        return _bucket_request(self.topk, self.temperature)

    def __call__(self, logits_NV: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        _, _, w_1N = _targets(logits_NV, batch)
        out = divergences.akl(*_buckets(logits_NV, batch, self.topk, self.temperature), w_1N[0], mu=self.mu)
        return out.loss, out.metrics


@dataclass(frozen=True)
class TokenwiseDivergence:
    """ToDi (REFERENCES section 5): per category, sigmoid(beta log(p_T / p_S)) between forward and
    reverse KL."""

    beta: float = 1.0
    topk: int = 0
    temperature: float = 1.0

    @property
    def needs(self) -> Signal:
        return Signal.TOPK_LOGPROBS if self.topk > 0 else Signal.FULL_LOGITS

    @property
    def request(self) -> SignalRequest:
        return _bucket_request(self.topk, self.temperature)

    def __call__(self, logits_NV: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        _, _, w_1N = _targets(logits_NV, batch)
        out = divergences.todi(*_buckets(logits_NV, batch, self.topk, self.temperature), w_1N[0], beta=self.beta)
        return out.loss, out.metrics


@dataclass(frozen=True)
class EntropyAwareOPD:
    """EOPD (REFERENCES section 5): the sampled-token reverse-KL policy gradient (section 1) plus
    `fkl_coef` x forward KL on the tokens where the teacher's entropy exceeds the threshold."""

    fkl_coef: float = 1.0
    entropy_threshold: float = 0.5
    """nats (over the K + 1 buckets with a top-K teacher)."""
    kl_coef: float = 1.0
    clip_eps: float = 0.2
    topk: int = 0

    @property
    def needs(self) -> Signal:
        return Signal.TOPK_LOGPROBS if self.topk > 0 else Signal.FULL_LOGITS

    @property
    def request(self) -> SignalRequest:
        return _bucket_request(self.topk, 1.0)

    def __call__(self, logits_NV: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        pg_loss, metrics = ReverseKLPG(self.kl_coef, self.clip_eps)(logits_NV, batch)
        _, _, w_1N = _targets(logits_NV, batch)
        fkl = divergences.eopd_fkl(*_buckets(logits_NV, batch, self.topk, 1.0), w_1N[0],
                                   entropy_threshold=self.entropy_threshold)
        return pg_loss + self.fkl_coef * fkl.loss, metrics | fkl.metrics


@dataclass(frozen=True)
class SDPO:
    """SDPO (REFERENCES section 8): sg(log pi_S - log pi_T) log pi_S on the sampled tokens, the
    teacher being the student given feedback or a successful sibling; importance weight capped."""

    ratio_cap: float = 2.0
    needs: ClassVar[Signal] = Signal.SAMPLED_LOGPROBS

    @property
    def request(self) -> SignalRequest:
        return SignalRequest(self.needs)

    def __call__(self, logits_NV: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.teacher_logp is None:
            raise ValueError("sdpo needs the teacher's sampled-token logprobs on the batch")
        sel_BT, targets_1N, w_1N = _targets(logits_NV, batch)
        logp_N = losses.token_logprobs(logits_NV[None], targets_1N)[0]
        dev = sel_BT.device
        old_N, tea_N = (x.to(dev)[sel_BT] for x in (batch.old_logp, batch.teacher_logp))
        out = divergences.sdpo(logp_N, old_N, tea_N, w_1N[0], ratio_cap=self.ratio_cap)
        return out.loss, out.metrics
