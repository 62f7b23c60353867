"""The seed's objective families as pure tensor functions (REFERENCES.md sections 5, 6, 8).

Divergences work on per-token log-distributions over C categories, ``logS_NC`` (student,
carries the gradient) and ``logT_NC`` (teacher, detached), one row per target token, with
per-token weights ``w_N`` (the mask; a loss is the weighted mean over rows). C is the whole
vocabulary (`full_buckets`) or, for a served teacher, its top-K tokens plus one tail bucket
holding the rest of the mass (`topk_buckets`), so every divergence here also runs on top-k
logprobs; on buckets, "the teacher's entropy" and "sorted teacher probabilities" are those of
the K + 1 buckets (a lower bound on the full entropy).

- `akl`: adaptive KL (Wu et al. 2025): head/tail gaps weight forward and reverse KL.
- `todi`: token-wise divergence (ToDi): a per-category sigmoid weight between the two KLs.
- `eopd_fkl`: EOPD's forward-KL term on the tokens where the teacher's entropy is high.
- `extrapolated_logp`: G-OPD / ExOPD's reward target, lambda log pi_T + (1 - lambda) log pi_ref.
- `tip_weights` / `tip_select`: TIP token importance and the draw of a fraction of tokens.
- `sdpo`: SDPO's self-distillation policy gradient with the importance weight capped.

Every function validates shapes and refuses an all-zero weight vector, like `losses`.
"""

from __future__ import annotations

import math

import torch

from agentopd.training.losses import LossOutput


def _check_rows(name: str, logS_NC: torch.Tensor, logT_NC: torch.Tensor, w_N: torch.Tensor) -> None:
    if logS_NC.dim() != 2 or logS_NC.shape != logT_NC.shape:
        raise ValueError(f"{name}: logS_NC and logT_NC must be (N, C) of one shape, got "
                         f"{tuple(logS_NC.shape)} and {tuple(logT_NC.shape)}")
    if w_N.shape != logS_NC.shape[:1]:
        raise ValueError(f"{name}: w_N must be (N,) = ({logS_NC.shape[0]},), got {tuple(w_N.shape)}")
    if not bool((w_N != 0).any()):
        raise ValueError(f"{name}: all weights are zero (refusing to return a silent 0 loss)")


def _mean(x_N: torch.Tensor, w_N: torch.Tensor) -> torch.Tensor:
    w = w_N.to(x_N.dtype)
    return (x_N * w).sum() / w.sum()


def kl_rows(logP_NC: torch.Tensor, logQ_NC: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) per row, (N,); categories where P has no mass contribute 0 (even if Q is -inf)."""
    p = logP_NC.exp()
    diff = torch.where(p > 0, logP_NC - logQ_NC, torch.zeros_like(logP_NC))
    return (p * diff).sum(-1)


def entropy_rows(logP_NC: torch.Tensor) -> torch.Tensor:
    """Shannon entropy per row, (N,), in nats."""
    p = logP_NC.exp()
    return -(p * torch.where(p > 0, logP_NC, torch.zeros_like(logP_NC))).sum(-1)


def full_buckets(student_logits_NV: torch.Tensor, teacher_logp_NV: torch.Tensor,
                 temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(logS, logT) over the whole vocabulary at `temperature` (the teacher detached)."""
    if student_logits_NV.shape != teacher_logp_NV.shape:
        raise ValueError(f"full_buckets: student {tuple(student_logits_NV.shape)} vs teacher "
                         f"{tuple(teacher_logp_NV.shape)}")
    logS = torch.log_softmax(student_logits_NV.float() / temperature, dim=-1)
    with torch.no_grad():
        logT = torch.log_softmax(teacher_logp_NV.float() / temperature, dim=-1)
    return logS, logT


def topk_buckets(student_logits_NV: torch.Tensor, ids_NK: torch.Tensor, teacher_logp_NK: torch.Tensor,
                 temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(logS, logT) over K + 1 buckets: the teacher's top-K ids and a tail with the rest of each
    side's mass (tails floored at the smallest normal float, so logs stay finite). The teacher's
    log-probs are used as given (a server's, at temperature 1); `temperature` divides the
    student's logits only, as in `losses.gkd_jsd_topk`."""
    if ids_NK.shape != teacher_logp_NK.shape or ids_NK.shape[0] != student_logits_NV.shape[0]:
        raise ValueError(f"topk_buckets: ids {tuple(ids_NK.shape)}, logp {tuple(teacher_logp_NK.shape)}, "
                         f"student {tuple(student_logits_NV.shape)}")
    z = student_logits_NV.float() / temperature
    tiny = torch.finfo(torch.float32).tiny
    logS_NK = z.gather(-1, ids_NK.long()) - torch.logsumexp(z, dim=-1, keepdim=True)
    tailS = (-torch.expm1(torch.logsumexp(logS_NK, dim=-1))).clamp(min=tiny)
    with torch.no_grad():
        logT_NK = teacher_logp_NK.float()
        tailT = (-torch.expm1(torch.logsumexp(logT_NK, dim=-1))).clamp(min=tiny)
        logT = torch.cat([logT_NK, tailT.log()[:, None]], dim=-1)
    return torch.cat([logS_NK, tailS.log()[:, None]], dim=-1), logT


# ----------------------------------------------------------------------------- section 5


def akl(logS_NC: torch.Tensor, logT_NC: torch.Tensor, w_N: torch.Tensor, mu: float = 0.5) -> LossOutput:
    """Adaptive KL: per token, sort the teacher's probabilities; the head is the categories
    whose cumulative teacher mass is <= `mu`, the tail the rest; ``g_head = sum_head |p_T -
    p_S|``, ``g_tail`` likewise; loss = ``g_head / (g_head + g_tail) * KL(T||S) + g_tail /
    (g_head + g_tail) * KL(S||T)``, the weights detached (both 1/2 where the gaps are 0).
    With a teacher whose top category alone holds more than `mu`, the head is empty and the
    loss is the reverse KL.

    Metrics: ``loss/akl``, ``loss/head_weight`` (mean weight on the forward KL),
    ``loss/teacher_entropy``, ``loss/n_tokens``.
    """
    name = "akl"
    _check_rows(name, logS_NC, logT_NC, w_N)
    if not 0.0 < mu < 1.0:
        raise ValueError(f"{name}: mu must be in (0, 1), got {mu}")
    with torch.no_grad():
        pT = logT_NC.exp()
        pS = logS_NC.detach().exp()
        sorted_T, order = pT.sort(dim=-1, descending=True)
        head_sorted = sorted_T.cumsum(-1) <= mu
        head = torch.zeros_like(head_sorted).scatter(-1, order, head_sorted)
        gap = (pT - pS).abs()
        g_head = (gap * head).sum(-1)
        g_tail = (gap * ~head).sum(-1)
        total = g_head + g_tail
        w_head = torch.where(total > 0, g_head / total.clamp(min=1e-30), torch.full_like(total, 0.5))
    per_N = w_head * kl_rows(logT_NC, logS_NC) + (1.0 - w_head) * kl_rows(logS_NC, logT_NC)
    loss = _mean(per_N, w_N)
    with torch.no_grad():
        stats = torch.stack([loss.detach(), _mean(w_head, w_N), _mean(entropy_rows(logT_NC), w_N),
                             w_N.float().sum()]).tolist()
    return LossOutput(loss, {"loss/akl": stats[0], "loss/head_weight": stats[1],
                             "loss/teacher_entropy": stats[2], "loss/n_tokens": stats[3]})


def todi(logS_NC: torch.Tensor, logT_NC: torch.Tensor, w_N: torch.Tensor, beta: float = 1.0) -> LossOutput:
    """ToDi: ``sum_v [w_v p_T log(p_T / p_S) + (1 - w_v) p_S log(p_S / p_T)]`` with
    ``w_v = sigmoid(beta * log(p_T,v / p_S,v))`` detached: forward KL where the student
    under-estimates the teacher, reverse KL where it over-estimates.

    Metrics: ``loss/todi``, ``loss/fkl_weight`` (mean over tokens of sum_v p_T,v w_v),
    ``loss/teacher_entropy``, ``loss/n_tokens``.
    """
    name = "todi"
    _check_rows(name, logS_NC, logT_NC, w_N)
    if not beta > 0:
        raise ValueError(f"{name}: beta must be > 0, got {beta}")
    pT, pS = logT_NC.exp(), logS_NC.exp()
    finite = torch.isfinite(logT_NC)  # a -inf teacher category (a padded vocabulary) is left out of both terms
    logT_safe = torch.where(finite, logT_NC, torch.zeros_like(logT_NC))
    with torch.no_grad():
        w_NC = torch.sigmoid(beta * (logT_safe - logS_NC.detach()))
    fkl = torch.where(finite, pT * (logT_safe - logS_NC), torch.zeros_like(pT))
    rkl = torch.where(finite, pS * (logS_NC - logT_safe), torch.zeros_like(pS))
    per_N = (w_NC * fkl + (1.0 - w_NC) * rkl).sum(-1)
    loss = _mean(per_N, w_N)
    with torch.no_grad():
        stats = torch.stack([loss.detach(), _mean((pT * w_NC).sum(-1), w_N), _mean(entropy_rows(logT_NC), w_N),
                             w_N.float().sum()]).tolist()
    return LossOutput(loss, {"loss/todi": stats[0], "loss/fkl_weight": stats[1],
                             "loss/teacher_entropy": stats[2], "loss/n_tokens": stats[3]})


def eopd_fkl(logS_NC: torch.Tensor, logT_NC: torch.Tensor, w_N: torch.Tensor,
             entropy_threshold: float = 0.5) -> LossOutput:
    """EOPD's added term: forward KL(T||S) on the tokens whose teacher entropy exceeds
    `entropy_threshold` nats, averaged over all tokens (a token below the threshold adds 0), so
    it adds to a reverse-KL loss averaged the same way without reweighting it.

    Metrics: ``loss/eopd_fkl``, ``loss/high_entropy_frac`` (fraction of tokens gated in),
    ``loss/teacher_entropy``, ``loss/n_tokens``.
    """
    name = "eopd_fkl"
    _check_rows(name, logS_NC, logT_NC, w_N)
    if not entropy_threshold >= 0:
        raise ValueError(f"{name}: entropy_threshold must be >= 0, got {entropy_threshold}")
    with torch.no_grad():
        h_N = entropy_rows(logT_NC)
        gate_N = (h_N > entropy_threshold).float()
    loss = _mean(gate_N * kl_rows(logT_NC, logS_NC), w_N)
    with torch.no_grad():
        stats = torch.stack([loss.detach(), _mean(gate_N, w_N), _mean(h_N, w_N), w_N.float().sum()]).tolist()
    return LossOutput(loss, {"loss/eopd_fkl": stats[0], "loss/high_entropy_frac": stats[1],
                             "loss/teacher_entropy": stats[2], "loss/n_tokens": stats[3]})


def extrapolated_logp(teacher_logp: torch.Tensor, ref_logp: torch.Tensor, lam: float) -> torch.Tensor:
    """G-OPD / ExOPD: the advantage ``lam (log pi_T - log pi_ref) - (log pi_theta - log pi_ref)``
    equals the standard OPD advantage against the target ``lam log pi_T + (1 - lam) log pi_ref``,
    so this target replaces the teacher's log-prob in `losses.reverse_kl_pg`; ``lam = 1`` is
    standard OPD exactly, ``lam > 1`` extrapolates beyond the teacher."""
    if teacher_logp.shape != ref_logp.shape:
        raise ValueError(f"extrapolated_logp: teacher {tuple(teacher_logp.shape)} vs ref {tuple(ref_logp.shape)}")
    if lam == 1.0:
        return teacher_logp
    return lam * teacher_logp + (1.0 - lam) * ref_logp


# ----------------------------------------------------------------------------- section 6


def tip_weights(student_entropy_N: torch.Tensor, jsd_N: torch.Tensor | None, vocab_size: int,
                alpha: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    """TIP token importance: ``(H_S / ln V)^alpha * (JSD_1/2 / ln 2)^gamma`` per token (N,).
    ``gamma = 0`` (or no `jsd_N`: a sampled-token teacher) weights by the student's entropy only."""
    if vocab_size < 2:
        raise ValueError("tip_weights: vocab_size must be >= 2")
    w = (student_entropy_N.clamp(min=0) / math.log(vocab_size)) ** alpha
    if gamma != 0:
        if jsd_N is None:
            raise ValueError("tip_weights: gamma > 0 needs the teacher-student JSD (a teacher with top-k or full "
                             "logprobs); use gamma 0 to select by student entropy alone")
        w = w * (jsd_N.clamp(min=0) / math.log(2.0)) ** gamma
    return w


def tip_select(weights_N: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices (sorted) of ``k = floor(ratio * N)`` tokens (at least 1) drawn without replacement
    with probability proportional to `weights_N`. Tokens of weight 0 are drawn only once every
    positive one is (a tiny floor keeps the draw defined)."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"tip_select: ratio must be in (0, 1], got {ratio}")
    n = weights_N.shape[0]
    k = max(1, math.floor(ratio * n))
    if k >= n:
        return torch.arange(n)
    w = weights_N.detach().double().cpu().clamp(min=0)
    floor = (w[w > 0].min() * 1e-9) if bool((w > 0).any()) else torch.tensor(1.0, dtype=torch.float64)
    w = torch.where(w > 0, w, floor)
    return torch.multinomial(w, k, replacement=False, generator=generator).sort().values


# ----------------------------------------------------------------------------- section 8


def sdpo(logp_new_N: torch.Tensor, logp_old_N: torch.Tensor, teacher_logp_N: torch.Tensor, w_N: torch.Tensor,
         ratio_cap: float = 2.0) -> LossOutput:
    """SDPO: ``loss = mean_t min(r_t, cap) * sg(log pi_S - log pi_T) * log pi_S`` over the
    sampled tokens, with ``r_t = pi_S / mu`` detached and capped (at 2 as published); its
    gradient lowers the tokens the feedback-conditioned teacher finds less likely than the
    student does, and raises the others.

    Metrics: ``loss/sdpo_gap`` (mean of log pi_S - log pi_T), ``loss/ratio_mean`` (capped),
    ``loss/capped_frac``, ``loss/n_tokens``.
    """
    name = "sdpo"
    n = logp_new_N.shape
    if logp_old_N.shape != n or teacher_logp_N.shape != n or w_N.shape != n or len(n) != 1:
        raise ValueError(f"{name}: all inputs must be (N,) of one shape")
    if not bool((w_N != 0).any()):
        raise ValueError(f"{name}: all weights are zero (refusing to return a silent 0 loss)")
    if not ratio_cap > 0:
        raise ValueError(f"{name}: ratio_cap must be > 0, got {ratio_cap}")
    with torch.no_grad():
        raw = torch.exp(logp_new_N.detach() - logp_old_N)
        r = raw.clamp(max=ratio_cap)
        gap = logp_new_N.detach() - teacher_logp_N
    loss = _mean(r * gap * logp_new_N, w_N)
    with torch.no_grad():
        stats = torch.stack([_mean(gap, w_N), _mean(r, w_N), _mean((raw > ratio_cap).float(), w_N),
                             w_N.float().sum()]).tolist()
    return LossOutput(loss, {"loss/sdpo_gap": stats[0], "loss/ratio_mean": stats[1],
                             "loss/capped_frac": stats[2], "loss/n_tokens": stats[3]})
