"""The objective families (REFERENCES sections 5, 6, 8) against naive float64 loops, and their
basic properties: zero for identical distributions, chunked equals whole, top-k with K = V
equals the full vocabulary, gradients equal to the naive references', lambda = 1 is OPD."""

import math

import pytest
import torch

from agentopd.training import divergences as D
from agentopd.training.losses import reverse_kl_pg


def _dists(n=5, v=7, seed=0, sharp=1.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, v, generator=g, dtype=torch.float64)
    t = torch.randn(n, v, generator=g, dtype=torch.float64) * 3 * sharp
    return torch.log_softmax(s, -1), torch.log_softmax(t, -1)


def _naive_akl(logS, logT, w, mu):
    total = 0.0
    for i in range(logS.shape[0]):
        pS = [math.exp(x) for x in logS[i].tolist()]
        pT = [math.exp(x) for x in logT[i].tolist()]
        order = sorted(range(len(pT)), key=lambda j: -pT[j])
        head, cum = set(), 0.0
        for j in order:
            cum += pT[j]
            if cum <= mu:
                head.add(j)
        gh = sum(abs(pT[j] - pS[j]) for j in head)
        gt = sum(abs(pT[j] - pS[j]) for j in range(len(pT)) if j not in head)
        wh = gh / (gh + gt) if gh + gt > 0 else 0.5
        fkl = sum(pT[j] * math.log(pT[j] / pS[j]) for j in range(len(pT)))
        rkl = sum(pS[j] * math.log(pS[j] / pT[j]) for j in range(len(pT)))
        total += w[i] * (wh * fkl + (1 - wh) * rkl)
    return total / sum(w)


def _naive_todi(logS, logT, w, beta):
    total = 0.0
    for i in range(logS.shape[0]):
        row = 0.0
        for ls, lt in zip(logS[i].tolist(), logT[i].tolist()):
            wv = 1 / (1 + math.exp(-beta * (lt - ls)))
            row += wv * math.exp(lt) * (lt - ls) + (1 - wv) * math.exp(ls) * (ls - lt)
        total += w[i] * row
    return total / sum(w)


def _naive_eopd(logS, logT, w, thr):
    total = 0.0
    for i in range(logS.shape[0]):
        h = -sum(math.exp(lt) * lt for lt in logT[i].tolist())
        if h > thr:
            total += w[i] * sum(math.exp(lt) * (lt - ls) for ls, lt in zip(logS[i].tolist(), logT[i].tolist()))
    return total / sum(w)


W = [1.0, 2.0, 0.0, 1.0, 0.5]


@pytest.mark.parametrize("mu", [0.3, 0.5, 0.9])
def test_akl_matches_the_naive_loop(mu):
    logS, logT = _dists(sharp=0.5)
    out = D.akl(logS, logT, torch.tensor(W, dtype=torch.float64), mu=mu)
    assert float(out.loss) == pytest.approx(_naive_akl(logS, logT, W, mu), rel=1e-9)
    assert 0 <= out.metrics["loss/head_weight"] <= 1


def test_akl_with_a_one_hot_teacher_is_the_reverse_kl():
    logS, _ = _dists()
    logT = torch.log_softmax(torch.tensor([[20.0, 0, 0, 0, 0, 0, 0]] * 5, dtype=torch.float64), -1)
    w = torch.ones(5, dtype=torch.float64)
    out = D.akl(logS, logT, w)
    assert out.metrics["loss/head_weight"] == 0.0
    assert float(out.loss) == pytest.approx(float(D.kl_rows(logS, logT).mean()), rel=1e-9)


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_todi_matches_the_naive_loop(beta):
    logS, logT = _dists(seed=1)
    out = D.todi(logS, logT, torch.tensor(W, dtype=torch.float64), beta=beta)
    assert float(out.loss) == pytest.approx(_naive_todi(logS, logT, W, beta), rel=1e-9)


@pytest.mark.parametrize("thr", [0.0, 0.8, 1.5, 10.0])
def test_eopd_gates_forward_kl_by_teacher_entropy(thr):
    logS, logT = _dists(seed=2, sharp=0.4)
    out = D.eopd_fkl(logS, logT, torch.tensor(W, dtype=torch.float64), entropy_threshold=thr)
    assert float(out.loss) == pytest.approx(_naive_eopd(logS, logT, W, thr), rel=1e-9, abs=1e-15)
    if thr == 10.0:
        assert float(out.loss) == 0.0 and out.metrics["loss/high_entropy_frac"] == 0.0


@pytest.mark.parametrize("fn", [D.akl, D.todi, D.eopd_fkl])
def test_zero_for_identical_distributions_and_positive_otherwise(fn):
    logS, logT = _dists(seed=3, sharp=0.3)
    w = torch.ones(5, dtype=torch.float64)
    assert float(fn(logS, logS.clone(), w).loss) == pytest.approx(0.0, abs=1e-12)
    assert float(fn(logS, logT, w).loss) > 0


@pytest.mark.parametrize("fn", [D.akl, D.todi, D.eopd_fkl])
def test_chunked_equals_whole(fn):
    logS, logT = _dists(n=9, seed=4, sharp=0.3)
    w = torch.tensor([1, 0, 2, 1, 1, 3, 0.5, 1, 1], dtype=torch.float64)
    whole = float(fn(logS, logT, w).loss)
    parts = [(slice(0, 4), float(w[:4].sum())), (slice(4, 9), float(w[4:].sum()))]
    chunked = sum(n * float(fn(logS[s], logT[s], w[s]).loss) for s, n in parts) / float(w.sum())
    assert chunked == pytest.approx(whole, rel=1e-12)


@pytest.mark.parametrize("name", ["akl", "todi", "eopd"])
def test_gradients_match_the_naive_reference(name):
    """The weights (AKL's head share, ToDi's sigmoids, EOPD's gate) are detached in both."""
    g = torch.Generator().manual_seed(5)
    z = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    logT = torch.log_softmax(torch.randn(4, 6, generator=g, dtype=torch.float64), -1)
    w = torch.tensor([1.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    fn = {"akl": lambda a, b, c: D.akl(a, b, c), "todi": D.todi, "eopd": lambda a, b, c: D.eopd_fkl(a, b, c, 1.0)}[name]
    (grad,) = torch.autograd.grad(fn(torch.log_softmax(z, -1), logT, w).loss, z)
    logS = torch.log_softmax(z, -1)
    pS, pT = logS.exp(), logT.exp()
    with torch.no_grad():  # the weights, by the naive rules
        if name == "todi":
            wv = torch.sigmoid(logT - logS)
        elif name == "akl":
            order = pT.argsort(-1, descending=True)
            head = torch.zeros_like(pT, dtype=torch.bool).scatter(-1, order, pT.gather(-1, order).cumsum(-1) <= 0.5)
            gap = (pT - pS).abs()
            wh = (gap * head).sum(-1) / gap.sum(-1)
        else:
            gate = (-(pT * logT).sum(-1) > 1.0).double()
    if name == "todi":
        ref = ((wv * pT * (logT - logS) + (1 - wv) * pS * (logS - logT)).sum(-1) * w).sum() / w.sum()
    elif name == "akl":
        ref = ((wh * (pT * (logT - logS)).sum(-1) + (1 - wh) * (pS * (logS - logT)).sum(-1)) * w).sum() / w.sum()
    else:
        ref = (gate * (pT * (logT - logS)).sum(-1) * w).sum() / w.sum()
    (want,) = torch.autograd.grad(ref, z)
    assert torch.allclose(grad, want, atol=1e-12)


@pytest.mark.parametrize("fn", [D.akl, D.todi, D.eopd_fkl])
def test_topk_buckets_with_the_whole_vocabulary_equal_full_logits(fn):
    g = torch.Generator().manual_seed(6)
    s = torch.randn(5, 8, generator=g)
    t = torch.randn(5, 8, generator=g) * 2
    w = torch.ones(5)
    full = fn(*D.full_buckets(s, t), w)
    t_logp = torch.log_softmax(t, -1)
    top = t_logp.topk(8, -1)
    bucketed = fn(*D.topk_buckets(s, top.indices, top.values), w)
    assert float(bucketed.loss) == pytest.approx(float(full.loss), rel=1e-4, abs=1e-6)


def test_topk_buckets_keep_each_sides_tail_mass():
    g = torch.Generator().manual_seed(7)
    s, t = torch.randn(3, 10, generator=g), torch.randn(3, 10, generator=g)
    top = torch.log_softmax(t, -1).topk(3, -1)
    logS, logT = D.topk_buckets(s, top.indices, top.values)
    assert logS.shape == (3, 4)
    assert torch.allclose(logS.exp().sum(-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(logT.exp().sum(-1), torch.ones(3), atol=1e-5)


def test_extrapolated_opd_lambda_one_is_standard_opd_and_its_advantage_is_as_defined():
    g = torch.Generator().manual_seed(8)
    new = torch.randn(2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    old, tea, ref = (torch.randn(2, 6, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(2, 6)
    base = reverse_kl_pg(new, old, tea, mask, clip_eps=None)
    same = reverse_kl_pg(new, old, D.extrapolated_logp(tea, ref, 1.0), mask, clip_eps=None)
    assert float(same.loss.detach()) == float(base.loss.detach())
    lam = 1.25
    out = reverse_kl_pg(new, old, D.extrapolated_logp(tea, ref, lam), mask, clip_eps=None)
    adv = lam * (tea - ref) - (old - ref)  # G-OPD's definition, with mu for pi_theta (sg)
    assert out.metrics["loss/adv_mean"] == pytest.approx(float(adv.mean()), rel=1e-12)


def test_tip_weights_and_selection():
    h = torch.tensor([0.0, 1.0, 2.0, 4.0])
    jsd = torch.tensor([0.5, 0.0, 0.2, 0.1])
    w = D.tip_weights(h, jsd, vocab_size=100, alpha=1.0, gamma=1.0)
    assert torch.allclose(w, (h / math.log(100)) * (jsd / math.log(2)))
    assert torch.equal(D.tip_weights(h, None, 100, gamma=0.0), h / math.log(100))
    with pytest.raises(ValueError, match="gamma 0"):
        D.tip_weights(h, None, 100, gamma=1.0)
    idx = D.tip_select(torch.tensor([0.0, 0.0, 5.0, 0.0, 1e-3]), 0.2)
    assert idx.tolist() == [2]  # one token of five, and the heavy one (almost surely)
    gen = torch.Generator().manual_seed(0)
    picks = torch.zeros(4)
    for _ in range(4000):
        picks[D.tip_select(torch.tensor([1.0, 2.0, 3.0, 4.0]), 0.25, gen)] += 1
    assert torch.allclose(picks / picks.sum(), torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.03)
    both = D.tip_select(torch.rand(10), 0.5, torch.Generator().manual_seed(1))
    assert len(both) == 5 and len(set(both.tolist())) == 5
    assert D.tip_select(torch.rand(3), 1.0).tolist() == [0, 1, 2]


def test_sdpo_gradient_is_the_capped_ratio_times_the_gap():
    new = torch.tensor([-1.0, -2.0, -0.5], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([-1.0, -3.0, -0.5], dtype=torch.float64)  # row 2: ratio e > 2, capped
    tea = torch.tensor([-2.0, -1.0, -0.5], dtype=torch.float64)
    w = torch.ones(3, dtype=torch.float64)
    out = D.sdpo(new, old, tea, w)
    (grad,) = torch.autograd.grad(out.loss, new)
    r = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    assert torch.allclose(grad, r * (new.detach() - tea) / 3)
    assert out.metrics["loss/capped_frac"] == pytest.approx(1 / 3)
    assert float(D.sdpo(new, old, new.detach(), w).loss.detach()) == 0.0


def test_bad_inputs_are_refused():
    logS, logT = _dists()
    with pytest.raises(ValueError, match="all weights are zero"):
        D.akl(logS, logT, torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="one shape"):
        D.todi(logS, logT[:, :3], torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="mu"):
        D.akl(logS, logT, torch.ones(5, dtype=torch.float64), mu=1.0)
    with pytest.raises(ValueError, match="ratio"):
        D.tip_select(torch.ones(3), 0.0)
