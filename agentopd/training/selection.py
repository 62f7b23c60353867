"""TIP token selection (REFERENCES section 6): train on a drawn fraction of the student's tokens.

`select_tokens` scores every target of a step's rows by ``(H_S / ln V)^alpha * (JSD_1/2 /
ln 2)^gamma`` (the student's entropy from one no-grad forward, the teacher-student JSD from
the rows' teacher signal: full log-probs or top-K plus a tail), draws ``floor(ratio * N)`` of
them without replacement with probability proportional to the score, and returns the rows with
only those tokens left in the loss mask (and the teacher's per-target entries cut to match).
The learner computes logits only where the mask is set, so the (tokens x vocabulary) tensors of
the loss shrink with the ratio: that is where the memory goes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch

from agentopd.core.rows import TrainRow
from agentopd.inference.forward import logits_at, pack_groups
from agentopd.training import divergences
from agentopd.training.losses import _generalized_jsd_N


def _targets(row: TrainRow) -> list[int]:
    """Target token indices q (the logits at q - 1 predict them), in order."""
    return [q for q in range(1, len(row.input_ids)) if row.loss_mask[q]]


@torch.no_grad()
def token_scores(model, rows: Sequence[TrainRow], max_tokens: int = 2048, autocast: bool = False
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Per row: the student's entropy at each target (nats) and, where the row carries the
    teacher's top-K or full log-probs, the JSD(1/2) between the two there (else None)."""
    ents: dict[int, torch.Tensor] = {}
    jsds: dict[int, torch.Tensor | None] = {}
    dev = next(model.parameters()).device
    for g in pack_groups([r.input_ids for r in rows], max_tokens):
        pos = [[q - 1 for q in _targets(rows[i])] for i in g]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            logits = logits_at(model, [rows[i].input_ids for i in g], pos).float()
        k = 0
        for i, p in zip(g, pos):
            z = logits[k: k + len(p)]
            k += len(p)
            logS = torch.log_softmax(z, -1)
            ents[i] = divergences.entropy_rows(logS).cpu()
            s = rows[i].signal
            if s is not None and s.target_logp is not None:
                logT = torch.log_softmax(s.target_logp.to(z.device).float(), -1)
                jsds[i] = _generalized_jsd_N(logS, logT, 0.5).cpu()
            elif s is not None and s.topk_ids is not None:
                ids = torch.tensor(s.topk_ids, dtype=torch.long, device=z.device)
                lp = torch.tensor(s.topk_logp, dtype=torch.float32, device=z.device)
                bS, bT = divergences.topk_buckets(z, ids, lp)
                jsds[i] = _generalized_jsd_N(bS, bT, 0.5).cpu()
            else:
                jsds[i] = None
    return [ents[i] for i in range(len(rows))], [jsds[i] for i in range(len(rows))]


def select_tokens(model, rows: Sequence[TrainRow], ratio: float, alpha: float = 1.0, gamma: float = 1.0,
                  seed: int = 0, max_tokens: int = 2048, autocast: bool = False
                  ) -> tuple[list[TrainRow], dict[str, float]]:
    """The rows with only the drawn ``floor(ratio * N)`` of the step's N target tokens left as
    targets; metrics ``loss/kept_frac``, ``loss/kept_student_entropy`` and
    ``loss/all_student_entropy`` (means over the kept and all targets)."""
    ents, jsds = token_scores(model, rows, max_tokens, autocast)
    if gamma != 0 and any(j is None for j in jsds):
        raise ValueError("TIP with gamma > 0 weights tokens by the teacher-student JSD: the rows need the "
                         "teacher's top-k or full log-probs (tip_gamma 0 selects by student entropy alone)")
    ent = torch.cat(ents)
    jsd = torch.cat([j for j in jsds if j is not None]) if gamma != 0 else None
    vocab = int(model.config.vocab_size)
    w = divergences.tip_weights(ent, jsd, vocab, alpha=alpha, gamma=gamma)
    picked = divergences.tip_select(w, ratio, torch.Generator().manual_seed(seed))
    keep = torch.zeros(len(ent), dtype=torch.bool)
    keep[picked] = True
    out, k = [], 0
    for r in rows:
        qs = _targets(r)
        kept = keep[k: k + len(qs)].tolist()
        k += len(qs)
        out.append(_restrict(r, qs, kept))
    n = len(ent)
    metrics = {"loss/kept_frac": float(keep.sum()) / max(n, 1),
               "loss/kept_student_entropy": float(ent[keep].mean()) if bool(keep.any()) else math.nan,
               "loss/all_student_entropy": float(ent.mean()) if n else math.nan}
    return out, metrics


def _restrict(row: TrainRow, targets: list[int], kept: list[bool]) -> TrainRow:
    """`row` with the targets not kept taken out of the mask and of the teacher's per-target lists."""
    mask = list(row.loss_mask)
    for q, on in zip(targets, kept):
        if not on:
            mask[q] = 0
    s = row.signal
    if s is not None:
        idx = [j for j, on in enumerate(kept) if on]
        if s.topk_ids is not None:
            s = replace(s, topk_ids=tuple(s.topk_ids[j] for j in idx),
                        topk_logp=tuple(s.topk_logp[j] for j in idx) if s.topk_logp is not None else None)
        if s.target_logp is not None:
            s = replace(s, target_logp=s.target_logp[torch.tensor(idx, dtype=torch.long, device=s.target_logp.device)])
    return replace(row, loss_mask=tuple(mask), signal=s)
