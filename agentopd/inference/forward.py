"""Logits at positions: the one forward that the learner and every local teacher share.

`logits_at` returns a model's logits at chosen positions of many sequences in one forward.
It uses prefix-tree packing: many token sequences in one forward pass, each shared prefix computed once.

Training rows overlap heavily. Every episode of an env starts with the same system prompt, and
DAgger makes one row per student turn whose prefix is the episode so far, so the rows of a
12-turn episode repeat its early tokens up to 12 times. Packing inserts the rows into a trie
(one node per distinct prefix) and runs the model once over the nodes: each node attends to its
ancestors only (a 4-D attention mask) at position id = its depth. A node's hidden state depends
only on its path from the root, so this is exact, and the gradient through a shared prefix is
the sum over the rows that share it, as in separate forwards.

Only the logits that a loss reads are computed (`logits_to_keep`), which keeps the
(positions x vocabulary) tensor off the path for system, user and tool tokens.

Attention over the tree skips what the mask rules out (`tree_sdpa`, in place of ``sdpa`` for the
packed forward): the nodes run in blocks of `TREE_BLOCK` queries, each over only the key nodes
some query of the block attends to (the shared prefix and the block's own rows), not over all N.
On 32 calc rows after one 313-token system prompt the blocks compute 28-38% of a dense mask's
N x N products (2,048-node trees), and dense attention had cost as much as every linear layer.

Works with the ``sdpa`` and ``eager`` attention implementations (the ones that take a custom
4-D mask); with other kernels `logits_at` falls back to one right-padded batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TREE_BLOCK = 256
"""Query nodes per block of `tree_sdpa`."""
TREE_ATTENTION = "agentopd_tree_sdpa"


@dataclass(frozen=True)
class Packed:
    """A prefix tree of sequences, laid out as one sequence of nodes."""

    input_ids: list[int]
    """Token of each node."""
    parent: list[int]
    """Parent node of each node (-1 for a root)."""
    depth: list[int]
    """Position id of each node (0 for a root)."""
    node_of: list[list[int]]
    """Per sequence: the node index of each of its positions."""

    @property
    def n_nodes(self) -> int:
        return len(self.input_ids)

    def attention_mask(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(1, 1, N, N): node i attends to node j iff j is i or an ancestor of i. Boolean
        (True = attend), or additive float (0 / dtype min) when `dtype` is given (eager)."""
        n = self.n_nodes
        allow = torch.zeros((n, n), dtype=torch.bool)
        # Parents always come before children, so each row copies its finished parent row.
        for i, p in enumerate(self.parent):
            if p >= 0:
                allow[i, : p + 1] = allow[p, : p + 1]
            allow[i, i] = True
        if dtype is None:
            return allow[None, None]
        return torch.zeros((n, n), dtype=dtype).masked_fill(~allow, torch.finfo(dtype).min)[None, None]


def pack(seqs: Sequence[Sequence[int]]) -> Packed:
    """Insert the sequences into a prefix tree; nodes are numbered in insertion order."""
    children: dict[tuple[int, int], int] = {}
    ids: list[int] = []
    parent: list[int] = []
    depth: list[int] = []
    node_of: list[list[int]] = []
    for seq in seqs:
        path, cur = [], -1
        for d, tok in enumerate(seq):
            key = (cur, tok)
            nxt = children.get(key)
            if nxt is None:
                nxt = len(ids)
                children[key] = nxt
                ids.append(int(tok))
                parent.append(cur)
                depth.append(d)
            path.append(nxt)
            cur = nxt
        node_of.append(path)
    return Packed(ids, parent, depth, node_of)


def pack_groups(seqs: Sequence[Sequence[int]], max_nodes: int) -> list[list[int]]:
    """Split sequence indices into groups whose prefix tree has at most `max_nodes` nodes (a
    sequence longer than that gets a group of its own). Sequences are visited in lexicographic
    order, so those sharing prefixes land in the same group."""
    order = sorted(range(len(seqs)), key=lambda i: tuple(seqs[i]))
    groups: list[list[int]] = []
    cur: list[int] = []
    nodes = 0
    prev: Sequence[int] = ()
    for i in order:
        s = seqs[i]
        # In lexicographic order, the new nodes of s are those past its common prefix with the
        # previous sequence (the deepest overlap with anything already in the tree).
        common = 0
        for a, b in zip(prev, s):
            if a != b:
                break
            common += 1
        new = len(s) - common
        if cur and nodes + new > max_nodes:
            groups.append(cur)
            cur, nodes, new = [], 0, len(s)
        cur.append(i)
        nodes += new
        prev = s
    if cur:
        groups.append(cur)
    return groups


def supports_packing(model) -> bool:
    """Whether the model's attention takes a custom 4-D mask (sdpa, eager)."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    return impl in ("sdpa", "eager")


def _tree_plan(allow: torch.Tensor) -> list[tuple[int, int, torch.Tensor | None]]:
    """Per block of query nodes [a, b): the key nodes any of them attends to (None: all of
    [0, b), not worth a gather). Parents precede children, so no query reads a key past b."""
    plan = []
    n = allow.shape[-1]
    for a in range(0, n, TREE_BLOCK):
        b = min(a + TREE_BLOCK, n)
        idx = allow[0, 0, a:b, :b].any(0).nonzero().squeeze(1)
        plan.append((a, b, None if idx.numel() > 0.8 * b else idx))
    return plan


def tree_sdpa(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
              **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract (query (1, H, N, D), key/value (1, Hk, N, D),
    a boolean (1, 1, N, N) tree mask) -> (1, N, H, D): SDPA block by block over the keys each
    block needs. Exact: a key no query of the block attends to would get weight exp(-inf) = 0."""
    mask = attention_mask
    assert mask is not None and mask.dtype == torch.bool and query.shape[0] == 1, "a packed tree's mask"
    plan = getattr(mask, "_agentopd_plan", None)
    if plan is None:
        plan = _tree_plan(mask)
        mask._agentopd_plan = plan  # type: ignore[attr-defined]  # computed once, read by every layer
    gqa = query.shape[1] != key.shape[1]
    outs = []
    for a, b, idx in plan:
        if idx is None:
            k, v, m = key[:, :, :b], value[:, :, :b], mask[:, :, a:b, :b]
        else:
            k, v, m = key.index_select(2, idx), value.index_select(2, idx), mask[:, :, a:b].index_select(3, idx)
        outs.append(F.scaled_dot_product_attention(query[:, :, a:b], k, v, attn_mask=m, dropout_p=dropout,
                                                   scale=scaling, enable_gqa=gqa))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, 2)
    return out.transpose(1, 2).contiguous(), None


@contextmanager
def _tree_attention(model) -> Iterator[None]:
    """Run `model`'s attention as `tree_sdpa` inside the block (``sdpa`` models only; not under
    gradient checkpointing, whose recomputation in the backward pass runs outside the block)."""
    cfg = model.config
    old = getattr(cfg, "_attn_implementation", None)
    if old != "sdpa" or getattr(model, "is_gradient_checkpointing", False):
        yield
        return
    from transformers import AttentionInterface

    if TREE_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(TREE_ATTENTION, tree_sdpa)
    cfg._attn_implementation = TREE_ATTENTION
    try:
        yield
    finally:
        cfg._attn_implementation = old


def packed_logits(model, seqs: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]) -> torch.Tensor:
    """Logits (N, V) at the requested positions of each sequence, in order (sequence by
    sequence, positions as given): one forward over the prefix tree of `seqs`."""
    tree = pack(seqs)
    dev = next(model.parameters()).device
    want = [tree.node_of[s][p] for s, ps in enumerate(positions) for p in ps]
    keep = sorted(set(want))
    where = {node: k for k, node in enumerate(keep)}
    eager = (getattr(model.config, "_attn_implementation", None) or "eager") == "eager"
    mask = tree.attention_mask(next(model.parameters()).dtype if eager else None)
    with _tree_attention(model):
        out = model(
            input_ids=torch.tensor([tree.input_ids], device=dev),
            position_ids=torch.tensor([tree.depth], device=dev),
            attention_mask=mask.to(dev),
            logits_to_keep=torch.tensor(keep, dtype=torch.long, device=dev),
            use_cache=False,
        ).logits[0]  # (K, V)
    return out[torch.tensor([where[n] for n in want], dtype=torch.long, device=dev)]


def logits_at(model, seqs: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
              pack: bool = True) -> torch.Tensor:
    """Logits (N, V) at `positions` of each sequence (position p predicts token p + 1), sequence
    by sequence, in one forward: packed into a prefix tree when `pack` and the attention kernel
    allow it, else as one right-padded batch."""
    if pack and supports_packing(model):
        return packed_logits(model, seqs, positions)
    dev = next(model.parameters()).device
    T = max(len(s) for s in seqs)
    ids_BT = torch.zeros((len(seqs), T), dtype=torch.long)
    attn_BT = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids_BT[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        attn_BT[i, : len(s)] = 1
    logits_BTV = model(input_ids=ids_BT.to(dev), attention_mask=attn_BT.to(dev)).logits
    rows = torch.tensor([i for i, ps in enumerate(positions) for _ in ps], dtype=torch.long, device=dev)
    cols = torch.tensor([p for ps in positions for p in ps], dtype=torch.long, device=dev)
    return logits_BTV[rows, cols]
