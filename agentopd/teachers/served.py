"""A teacher behind an OpenAI-compatible server (``openai:<model>@<base_url>``).

What it gives depends on the server, found by a probe before the first step (`negotiate`):

- a **logprob teacher** when completions return vLLM's ``prompt_logprobs``: the student's exact
  token ids are scored in one request per episode (the sampled token's log-prob, the argmax
  and the top-k at every target), for reverse_kl_pg and top-k GKD. Its tokenizer must be the
  student's (checked through ``/tokenize``, or the decoded tokens of a scored probe);
- a **black-box relabel teacher** otherwise (text only, DAgger-style): for each student turn
  it writes the next turn for the student's own state, from the student's exact prefix ids
  (completions) or, on a chat-only API, from the conversation's messages.

Requests go through `ServedClient` (retries, concurrency, budget, cache); one that cannot be
answered raises `ServerUnavailable`, and the recipe stops the run with a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from agentopd.core.capabilities import Signal, SignalRequest, expand
from agentopd.core.rows import TeacherSignal, TrainRow, episode_row
from agentopd.core.types import Episode, TurnRecord
from agentopd.inference.openai_client import Capabilities, ServedClient, ServedError
from agentopd.teachers.base import TeacherError
from agentopd.teachers.oracle import text_row


class ServedTeacher:
    """Prompt-logprob scoring or text relabels from a served model."""

    name = "openai"
    needs_skill_card = False

    def __init__(self, client: ServedClient, student_tokenizer, max_new_tokens: int = 256):
        self.client = client
        self.tokenizer = student_tokenizer
        self.max_new_tokens = max_new_tokens
        self.caps: Capabilities | None = None
        self.reply_text: Callable[[str | None, list | None], str] | None = None
        """Turns a chat reply's content and structured ``tool_calls`` into one text in the env's
        tool-call format (set by the recipe from ``tools.formats``; None: the content only)."""
        self.gives: frozenset[Signal] = frozenset({Signal.TOPK_LOGPROBS, Signal.TEXT})
        """Declared before the probe (what such a server can give); narrowed by `negotiate`."""

    # ---- before the first step ------------------------------------------------------------
    def negotiate(self, need: Signal, topk: int = 0, temperature: float = 1.0) -> Capabilities:
        """Probe the server; refuse, with what would work, a need it cannot meet."""
        probe_ids = self.tokenizer.encode("The answer is 42.", add_special_tokens=False)
        try:
            caps = self.client.probe(probe_ids, want_topk=max(topk, 1))
        except ServedError as e:
            raise TeacherError(f"teacher {self.client.model!r} at {self.client.base_url}: {e}") from None
        gives = set()
        if caps.prompt_logprobs:
            gives.add(Signal.TOPK_LOGPROBS)
        if caps.completions or caps.chat:
            gives.add(Signal.TEXT)
        self.caps, self.gives = caps, frozenset(gives)
        where = f"the server at {self.client.base_url}"
        if need in (Signal.SAMPLED_LOGPROBS, Signal.TOPK_LOGPROBS):
            if not caps.prompt_logprobs:
                raise TeacherError(
                    f"{where} gives no prompt logprobs (" + ("chat only" if not caps.completions else
                                                           "completions without prompt_logprobs")
                    + "): use --loss dagger (the model writes each turn for the student's state), or serve "
                    "the teacher with vLLM (`vllm serve <model>`) or `agentopd serve`, which give them")
            if topk > caps.max_topk:
                raise TeacherError(f"{where} gives at most {caps.max_topk} prompt logprobs per token: use "
                                   f"--gkd-topk {caps.max_topk} or less (or raise the server's --max-logprobs)")
            if temperature != 1.0:
                raise TeacherError(f"{where} scores at temperature 1; a served teacher's top-k cannot be "
                                   "re-tempered exactly: use --gkd-temperature 1 with a served teacher")
            try:
                self.client.check_tokenizer(self.tokenizer, caps)
            except ServedError as e:
                raise TeacherError(str(e)) from None
        elif need == Signal.TEXT and not (caps.completions or caps.chat):  # pragma: no cover - probe refuses
            raise TeacherError(f"{where} answers neither completions nor chat")
        elif need not in expand(self.gives):
            raise TeacherError(f"a served teacher gives {', '.join(sorted(s.value for s in self.gives))}, "
                               f"not {need.value}")
        return caps

    # ---- relabelling ------------------------------------------------------------------------
    def relabel(self, episodes: Sequence[Episode], request: SignalRequest) -> list[TrainRow]:
        if request.kind not in expand(self.gives):
            raise TeacherError(f"teacher {self.name} at {self.client.base_url} cannot give {request.kind.value} "
                               f"(it gives {', '.join(sorted(s.value for s in self.gives))})")
        if request.kind == Signal.TEXT:
            return self._relabel_text(episodes)
        rows = [episode_row(ep, i) for i, ep in enumerate(episodes)]
        k = max(1, request.topk)  # k >= 1: the argmax comes with it
        with ThreadPoolExecutor(self.client.concurrency) as pool:
            return list(pool.map(lambda r: self._score(r, k, request), rows))

    def _score(self, row: TrainRow, k: int, request: SignalRequest) -> TrainRow:
        choice = self.client.completion(list(row.input_ids), 1, temperature=0.0, prompt_logprobs=k)
        pl = choice.get("prompt_logprobs")
        ids = row.input_ids
        if not isinstance(pl, list) or len(pl) != len(ids):
            raise TeacherError(f"{self.client.base_url} returned {len(pl) if isinstance(pl, list) else 'no'} "
                               f"prompt logprobs for {len(ids)} tokens")
        t_logp = [0.0] * len(ids)
        t_top1 = [-1] * len(ids)
        topk_ids: list[tuple[int, ...]] = []
        topk_logp: list[tuple[float, ...]] = []
        for q in range(1, len(ids)):
            if not row.loss_mask[q]:
                continue
            entry = pl[q]
            try:
                scored = {int(t): (float(v["logprob"]), int(v.get("rank") or 10**9)) for t, v in entry.items()}
                t_logp[q] = scored[ids[q]][0]
            except (AttributeError, KeyError, TypeError, ValueError):
                raise TeacherError(f"{self.client.base_url}: malformed prompt logprobs at position {q}") from None
            ranked = sorted(((lp, t) for t, (lp, r) in scored.items() if r <= k), reverse=True)
            if not ranked:
                raise TeacherError(f"{self.client.base_url}: no top-{k} logprobs at position {q}")
            t_top1[q] = ranked[0][1]
            topk_ids.append(tuple(t for _, t in ranked[:k]))
            topk_logp.append(tuple(lp for lp, _ in ranked[:k]))
        sig = TeacherSignal(tuple(t_logp), tuple(t_top1))
        if request.kind == Signal.TOPK_LOGPROBS:
            if any(len(t) < request.topk for t in topk_ids):
                raise TeacherError(f"{self.client.base_url} returned fewer than {request.topk} logprobs per token")
            sig = replace(sig, topk_ids=tuple(topk_ids), topk_logp=tuple(topk_logp))
        return replace(row, signal=sig)

    def _relabel_text(self, episodes: Sequence[Episode]) -> list[TrainRow]:
        jobs = [(i, ep, t) for i, ep in enumerate(episodes) for t in ep.turns if not t.replayed]
        with ThreadPoolExecutor(self.client.concurrency) as pool:
            texts = list(pool.map(lambda j: self._write_turn(j[1], j[2]), jobs))
        return [text_row(self.tokenizer, ep, i, t, text) for (i, ep, t), text in zip(jobs, texts)]

    def _write_turn(self, ep: Episode, turn: TurnRecord) -> str:
        """The teacher's next turn for the state the student was in at `turn`."""
        caps = self.caps
        if caps is None or caps.completions:
            choice = self.client.completion(list(ep.token_ids[: turn.start]), self.max_new_tokens, temperature=0.0)
            text = choice.get("text")
            if not isinstance(text, str):
                raise TeacherError(f"{self.client.base_url}/completions answered without text")
            return text
        return self.message_text(self.client.chat_message(state_messages(ep, turn), self.max_new_tokens,
                                                          temperature=0.0))

    def message_text(self, message: dict) -> str:
        """A chat reply as the student's text: its structured calls written in the env's format."""
        calls = message.get("tool_calls") or None
        if calls and self.reply_text is not None:
            return self.reply_text(message.get("content"), calls)
        return message.get("content") or ""

    def metrics(self) -> dict[str, float]:
        """``teacher/`` request, retry, cache and cost counters (cumulative)."""
        return self.client.metrics("teacher")


def state_messages(ep: Episode, turn: TurnRecord) -> list[dict]:
    """The conversation as the student saw it before `turn` (its assistant message excluded)."""
    seen = -1
    for n, m in enumerate(ep.messages):
        if m["role"] == "assistant":
            seen += 1
            if seen == turn.index:
                return [dict(x) for x in ep.messages[:n]]
    raise TeacherError(f"episode {ep.task_id} has no assistant message for turn {turn.index}")
