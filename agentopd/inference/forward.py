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

Works with the ``sdpa`` and ``eager`` attention implementations (the ones that take a custom
4-D mask); with other kernels `logits_at` falls back to one right-padded batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


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
