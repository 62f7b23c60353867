"""`ToolEnv`: the base of every agentopd environment family.

An episode is one task: a list of user requests presented one after another (BFCL-style
multi-turn). Each assistant turn is one `step`: tool calls in it are parsed and run, and their
results come back as ``tool`` messages; a turn without tool calls is the final answer to the
current request, which the family's verifier checks before the next request is shown.

Families implement five hooks: `_init_state`, `_tools`, `_check_request`, `oracle_action`
and `skill_card`; they may refine `_same_call` for the per-turn oracle check.

How calls are written is the env's `tool_format` (``tools.formats``: ``hermes`` by default,
``llama3_json``), a constructor argument (``gymnasium.make(id, tool_format="llama3_json")``): it
writes the system prompt's tool section and the worked example, parses the agent's calls, and
writes the oracle's (`format_call`). A message policy that gets structured ``tool_calls`` from an
API turns them into this text with ``env.get_wrapper_attr("tool_format").openai_text(...)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym

from agentopd.core.turn_info import TurnInfo
from agentopd.core.types import Message, StopReason, Task, ToolCall, ToolResult
from agentopd.envs.spaces import MessagesSpace, TextSpace
from agentopd.envs.suites import load_tasks
from agentopd.tools.core import ToolSet
from agentopd.tools.formats import FORMATS, ToolCallFormat, get_format

ANSWER_PROMPT = "\nWhen you have what you need, reply without any tool call. {answer_format}{example}"
"""What follows the tool format's instructions in the system prompt."""
_HERMES_RUN = re.compile(r"(?:<tool_call>.*?</tool_call>)+", re.DOTALL)


@dataclass
class RequestLog:
    """What happened so far while working on the current user request."""

    calls: list[ToolCall] = field(default_factory=list)
    results: list[ToolResult] = field(default_factory=list)

    def ok_results(self, name: str | None = None) -> list[tuple[ToolCall, ToolResult]]:
        return [
            (c, r)
            for c, r in zip(self.calls, self.results)
            if r.error is None and (name is None or c.name == name)
        ]


class ToolEnv(gym.Env[list, str]):
    """A multi-turn, tool-using chat environment over a released task suite."""

    metadata: dict[str, Any] = {"render_modes": ["ansi"]}
    family: ClassVar[str] = ""
    instructions: ClassVar[str] = "You are a helpful assistant that uses tools."
    answer_format: ClassVar[str] = "Give your final answer as: Answer: <answer>"
    example: ClassVar[str] = ""
    """A short worked exchange shown in the system prompt (small models need one); its calls
    are written in the ``hermes`` format and shown in the env's `tool_format`."""

    def __init__(
        self,
        split: str = "train",
        tasks: Sequence[Task] | None = None,
        version: int = 1,
        render_mode: str | None = None,
        tool_format: str | ToolCallFormat = "hermes",
    ):
        self.tool_format = get_format(tool_format)
        """How tool calls are written (parsed from the agent, written by the oracle)."""
        self.split = split
        self.tasks: tuple[Task, ...] = tuple(tasks) if tasks is not None else load_tasks(self.family, split, version)
        if not self.tasks:
            raise ValueError(f"{type(self).__name__}: no tasks for split {split!r}")
        self._by_id = {t.id: t for t in self.tasks}
        self.observation_space = MessagesSpace()
        self.action_space = TextSpace()
        self.render_mode = render_mode
        self.task: Task | None = None
        self._history: list[Message] = []
        self._done = True

    # ---- family hooks -------------------------------------------------------------------
    def _init_state(self, task: Task) -> None:
        """Build the family's mutable state (file system, database, ...) for `task`."""

    def _tools(self) -> Sequence[Callable[..., Any]]:
        """Tool functions bound to the current state."""
        raise NotImplementedError

    def _check_request(self, index: int, answer: str) -> bool:
        """Verify the final answer (and/or the end state) of user request `index`."""
        raise NotImplementedError

    def oracle_action(self) -> str:
        """The expert's next assistant turn for the current state (any reachable state)."""
        raise NotImplementedError

    def skill_card(self) -> dict[str, Any]:
        """Privileged hints for the current task (Skill-SD): success_analysis,
        mistake_analysis, golden_workflow."""
        raise NotImplementedError

    def _before_turn(self, expected: str) -> None:
        """Called with the oracle's action before the turn's tool calls run (a family can
        snapshot the pre-turn state here for `_same_call`)."""

    def _same_call(self, student: ToolCall, expert: ToolCall) -> bool:
        """Whether a student call does what the oracle's call does (default: equal JSON)."""
        return student.name == expert.name and _canon(student.arguments) == _canon(expert.arguments)

    # ---- gymnasium API ------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        self.task = self._pick_task(options.get("task"))
        self.request_index = 0
        self.turn = 0
        self.request_success: list[bool] = []
        self.log = RequestLog()
        self._init_state(self.task)
        self.toolset = ToolSet(self._tools())
        tools = self.tool_format.instructions(self.toolset.schemas)
        system = self.instructions + "\n\n" + tools + ANSWER_PROMPT.format(
            answer_format=self.answer_format,
            example=f"\n\nExample:\n{self._example()}" if self.example else "",
        )
        obs = [
            {"role": "system", "content": system},
            {"role": "user", "content": self.task.requests[0]},
        ]
        self._history = list(obs)
        self._done = False
        info = {"task_id": self.task.id, "turn": 0, "request_index": 0, "num_requests": len(self.task.requests)}
        return obs, info

    def step(self, action: str):
        if self._done or self.task is None:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        if not isinstance(action, str):
            raise TypeError(f"action must be the assistant turn as a string, got {type(action).__name__}")
        expected = self.oracle_action()
        self._before_turn(expected)
        calls = self.tool_format.parse(action)
        self._history.append({"role": "assistant", "content": action})
        turn, request_index = self.turn, self.request_index
        reward, terminated = 0.0, False
        if calls:
            results = [self.toolset.run(c) for c in calls]
            self.log.calls.extend(calls)
            self.log.results.extend(results)
            obs = [{"role": "tool", "name": r.name, "content": r.content} for r in results]
            oracle_ok = self._calls_ok(calls, results, expected)
        else:
            results = []
            correct = bool(self._check_request(self.request_index, action))
            self.request_success.append(correct)
            oracle_ok = correct
            reward = 1.0 / len(self.task.requests) if correct else 0.0
            self.request_index += 1
            self.log = RequestLog()
            if self.request_index < len(self.task.requests):
                obs = [{"role": "user", "content": self.task.requests[self.request_index]}]
            else:
                obs, terminated = [], True
        self._history.extend(obs)
        self.turn += 1
        if terminated:
            self._done = True
        info = TurnInfo(
            turn=turn, request_index=request_index, tool_calls=tuple(calls), tool_results=tuple(results),
            oracle_action=expected, oracle_ok=oracle_ok, request_success=tuple(self.request_success),
            stop_reason=StopReason.DONE if terminated else None,
            success=all(self.request_success) if terminated else None,
        ).to_info()
        return obs, reward, terminated, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return "\n".join(f"[{m['role']}] {m['content']}" for m in self._history)

    # ---- helpers ------------------------------------------------------------------------
    def _pick_task(self, task: Task | str | int | None) -> Task:
        if isinstance(task, Task):
            return task
        if isinstance(task, str):
            if task not in self._by_id:
                raise KeyError(f"no task {task!r} in the {self.split} split of {self.family}")
            return self._by_id[task]
        if isinstance(task, int):
            return self.tasks[task % len(self.tasks)]
        return self.tasks[int(self.np_random.integers(len(self.tasks)))]

    def _calls_ok(self, calls: list[ToolCall], results: list[ToolResult], expected: str) -> bool:
        if any(r.error for r in results):
            return False
        wanted = self.tool_format.parse(expected)
        if not wanted:
            return False  # the oracle would have answered here
        return all(any(self._same_call(c, w) for w in wanted) for c in calls)

    def format_call(self, name: str, arguments: dict[str, Any]) -> str:
        """One tool call's text in this env's format (what oracles write)."""
        return self.tool_format.call(name, arguments)

    def _example(self) -> str:
        """The worked example with its (hermes) calls rewritten in this env's format."""
        example = self.example.strip()
        if self.tool_format is FORMATS["hermes"]:
            return example
        hermes = FORMATS["hermes"]
        return _HERMES_RUN.sub(lambda m: self.tool_format.format(hermes.parse(m.group(0))), example)

    @property
    def history(self) -> list[Message]:
        """The conversation so far (system, user, assistant and tool messages)."""
        return list(self._history)


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def last_number(text: str) -> float | None:
    """The number after the last ``Answer:`` in `text`, else the last number in it."""
    import re

    num = r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+"
    m = re.findall(r"Answer:\s*\$?\s*(" + num + ")", text, flags=re.IGNORECASE)
    found = m or re.findall(num, text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def numbers_match(got: float | None, want: float) -> bool:
    if got is None:
        return False
    return abs(got - want) <= 1e-6 + 1e-4 * abs(want) or round(got, 2) == round(want, 2)
