"""Skill-SD (REFERENCES.md section 4): `losses.grpo_k3`, `core.rows.group_advantages`, the
rows' advantage through `collate`, and the `SkillSD` objective.

The references loop over tokens (and group members) with float64 torch / Python scalars, written
from the definitions, sharing no code with the module.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from agentopd.core.capabilities import Signal
from agentopd.core.rows import TeacherSignal, TrainRow, group_advantages
from agentopd.training.batching import collate
from agentopd.training.losses import LossOutput, grpo_k3, reverse_kl_pg
from agentopd.training.objectives import SkillSD

B, T, V = 3, 6, 7
SEEDS = [0, 1, 2, 3]
ATOL = 1e-6
D = torch.float64
MASKS = ["random", "ones", "weights", "bool"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _close(a, b, atol: float = ATOL) -> None:
    torch.testing.assert_close(torch.as_tensor(a, dtype=D), torch.as_tensor(b, dtype=D),
                               atol=atol, rtol=0)


def _grads(loss: torch.Tensor, *xs: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    return torch.autograd.grad(loss, xs, allow_unused=True)


def _mask(g: torch.Generator, kind: str = "random", b: int = B, t: int = T) -> torch.Tensor:
    """(b, t) mask: random 0/1 (never an all-zero row), all ones, float weights, or bool."""
    if kind == "ones":
        return torch.ones(b, t, dtype=D)
    m_BT = (torch.rand(b, t, generator=g) < 0.6).to(D)
    m_BT[:, 0] = 1.0
    m_BT[:, -1] = 0.0
    if kind == "weights":
        return m_BT * (0.25 + torch.rand(b, t, generator=g, dtype=D))
    return m_BT.bool() if kind == "bool" else m_BT


def _inputs(g: torch.Generator, b: int = B, t: int = T, per_row_adv: bool = True):
    """(logp, old_logp, teacher_logp, adv) (b, t) each; logp requires grad. Ratios straddle the
    clip range; advantages are one value per row (as `collate` lays them out) or per token."""
    old_BT = -torch.rand(b, t, generator=g, dtype=D) * 3
    new_BT = (old_BT + 0.4 * torch.randn(b, t, generator=g, dtype=D)).requires_grad_()
    tea_BT = -torch.rand(b, t, generator=g, dtype=D) * 3
    if per_row_adv:
        adv_BT = torch.randn(b, 1, generator=g, dtype=D).expand(b, t).clone()
    else:
        adv_BT = torch.randn(b, t, generator=g, dtype=D)
    return new_BT, old_BT, tea_BT, adv_BT


# ----------------------------------------------------------------------------- naive references


def naive_grpo_k3(new_BT, old_BT, tea_BT, adv_BT, m_BT, kl_weight, clip_eps):
    """-min(r A, clip(r) A) + kl_weight * r * (exp(-l) - 1 + l), per token; mask-weighted mean."""
    num, den = 0.0, 0.0
    for b in range(new_BT.shape[0]):
        for t in range(new_BT.shape[1]):
            w = float(m_BT[b, t])
            if w == 0:
                continue
            r = torch.exp(new_BT[b, t] - float(old_BT[b, t]))
            A = float(adv_BT[b, t])
            obj = r * A
            if clip_eps is not None:
                obj = min(obj, torch.clamp(r, 1 - clip_eps, 1 + clip_eps) * A)
            l_t = new_BT[b, t] - float(tea_BT[b, t])
            k3 = torch.exp(-l_t) - 1 + l_t
            num = num + w * (-obj + kl_weight * r * k3)
            den += w
    return num / den


def naive_group_advantages(rewards, groups, eps=1e-6):
    out = []
    for r, g in zip(rewards, groups):
        rs = [rr for rr, gg in zip(rewards, groups) if gg == g]
        sd = statistics.pstdev(rs)
        out.append(0.0 if sd == 0 else (r - statistics.fmean(rs)) / (sd + eps))
    return out


# ----------------------------------------------------------------------------- grpo_k3


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("clip_eps", [None, 0.2])
@pytest.mark.parametrize("kl_weight", [0.0, 0.001, 0.7])
@pytest.mark.parametrize("mask", MASKS)
def test_grpo_k3_matches_naive(seed, clip_eps, kl_weight, mask):
    g = _gen(seed)
    new_BT, old_BT, tea_BT, adv_BT = _inputs(g, per_row_adv=seed % 2 == 0)
    m_BT = _mask(g, mask)
    out = grpo_k3(new_BT, old_BT, tea_BT, adv_BT, m_BT, kl_weight=kl_weight, clip_eps=clip_eps)
    ref = naive_grpo_k3(new_BT, old_BT, tea_BT, adv_BT, m_BT, kl_weight, clip_eps)
    assert isinstance(out, LossOutput) and out.loss.dim() == 0
    _close(out.loss, ref)
    _close(_grads(out.loss, new_BT)[0], _grads(ref, new_BT)[0])

    w = m_BT.to(D)
    sel = w != 0
    r = (new_BT - old_BT).detach().exp()
    lt = (new_BT - tea_BT).detach()
    k3 = lt.neg().exp() - 1 + lt

    def mean(x):
        return (x * w)[sel].sum() / w.sum()

    m = out.metrics
    assert all(k.startswith("loss/") for k in m)
    _close(m["loss/k3"], mean(r * k3))
    _close(m["loss/k3_raw"], mean(k3))
    _close(m["loss/pg"], out.loss.item() - kl_weight * m["loss/k3"])
    _close(m["loss/ratio_mean"], mean(r))
    _close(m["loss/adv_abs_mean"], mean(adv_BT.abs()))
    _close(m["loss/n_tokens"], w.sum())
    if clip_eps is None:
        assert m["loss/clip_frac"] == 0.0
    else:
        _close(m["loss/clip_frac"], mean(((r - 1).abs() > clip_eps).to(D)))
        if mask == "ones":
            assert 0 < m["loss/clip_frac"] < 1  # both sides of the trust region are exercised


@pytest.mark.parametrize("seed", SEEDS)
def test_k3_zero_when_student_equals_teacher(seed):
    g = _gen(seed)
    new_BT, old_BT, _, adv_BT = _inputs(g)
    m_BT = _mask(g)
    out = grpo_k3(new_BT, old_BT, new_BT.detach(), adv_BT, m_BT, kl_weight=0.5)
    pure = grpo_k3(new_BT, old_BT, new_BT.detach(), adv_BT, m_BT, kl_weight=0.0)
    assert out.metrics["loss/k3"] == 0.0 and out.metrics["loss/k3_raw"] == 0.0
    _close(out.loss, pure.loss, atol=1e-12)
    # l = 0 is the minimum of r * k3(l) in l: the KL term adds no gradient either
    _close(_grads(out.loss, new_BT)[0], _grads(pure.loss, new_BT)[0], atol=1e-12)


def test_k3_is_nonnegative_over_random_draws():
    g = _gen(7)
    for scale in (0.01, 0.3, 1.0, 3.0, 10.0):
        for _ in range(20):
            new_BT, old_BT, _, _ = _inputs(g, b=4, t=16)
            tea_BT = new_BT.detach() + scale * torch.randn(4, 16, generator=g, dtype=D)
            zero_BT = torch.zeros(4, 16, dtype=D)
            m_BT = _mask(g, "weights", b=4, t=16)
            out = grpo_k3(new_BT, old_BT, tea_BT, zero_BT, m_BT, kl_weight=1.0)
            assert out.metrics["loss/k3"] >= 0 and out.metrics["loss/k3_raw"] >= 0
            assert out.loss.item() >= 0  # no advantage: the loss is the k3 term alone
    # per token, including extreme log-ratios in both directions
    lt = torch.tensor([-30.0, -5.0, -1.0, -1e-4, 0.0, 1e-8, 1e-4, 0.5, 2.0, 30.0, 300.0], dtype=D)
    zeros = torch.zeros(1, len(lt), dtype=D)  # teacher logp 0 (so l = lt) and no advantage
    for t in range(len(lt)):
        m = torch.zeros(1, len(lt), dtype=D)
        m[0, t] = 1.0
        out = grpo_k3(lt[None], lt[None], zeros, zeros, m, kl_weight=1.0)
        assert out.metrics["loss/k3_raw"] >= 0
        assert (out.metrics["loss/k3_raw"] == 0) == (float(lt[t]) == 0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("clip_eps", [None, 0.2])
def test_kl_weight_zero_is_the_clipped_grpo_surrogate(seed, clip_eps):
    g = _gen(seed)
    new_BT, old_BT, tea_BT, adv_BT = _inputs(g)
    m_BT = _mask(g)
    out = grpo_k3(new_BT, old_BT, tea_BT, adv_BT, m_BT, kl_weight=0.0, clip_eps=clip_eps)
    r = torch.exp(new_BT - old_BT)
    obj = r * adv_BT
    if clip_eps is not None:
        obj = torch.minimum(obj, r.clamp(1 - clip_eps, 1 + clip_eps) * adv_BT)
    ref = -(obj * m_BT).sum() / m_BT.sum()
    (grad_BT,) = _grads(out.loss, new_BT)
    _close(out.loss, ref)
    _close(grad_BT, _grads(ref, new_BT)[0])
    _close(out.metrics["loss/pg"], ref)
    # the same surrogate as reverse_kl_pg's with its advantage -(old - teacher) set to A
    pg = reverse_kl_pg(new_BT, old_BT, old_BT + adv_BT, m_BT, kl_coef=1.0, clip_eps=clip_eps)
    _close(out.loss, pg.loss, atol=1e-12)
    _close(grad_BT, _grads(pg.loss, new_BT)[0], atol=1e-12)
    # and the teacher does not matter without the KL term
    other = grpo_k3(new_BT, old_BT, tea_BT - 5.0, adv_BT, m_BT, kl_weight=0.0, clip_eps=clip_eps)
    _close(other.loss, out.loss, atol=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_zero_advantage_and_identical_teacher_gives_zero_loss(seed):
    g = _gen(seed)
    new_BT, old_BT, _, _ = _inputs(g)
    m_BT = _mask(g)
    out = grpo_k3(new_BT, old_BT, new_BT.detach(), torch.zeros(B, T, dtype=D), m_BT, kl_weight=0.3)
    assert out.loss.item() == 0.0
    assert out.metrics["loss/adv_abs_mean"] == 0.0 and out.metrics["loss/pg"] == 0.0
    _close(_grads(out.loss, new_BT)[0], torch.zeros(B, T, dtype=D), atol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kl_weight", [0.001, 0.7])
def test_chunked_equals_whole(seed, kl_weight):
    g = _gen(seed)
    xs = _inputs(g, b=4)
    m_BT = _mask(g, "weights", b=4)
    whole = grpo_k3(*xs, m_BT, kl_weight=kl_weight).loss
    parts = [(grpo_k3(*(x[rows] for x in xs), m_BT[rows], kl_weight=kl_weight).loss, m_BT[rows].sum())
             for rows in (slice(0, 2), slice(2, 4))]
    combined = sum(n * loss for loss, n in parts) / sum(n for _, n in parts)
    _close(combined, whole)
    _close(_grads(combined, xs[0])[0], _grads(whole, xs[0])[0])


@pytest.mark.parametrize("seed", SEEDS)
def test_masked_positions_have_no_effect(seed):
    g = _gen(seed)
    xs = _inputs(g, per_row_adv=False)
    m_BT = _mask(g)
    out = grpo_k3(*xs, m_BT, kl_weight=0.5)
    (grad,) = _grads(out.loss, xs[0])
    off_BT = ~m_BT.bool()
    garbage = []
    for x, bad in zip(xs, (float("nan"), float("inf"), float("-inf"), float("nan"))):
        y = x.detach().clone()
        y[off_BT] = bad
        garbage.append(y)
    garbage[0].requires_grad_()
    out2 = grpo_k3(*garbage, m_BT, kl_weight=0.5)
    (grad2,) = _grads(out2.loss, garbage[0])
    _close(out2.loss, out.loss, atol=0)
    _close(grad2, grad, atol=0)
    assert (grad2[off_BT] == 0).all()
    assert out2.metrics == out.metrics


def test_bad_inputs_raise():
    g = _gen(0)
    xs = _inputs(g)
    m_BT = _mask(g)
    with pytest.raises(ValueError, match="all zero"):
        grpo_k3(*xs, torch.zeros(B, T, dtype=D))
    with pytest.raises(ValueError, match="shape"):
        grpo_k3(*xs, torch.ones(B, T + 1, dtype=D))
    for i in range(4):
        bad = list(xs)
        bad[i] = bad[i][:, :-1]
        with pytest.raises(ValueError, match="shape"):
            grpo_k3(*bad, m_BT)
    with pytest.raises(ValueError, match="clip_eps"):
        grpo_k3(*xs, m_BT, clip_eps=0.0)
    for w in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="kl_weight"):
            grpo_k3(*xs, m_BT, kl_weight=w)


# ----------------------------------------------------------------------------- group_advantages


@pytest.mark.parametrize("seed", SEEDS)
def test_group_advantages_match_naive(seed):
    g = _gen(seed)
    n = 12
    rewards = [float(x) for x in torch.randint(0, 3, (n,), generator=g) * 0.5]
    rewards[0] = 0.1 + seed  # a reward that is not a multiple of 1/2
    groups = [f"task-{int(k)}" for k in torch.randint(0, 4, (n,), generator=g)]
    groups += ["alone"]
    rewards += [0.9]
    for eps in (1e-6, 0.0, 0.5):
        got = group_advantages(rewards, groups, eps=eps)
        _close(got, naive_group_advantages(rewards, groups, eps), atol=1e-12)
    got = group_advantages(rewards, groups)
    assert got[-1] == 0.0  # a group of one carries no signal
    for key in set(groups):  # each group's advantages have mean 0
        _close(sum(a for a, k in zip(got, groups) if k == key), 0.0, atol=1e-9)


def test_group_advantages_degenerate_groups():
    assert group_advantages([], []) == []
    assert group_advantages([3.0], ["a"]) == [0.0]
    # all-equal groups are exactly 0 (0.1 * 3 / 3 != 0.1 in floats: no eps-scaled round-off)
    assert group_advantages([0.1, 0.1, 0.1, 1.0, 1.0], ["a", "a", "a", "b", "b"]) == [0.0] * 5
    # a two-member group with distinct rewards is +-1 (up to eps), whatever the scale;
    # a constant group between them stays 0
    a = group_advantages([0.0, 1.0, 7.0, 7.0, 5.0, 3.0], [0, 0, 1, 1, 2, 2])
    h = 0.5 / (0.5 + 1e-6)  # std 0.5
    _close(a, [-h, h, 0.0, 0.0, 1 / (1 + 1e-6), -1 / (1 + 1e-6)], atol=1e-12)
    # interleaved groups keep the input order; the keys may be any hashable
    a = group_advantages([1.0, 0.0, 0.0, 1.0], [("t", 1), ("t", 2), ("t", 1), ("t", 2)], eps=0.0)
    assert a == [1.0, -1.0, -1.0, 1.0]


def test_group_advantages_bad_inputs_raise():
    with pytest.raises(ValueError, match="group keys"):
        group_advantages([1.0, 2.0], ["a"])
    with pytest.raises(ValueError, match="finite"):
        group_advantages([1.0, float("nan")], ["a", "a"])
    with pytest.raises(ValueError, match="eps"):
        group_advantages([1.0, 2.0], ["a", "a"], eps=-1.0)


# ----------------------------------------------------------------------------- rows and collate


def _row(ids, mask, old, adv=0.0, teacher=None, episode=-1) -> TrainRow:
    n = len(ids)
    sig = None if teacher is None else TeacherSignal(tuple(teacher), (-1,) * n)
    return TrainRow(tuple(ids), tuple(mask), tuple(old), tuple(0 if m else -1 for m in mask),
                    signal=sig, episode=episode, advantage=adv)


def test_train_row_advantage_default_and_validation():
    r = TrainRow((1, 2), (0, 1), (0.0, -1.0), (-1, 0))
    assert r.advantage == 0.0
    with pytest.raises(ValueError, match="advantage"):
        _row((1, 2), (0, 1), (0.0, -1.0), adv=float("nan"))


def test_collate_carries_the_advantage_onto_every_position_of_the_row():
    rows = [
        _row((5, 6, 7, 8, 9), (0, 0, 1, 1, 0), (0.0, 0.0, -1.0, -2.0, 0.0), adv=0.7),
        _row((5, 6, 7), (0, 1, 1), (0.0, -0.5, -0.25), adv=-1.25),
        _row((5, 6, 7, 8), (0, 1, 0, 1), (0.0, -0.5, 0.0, -3.0)),  # default advantage
    ]
    batch = collate(rows, pad_id=0)
    assert batch.advantage.shape == batch.mask.shape == (3, 4)
    assert batch.advantage.dtype == torch.float32
    on = batch.mask[0] == 1
    assert on.sum() == 2
    _close(batch.advantage[0][on], torch.full((2,), 0.7))
    _close(batch.advantage[0], torch.full((4,), 0.7))  # every position of the row, masked or not
    _close(batch.advantage[1], torch.tensor([-1.25, -1.25, 0.0, 0.0]))  # padding stays 0
    _close(batch.advantage[2], torch.zeros(4), atol=0)


# ----------------------------------------------------------------------------- the objective


def _skill_sd_rows(g: torch.Generator) -> list[TrainRow]:
    """Four episodes of two tasks (two rollouts each), of different lengths, with rewards turned
    into GRPO advantages, sampler logprobs and teacher logprobs on their targets."""
    rewards, tasks = [1.0, 0.0, 0.5, 0.0], ["a", "a", "b", "b"]
    advs = group_advantages(rewards, tasks)
    rows = []
    for k, (n, adv) in enumerate(zip((7, 5, 9, 6), advs)):
        ids = [int(i) for i in torch.randint(0, V, (n,), generator=g)]
        mask = [0, 0] + [int(x) for x in (torch.rand(n - 2, generator=g) < 0.7)]
        mask[-1] = 1
        old = [-float(x) * 2 if m else 0.0 for x, m in zip(torch.rand(n, generator=g), mask)]
        tea = [-float(x) * 2 if m else 0.0 for x, m in zip(torch.rand(n, generator=g), mask)]
        rows.append(_row(ids, mask, old, adv=adv, teacher=tea, episode=k))
    return rows


def naive_objective(logits_NV, rows, kl_weight, clip_eps):
    """From the rows themselves: target k is the k-th (row, position p >= 1) with mask 1."""
    num, den, k = 0.0, 0.0, 0
    for r in rows:
        for p in range(1, len(r.input_ids)):
            if not r.loss_mask[p]:
                continue
            z = logits_NV[k]
            logp = z[r.input_ids[p]] - torch.log(sum(torch.exp(z[v]) for v in range(V)))
            k += 1
            ratio = torch.exp(logp - r.old_logp[p])
            obj = ratio * r.advantage
            if clip_eps:
                obj = min(obj, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * r.advantage)
            lt = logp - r.teacher_logp[p]
            num = num - obj + kl_weight * ratio * (torch.exp(-lt) - 1 + lt)
            den += 1
    assert k == logits_NV.shape[0]
    return num / den


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kl_weight,clip_eps", [(0.001, 0.2), (0.5, 0.2), (0.5, 0.0)])
def test_skill_sd_objective_end_to_end(seed, kl_weight, clip_eps):
    g = _gen(seed)
    rows = _skill_sd_rows(g)
    batch = collate(rows, pad_id=0)
    N = int(batch.mask.sum())
    logits_NV = (2 * torch.randn(N, V, generator=g, dtype=D)).requires_grad_()
    objective = SkillSD(kl_weight=kl_weight, clip_eps=clip_eps)
    assert objective.needs is Signal.SAMPLED_LOGPROBS
    assert objective.request.kind is Signal.SAMPLED_LOGPROBS
    loss, metrics = objective(logits_NV, batch)
    ref = naive_objective(logits_NV, rows, kl_weight, clip_eps)
    # batch tensors are float32: the rows' logprobs and advantages round at ~1e-7
    _close(loss, ref, atol=1e-5)
    _close(_grads(loss, logits_NV)[0], _grads(ref, logits_NV)[0], atol=1e-5)
    assert metrics["loss/n_tokens"] == N
    _close(metrics["loss/adv_abs_mean"],
           sum(abs(r.advantage) * sum(r.loss_mask[1:]) for r in rows) / N, atol=1e-5)
    assert metrics["loss/adv_abs_mean"] > 0
    if clip_eps == 0.0:
        assert metrics["loss/clip_frac"] == 0.0


def test_skill_sd_objective_needs_the_teacher_logprobs():
    rows = [_row((1, 2, 3), (0, 1, 1), (0.0, -1.0, -2.0), adv=0.5)]
    batch = collate(rows, pad_id=0)
    with pytest.raises(ValueError, match="teacher"):
        SkillSD()(torch.zeros(2, V), batch)


def test_skill_sd_defaults():
    o = SkillSD()
    assert (o.kl_weight, o.clip_eps) == (0.001, 0.2)
    with pytest.raises(AttributeError):  # frozen
        o.kl_weight = 0.1
