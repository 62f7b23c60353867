"""Logit teachers: a causal LM in this process scores the student's exact token ids.

- `HFTeacher` (``hf:<model>``): a white-box model with the student's tokenizer (a different
  tokenizer is refused).
- `SelfTeacher` (``self``): the student's current weights, conditioned on the task's skill card
  placed in the system message (Skill-SD / OPSD). The rest of the conversation is the student's
  token ids unchanged, so the two sides line up token for token after the system message.

One forward per group of rows gives every signal the objective asked for: the log-prob of each
sampled token and the argmax (always), the top-k log-probs, or the full-vocabulary log-probs
at the targets (kept for the learner, so the teacher runs once per step).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

import torch

from agentopd.core.capabilities import Signal, SignalRequest, expand
from agentopd.core.rows import TeacherSignal, TrainRow, episode_row
from agentopd.core.types import Episode
from agentopd.inference.forward import logits_at, pack_groups
from agentopd.rollout.render import Renderer, RenderError
from agentopd.teachers.base import TeacherError, same_tokenizer

SKILL_HEADER = "\n\nPrivileged notes for this task (from solved examples):\n"

SAMPLED = SignalRequest(Signal.SAMPLED_LOGPROBS)

View = tuple[tuple[int, ...], int]
"""The teacher's token ids for a row, and the offset: teacher position = student position + offset."""


class LogitTeacher:
    """A teacher that scores token sequences with a causal LM."""

    name = "logits"
    gives = frozenset({Signal.FULL_LOGITS})
    needs_skill_card = False
    autocast = False
    """Score under bf16 autocast (set from the run's compute dtype)."""
    temperature = 1.0
    """The sampled-token signal is log softmax(logits / temperature): above 1 a near one-hot
    teacher's log-probs soften, so the advantages of the tokens it rejects are not all -17
    (``--teacher-temperature``). Top-k and full-vocabulary signals are left at 1; GKD applies
    its own temperature."""

    def __init__(self, model, tokenizer, max_tokens: int = 4096):
        self.model = model
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        """Prefix-tree nodes per scoring forward (bounds the (targets x vocabulary) memory)."""

    def view(self, ep: Episode) -> View:
        """What the teacher reads for `ep` (by default: the student's ids)."""
        return ep.token_ids, 0

    def relabel(self, episodes: Sequence[Episode], request: SignalRequest) -> list[TrainRow]:
        if request.kind not in expand(self.gives):
            raise TeacherError(f"teacher {self.name} cannot give {request.kind.value}")
        rows = [episode_row(ep, i) for i, ep in enumerate(episodes)]
        return self.score(rows, [self.view(ep) for ep in episodes], request)

    def score(self, rows: Sequence[TrainRow], views: Sequence[View] | None = None,
              request: SignalRequest = SAMPLED) -> list[TrainRow]:
        """Attach the teacher's signal to each row, group by group, so only one group's
        (targets x vocabulary) log-probs are alive at a time (unless FULL_LOGITS keeps them)."""
        views = list(views) if views is not None else [(r.input_ids, 0) for r in rows]
        scored: dict[int, TrainRow] = {}
        for g in pack_groups([views[i][0] for i in range(len(rows))], self.max_tokens):
            for i, row in zip(g, self._score_group([rows[i] for i in g], [views[i] for i in g], request)):
                scored[i] = row
        return [scored[i] for i in range(len(rows))]

    @torch.no_grad()
    def _score_group(self, rows: Sequence[TrainRow], views: Sequence[View], request: SignalRequest) -> list[TrainRow]:
        positions = [[p for p in range(len(r.input_ids) - 1) if r.loss_mask[p + 1]] for r in rows]
        tpos = [[p + off for p in ps] for (_, off), ps in zip(views, positions)]
        seqs = [ids for ids, _ in views]
        # a group is one prefix tree; `logits_at` splits it again only if it must
        parts = []
        for sub in pack_groups(seqs, self.max_tokens):
            dev = next(self.model.parameters()).device
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits_NV = logits_at(self.model, [seqs[i] for i in sub], [tpos[i] for i in sub])
            logp_NV = torch.log_softmax(logits_NV.float(), dim=-1)
            k = 0
            for i in sub:
                parts.append((i, logp_NV[k : k + len(tpos[i])]))
                k += len(tpos[i])
        by_row = dict(parts)
        out = []
        for i, (r, ps) in enumerate(zip(rows, positions)):
            part_dev = by_row[i]
            part = part_dev.cpu()
            nxt = torch.tensor([r.input_ids[p + 1] for p in ps], dtype=torch.long)
            soft = part if self.temperature == 1.0 else torch.log_softmax(part / self.temperature, dim=-1)
            tl = soft.gather(-1, nxt[:, None]).squeeze(-1).tolist() if ps else []
            top1 = part.argmax(-1).tolist() if ps else []
            t_logp = [0.0] * len(r.input_ids)
            t_top1 = [-1] * len(r.input_ids)
            for p, v, a in zip(ps, tl, top1):
                t_logp[p + 1], t_top1[p + 1] = v, a
            sig = TeacherSignal(tuple(t_logp), tuple(t_top1))
            if request.kind == Signal.TOPK_LOGPROBS:
                # log_softmax(logp / tau) == log_softmax(logits / tau): logp is logits shifted per row
                top = torch.log_softmax(part / request.temperature, dim=-1).topk(
                    min(request.topk, part.shape[-1]), dim=-1)
                sig = replace(sig, topk_ids=tuple(map(tuple, top.indices.tolist())),
                              topk_logp=tuple(map(tuple, top.values.tolist())))
            elif request.kind == Signal.FULL_LOGITS:
                sig = replace(sig, target_logp=part_dev)
            out.append(replace(r, signal=sig))
        return out


class HFTeacher(LogitTeacher):
    """A white-box transformers model that shares the student's tokenizer."""

    name = "hf"

    def __init__(self, model, tokenizer, student_tokenizer, max_tokens: int = 4096):
        if not same_tokenizer(tokenizer, student_tokenizer):
            raise ValueError(
                "the teacher's tokenizer differs from the student's: white-box distillation scores "
                "the student's exact token ids, so both must share one vocabulary. Use a teacher "
                "from the same model family (e.g. Qwen3-8B for a Qwen3-1.7B student), or the "
                "'oracle' teacher, which needs no logits."
            )
        super().__init__(model.eval(), tokenizer, max_tokens)


class SelfTeacher(LogitTeacher):
    """The student's live weights conditioned on the task's skill card (privileged context)."""

    name = "self"
    needs_skill_card = True
    renderer: Renderer | None = None
    """The run's chat format (default: the tokenizer's HF template)."""

    def view(self, ep: Episode) -> View:
        if ep.skill_card is None:
            raise TeacherError("the self teacher needs each episode's skill card: roll out with "
                               "RolloutConfig(record_skill_card=True)")
        return with_skill_card(ep, ep.skill_card, self.renderer or Renderer(self.tokenizer))


def with_skill_card(ep: Episode, card: dict, renderer: Renderer) -> View:
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
    return ids, len(teacher_prefix) - len(student_prefix)
