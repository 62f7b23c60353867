"""Teachers relabel the student's own episodes.

- `HFTeacher` (``hf:<model>``): a white-box model with the student's tokenizer scores the
  episode's exact token ids: the logprob of every sampled token (reverse-KL advantage) and,
  in the learner, full-vocabulary logits (GKD). A different tokenizer is refused.
- `SelfTeacher` (``self``): the student's current weights, conditioned on the env's skill card
  placed in the system message (Skill-SD / OPSD). The rest of the conversation is the student's
  token ids unchanged, so the two sides line up token for token after the system message.
- `OracleTeacher` (``oracle``): the env's expert writes the correct next turn for the state the
  student actually reached (DAgger); each such turn becomes a cross-entropy target.

`check_signal` guards against a missing or degenerate teacher signal (never train on zeros).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
import torch

from agentopd.packing import pack_groups, packed_logits, supports_packing
from agentopd.registry import tool_api
from agentopd.render import Renderer, RenderError
from agentopd.rows import Batch, TrainRow
from agentopd.types import Episode

SKILL_HEADER = "\n\nPrivileged notes for this task (from solved examples):\n"


class TeacherSignalError(RuntimeError):
    """The teacher's signal is missing, non-finite or degenerate."""


def episode_row(ep: Episode, index: int = -1) -> TrainRow:
    """The episode itself as a training row (on-policy losses)."""
    turn_of = [-1] * len(ep.token_ids)
    for t in ep.turns:
        for i in range(t.start, t.end):
            turn_of[i] = t.index
    return TrainRow(ep.token_ids, ep.loss_mask, ep.logprobs, tuple(turn_of), episode=index)


def same_tokenizer(a, b) -> bool:
    return a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id


class LogitTeacher:
    """A teacher that scores token sequences with a causal LM."""

    name = "logits"
    provides_logits = True

    def __init__(self, model, tokenizer, max_tokens: int = 4096, topk: int = 0, topk_temperature: float = 1.0):
        self.model = model
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.topk = topk
        """When > 0, `score` also keeps the top-k ids and log-probs at every target (top-k GKD)."""
        self.topk_temperature = topk_temperature
        """Temperature of the top-k log-probs (the GKD temperature, applied to the teacher)."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def teacher_view(self, ep: Episode, row: TrainRow, make_env: Callable[[], gym.Env]) -> TrainRow:
        return row

    @torch.no_grad()
    def logprobs_at(self, rows: Sequence[TrainRow], positions: Sequence[Sequence[int]]) -> torch.Tensor:
        """Teacher log-probs (N, V) at the given student positions of each row (position p
        predicts token p+1), row by row: one packed forward per group of rows."""
        views = [r.teacher_ids or r.input_ids for r in rows]
        # student position p <-> teacher position p + teacher_offset
        tpos = [[p + r.teacher_offset for p in ps] for r, ps in zip(rows, positions)]
        per_row: list[torch.Tensor | None] = [None] * len(rows)
        packed = supports_packing(self.model)
        groups = pack_groups(views, self.max_tokens) if packed else [[i] for i in range(len(rows))]
        for g in groups:
            want = [tpos[i] for i in g]
            if packed:
                logits = packed_logits(self.model, [views[i] for i in g], want)
            else:
                logits = torch.cat([self.model(input_ids=torch.tensor([views[i]], device=self.device)).logits[0, tpos[i]]
                                    for i in g])
            logp = torch.log_softmax(logits.float(), dim=-1)
            k = 0
            for i, w in zip(g, want):
                per_row[i] = logp[k : k + len(w)]
                k += len(w)
        return torch.cat([t for t in per_row if t is not None]) if rows else torch.zeros((0, 0))

    def score(self, rows: Sequence[TrainRow]) -> list[TrainRow]:
        """Add the teacher's logprob of each target token and its argmax prediction to each row
        (and its top-k, for top-k GKD). Scored group by group, so only one group's
        (targets x vocabulary) log-probs are alive at a time."""
        scored: dict[int, TrainRow] = {}
        for g in pack_groups([r.teacher_ids or r.input_ids for r in rows], self.max_tokens):
            for i, row in zip(g, self._score_group([rows[i] for i in g])):
                scored[i] = row
        return [scored[i] for i in range(len(rows))]

    def _score_group(self, rows: Sequence[TrainRow]) -> list[TrainRow]:
        positions = [[p for p in range(len(r.input_ids) - 1) if r.loss_mask[p + 1]] for r in rows]
        logp = self.logprobs_at(rows, positions).cpu()
        scored, k = [], 0
        for r, ps in zip(rows, positions):
            part = logp[k : k + len(ps)]
            k += len(ps)
            nxt = torch.tensor([r.input_ids[p + 1] for p in ps], dtype=torch.long)
            tl = part.gather(-1, nxt[:, None]).squeeze(-1).tolist() if ps else []
            top1 = part.argmax(-1).tolist() if ps else []
            t_logp = [0.0] * len(r.input_ids)
            t_top1 = [-1] * len(r.input_ids)
            for p, v, a in zip(ps, tl, top1):
                t_logp[p + 1], t_top1[p + 1] = v, a
            extra: dict[str, Any] = {}
            if self.topk > 0:
                # log_softmax(logp / tau) == log_softmax(logits / tau): logp is logits shifted per row
                top = torch.log_softmax(part / self.topk_temperature, dim=-1).topk(min(self.topk, part.shape[-1]), dim=-1)
                extra = {"teacher_topk_ids": tuple(map(tuple, top.indices.tolist())),
                         "teacher_topk_logp": tuple(map(tuple, top.values.tolist()))}
            scored.append(replace(r, teacher_logp=tuple(t_logp), teacher_top1=tuple(t_top1), **extra))
        return scored

    def logits_for(self, batch: Batch) -> torch.Tensor:
        """Teacher log-probs (N, V) at a micro-batch's target positions (``mask != 0``, row-major)."""
        sel = batch.mask != 0
        return self.logprobs_at(batch.rows, [sel[i].nonzero().squeeze(-1).tolist() for i in range(sel.shape[0])])

    def relabel(self, episodes: Sequence[Episode], make_env: Callable[[], gym.Env]) -> list[TrainRow]:
        rows = [self.teacher_view(ep, episode_row(ep, i), make_env) for i, ep in enumerate(episodes)]
        return self.score(rows)


class HFTeacher(LogitTeacher):
    """A white-box transformers model that shares the student's tokenizer."""

    name = "hf"

    def __init__(self, model, tokenizer, student_tokenizer, max_tokens: int = 4096, topk: int = 0,
                 topk_temperature: float = 1.0):
        if not same_tokenizer(tokenizer, student_tokenizer):
            raise ValueError(
                "the teacher's tokenizer differs from the student's: white-box distillation scores "
                "the student's exact token ids, so both must share one vocabulary. Use a teacher "
                "from the same model family (e.g. Qwen3-8B for a Qwen3-1.7B student), or the "
                "'oracle' teacher, which needs no logits."
            )
        super().__init__(model.eval(), tokenizer, max_tokens, topk, topk_temperature)


class SelfTeacher(LogitTeacher):
    """The student's live weights conditioned on the task's skill card (privileged context)."""

    name = "self"

    def teacher_view(self, ep: Episode, row: TrainRow, make_env: Callable[[], gym.Env]) -> TrainRow:
        env = make_env()
        try:
            env.reset(seed=ep.seed, options={"task": ep.task_id})
            card = tool_api(env).skill_card()
        finally:
            env.close()
        return with_skill_card(row, ep, card, Renderer(self.tokenizer))


def with_skill_card(row: TrainRow, ep: Episode, card: dict, renderer: Renderer) -> TrainRow:
    """Teacher view: the system message plus the skill card, then the student's ids verbatim."""
    system = ep.messages[0]
    if system["role"] != "system":
        raise RenderError("the self teacher needs a system message to put the skill card in")
    student_prefix = renderer.full_ids([system])
    if list(ep.token_ids[: len(student_prefix)]) != student_prefix:
        raise RenderError("the episode does not start with its rendered system message")
    hinted = {"role": "system", "content": system["content"] + SKILL_HEADER + json.dumps(card, indent=1)}
    teacher_prefix = renderer.full_ids([hinted])
    ids = tuple(teacher_prefix) + tuple(ep.token_ids[len(student_prefix):])
    return replace(row, teacher_ids=ids, teacher_offset=len(teacher_prefix) - len(student_prefix))


@dataclass(frozen=True)
class OracleTeacher:
    """DAgger: the env's expert relabels every state the student reached."""

    tokenizer: Any  # a transformers tokenizer
    only_diverged: bool = False
    """Train only on turns where the student's action failed the per-turn oracle check."""
    name: str = "oracle"
    provides_logits: bool = False

    def relabel(self, episodes: Sequence[Episode], make_env: Callable[[], gym.Env]) -> list[TrainRow]:
        rows = []
        eos = self.tokenizer.eos_token_id
        for i, ep in enumerate(episodes):
            for t, expert in zip(ep.turns, oracle_turns(ep, make_env)):
                if self.only_diverged and t.oracle_ok:
                    continue
                target = self.tokenizer.encode(expert, add_special_tokens=False) + [eos]
                prefix = ep.token_ids[: t.start]
                n = len(prefix) + len(target)
                rows.append(TrainRow(
                    tuple(prefix) + tuple(target), (0,) * len(prefix) + (1,) * len(target),
                    (0.0,) * n, (-1,) * len(prefix) + (t.index,) * len(target), episode=i,
                ))
        return rows


def oracle_turns(ep: Episode, make_env: Callable[[], gym.Env]) -> list[str]:
    """Replay the episode in a fresh env; before each student turn, ask the oracle."""
    env = make_env()
    try:
        env.reset(seed=ep.seed, options={"task": ep.task_id})
        out = []
        for t in ep.turns:
            out.append(tool_api(env).oracle_action())
            *_, term, trunc, _ = env.step(t.text)
            if term or trunc:
                break
        return out
    finally:
        env.close()


def check_signal(rows: Sequence[TrainRow]) -> dict[str, float]:
    """Fail loudly on a missing, non-finite or degenerate teacher signal; return its stats."""
    vals = [lp for r in rows if r.teacher_logp is not None
            for lp, m in zip(r.teacher_logp, r.loss_mask) if m]
    n_targets = sum(r.n_targets for r in rows)
    if n_targets == 0:
        raise TeacherSignalError("no student tokens to distill on this step (all episodes empty?)")
    if len(vals) != n_targets:
        raise TeacherSignalError(f"teacher scored {len(vals)} of {n_targets} student tokens")
    if not all(math.isfinite(v) for v in vals):
        raise TeacherSignalError("teacher logprobs contain NaN or inf")
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / len(vals)
    if var < 1e-10:
        raise TeacherSignalError(
            f"teacher logprobs are constant ({mean:.4f}) on every token: a uniform or broken teacher")
    probs = [math.exp(v) for v in vals]
    return {
        "teacher/logp_mean": mean,
        "teacher/logp_std": math.sqrt(var),
        "teacher/p_sampled_lt_0.01": sum(p < 0.01 for p in probs) / len(probs),
        "teacher/p_sampled_gt_0.99": sum(p > 0.99 for p in probs) / len(probs),
    }
