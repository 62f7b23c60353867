"""Prefix-tree packing is exact: same logits, same loss and same gradients as separate forwards."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from agentopd.core.rows import TrainRow
from agentopd.inference import forward
from agentopd.inference.forward import pack, pack_groups, packed_logits
from agentopd.training import losses
from agentopd.training.learner import Learner, OptimConfig


def _seqs(seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    system = [rng.randrange(5, 900) for _ in range(40)]
    a = system + [rng.randrange(5, 900) for _ in range(30)]
    b = system + [rng.randrange(5, 900) for _ in range(25)]
    return [a, b, a[:55] + [7, 8, 9], [rng.randrange(5, 900) for _ in range(20)], a]  # a twice on purpose


def test_pack_shares_prefixes_and_keeps_paths():
    seqs = _seqs()
    tree = pack(seqs)
    assert tree.n_nodes == 70 + 25 + 3 + 20  # shared system prompt, shared 55-prefix, duplicate row
    for s, path in zip(seqs, tree.node_of):
        assert [tree.input_ids[n] for n in path] == s
        assert [tree.depth[n] for n in path] == list(range(len(s)))
        assert all(tree.parent[path[i]] == path[i - 1] for i in range(1, len(path)))
    mask = tree.attention_mask()[0, 0]
    i = tree.node_of[2][-1]  # last token of the branched row attends to exactly its own path
    assert set(mask[i].nonzero().squeeze(-1).tolist()) == set(tree.node_of[2])


@pytest.mark.parametrize("impl,block", [("sdpa", 16), ("sdpa", 4096), ("eager", 16)])
def test_packed_logits_match_separate_forwards(tokenizer, impl, block, monkeypatch):
    """Also block by block (`tree_sdpa` with 16-node query blocks: gathers and slices)."""
    from helpers_models import tiny_model_from

    monkeypatch.setattr(forward, "TREE_BLOCK", block)
    model = tiny_model_from(tokenizer, seed=1)
    model.config._attn_implementation = impl
    seqs = _seqs()
    positions = [list(range(30, len(s) - 1)) for s in seqs[:3]] + [[0, 5, 18], [69, 3]]
    got = packed_logits(model, seqs, positions)
    with torch.no_grad():
        want = torch.cat([model(input_ids=torch.tensor([s])).logits[0, p] for s, p in zip(seqs, positions)])
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    assert model.config._attn_implementation == impl  # restored after the packed forward


def test_tree_attention_reads_only_the_keys_a_block_needs(monkeypatch):
    monkeypatch.setattr(forward, "TREE_BLOCK", 16)
    tree = pack(_seqs())
    mask = tree.attention_mask()
    plan = forward._tree_plan(mask)
    assert [(a, b) for a, b, _ in plan] == [(a, min(a + 16, tree.n_nodes)) for a in range(0, tree.n_nodes, 16)]
    gathered = [(b, idx) for _, b, idx in plan if idx is not None]
    assert gathered and all(len(idx) < b for b, idx in gathered)  # row b's block skips row a's nodes
    for a, b, idx in plan:  # every key a query of the block attends to is kept
        keys = set(range(b)) if idx is None else set(idx.tolist())
        assert set(mask[0, 0, a:b].any(0).nonzero().squeeze(1).tolist()) <= keys


def test_pack_groups_respect_budget_and_cover_every_row():
    seqs = _seqs() + _seqs(1)
    for budget in (30, 100, 150, 10_000):
        groups = pack_groups(seqs, budget)
        assert sorted(i for g in groups for i in g) == list(range(len(seqs)))
        for g in groups:
            assert len(g) == 1 or pack([seqs[i] for i in g]).n_nodes <= budget
    assert len(pack_groups(seqs, 10_000)) == 1


def _rows(seqs):
    rows = []
    for k, s in enumerate(seqs):
        mask = [0] * 40 + [1] * (len(s) - 40) if len(s) > 40 else [0] * 5 + [1] * (len(s) - 5)
        rows.append(TrainRow(tuple(s), tuple(mask), (0.0,) * len(s), tuple(k if m else -1 for m in mask)))
    return rows


def test_packed_learner_step_equals_padded_step(tokenizer, monkeypatch):
    """One optimizer step with packing gives the same loss and the same gradients (also with
    gradient checkpointing; tree attention in 16-node blocks)."""
    from helpers_models import tiny_model_from

    monkeypatch.setattr(forward, "TREE_BLOCK", 16)
    rows = _rows(_seqs())

    def ce(logits_NV, batch):
        sel = batch.mask != 0
        out = losses.cross_entropy(logits_NV[None], batch.target_ids[sel][None], batch.mask[sel][None])
        return out.loss, out.metrics

    results = []
    base = tiny_model_from(tokenizer, seed=2)
    for pack_rows, ckpt in ((True, False), (False, False), (True, True)):
        model = copy.deepcopy(base)
        learner = Learner(model, OptimConfig(lr=1e-2, max_tokens_per_micro=80, pack=pack_rows,
                                             grad_checkpointing=ckpt), 1, pad_id=tokenizer.pad_token_id)
        assert learner.pack is pack_rows and model.is_gradient_checkpointing is ckpt
        metrics = learner.step(rows, ce)
        results.append((metrics, {k: p.grad.clone() for k, p in model.named_parameters()}))
    (m_pack, g_pack), *others = results  # padded; packed with gradient checkpointing
    assert sum(float(g.abs().sum()) for g in g_pack.values()) > 0
    for m_other, g_other in others:
        assert m_pack["loss/ce"] == pytest.approx(m_other["loss/ce"], rel=1e-5)
        assert m_pack["learner/grad_norm"] == pytest.approx(m_other["learner/grad_norm"], rel=1e-4)
        for k in g_pack:
            torch.testing.assert_close(g_pack[k], g_other[k], atol=1e-6, rtol=1e-3)
