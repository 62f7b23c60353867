"""agentopd.training.losses against naive loop references (values and gradients) plus properties.

The references below loop over tokens and vocabulary entries with float64 torch scalars, written
from the definitions in REFERENCES.md sections 1, 2 and 7, sharing no code with the module.
"""

from __future__ import annotations

import math

import pytest
import torch

from agentopd.training.losses import (
    LossOutput,
    cross_entropy,
    discounted_future_sum,
    gkd_jsd,
    gkd_jsd_topk,
    masked_mean,
    reverse_kl_pg,
    token_logprobs,
)

B, T, V = 2, 5, 7
SEEDS = [0, 1, 2, 3]
BETAS = [0.0, 0.1, 0.5, 0.9, 1.0]
ATOL = 1e-6
D = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mask(g: torch.Generator, b: int = B, t: int = T) -> torch.Tensor:
    """Random 0/1 float mask (b, t): every row partially masked, never all zero."""
    m_BT = (torch.rand(b, t, generator=g) < 0.6).to(D)
    m_BT[:, 0] = 1.0
    m_BT[:, -1] = 0.0
    return m_BT


def _logits(g: torch.Generator, scale: float = 2.0, b: int = B, t: int = T, v: int = V):
    return (scale * torch.randn(b, t, v, generator=g, dtype=D)).requires_grad_()


def _grads(loss: torch.Tensor, *xs: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    return torch.autograd.grad(loss, xs, allow_unused=True)


def _close(a, b, atol: float = ATOL) -> None:
    torch.testing.assert_close(torch.as_tensor(a, dtype=D), torch.as_tensor(b, dtype=D),
                               atol=atol, rtol=0)


# ----------------------------------------------------------------------------- naive references


def naive_log_softmax(z: list[torch.Tensor]) -> list[torch.Tensor]:
    total = sum(torch.exp(zv) for zv in z)
    return [zv - torch.log(total) for zv in z]


def naive_masked_mean(vals: dict[tuple[int, int], torch.Tensor], m_BT: torch.Tensor):
    num, den = 0.0, 0.0
    for (b, t), v in vals.items():
        num = num + float(m_BT[b, t]) * v
        den += float(m_BT[b, t])
    return num / den


def naive_divergence(p: list, q: list, beta: float) -> torch.Tensor:
    """JSD_beta(teacher p, student q) in probability space; plain KL at the endpoints."""
    def kl(a, b):  # sum a log(a / b), 0 log 0 = 0
        return sum(ai * (torch.log(ai) - torch.log(bi)) for ai, bi in zip(a, b) if ai.item() > 0)

    if beta == 0.0:
        return kl(p, q)
    if beta == 1.0:
        return kl(q, p)
    m = [beta * pi + (1 - beta) * qi for pi, qi in zip(p, q)]
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def naive_gkd(s_BTV, t_BTV, m_BT, beta, temp):
    vals = {}
    for b in range(s_BTV.shape[0]):
        for t in range(s_BTV.shape[1]):
            if float(m_BT[b, t]) == 0:
                continue
            q = [torch.exp(x) for x in naive_log_softmax([s_BTV[b, t, v] / temp for v in range(V)])]
            p = [torch.exp(x) for x in naive_log_softmax(
                [t_BTV[b, t, v].detach() / temp for v in range(V)])]
            vals[(b, t)] = naive_divergence(p, q, beta)
    return naive_masked_mean(vals, m_BT)


def naive_gkd_topk(s_BTV, ids_BTK, logp_BTK, m_BT, beta, temp):
    vals = {}
    for b in range(s_BTV.shape[0]):
        for t in range(s_BTV.shape[1]):
            if float(m_BT[b, t]) == 0:
                continue
            ids = [int(i) for i in ids_BTK[b, t]]
            q_all = [torch.exp(x) for x in naive_log_softmax([s_BTV[b, t, v] / temp for v in range(V)])]
            q = [q_all[i] for i in ids] + [sum(q_all[v] for v in range(V) if v not in ids)]
            p = [torch.exp(x.detach()) for x in logp_BTK[b, t]]
            p = p + [torch.clamp(1 - sum(p), min=0.0)]
            vals[(b, t)] = naive_divergence(p, q, beta)
    return naive_masked_mean(vals, m_BT)


def naive_ce(logits_BTV, ids_BT, m_BT):
    vals = {}
    for b in range(logits_BTV.shape[0]):
        for t in range(logits_BTV.shape[1]):
            if float(m_BT[b, t]) != 0:
                ls = naive_log_softmax([logits_BTV[b, t, v] for v in range(logits_BTV.shape[2])])
                vals[(b, t)] = -ls[int(ids_BT[b, t])]
    return naive_masked_mean(vals, m_BT)


def naive_advantages(old_BT, tea_BT, m_BT, kl_coef, gamma) -> list[list[float]]:
    out = []
    for b in range(old_BT.shape[0]):
        a = [(-kl_coef * (float(old_BT[b, t]) - float(tea_BT[b, t])) if float(m_BT[b, t]) else 0.0)
             for t in range(old_BT.shape[1])]
        out.append([sum(gamma ** (k - t) * a[k] for k in range(t, len(a))) for t in range(len(a))])
    return out


def naive_pg(new_BT, old_BT, tea_BT, m_BT, kl_coef, clip_eps, gamma):
    A = naive_advantages(old_BT, tea_BT, m_BT, kl_coef, gamma)
    vals = {}
    for b in range(new_BT.shape[0]):
        for t in range(new_BT.shape[1]):
            if float(m_BT[b, t]) == 0:
                continue
            r = torch.exp(new_BT[b, t] - float(old_BT[b, t]))
            obj = r * A[b][t]
            if clip_eps is not None:
                obj = min(obj, torch.clamp(r, 1 - clip_eps, 1 + clip_eps) * A[b][t])
            vals[(b, t)] = -obj
    return naive_masked_mean(vals, m_BT)


def _pg_inputs(g: torch.Generator, b: int = B, t: int = T):
    old_BT = -torch.rand(b, t, generator=g, dtype=D) * 3
    new_BT = (old_BT + 0.4 * torch.randn(b, t, generator=g, dtype=D)).requires_grad_()
    tea_BT = -torch.rand(b, t, generator=g, dtype=D) * 3
    return new_BT, old_BT, tea_BT, _mask(g, b, t)


# ----------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("seed", SEEDS)
def test_token_logprobs_matches_naive(seed):
    g = _gen(seed)
    z_BTV = _logits(g)
    ids_BT = torch.randint(0, V, (B, T), generator=g)
    got_BT = token_logprobs(z_BTV, ids_BT)
    ref_BT = torch.stack([torch.stack([
        naive_log_softmax([z_BTV[b, t, v] for v in range(V)])[int(ids_BT[b, t])]
        for t in range(T)]) for b in range(B)])
    _close(got_BT, ref_BT)
    w_BT = torch.randn(B, T, generator=g, dtype=D)
    _close(_grads((got_BT * w_BT).sum(), z_BTV)[0], _grads((ref_BT * w_BT).sum(), z_BTV)[0])


def test_token_logprobs_low_precision_is_upcast():
    g = _gen(0)
    z_BTV = torch.randn(B, T, V, generator=g, dtype=D)
    ids_BT = torch.randint(0, V, (B, T), generator=g)
    got_BT = token_logprobs(z_BTV.to(torch.bfloat16), ids_BT)
    assert got_BT.dtype == torch.float32
    ref_BT = token_logprobs(z_BTV.to(torch.bfloat16).to(D), ids_BT)
    _close(got_BT, ref_BT, atol=1e-5)


def test_masked_mean_ignores_garbage_and_validates():
    x_BT = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), 6.0]], dtype=D,
                        requires_grad=True)
    m_BT = torch.tensor([[1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    out = masked_mean(x_BT, m_BT)
    _close(out, (1 + 2 + 4 + 6) / 4)
    (gx,) = _grads(out, x_BT)
    _close(gx, m_BT.to(D) / 4)
    with pytest.raises(ValueError, match="all zero"):
        masked_mean(x_BT, torch.zeros_like(m_BT))
    with pytest.raises(ValueError, match="shape"):
        masked_mean(x_BT[:, :2], m_BT)


@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("gamma", [0.5, 0.9, 1.0])
def test_discounted_future_sum_blocked_matches_recurrence(seed, gamma):
    x_BT = torch.randn(3, 300, generator=_gen(seed), dtype=D)  # several 128-blocks + remainder
    rows = x_BT.tolist()
    ref = [[0.0] * 300 for _ in rows]
    for b, row in enumerate(rows):  # each row its own sequence
        run = 0.0
        for t in reversed(range(300)):
            run = row[t] + gamma * run
            ref[b][t] = run
    _close(discounted_future_sum(x_BT, gamma), ref, atol=1e-9)


# ----------------------------------------------------------------------------- section 1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("clip_eps", [None, 0.2])
@pytest.mark.parametrize("gamma", [0.0, 0.7, 1.0])
def test_reverse_kl_pg_matches_naive(seed, clip_eps, gamma):
    new_BT, old_BT, tea_BT, m_BT = _pg_inputs(_gen(seed))
    out = reverse_kl_pg(new_BT, old_BT, tea_BT, m_BT, kl_coef=0.7, clip_eps=clip_eps,
                        discount=gamma)
    ref = naive_pg(new_BT, old_BT, tea_BT, m_BT, 0.7, clip_eps, gamma)
    _close(out.loss, ref)
    _close(_grads(out.loss, new_BT)[0], _grads(ref, new_BT)[0])
    sel = m_BT.bool()
    _close(out.metrics["loss/kl"], (old_BT - tea_BT)[sel].mean())
    _close(out.metrics["loss/ratio_mean"], (new_BT - old_BT).exp()[sel].mean())
    _close(out.metrics["loss/n_tokens"], m_BT.sum())
    if clip_eps is None:
        assert out.metrics["loss/clip_frac"] == 0.0
    else:
        ratio = (new_BT - old_BT).exp()[sel]
        _close(out.metrics["loss/clip_frac"], ((ratio - 1).abs() > clip_eps).to(D).mean())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("clip_eps", [None, 0.2])
def test_reverse_kl_pg_policy_gradient_identity(seed, clip_eps):
    _, old_BT, tea_BT, m_BT = _pg_inputs(_gen(seed))
    new_BT = old_BT.clone().requires_grad_()
    out = reverse_kl_pg(new_BT, old_BT, tea_BT, m_BT, kl_coef=1.3, clip_eps=clip_eps)
    A_BT = -1.3 * (old_BT - tea_BT)
    _close(out.loss, -(A_BT * m_BT).sum() / m_BT.sum())
    _close(_grads(out.loss, new_BT)[0], -A_BT * m_BT / m_BT.sum())


@pytest.mark.parametrize("seed", SEEDS)
def test_reverse_kl_pg_clipping_zeroes_gradient_outside_trust_region(seed):
    g = _gen(seed)
    _, old_BT, tea_BT, m_BT = _pg_inputs(g, b=4, t=8)
    steps = torch.tensor([-0.6, -0.05, 0.05, 0.6], dtype=D)
    delta_BT = steps[torch.randint(0, 4, (4, 8), generator=g)]
    new_BT = (old_BT + delta_BT).requires_grad_()
    out = reverse_kl_pg(new_BT, old_BT, tea_BT, m_BT, clip_eps=0.2)
    (g_BT,) = _grads(out.loss, new_BT)
    r_BT, A_BT = delta_BT.exp(), -(old_BT - tea_BT)
    frozen_BT = ((A_BT > 0) & (r_BT > 1.2)) | ((A_BT < 0) & (r_BT < 0.8))
    live_BT = m_BT.bool() & ~frozen_BT
    assert frozen_BT[m_BT.bool()].any() and live_BT.any()  # both cases are exercised
    assert (g_BT[frozen_BT] == 0).all()
    _close(g_BT[live_BT], (-r_BT * A_BT / m_BT.sum())[live_BT])


@pytest.mark.parametrize("seed", SEEDS)
def test_reverse_kl_pg_discount_zero_is_no_discount(seed):
    new_BT, old_BT, tea_BT, m_BT = _pg_inputs(_gen(seed))
    a = reverse_kl_pg(new_BT, old_BT, tea_BT, m_BT)
    b = reverse_kl_pg(new_BT, old_BT, tea_BT, m_BT, discount=0.0)
    _close(a.loss, b.loss, atol=0)
    _close(_grads(a.loss, new_BT)[0], _grads(b.loss, new_BT)[0], atol=0)


def test_reverse_kl_pg_discount_respects_rows_and_mask():
    # Row 0 carries all the teacher disagreement; row 1 agrees with the teacher everywhere
    # except at a masked-out position. With discounting, row 1's advantages must stay 0.
    old_BT = torch.full((2, 4), -1.0, dtype=D)
    tea_BT = old_BT.clone()
    tea_BT[0] = torch.tensor([-2.0, -3.0, -1.5, -4.0], dtype=D)
    tea_BT[1, 3] = -9.0
    m_BT = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 0]], dtype=D)
    new_BT = old_BT.clone().requires_grad_()
    out = reverse_kl_pg(new_BT, old_BT, tea_BT, m_BT, clip_eps=None, discount=0.5)
    (g_BT,) = _grads(out.loss, new_BT)
    A0 = [-(1.0 + 0.25 * 0.5 + 0.125 * 3.0), 0.0, -(0.5 + 0.5 * 3.0), -3.0]
    _close(g_BT[0], -torch.tensor(A0, dtype=D) * m_BT[0] / 6)
    _close(g_BT[1], torch.zeros(4, dtype=D))


def test_reverse_kl_pg_zero_when_teacher_equals_sampler():
    new_BT, old_BT, _, m_BT = _pg_inputs(_gen(0))
    out = reverse_kl_pg(new_BT, old_BT, old_BT, m_BT, discount=0.9)
    _close(out.loss, 0.0)
    assert out.metrics["loss/kl"] == 0.0
    _close(_grads(out.loss, new_BT)[0], torch.zeros(B, T, dtype=D))


# ----------------------------------------------------------------------------- section 2


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("temp", [1.0, 0.9])
def test_gkd_jsd_matches_naive(seed, beta, temp):
    g = _gen(seed)
    s_BTV, t_BTV, m_BT = _logits(g), _logits(g), _mask(g)
    out = gkd_jsd(s_BTV, t_BTV, m_BT, beta=beta, temperature=temp)
    ref = naive_gkd(s_BTV, t_BTV, m_BT, beta, temp)
    _close(out.loss, ref)
    gs, gt = _grads(out.loss, s_BTV, t_BTV)
    _close(gs, _grads(ref, s_BTV)[0])
    assert gt is None  # the teacher is detached
    assert out.metrics["loss/jsd"] == pytest.approx(out.loss.item())


@pytest.mark.parametrize("beta", BETAS)
def test_gkd_jsd_zero_for_identical(beta):
    g = _gen(1)
    s_BTV, m_BT = _logits(g), _mask(g)
    out = gkd_jsd(s_BTV, s_BTV.detach().clone(), m_BT, beta=beta)
    _close(out.loss, 0.0)
    _close(_grads(out.loss, s_BTV)[0], torch.zeros_like(s_BTV))


@pytest.mark.parametrize("seed", SEEDS)
def test_gkd_jsd_symmetric_at_half(seed):
    g = _gen(seed)
    p_BTV, q_BTV, m_BT = _logits(g), _logits(g), _mask(g)
    _close(gkd_jsd(p_BTV, q_BTV, m_BT, beta=0.5).loss, gkd_jsd(q_BTV, p_BTV, m_BT, beta=0.5).loss)


@pytest.mark.parametrize("seed", SEEDS)
def test_gkd_jsd_endpoints_are_plain_kl(seed):
    from torch.distributions import Categorical, kl_divergence

    g = _gen(seed)
    s_BTV, t_BTV, m_BT = _logits(g), _logits(g), _mask(g)
    S, Tt = Categorical(logits=s_BTV / 0.9), Categorical(logits=t_BTV / 0.9)
    sel = m_BT.bool()
    _close(gkd_jsd(s_BTV, t_BTV, m_BT, beta=0.0).loss, kl_divergence(Tt, S)[sel].mean())
    _close(gkd_jsd(s_BTV, t_BTV, m_BT, beta=1.0).loss, kl_divergence(S, Tt)[sel].mean())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_gkd_jsd_bounds(seed, beta):
    g = _gen(seed)
    s_BTV, t_BTV = _logits(g, scale=10.0), _logits(g, scale=10.0)
    m_BT = torch.ones(B, T, dtype=D)
    for b in range(B):  # per-token values: one token per call
        for t in range(T):
            one_BT = torch.zeros_like(m_BT)
            one_BT[b, t] = 1
            v = gkd_jsd(s_BTV, t_BTV, one_BT, beta=beta).loss.item()
            assert v >= -1e-12
            if beta == 0.5:
                assert v <= math.log(2) + 1e-12


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("K", [1, 3])
def test_gkd_jsd_topk_matches_naive(seed, beta, K):
    g = _gen(seed)
    s_BTV, m_BT = _logits(g), _mask(g)
    tlogp_BTV = torch.log_softmax(_logits(g).detach(), dim=-1)
    logp_BTK, ids_BTK = tlogp_BTV.topk(K, dim=-1)
    out = gkd_jsd_topk(s_BTV, ids_BTK, logp_BTK, m_BT, beta=beta, temperature=0.8)
    ref = naive_gkd_topk(s_BTV, ids_BTK, logp_BTK, m_BT, beta, 0.8)
    _close(out.loss, ref)
    _close(_grads(out.loss, s_BTV)[0], _grads(ref, s_BTV)[0])
    sel = m_BT.bool()
    _close(out.metrics["loss/teacher_tail_mass"], (1 - logp_BTK.exp().sum(-1))[sel].mean())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", BETAS)
def test_gkd_jsd_topk_full_vocab_equals_gkd_jsd(seed, beta):
    g = _gen(seed)
    s_BTV, t_BTV, m_BT = _logits(g), _logits(g), _mask(g)
    ids_BTK = torch.rand(B, T, V, generator=g).argsort(dim=-1)  # K = V, shuffled order
    logp_BTK = torch.log_softmax(t_BTV.detach() / 0.9, dim=-1).gather(-1, ids_BTK)
    full = gkd_jsd(s_BTV, t_BTV, m_BT, beta=beta, temperature=0.9)
    topk = gkd_jsd_topk(s_BTV, ids_BTK, logp_BTK, m_BT, beta=beta, temperature=0.9)
    _close(topk.loss, full.loss)
    _close(_grads(topk.loss, s_BTV)[0], _grads(full.loss, s_BTV)[0])
    assert topk.metrics["loss/teacher_tail_mass"] < 1e-12


@pytest.mark.parametrize("beta", BETAS)
def test_gkd_jsd_topk_zero_for_identical(beta):
    g = _gen(2)
    s_BTV, m_BT = _logits(g), _mask(g)
    logp_BTK, ids_BTK = torch.log_softmax(s_BTV.detach(), dim=-1).topk(3, dim=-1)
    out = gkd_jsd_topk(s_BTV, ids_BTK, logp_BTK, m_BT, beta=beta)
    _close(out.loss, 0.0)
    _close(_grads(out.loss, s_BTV)[0], torch.zeros_like(s_BTV))


# ----------------------------------------------------------------------------- section 7


@pytest.mark.parametrize("seed", SEEDS)
def test_cross_entropy_matches_naive(seed):
    g = _gen(seed)
    z_BTV, m_BT = _logits(g), _mask(g)
    ids_BT = torch.randint(0, V, (B, T), generator=g)
    out = cross_entropy(z_BTV, ids_BT, m_BT)
    ref = naive_ce(z_BTV, ids_BT, m_BT)
    _close(out.loss, ref)
    _close(_grads(out.loss, z_BTV)[0], _grads(ref, z_BTV)[0])
    _close(out.loss, torch.nn.functional.cross_entropy(z_BTV[m_BT.bool()], ids_BT[m_BT.bool()]))


# ----------------------------------------------------------------------------- all losses


def _cases(g: torch.Generator, b: int = B):
    """(name, fn(inputs, mask), inputs, index of differentiable input) for every loss."""
    s_BTV, t_BTV = _logits(g, b=b), _logits(g, b=b)
    logp_BTK, ids_BTK = torch.log_softmax(t_BTV.detach(), dim=-1).topk(3, dim=-1)
    ids_BT = torch.randint(0, V, (b, T), generator=g)
    new_BT, old_BT, tea_BT, _ = _pg_inputs(g, b=b)
    return [
        ("pg", lambda x, m: reverse_kl_pg(x[0], x[1], x[2], m, discount=0.8), [new_BT, old_BT, tea_BT]),
        ("jsd", lambda x, m: gkd_jsd(x[0], x[1], m, beta=0.3), [s_BTV, t_BTV]),
        ("topk", lambda x, m: gkd_jsd_topk(x[0], x[1], x[2], m, beta=0.3), [s_BTV, ids_BTK, logp_BTK]),
        ("ce", lambda x, m: cross_entropy(x[0], x[1], m), [s_BTV, ids_BT]),
    ]


CASE_NAMES = ["pg", "jsd", "topk", "ce"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", CASE_NAMES)
def test_masked_positions_have_no_effect(seed, case):
    g = _gen(seed)
    name, fn, xs = next(c for c in _cases(g) if c[0] == case)
    m_BT = _mask(g)
    out = fn(xs, m_BT)
    (grad,) = _grads(out.loss, xs[0])
    off_BT = ~m_BT.bool()
    garbage = []  # NaN / inf / out-of-range ids at every masked-out position
    for x in xs:
        y = x.detach().clone()
        if y.is_floating_point():
            y[off_BT] = float("nan")
        else:
            y[off_BT] = -100 if name == "ce" else 10**6
        garbage.append(y)
    garbage[0].requires_grad_()
    out2 = fn(garbage, m_BT)
    (grad2,) = _grads(out2.loss, garbage[0])
    _close(out2.loss, out.loss, atol=0)
    _close(grad2, grad, atol=0)
    assert (grad2[off_BT] == 0).all()
    assert out2.metrics == out.metrics


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", CASE_NAMES)
def test_chunked_equals_plain(seed, case):
    g = _gen(seed)
    _, fn, xs = next(c for c in _cases(g, b=4) if c[0] == case)
    m_BT = _mask(g, b=4)
    whole = fn(xs, m_BT).loss
    parts = [(fn([x[rows] for x in xs], m_BT[rows]).loss, m_BT[rows].sum())
             for rows in (slice(0, 2), slice(2, 4))]
    combined = sum(n * loss for loss, n in parts) / sum(n for _, n in parts)
    _close(combined, whole)
    _close(_grads(combined, xs[0])[0], _grads(whole, xs[0])[0])


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bool_mask_equals_float_mask(case):
    g = _gen(0)
    _, fn, xs = next(c for c in _cases(g) if c[0] == case)
    m_BT = _mask(g)
    a, b = fn(xs, m_BT), fn(xs, m_BT.bool())
    _close(a.loss, b.loss, atol=1e-12)
    assert isinstance(a, LossOutput) and a.loss.dim() == 0
    assert a.metrics and all(k.startswith("loss/") for k in a.metrics)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_all_zero_mask_raises(case):
    _, fn, xs = next(c for c in _cases(_gen(0)) if c[0] == case)
    with pytest.raises(ValueError, match="all zero"):
        fn(xs, torch.zeros(B, T, dtype=D))
    with pytest.raises(ValueError, match="all zero"):
        fn(xs, torch.zeros(B, T, dtype=torch.bool))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_shape_mismatch_raises(case):
    _, fn, xs = next(c for c in _cases(_gen(0)) if c[0] == case)
    with pytest.raises(ValueError, match="shape"):
        fn(xs, torch.ones(B, T + 1, dtype=D))
    with pytest.raises(ValueError, match="shape"):
        fn([xs[0]] + [x[:, :-1] for x in xs[1:]], torch.ones(B, T, dtype=D))


def test_invalid_hyperparameters_raise():
    g = _gen(0)
    s_BTV, t_BTV, m_BT = _logits(g), _logits(g), _mask(g)
    with pytest.raises(ValueError, match="beta"):
        gkd_jsd(s_BTV, t_BTV, m_BT, beta=1.5)
    with pytest.raises(ValueError, match="temperature"):
        gkd_jsd(s_BTV, t_BTV, m_BT, temperature=0.0)
    new_BT, old_BT, tea_BT, m_BT = _pg_inputs(g)
    with pytest.raises(ValueError, match="discount"):
        reverse_kl_pg(new_BT, old_BT, tea_BT, m_BT, discount=1.5)
    with pytest.raises(ValueError, match="clip_eps"):
        reverse_kl_pg(new_BT, old_BT, tea_BT, m_BT, clip_eps=0.0)
