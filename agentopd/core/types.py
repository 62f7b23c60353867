"""Typed, frozen records that flow through the pipeline: tasks -> env -> rollout -> Episode."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant" | "tool", "content": str}``
(tool messages also carry ``"name"``)."""


class StopReason(str, enum.Enum):
    """Why an episode ended."""

    DONE = "done"
    """The env terminated: every user request was answered."""
    TURN_LIMIT = "turn_limit"
    """The turn budget ran out (gymnasium ``truncated``)."""
    TOKEN_LIMIT = "token_limit"
    """The episode's token budget (context) ran out."""
    LOOP = "loop"
    """The agent made the same tool call `RolloutConfig.stop_repeats` times (held-out evals stop a
    looping student instead of paying for its whole turn budget)."""
    WINDOW = "window"
    """A curriculum's turn window ended the episode (TCOD f2b): the student acted its W turns."""
    ERROR = "error"
    """Infrastructure failure (kept out of success rates and losses, never a silent 0)."""


@dataclass(frozen=True)
class ToolCall:
    """One tool call parsed from an assistant turn."""

    name: str
    arguments: dict[str, Any]
    """Decoded JSON arguments (empty when the call could not be parsed)."""
    raw: str = ""
    """The text between the ``<tool_call>`` tags, as written."""
    parse_error: str | None = None
    """Why the call could not be parsed, or None."""


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returned to the agent."""

    name: str
    content: str
    """The tool message text the agent sees (an error message on failure)."""
    error: str | None = None
    """Error kind on failure: ``parse``, ``unknown_tool``, ``bad_arguments``, ``exception``,
    ``timeout``, ``tool_error``, ``sandbox``; None on success."""


@dataclass(frozen=True)
class Task:
    """One released task (one JSONL line of a suite)."""

    id: str
    family: str
    split: str
    requests: tuple[str, ...]
    """User requests, presented one after another in one episode."""
    data: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """Family-specific fields: initial state, expected answers, oracle solution."""
    difficulty: int = 1
    version: int = 1

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Task:
        known = {"id", "family", "split", "requests", "difficulty", "version"}
        return cls(
            id=obj["id"],
            family=obj["family"],
            split=obj["split"],
            requests=tuple(obj["requests"]),
            difficulty=int(obj.get("difficulty", 1)),
            version=int(obj.get("version", 1)),
            data={k: v for k, v in obj.items() if k not in known},
        )


@dataclass(frozen=True)
class TurnRecord:
    """One assistant turn of an episode, with its token span."""

    index: int
    """0-based assistant-turn index within the episode."""
    start: int
    """Index into ``Episode.token_ids`` of the turn's first sampled token."""
    end: int
    """One past the turn's last sampled token."""
    text: str
    """Decoded text of the sampled tokens."""
    tool_calls: tuple[ToolCall, ...]
    tool_results: tuple[ToolResult, ...]
    request_index: int
    """Which user request this turn works on."""
    oracle_ok: bool | None
    """Per-turn oracle check: was this an acceptable expert-like action? None if unknown."""
    reward: float
    finish_reason: str
    """``stop`` (end-of-turn token) or ``length`` (per-turn token cap)."""
    oracle_action: str | None = None
    """The expert's turn for the state this turn was taken in (what DAgger trains on); None
    when the env has no oracle."""
    replayed: bool = False
    """The env's oracle played this turn before the student acted (TCOD b2f): history in the
    student's context, never a training target."""


@dataclass(frozen=True)
class Episode:
    """One student episode, token-in / token-out.

    ``token_ids`` is the whole conversation exactly as the student saw and sampled it: rendered
    observation tokens plus the student's sampled tokens, never re-tokenized.
    """

    env_id: str
    task_id: str
    seed: int
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    """Sampled-token logprob under the sampling distribution (0.0 where not sampled)."""
    loss_mask: tuple[int, ...]
    """1 on student-sampled tokens, 0 on system/user/tool/template tokens."""
    turns: tuple[TurnRecord, ...]
    messages: tuple[Message, ...]
    """The final conversation as chat messages."""
    reward: float
    success: bool
    stop_reason: StopReason
    request_success: tuple[bool, ...] = ()
    """Per user request: answered correctly."""
    error: str | None = None
    """Infrastructure error text when ``stop_reason`` is ERROR."""
    skill_card: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    """The task's privileged hints, recorded at reset when the rollout asks for them (the
    ``self`` teacher's context); never shown to the student."""

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    @property
    def tool_errors(self) -> int:
        return sum(1 for t in self.turns for r in t.tool_results if r.error)

    @property
    def tool_calls(self) -> int:
        return sum(len(t.tool_results) for t in self.turns)

    def to_json(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id,
            "task_id": self.task_id,
            "seed": self.seed,
            "success": self.success,
            "reward": self.reward,
            "stop_reason": self.stop_reason.value,
            "request_success": list(self.request_success),
            "error": self.error,
            "num_turns": self.num_turns,
            "messages": list(self.messages),
            "turns": [
                {
                    "index": t.index,
                    "span": [t.start, t.end],
                    "request_index": t.request_index,
                    "oracle_ok": t.oracle_ok,
                    "reward": t.reward,
                    "finish_reason": t.finish_reason,
                    "text": t.text,
                    "tool_calls": [
                        {"name": c.name, "arguments": c.arguments, "parse_error": c.parse_error, "raw": c.raw}
                        for c in t.tool_calls
                    ],
                    "tool_results": [{"name": r.name, "content": r.content, "error": r.error} for r in t.tool_results],
                    "tool_errors": [r.error for r in t.tool_results if r.error],
                    "oracle_action": t.oracle_action,
                    "replayed": t.replayed,
                }
                for t in self.turns
            ],
            "token_ids": list(self.token_ids),
            "logprobs": [round(x, 5) for x in self.logprobs],
            "loss_mask": list(self.loss_mask),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Episode:
        """The episode `to_json` wrote (logprobs as rounded there; the skill card is not kept).
        Lines written before turn texts and tool results were kept load with those empty."""
        turns = tuple(
            TurnRecord(
                index=t["index"], start=t["span"][0], end=t["span"][1], text=t.get("text", ""),
                tool_calls=tuple(ToolCall(c["name"], c["arguments"], c.get("raw", ""), c["parse_error"])
                                 for c in t["tool_calls"]),
                tool_results=tuple(ToolResult(r["name"], r["content"], r["error"]) for r in t.get("tool_results", ())),
                request_index=t["request_index"], oracle_ok=t["oracle_ok"], reward=t["reward"],
                finish_reason=t["finish_reason"], oracle_action=t.get("oracle_action"), replayed=t.get("replayed", False),
            )
            for t in obj["turns"]
        )
        return cls(
            env_id=obj["env_id"], task_id=obj["task_id"], seed=obj["seed"], token_ids=tuple(obj["token_ids"]),
            logprobs=tuple(obj["logprobs"]), loss_mask=tuple(obj["loss_mask"]), turns=turns,
            messages=tuple(obj["messages"]), reward=obj["reward"], success=obj["success"],
            stop_reason=StopReason(obj["stop_reason"]), request_success=tuple(obj["request_success"]),
            error=obj["error"],
        )
