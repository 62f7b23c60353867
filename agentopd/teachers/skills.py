"""Skill-SD's skill library: cards written from finished episodes, retrieved per task by UCB.

In Skill-SD (REFERENCES.md section 4) the teacher is the student's own current weights shown the
task plus a skill card S(x), a short JSON note with three fields: ``success_analysis`` (what a
solution does), ``mistake_analysis`` (what went wrong) and ``golden_workflow`` (the steps that
work). A writer turns a completed trajectory (and, where the caller has one, the env oracle's own
trace of the same task) into a card: `RuleWriter` deterministically from the turns, their
per-turn oracle checks and the expert's actions; `LLMWriter` by asking a model, falling back to
the rules when its reply is not a valid card. The `SkillLibrary` keeps a few cards per task and
treats retrieval as a bandit: each episode's reward is credited to the card its teacher saw, and
the next retrieval takes an unseen card first, then the one with the best
``mean_reward + c * sqrt(ln N / n)``, so cards that help the teacher teach are shown more and
a full task drops its worst-rewarded card. The student never sees a card.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from agentopd.core.types import Episode, ToolCall, TurnRecord
from agentopd.inference.sampling import SamplingParams, TokenPolicy
from agentopd.rollout.oracle import OraclePolicy
from agentopd.rollout.runner import RolloutConfig, run_episodes

FIELDS = ("success_analysis", "mistake_analysis", "golden_workflow")
"""The card's keys, as the teacher sees them."""
SOURCES = ("env", "rules", "llm")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SkillCard:
    """One skill card for one task."""

    id: str
    """Unique and stable (``f"{task_id}#{n}"``, see `SkillLibrary.next_id`)."""
    task_id: str
    success_analysis: str
    """What a successful attempt does."""
    mistake_analysis: str
    """What went wrong (or "none observed")."""
    golden_workflow: tuple[str, ...]
    """The steps that solve the task, one short string each."""
    source: str = "rules"
    """Who wrote it: ``env`` (the env's own card), ``rules`` (`RuleWriter`), ``llm`` (`LLMWriter`)."""
    step: int = 0
    """The training step it was written at."""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"skill card source must be one of {SOURCES}, not {self.source!r}")
        object.__setattr__(self, "golden_workflow", tuple(self.golden_workflow))

    @property
    def content(self) -> tuple[str, str, tuple[str, ...]]:
        """The three fields (what dedup compares)."""
        return self.success_analysis, self.mistake_analysis, self.golden_workflow

    def as_dict(self) -> dict[str, Any]:
        """The JSON card the teacher sees."""
        return {"success_analysis": self.success_analysis, "mistake_analysis": self.mistake_analysis,
                "golden_workflow": list(self.golden_workflow)}

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "task_id": self.task_id, **self.as_dict(), "source": self.source,
                "step": self.step}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SkillCard:
        """Inverse of `to_json`; raises ValueError on a malformed object."""
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not isinstance(obj.get("task_id"), str):
            raise ValueError("a skill card needs string 'id' and 'task_id'")
        s, m, wf = card_fields(obj)
        step = obj.get("step", 0)
        if not isinstance(step, int):
            raise ValueError("a skill card's 'step' must be an int")
        return cls(obj["id"], obj["task_id"], s, m, wf, str(obj.get("source", "rules")), step)


def card_fields(obj: Any) -> tuple[str, str, tuple[str, ...]]:
    """The three card fields of `obj`, type-checked (extra keys are ignored); ValueError if not."""
    if not isinstance(obj, dict):
        raise ValueError("a skill card is a JSON object")
    missing = [k for k in FIELDS if k not in obj]
    if missing:
        raise ValueError(f"a skill card needs {', '.join(missing)}")
    s, m, wf = (obj[k] for k in FIELDS)
    if not isinstance(s, str) or not isinstance(m, str):
        raise ValueError("success_analysis and mistake_analysis must be strings")
    if not isinstance(wf, list | tuple) or not all(isinstance(x, str) for x in wf):
        raise ValueError("golden_workflow must be a list of strings")
    return s, m, tuple(wf)


# ---------------------------------------------------------------------------------------------
# compact text: every string a writer emits goes into a small model's prompt


def clip(text: str, n: int) -> str:
    """`text` on one line, at most `n` characters (an ellipsis marks a cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: max(0, n - 1)] + "…"


def call_str(name: str, arguments: dict[str, Any], n: int = 40) -> str:
    """``name(key="value", ...)`` with each value clipped to `n` characters."""
    args = ", ".join(f"{k}={clip(json.dumps(v), n)}" for k, v in arguments.items())
    return f"{name}({args})"


_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def compact_text(text: str, n: int = 120) -> str:
    """An assistant text as its tool calls (``name(args); ...``), or the text itself, clipped."""
    calls = []
    for raw in _CALL.findall(text):
        try:
            obj = json.loads(raw)
            calls.append(call_str(str(obj["name"]), dict(obj.get("arguments") or {})))
        except (ValueError, KeyError, TypeError):
            calls.append(clip(raw, 60))
    return clip("; ".join(calls) if calls else text, n)


def _call_of(c: ToolCall) -> str:
    return clip(c.raw or c.name, 60) if c.parse_error else call_str(c.name, c.arguments)


def compact_turn(turn: TurnRecord, n: int = 120) -> str:
    """A turn as its (parsed) tool calls, or its text."""
    if turn.tool_calls:
        return clip("; ".join(_call_of(c) for c in turn.tool_calls), n)
    return compact_text(turn.text, n)


def _with_results(turn: TurnRecord) -> str:
    """A turn's calls with what each returned (``calc(...) -> 36.3``), or its final text."""
    if not turn.tool_calls:
        return f"answered {clip(turn.text, 40)!r}"
    parts = []
    for c, r in zip(turn.tool_calls, turn.tool_results):
        got = f"error {r.error}" if r.error else clip(r.content, 24)
        parts.append(f"{_call_of(c)} -> {got}")
    return "; ".join(parts)


def _workflow_of(ep: Episode, n: int) -> tuple[str, ...]:
    """An episode's assistant turns, compacted (from its messages when it has no turn records)."""
    if ep.turns:
        return tuple(compact_turn(t, n) for t in ep.turns)
    return tuple(compact_text(m["content"], n) for m in ep.messages if m["role"] == "assistant")


def first_divergence(ep: Episode) -> TurnRecord | None:
    """The first turn whose per-turn oracle check failed, or None."""
    return next((t for t in ep.turns if t.oracle_ok is False), None)


def _repeated_call(ep: Episode) -> tuple[str, int] | None:
    """The most repeated identical tool call (same name and arguments) and its count, if any."""
    seen: Counter[tuple[str, str]] = Counter()
    shown: dict[tuple[str, str], str] = {}
    for t in ep.turns:
        for c in t.tool_calls:
            if c.parse_error is None:
                key = (c.name, json.dumps(c.arguments, sort_keys=True))
                seen[key] += 1
                shown.setdefault(key, call_str(c.name, c.arguments))
    if not seen:
        return None
    key, count = max(seen.items(), key=lambda kv: kv[1])
    return (shown[key], count) if count > 1 else None


def _tool_errors(ep: Episode) -> str:
    kinds = Counter(r.error for t in ep.turns for r in t.tool_results if r.error)
    return ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))


_STOPS = {"turn_limit": "Ran out of turns after {n}.", "token_limit": "Ran out of context tokens.",
          "loop": "Stopped for repeating the same calls.", "window": "The turn window ended."}


# ---------------------------------------------------------------------------------------------
# writers


@runtime_checkable
class SkillWriter(Protocol):
    """Turns one finished episode (and the oracle's own episode of its task) into a card."""

    def write(self, episode: Episode, expert: Episode | None, step: int, card_id: str) -> SkillCard | None:
        """`expert` is the env oracle's episode of the same task (None when the caller has
        none); None when there is nothing to learn (an infrastructure failure)."""
        ...


@dataclass
class RuleWriter:
    """A deterministic card from the trajectory, its per-turn oracle checks and the expert trace.

    Turns are named 1-based ("Turn 2" is ``turns[1]``). An expert trace is used only when it
    succeeded; an episode that ended in an infrastructure error gets no card."""

    max_chars: int = 240
    """Longest analysis string."""
    max_steps: int = 16
    """Most golden-workflow steps (each at most 120 characters)."""

    def write(self, episode: Episode, expert: Episode | None, step: int, card_id: str) -> SkillCard | None:
        if episode.stop_reason.value == "error":
            return None
        expert = expert if expert is not None and expert.success and (expert.turns or expert.messages) else None
        div = first_divergence(episode)
        return SkillCard(card_id, episode.task_id, clip(self._success(episode, expert, div), self.max_chars),
                         clip(self._mistakes(episode), self.max_chars),
                         self._workflow(episode, expert, div)[: self.max_steps], "rules", step)

    def _success(self, ep: Episode, expert: Episode | None, div: TurnRecord | None) -> str:
        if ep.success:
            calls = "; ".join(_with_results(t) for t in ep.turns)
            return f"Solved in {ep.num_turns} turns: {calls}."
        if expert is not None:
            steps = [_with_results(t) for t in expert.turns] or list(_workflow_of(expert, 60))
            return f"Not solved. The expert solves it in {len(steps)} turns: {'; '.join(steps)}."
        if div is not None and div.oracle_action:
            return f"Not solved. At turn {div.index + 1} the expert does {compact_text(div.oracle_action, 80)}."
        return "Not solved; no expert trace."

    def _mistakes(self, ep: Episode) -> str:
        errors = _tool_errors(ep)
        if ep.success:
            return f"None fatal; recovered from tool errors: {errors}." if errors else "none observed"
        out = []
        div = first_divergence(ep)
        if div is not None:
            want = f"; the expert does {compact_text(div.oracle_action, 60)}" if div.oracle_action else ""
            out.append(f"Turn {div.index + 1} diverged: wrote {compact_turn(div, 60)}{want}.")
        loop = _repeated_call(ep)
        if loop is not None:
            out.append(f"Looped: called {clip(loop[0], 60)} {loop[1]} times.")
        if errors:
            out.append(f"Tool errors: {errors}.")
        capped = [t.index + 1 for t in ep.turns if t.finish_reason == "length"]
        if capped:
            out.append(f"Turn {capped[0]} hit the per-turn token cap.")
        stop = _STOPS.get(ep.stop_reason.value)
        if stop:
            out.append(stop.format(n=ep.num_turns))
        elif ep.turns and not ep.turns[-1].tool_calls:
            out.append(f"Final answer {clip(ep.turns[-1].text, 40)!r} was wrong.")
        return " ".join(out) or "The task was not solved."

    def _workflow(self, ep: Episode, expert: Episode | None, div: TurnRecord | None) -> tuple[str, ...]:
        if expert is not None:
            return _workflow_of(expert, 120)
        if ep.success:
            return _workflow_of(ep, 120)
        upto = ep.turns[: div.index + 1] if div is not None else ep.turns
        return tuple(compact_text(t.oracle_action, 120) for t in upto if t.oracle_action)


PROMPT = """You review one attempt by an AI agent at a task it solves with tools, and write a \
skill card that helps with the next attempt at the same task.

Task:
{task}

Attempt ({outcome}):
{transcript}
{expert}
Reply with only a JSON object with exactly these keys:
{{"success_analysis": "<what a successful solution does, one or two sentences>", \
"mistake_analysis": "<what went wrong in this attempt, or 'none observed'>", \
"golden_workflow": ["<step 1>", "<step 2>", "..."]}}"""


class LLMWriter:
    """A model writes the card from a compact transcript; invalid replies fall back to the rules.

    ``generate(prompt) -> reply``. Exceptions raised by `generate` itself propagate (a broken
    model is a bug, not a bad card)."""

    def __init__(self, generate: Callable[[str], str], fallback: RuleWriter | None = None,
                 max_turns: int = 20):
        self.generate = generate
        self.fallback = fallback if fallback is not None else RuleWriter()
        self.max_turns = max_turns
        """Transcript turns shown (the first ones)."""
        self.fallbacks = 0
        """Replies that were not a valid card (the rules wrote those cards)."""

    @classmethod
    def from_policy(cls, policy: TokenPolicy, tokenizer, max_new_tokens: int = 256, **kw) -> LLMWriter:
        """A writer whose `generate` is `policy`'s greedy reply to the prompt as a user message."""
        def generate(prompt: str) -> str:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
            if not isinstance(ids, list):  # transformers >= 5 returns a BatchEncoding
                ids = ids["input_ids"]
            (s,) = policy.sample([list(ids)], SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))
            return tokenizer.decode(list(s.token_ids), skip_special_tokens=True)

        return cls(generate, **kw)

    def prompt(self, episode: Episode, expert: Episode | None = None) -> str:
        users = [m["content"] for m in episode.messages if m["role"] == "user"]
        lines: list[str] = []
        request, run = 0, [0, 0, ""]  # a run of identical turns: first, last, what they did
        for t in episode.turns[: self.max_turns]:
            body = _with_results(t) if t.tool_calls else clip(t.text, 80)
            if t.oracle_ok is False and t.oracle_action:
                body += f" [expert instead: {compact_text(t.oracle_action, 80)}]"
            if t.request_index != request and t.request_index < len(users):  # a follow-up request
                request = t.request_index
                lines.append(f"User: {clip(users[request], 160)}")
            elif lines and body == run[2]:  # a loop: one line for the whole run
                run[1] = t.index + 1
                lines[-1] = clip(f"Turns {run[0]}-{run[1]} (the same each time): {body}", 240)
                continue
            run = [t.index + 1, t.index + 1, body]
            lines.append(clip(f"Turn {t.index + 1}: {body}", 240))
        if episode.num_turns > self.max_turns:
            lines.append(f"... ({episode.num_turns - self.max_turns} more turns)")
        outcome = f"solved: {'yes' if episode.success else 'no'}, ended: {episode.stop_reason.value}"
        ref = ""
        if expert is not None and expert.success:
            ref = "\nA correct solution's steps: " + "; ".join(_workflow_of(expert, 80)) + "\n"
        return PROMPT.format(task=clip(users[0], 400) if users else "(unknown)", outcome=outcome,
                             transcript="\n".join(lines) or "(no turns)", expert=ref)

    def write(self, episode: Episode, expert: Episode | None, step: int, card_id: str) -> SkillCard | None:
        if episode.stop_reason.value == "error":
            return None
        try:
            s, m, wf = card_fields(first_json_object(self.generate(self.prompt(episode, expert))))
        except ValueError:
            self.fallbacks += 1
            return self.fallback.write(episode, expert, step, card_id)
        n = self.fallback.max_chars
        return SkillCard(card_id, episode.task_id, clip(s, n), clip(m, n),
                         tuple(clip(x, 120) for x in wf)[: self.fallback.max_steps], "llm", step)


def first_json_object(text: str) -> Any:
    """The first JSON object in `text` (code fences and surrounding prose are skipped)."""
    dec = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = dec.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    raise ValueError("no JSON object in the reply")


def expert_traces(make_env: Callable[[], Any], episodes: Sequence[Episode], tokenizer,
                  cfg: RolloutConfig | None = None) -> dict[str, Episode]:
    """The env oracle's own episode of each distinct task of `episodes` (the first one's seed),
    by task id: the `expert` a writer takes."""
    first: dict[str, int] = {}
    for ep in episodes:
        first.setdefault(ep.task_id, ep.seed)
    played = run_episodes(make_env, OraclePolicy(), list(first), list(first.values()),
                          cfg or RolloutConfig(), tokenizer=tokenizer)
    return {ep.task_id: ep for ep in played}


# ---------------------------------------------------------------------------------------------
# the library


@dataclass
class _Entry:
    card: SkillCard
    age: int
    """Insertion order (smaller is older)."""
    n: int = 0
    """Episodes that used the card."""
    reward_sum: float = 0.0

    @property
    def mean(self) -> float:
        return self.reward_sum / self.n if self.n else 0.0


@dataclass
class SkillLibrary:
    """At most `max_per_task` cards per task, retrieved by UCB over the rewards of the episodes
    that used them."""

    max_per_task: int = 4
    ucb_c: float = 1.0
    """Exploration weight c in mean_reward + c * sqrt(ln N / n)."""
    _tasks: dict[str, list[_Entry]] = field(default_factory=dict, init=False, repr=False)
    """Per task, its cards oldest first."""
    _by_id: dict[str, _Entry] = field(default_factory=dict, init=False, repr=False)
    _issued: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    """Per task, cards ever added (the next id's number)."""
    _clock: int = field(default=0, init=False, repr=False)
    evicted: int = field(default=0, init=False)
    """Cards dropped to make room."""

    def __post_init__(self) -> None:
        if self.max_per_task < 1:
            raise ValueError("max_per_task must be at least 1")

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, card_id: object) -> bool:
        return card_id in self._by_id

    def cards(self, task_id: str) -> tuple[SkillCard, ...]:
        """The task's cards, oldest first."""
        return tuple(e.card for e in self._tasks.get(task_id, ()))

    def uses(self, card_id: str) -> tuple[int, float]:
        """(episodes that used the card, their mean reward)."""
        e = self._by_id[card_id]
        return e.n, e.mean

    def next_id(self, task_id: str) -> str:
        """The id for the task's next card (stable: never reused, even after eviction)."""
        return f"{task_id}#{self._issued.get(task_id, 0)}"

    def add(self, card: SkillCard) -> bool:
        """Add `card`; False (and nothing changes) when the task already has a card with the same
        three fields. A full task first drops its lowest-mean-reward used card (the oldest of
        those tied; the oldest card when none was used)."""
        entries = self._tasks.setdefault(card.task_id, [])
        if any(e.card.content == card.content for e in entries):
            return False
        if card.id in self._by_id:
            raise ValueError(f"skill card id {card.id!r} is already in the library")
        if len(entries) >= self.max_per_task:
            used = [e for e in entries if e.n > 0]
            victim = min(used, key=lambda e: (e.mean, e.age)) if used else entries[0]
            entries.remove(victim)
            del self._by_id[victim.card.id]
            self.evicted += 1
        entry = _Entry(card, self._clock)
        self._clock += 1
        entries.append(entry)
        self._by_id[card.id] = entry
        self._issued[card.task_id] = self._issued.get(card.task_id, 0) + 1
        return True

    def seed(self, task_id: str, card: dict[str, Any], step: int = 0) -> SkillCard | None:
        """Add the env's own card (``source="env"``) when the task has none; the card added."""
        if self._tasks.get(task_id):
            return None
        s, m, wf = card_fields(card)
        new = SkillCard(self.next_id(task_id), task_id, s, m, wf, "env", step)
        return new if self.add(new) else None

    def retrieve(self, task_id: str, rng: random.Random | None = None) -> SkillCard | None:
        """The card to show for `task_id`: the oldest unseen one, else the UCB argmax (exact ties:
        a draw from `rng`, or the oldest without one); None when the task has no card."""
        entries = self._tasks.get(task_id)
        if not entries:
            return None
        unseen = [e for e in entries if e.n == 0]
        if unseen:
            return unseen[0].card
        scores = self.scores(task_id)
        best = max(scores.values())
        tied = [e for e in entries if scores[e.card.id] == best]
        return (rng.choice(tied) if rng is not None and len(tied) > 1 else tied[0]).card

    def scores(self, task_id: str) -> dict[str, float]:
        """UCB score of each used card of the task (unused cards are inf)."""
        entries = self._tasks.get(task_id, [])
        total = sum(e.n for e in entries)
        return {e.card.id: e.mean + self.ucb_c * math.sqrt(math.log(total) / e.n) if e.n else math.inf
                for e in entries}

    def record(self, card_id: str, reward: float) -> None:
        """Credit one episode's reward to the card its teacher saw (once per episode). Record a
        step's rewards before adding its new cards: an evicted card's id is unknown (KeyError)."""
        if card_id not in self._by_id:
            raise KeyError(f"skill card {card_id!r} is not in the library (evicted, or never added)")
        if not math.isfinite(reward):
            raise ValueError(f"reward for skill card {card_id!r} is not finite: {reward}")
        e = self._by_id[card_id]
        e.n += 1
        e.reward_sum += float(reward)

    def stats(self) -> dict[str, float]:
        """Library metrics under ``skills/``."""
        entries = list(self._by_id.values())
        return {
            "skills/cards": float(len(entries)),
            "skills/tasks_with_cards": float(sum(1 for v in self._tasks.values() if v)),
            "skills/mean_uses": sum(e.n for e in entries) / len(entries) if entries else 0.0,
            "skills/unseen": float(sum(1 for e in entries if e.n == 0)),
            "skills/evicted": float(self.evicted),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION, "max_per_task": self.max_per_task, "ucb_c": self.ucb_c,
            "clock": self._clock, "evicted": self.evicted, "issued": dict(self._issued),
            "cards": [{"card": e.card.to_json(), "age": e.age, "n": e.n, "reward_sum": e.reward_sum}
                      for entries in self._tasks.values() for e in entries],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SkillLibrary:
        if not isinstance(obj, dict) or obj.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a version-{FORMAT_VERSION} skill library")
        lib = cls(int(obj["max_per_task"]), float(obj["ucb_c"]))
        for row in sorted(obj["cards"], key=lambda r: int(r["age"])):
            card = SkillCard.from_json(row["card"])
            if card.id in lib._by_id:
                raise ValueError(f"duplicate skill card id {card.id!r}")
            e = _Entry(card, int(row["age"]), int(row["n"]), float(row["reward_sum"]))
            lib._tasks.setdefault(card.task_id, []).append(e)
            lib._by_id[card.id] = e
        lib._issued = {str(k): int(v) for k, v in obj["issued"].items()}
        lib._clock, lib.evicted = int(obj["clock"]), int(obj["evicted"])
        return lib

    def save(self, path: str | os.PathLike) -> None:
        """Write the library as JSON, atomically (a crash never leaves a half-written file)."""
        path = Path(path)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(self.to_json(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, **settings: Any) -> SkillLibrary:
        """The library saved at `path` (its own settings); a missing file is an empty library
        with `settings`; a corrupt one raises ValueError naming the file."""
        path = Path(path)
        if not path.exists():
            return cls(**settings)
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            why = " ".join(str(e).split()) or type(e).__name__
            raise ValueError(f"{path}: corrupt skill library ({type(e).__name__}: {why})") from None
