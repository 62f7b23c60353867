"""Distillation losses as pure tensor functions (no model calls, no globals).

Every loss takes ``mask_BT`` (bool or float, shape (B, T)): 1 on student-generated tokens that
carry loss, 0 on system / user / tool / template tokens and padding. Each loss is the **mean over
masked tokens**: ``sum_t mask_t * loss_t / sum_t mask_t`` (a non-binary float mask acts as
per-token weights). Values at masked-out positions never reach the loss or its gradient, even
when they are garbage (NaN, inf, out-of-range ids in ``cross_entropy``). An all-zero mask raises
``ValueError`` (never a silent 0), as do shape mismatches.

Combining chunks: a loss over the whole batch equals the token-count-weighted average of the
losses over its row chunks, ``sum_c n_c * loss_c / sum_c n_c`` with ``n_c = mask_c.sum()``.

Section numbers refer to ``REFERENCES.md``. Returns are ``LossOutput(loss, metrics)``; metric keys
live under ``loss/``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_DISCOUNT_BLOCK = 128
"""Block length of the blocked discounted-future-sum (T/128 sequential steps, not T)."""


@dataclass(frozen=True)
class LossOutput:
    """A scalar loss and its detached diagnostics."""

    loss: torch.Tensor
    """Scalar (0-dim) tensor to call ``.backward()`` on."""
    metrics: dict[str, float]
    """Detached diagnostics, keys namespaced ``loss/...``; every loss reports ``loss/n_tokens``
    (the sum of the mask)."""


# ----------------------------------------------------------------------------- helpers


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16 / bfloat16 inputs are computed in float32; float32 / float64 are kept."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _check_mask(mask_BT: torch.Tensor, name: str) -> torch.Tensor:
    """Validate the mask (2-D, not all zero); return ``mask_BT != 0`` (B, T) bool."""
    if mask_BT.dim() != 2:
        raise ValueError(f"{name}: mask_BT must be 2-D (B, T), got shape {tuple(mask_BT.shape)}")
    sel_BT = mask_BT != 0  # (B, T) bool
    if not bool(sel_BT.any()):
        raise ValueError(
            f"{name}: mask_BT is all zero, so there are no tokens to average over "
            "(refusing to return a silent 0 loss)"
        )
    return sel_BT


def _check_shape(name: str, what: str, x: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: {what} has shape {tuple(x.shape)}, expected {tuple(shape)}")


def _weighted_mean_N(x_N: torch.Tensor, w_N: torch.Tensor) -> torch.Tensor:
    """sum(w * x) / sum(w) over selected tokens (N,)."""
    w_N = w_N.to(x_N.dtype)
    return (x_N * w_N).sum() / w_N.sum()


def masked_mean(x_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Mean of ``x_BT`` over masked tokens: ``sum(mask * x) / sum(mask)``, a scalar.

    Entries where ``mask == 0`` are excluded with ``torch.where`` (not multiplied by 0), so NaN or
    inf there changes neither the value nor the gradient. Raises ValueError on an all-zero mask
    or a shape mismatch.
    """
    sel_BT = _check_mask(mask_BT, "masked_mean")
    _check_shape("masked_mean", "x_BT", x_BT, tuple(mask_BT.shape))
    w_BT = mask_BT.to(x_BT.dtype)  # (B, T)
    x_BT = torch.where(sel_BT, x_BT, torch.zeros((), dtype=x_BT.dtype, device=x_BT.device))
    return (x_BT * w_BT).sum() / w_BT.sum()


def token_logprobs(logits_BTV: torch.Tensor, ids_BT: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits_BTV)[b, t, ids_BT[b, t]]``, shape (B, T).

    Position t's logits score ``ids_BT[:, t]`` as given: the caller does the next-token shift
    (``logits[:, :-1]`` with ``ids[:, 1:]``). Computed as ``gather - logsumexp``, so the (B, T, V)
    log-softmax is never materialized. float16 / bfloat16 logits are upcast to float32 (one
    (B, T, V) float32 temporary); the result has the compute dtype. ``ids_BT`` must be valid
    vocabulary indices everywhere (mask them yourself, e.g. with 0, before calling).
    """
    if logits_BTV.dim() != 3:
        raise ValueError(f"token_logprobs: logits_BTV must be 3-D, got {tuple(logits_BTV.shape)}")
    _check_shape("token_logprobs", "ids_BT", ids_BT, tuple(logits_BTV.shape[:2]))
    logits_BTV = logits_BTV.to(_compute_dtype(logits_BTV.dtype))
    picked_BT = logits_BTV.gather(-1, ids_BT.long().unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked_BT - torch.logsumexp(logits_BTV, dim=-1)


def discounted_future_sum(x_BT: torch.Tensor, gamma: float) -> torch.Tensor:
    """``y[b, t] = sum_{k >= t} gamma^(k - t) * x[b, k]`` within each row (B, T); no gradient.

    Rows are independent sequences, so nothing leaks across them. Exponents count positions.
    Computed in blocks of 128 positions (one small matmul per block, T/128 sequential steps).
    """
    x_BT = x_BT.detach()
    B, T = x_BT.shape
    if gamma == 0.0:
        return x_BT.clone()
    L = min(_DISCOUNT_BLOCK, T)
    idx_L = torch.arange(L, device=x_BT.device)
    lag_LL = (idx_L[None, :] - idx_L[:, None]).to(x_BT.dtype)  # (L, L): k - t
    W_LL = torch.where(lag_LL >= 0, gamma ** lag_LL.clamp(min=0), torch.zeros_like(lag_LL))
    out_BT = torch.empty_like(x_BT)
    carry_B = torch.zeros(B, dtype=x_BT.dtype, device=x_BT.device)  # y at the next block's start
    for s in range(((T - 1) // L) * L, -1, -L):
        e = min(s + L, T)
        n = e - s
        decay_n = gamma ** (n - idx_L[:n]).to(x_BT.dtype)  # (n,): gamma^(e - t)
        out_BT[:, s:e] = x_BT[:, s:e] @ W_LL[:n, :n].T + carry_B[:, None] * decay_n[None, :]
        carry_B = out_BT[:, s]
    return out_BT


# ----------------------------------------------------------------------------- section 1


def reverse_kl_pg(
    logp_new_BT: torch.Tensor,
    logp_old_BT: torch.Tensor,
    teacher_logp_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    kl_coef: float = 1.0,
    clip_eps: float | None = 0.2,
    discount: float = 0.0,
) -> LossOutput:
    """Sampled-token reverse KL used as a per-token advantage (REFERENCES.md section 1).

    ``logp_new_BT``: student logprob of the sampled token under the weights being trained (carries
    the gradient). ``logp_old_BT``: the rollout sampler's logprob mu of the same token.
    ``teacher_logp_BT``: the teacher's logprob of that token. All (B, T), position-aligned.

    - Per-token advantage ``a_t = -kl_coef * sg(logp_old_t - teacher_logp_t)`` (0 where masked).
    - With ``discount`` gamma > 0: ``A_t = sum_{k >= t, same row, mask_k != 0} gamma^(k - t) a_k``.
      The exponent counts positions, so masked tokens between turns (tool output) also discount,
      as in tinker-cookbook's ``discounted_future_sum_vectorized`` over masked advantages.
      gamma = 0 (default) is no discount: ``A_t = a_t``.
    - Ratio ``r_t = exp(logp_new_t - logp_old_t)``. ``clip_eps=None``: loss = -mean(r A);
      otherwise PPO: ``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A))``. Means over masked tokens.

    Metrics: ``loss/kl`` = mean(logp_old - teacher_logp), the sampled-token estimate of the
    sampler's reverse KL to the teacher; ``loss/ratio_mean``; ``loss/clip_frac`` (fraction of
    tokens with |r - 1| > eps, 0 without clipping); ``loss/adv_mean`` (of A); ``loss/n_tokens``.
    """
    name = "reverse_kl_pg"
    sel_BT = _check_mask(mask_BT, name)
    shape = tuple(mask_BT.shape)
    _check_shape(name, "logp_new_BT", logp_new_BT, shape)
    _check_shape(name, "logp_old_BT", logp_old_BT, shape)
    _check_shape(name, "teacher_logp_BT", teacher_logp_BT, shape)
    if clip_eps is not None and not clip_eps > 0:
        raise ValueError(f"{name}: clip_eps must be > 0 or None, got {clip_eps}")
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"{name}: discount must be in [0, 1], got {discount}")

    dtype = _compute_dtype(logp_new_BT.dtype)
    w_BT = mask_BT.to(dtype)  # (B, T)
    n_tok = w_BT.sum()
    old_BT = logp_old_BT.detach().to(dtype).masked_fill(~sel_BT, 0.0)
    tea_BT = teacher_logp_BT.detach().to(dtype).masked_fill(~sel_BT, 0.0)
    kl_BT = old_BT - tea_BT  # (B, T), 0 where masked
    adv_BT = discounted_future_sum(-kl_coef * kl_BT, discount)  # (B, T), no grad

    # masked_fill before exp: garbage at masked positions can neither overflow nor NaN the grad.
    log_ratio_BT = (logp_new_BT.to(dtype) - old_BT).masked_fill(~sel_BT, 0.0)
    ratio_BT = torch.exp(log_ratio_BT)  # (B, T)
    obj_BT = ratio_BT * adv_BT
    if clip_eps is not None:
        clipped_BT = ratio_BT.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv_BT
        obj_BT = torch.minimum(obj_BT, clipped_BT)
        clip_frac = ((ratio_BT.detach() - 1.0).abs() > clip_eps).to(dtype)
    else:
        clip_frac = torch.zeros_like(w_BT)
    loss = -(obj_BT * w_BT).sum() / n_tok

    with torch.no_grad():
        sums = torch.stack([
            (kl_BT * w_BT).sum(), (ratio_BT * w_BT).sum(), (clip_frac * w_BT).sum(),
            (adv_BT * w_BT).sum(), n_tok,
        ]).tolist()  # one device sync for all metrics
    n = sums[4]
    return LossOutput(loss, {
        "loss/kl": sums[0] / n, "loss/ratio_mean": sums[1] / n, "loss/clip_frac": sums[2] / n,
        "loss/adv_mean": sums[3] / n, "loss/n_tokens": n,
    })


# ----------------------------------------------------------------------------- section 2


def _generalized_jsd_N(logS_NC: torch.Tensor, logT_NC: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-row JSD_beta between two log-distributions over C categories, shape (N,).

    ``beta*KL(T||M) + (1-beta)*KL(S||M)``, ``M = beta*T + (1-beta)*S`` with ``log M`` from a
    logsumexp; beta = 0 is KL(T||S) and beta = 1 is KL(S||T), the plain divergences. Teacher
    entries may be -inf (zero mass); student entries must be finite.
    """
    pT_NC = logT_NC.exp()
    has_T = pT_NC > 0
    logT_safe = torch.where(has_T, logT_NC, torch.zeros_like(logT_NC))  # no -inf in products
    pS_NC = logS_NC.exp()
    if beta == 0.0:
        return (pT_NC * (logT_safe - logS_NC)).sum(-1)
    if beta == 1.0:
        return (pS_NC * (logS_NC - logT_NC)).sum(-1)
    logM_NC = torch.logaddexp(logT_NC + math.log(beta), logS_NC + math.log1p(-beta))
    kl_T = torch.where(has_T, pT_NC * (logT_safe - logM_NC), torch.zeros_like(logM_NC)).sum(-1)
    kl_S = (pS_NC * (logS_NC - logM_NC)).sum(-1)
    return beta * kl_T + (1.0 - beta) * kl_S


def _check_beta_temperature(name: str, beta: float, temperature: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"{name}: beta must be in [0, 1], got {beta}")
    if not temperature > 0:
        raise ValueError(f"{name}: temperature must be > 0, got {temperature}")


def _check_logits(name: str, logits_BTV: torch.Tensor, mask_BT: torch.Tensor, what: str) -> None:
    if logits_BTV.dim() != 3 or tuple(logits_BTV.shape[:2]) != tuple(mask_BT.shape):
        raise ValueError(
            f"{name}: {what} has shape {tuple(logits_BTV.shape)}, expected "
            f"(B, T, V) with (B, T) = {tuple(mask_BT.shape)}"
        )


def gkd_jsd(
    student_logits_BTV: torch.Tensor,
    teacher_logits_BTV: torch.Tensor,
    mask_BT: torch.Tensor,
    beta: float = 0.5,
    temperature: float = 0.9,
) -> LossOutput:
    """Generalized JSD(beta) over the full vocabulary, per token (REFERENCES.md section 2, GKD).

    ``P_S = softmax(student / temperature)``, ``P_T = softmax(teacher / temperature)``,
    ``M = beta P_T + (1 - beta) P_S``, ``JSD_beta = beta KL(P_T||M) + (1 - beta) KL(P_S||M)``;
    exactly ``beta == 0`` gives forward KL(P_T||P_S) and ``beta == 1`` reverse KL(P_S||P_T).
    Mean over masked tokens. Computed in log space (``log M`` by logsumexp). The teacher is
    detached: gradient reaches the student logits only. Only masked rows are gathered before the
    vocabulary-wide work, so masked-out positions cost nothing and cannot leak NaN.
    Teacher logits may be -inf (e.g. padded vocabulary); student logits must be finite.

    Metrics: ``loss/jsd`` (the loss value; the plain KL at the endpoints), ``loss/n_tokens``.
    """
    name = "gkd_jsd"
    sel_BT = _check_mask(mask_BT, name)
    _check_logits(name, student_logits_BTV, mask_BT, "student_logits_BTV")
    _check_logits(name, teacher_logits_BTV, mask_BT, "teacher_logits_BTV")
    if student_logits_BTV.shape[-1] != teacher_logits_BTV.shape[-1]:
        raise ValueError(
            f"{name}: vocab sizes differ: student {student_logits_BTV.shape[-1]}, "
            f"teacher {teacher_logits_BTV.shape[-1]}"
        )
    _check_beta_temperature(name, beta, temperature)

    dtype = _compute_dtype(student_logits_BTV.dtype)
    w_N = mask_BT[sel_BT]  # (N,)
    logS_NV = torch.log_softmax(student_logits_BTV[sel_BT].to(dtype) / temperature, dim=-1)
    with torch.no_grad():
        logT_NV = torch.log_softmax(teacher_logits_BTV[sel_BT].to(dtype) / temperature, dim=-1)
    loss = _weighted_mean_N(_generalized_jsd_N(logS_NV, logT_NV, beta), w_N)
    return LossOutput(loss, {"loss/jsd": loss.item(), "loss/n_tokens": float(w_N.sum())})


def gkd_jsd_topk(
    student_logits_BTV: torch.Tensor,
    teacher_topk_ids_BTK: torch.Tensor,
    teacher_topk_logp_BTK: torch.Tensor,
    mask_BT: torch.Tensor,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> LossOutput:
    """JSD(beta) on the teacher's top-k tokens plus one tail bucket (REFERENCES.md section 2).

    For teachers that serve only top-k logprobs. Per token, K + 1 buckets: the K teacher ids
    (distinct) and a tail holding the rest of the vocabulary.

    - Teacher: ``exp(teacher_topk_logp)`` on the K buckets, tail ``1 - sum`` clamped to >= 0.
    - Student: ``P_S = softmax(student / temperature)`` at the same ids, tail
      ``1 - sum = -expm1(logsumexp(log P_S[ids]))``.
    - Both tails are floored at the dtype's smallest normal number (``finfo.tiny``), which keeps
      logs and gradients finite when the top-k covers the whole vocabulary; its effect on the
      value is below 1e-37.
    - Then the same JSD_beta as ``gkd_jsd`` on the K + 1 buckets; mean over masked tokens.

    Temperature convention: ``teacher_topk_logp_BTK`` is used exactly as given (log-probs as the
    server returned them; no temperature is applied to them here). ``temperature`` divides the
    student logits only. To compare both at temperature tau, pass teacher logprobs computed at
    tau (``log_softmax(teacher_logits / tau)``) and ``temperature=tau``; with K = V this equals
    ``gkd_jsd(..., temperature=tau)``. The default 1.0 matches servers that return logprobs of
    the raw (untempered) distribution.

    Metrics: ``loss/jsd``, ``loss/teacher_tail_mass`` and ``loss/student_tail_mass`` (mean tail
    probability over masked tokens; watch them to see how much mass the top-k misses),
    ``loss/n_tokens``.
    """
    name = "gkd_jsd_topk"
    sel_BT = _check_mask(mask_BT, name)
    _check_logits(name, student_logits_BTV, mask_BT, "student_logits_BTV")
    if teacher_topk_ids_BTK.dim() != 3 or tuple(teacher_topk_ids_BTK.shape[:2]) != tuple(mask_BT.shape):
        raise ValueError(
            f"{name}: teacher_topk_ids_BTK has shape {tuple(teacher_topk_ids_BTK.shape)}, "
            f"expected (B, T, K) with (B, T) = {tuple(mask_BT.shape)}"
        )
    _check_shape(name, "teacher_topk_logp_BTK", teacher_topk_logp_BTK, tuple(teacher_topk_ids_BTK.shape))
    K, V = teacher_topk_ids_BTK.shape[-1], student_logits_BTV.shape[-1]
    if not 1 <= K <= V:
        raise ValueError(f"{name}: need 1 <= K <= V, got K={K}, V={V}")
    _check_beta_temperature(name, beta, temperature)

    dtype = _compute_dtype(student_logits_BTV.dtype)
    tiny = torch.finfo(dtype).tiny
    w_N = mask_BT[sel_BT]  # (N,)
    ids_NK = teacher_topk_ids_BTK[sel_BT].long()  # (N, K)
    z_NV = student_logits_BTV[sel_BT].to(dtype) / temperature  # (N, V)
    logS_NK = z_NV.gather(-1, ids_NK) - torch.logsumexp(z_NV, dim=-1, keepdim=True)  # (N, K)
    tailS_N = (-torch.expm1(torch.logsumexp(logS_NK, dim=-1))).clamp(min=tiny)  # (N,)
    logS_NC = torch.cat([logS_NK, tailS_N.log()[:, None]], dim=-1)  # (N, K+1)
    with torch.no_grad():
        logT_NK = teacher_topk_logp_BTK[sel_BT].to(dtype)  # (N, K)
        tailT_N = (-torch.expm1(torch.logsumexp(logT_NK, dim=-1))).clamp(min=tiny)  # (N,)
        logT_NC = torch.cat([logT_NK, tailT_N.log()[:, None]], dim=-1)  # (N, K+1)
    loss = _weighted_mean_N(_generalized_jsd_N(logS_NC, logT_NC, beta), w_N)
    with torch.no_grad():
        stats = torch.stack([loss.detach(), _weighted_mean_N(tailT_N, w_N),
                             _weighted_mean_N(tailS_N, w_N), w_N.sum().to(dtype)]).tolist()
    return LossOutput(loss, {
        "loss/jsd": stats[0], "loss/teacher_tail_mass": stats[1],
        "loss/student_tail_mass": stats[2], "loss/n_tokens": stats[3],
    })


# ----------------------------------------------------------------------------- section 4


def grpo_k3(
    logp_BT: torch.Tensor,
    old_logp_BT: torch.Tensor,
    teacher_logp_BT: torch.Tensor,
    adv_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    kl_weight: float = 0.001,
    clip_eps: float | None = 0.2,
) -> LossOutput:
    """Skill-SD: clipped GRPO on the env reward plus an importance-weighted k3 KL(S||T) term
    (REFERENCES.md section 4).

    ``logp_BT``: student logprob of the sampled token under the weights being trained (carries
    the gradient). ``old_logp_BT``: the rollout sampler's logprob pi_old of that token.
    ``teacher_logp_BT``: the (skill-conditioned) teacher's logprob of it, fixed data.
    ``adv_BT``: the episode's GRPO advantage at every position of its row (fixed data). All
    (B, T), position-aligned; ``old_logp_BT``, ``teacher_logp_BT`` and ``adv_BT`` are detached.

    - Ratio ``r_t = exp(logp_t - old_logp_t)``, the same as ``rho_t = pi_theta / sg(pi_old)``.
    - Policy term ``pg = -mean_t min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t)``;
      ``clip_eps=None`` gives ``-mean_t r_t A_t``.
    - ``l_t = logp_t - teacher_logp_t``, ``k3_t = exp(-l_t) - 1 + l_t >= 0`` (0 iff the student
      and the teacher agree on the token), computed as ``expm1(-l) + l``.
    - ``loss = pg + kl_weight * mean_t r_t k3_t``; both means over masked tokens. ``r_t`` in the
      k3 term is not clipped, and the gradient reaches ``logp`` through both ``r_t`` and ``l_t``.

    Metrics: ``loss/pg``; ``loss/k3`` (mean of r k3, the importance-weighted estimate of
    KL(S||T)); ``loss/k3_raw`` (mean of k3); ``loss/ratio_mean``; ``loss/clip_frac`` (fraction of
    tokens with |r - 1| > eps, 0 without clipping); ``loss/adv_abs_mean`` (mean |A|; 0 means the
    step's groups carried no reward signal); ``loss/n_tokens``.
    """
    name = "grpo_k3"
    sel_BT = _check_mask(mask_BT, name)
    shape = tuple(mask_BT.shape)
    _check_shape(name, "logp_BT", logp_BT, shape)
    _check_shape(name, "old_logp_BT", old_logp_BT, shape)
    _check_shape(name, "teacher_logp_BT", teacher_logp_BT, shape)
    _check_shape(name, "adv_BT", adv_BT, shape)
    if clip_eps is not None and not clip_eps > 0:
        raise ValueError(f"{name}: clip_eps must be > 0 or None, got {clip_eps}")
    if not (kl_weight >= 0 and math.isfinite(kl_weight)):
        raise ValueError(f"{name}: kl_weight must be finite and >= 0, got {kl_weight}")

    dtype = _compute_dtype(logp_BT.dtype)
    w_BT = mask_BT.to(dtype)  # (B, T)
    n_tok = w_BT.sum()
    # masked_fill before any exp: garbage at masked positions can neither overflow nor NaN the grad.
    new_BT = logp_BT.to(dtype).masked_fill(~sel_BT, 0.0)
    old_BT = old_logp_BT.detach().to(dtype).masked_fill(~sel_BT, 0.0)
    tea_BT = teacher_logp_BT.detach().to(dtype).masked_fill(~sel_BT, 0.0)
    A_BT = adv_BT.detach().to(dtype).masked_fill(~sel_BT, 0.0)

    ratio_BT = torch.exp(new_BT - old_BT)  # (B, T): r_t = rho_t, 1 where masked
    obj_BT = ratio_BT * A_BT
    if clip_eps is not None:
        obj_BT = torch.minimum(obj_BT, ratio_BT.clamp(1.0 - clip_eps, 1.0 + clip_eps) * A_BT)
        clip_frac_BT = ((ratio_BT.detach() - 1.0).abs() > clip_eps).to(dtype)
    else:
        clip_frac_BT = torch.zeros_like(w_BT)
    pg = -(obj_BT * w_BT).sum() / n_tok

    l_BT = new_BT - tea_BT  # (B, T): log pi_S - log pi_T, 0 where masked
    k3_BT = torch.expm1(-l_BT) + l_BT  # (B, T) >= 0, 0 where masked
    k3 = (ratio_BT * k3_BT * w_BT).sum() / n_tok
    loss = pg + kl_weight * k3

    with torch.no_grad():
        sums = torch.stack([
            (k3_BT * w_BT).sum(), (ratio_BT * w_BT).sum(), (clip_frac_BT * w_BT).sum(),
            (A_BT.abs() * w_BT).sum(), n_tok, pg.detach(), k3.detach(),
        ]).tolist()  # one device sync for all metrics
    n = sums[4]
    return LossOutput(loss, {
        "loss/pg": sums[5], "loss/k3": sums[6], "loss/k3_raw": sums[0] / n,
        "loss/ratio_mean": sums[1] / n, "loss/clip_frac": sums[2] / n,
        "loss/adv_abs_mean": sums[3] / n, "loss/n_tokens": n,
    })


# ----------------------------------------------------------------------------- section 7


def cross_entropy(
    logits_BTV: torch.Tensor, target_ids_BT: torch.Tensor, mask_BT: torch.Tensor
) -> LossOutput:
    """Token cross-entropy ``-log softmax(logits)[target]`` (SFT, DAgger relabeling; section 7).

    The mask selects the target tokens (e.g. the teacher-written turn); mean over masked tokens.
    Position t's logits score ``target_ids_BT[:, t]``: the caller does the next-token shift.
    Targets at masked-out positions are never read (any value, e.g. -100, is fine there).

    Metrics: ``loss/ce`` (the loss value), ``loss/n_tokens``.
    """
    name = "cross_entropy"
    sel_BT = _check_mask(mask_BT, name)
    _check_logits(name, logits_BTV, mask_BT, "logits_BTV")
    _check_shape(name, "target_ids_BT", target_ids_BT, tuple(mask_BT.shape))
    w_N = mask_BT[sel_BT]  # (N,)
    logits_1NV = logits_BTV[sel_BT][None]  # (1, N, V)
    logp_N = token_logprobs(logits_1NV, target_ids_BT[sel_BT][None])[0]  # (N,)
    loss = -_weighted_mean_N(logp_N, w_N)
    return LossOutput(loss, {"loss/ce": loss.item(), "loss/n_tokens": float(w_N.sum())})
