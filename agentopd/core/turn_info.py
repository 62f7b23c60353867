"""`TurnInfo`: the typed contract between an env's `step` and the rollout.

Gymnasium's `info` is a dict; agentopd envs write a `TurnInfo` into it (`to_info`, flat keys,
so plain gymnasium users still read ``info["oracle_ok"]``) and the runner reads it back
(`from_info`). A key an env forgets is an `EnvContractError` that names it, never a silent
``success=False``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentopd.core.types import StopReason, ToolCall, ToolResult


class EnvContractError(RuntimeError):
    """An env's step returned an info dict that does not hold a `TurnInfo`."""


@dataclass(frozen=True)
class TurnInfo:
    """What one assistant turn did, as the env saw it."""

    turn: int
    """0-based assistant-turn index."""
    request_index: int
    """The user request this turn worked on."""
    tool_calls: tuple[ToolCall, ...]
    """Tool calls parsed from the turn (parse failures included, with their error)."""
    tool_results: tuple[ToolResult, ...]
    """One result per call, errors included."""
    oracle_action: str | None
    """The expert's turn for the state before this turn (None: the env has no oracle)."""
    oracle_ok: bool | None
    """The per-turn oracle check of this turn (None: unknown)."""
    request_success: tuple[bool, ...]
    """Per request answered so far: correct or not."""
    stop_reason: StopReason | None = None
    """Why the episode ended, on the terminating step (None otherwise)."""
    success: bool | None = None
    """Whether every request was answered correctly, on the terminating step."""

    @property
    def tool_errors(self) -> int:
        return sum(1 for r in self.tool_results if r.error)

    REQUIRED = ("turn", "request_index", "tool_calls", "tool_results", "oracle_action", "oracle_ok",
                "request_success")

    def to_info(self) -> dict[str, Any]:
        """The flat gymnasium info keys (lists where gymnasium users expect lists)."""
        info: dict[str, Any] = {
            "turn": self.turn, "request_index": self.request_index, "tool_calls": list(self.tool_calls),
            "tool_results": list(self.tool_results), "tool_errors": self.tool_errors,
            "oracle_action": self.oracle_action, "oracle_ok": self.oracle_ok,
            "request_success": list(self.request_success),
        }
        if self.stop_reason is not None:
            info["stop_reason"] = self.stop_reason
        if self.success is not None:
            info["success"] = self.success
        return info

    @classmethod
    def from_info(cls, info: Mapping[str, Any], terminated: bool = False) -> TurnInfo:
        """Read a step's info; raise `EnvContractError` naming any missing key."""
        missing = [k for k in cls.REQUIRED if k not in info]
        if terminated and "success" not in info:
            missing.append("success")
        if missing:
            raise EnvContractError(
                f"env step info is missing {missing}: an agentopd env's step must return "
                f"TurnInfo(...).to_info() (keys {list(cls.REQUIRED)}, plus 'success' when it "
                "terminates); see agentopd.envs.base.ToolEnv")
        stop = info.get("stop_reason")
        return cls(
            turn=int(info["turn"]), request_index=int(info["request_index"]),
            tool_calls=tuple(info["tool_calls"]), tool_results=tuple(info["tool_results"]),
            oracle_action=info["oracle_action"], oracle_ok=info["oracle_ok"],
            request_success=tuple(bool(x) for x in info["request_success"]),
            stop_reason=StopReason(stop) if stop is not None else (StopReason.DONE if terminated else None),
            success=bool(info["success"]) if "success" in info else None,
        )
