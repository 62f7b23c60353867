"""Tool-call formats: how calls are written in an assistant turn, and how the model is told.

A `ToolCallFormat` parses calls out of assistant text, writes calls as text (what oracles say),
writes the system prompt's tool section, and turns an OpenAI-compatible reply's structured
``tool_calls`` into `ToolCall` records (and, with `format`, back into this format's text, so a
student's tokens always hold the text form). Formats, by name:

- ``hermes`` (default): Hermes / Qwen, ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``,
  several per turn, anywhere in the text (`tools.core.parse_tool_calls`).
- ``llama3_json``: Llama 3.x custom tools, a reply that *is* JSON,
  ``{"name": ..., "parameters": {...}}``, optionally after ``<|python_tag|>``; several calls are
  separated by ``;`` or whitespace. A reply that starts with anything else is a final answer.

Every malformed call becomes a `ToolCall` with `parse_error`, which `ToolSet.run` answers with a
tool-error result; nothing here raises on model output.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from agentopd.core.types import ToolCall
from agentopd.tools.core import (
    MAX_JSON_DEPTH,
    _json_depth,
    _loads,
    format_tool_call,
    parse_tool_calls,
)


class ToolCallFormat(ABC):
    """The base of a tool-call convention (subclass it and add it to `FORMATS`)."""

    name: ClassVar[str] = ""
    malformed: ClassVar[tuple[str, ...]] = ()
    """Turns with a bad call in this format (an unknown tool, broken JSON, a bad name), which
    an env must answer with a tool error (`agentopd check-env` plays them)."""

    @abstractmethod
    def parse(self, text: str) -> list[ToolCall]:
        """Every call in an assistant turn; malformed ones carry `parse_error`."""
        raise NotImplementedError

    @abstractmethod
    def format(self, calls: Sequence[ToolCall]) -> str:
        """The canonical text of one turn's calls. A call with `parse_error` (an undecodable one
        from `from_openai`, whose `raw` is its arguments text as received) is written with that
        text, so parsing it back gives an error again."""
        raise NotImplementedError

    @abstractmethod
    def instructions(self, schemas: Sequence[Mapping[str, Any]]) -> str:
        """The system prompt's tool section: the tools' OpenAI schemas and how to call them."""
        raise NotImplementedError

    def from_openai(self, tool_calls: Sequence[Mapping[str, Any]]) -> list[ToolCall]:
        """Structured calls of an OpenAI-compatible reply, as records (see `calls_from_openai`)."""
        return calls_from_openai(tool_calls)

    def openai_text(self, content: str | None, tool_calls: Sequence[Mapping[str, Any]] | None) -> str:
        """An OpenAI-compatible assistant reply as one text in this format: its content, then
        its calls. A call that could not be decoded is written with its raw arguments text, so
        the env still answers it with a tool error."""
        calls = self.from_openai(tool_calls or [])
        text = content or ""
        if calls:
            text += ("\n" if text else "") + self._calls_after_text(calls, bool(text))
        return text

    def _calls_after_text(self, calls: Sequence[ToolCall], after_text: bool) -> str:
        return self.format(calls)

    def call(self, name: str, arguments: dict[str, Any]) -> str:
        """One call's text (shorthand for ``format([ToolCall(name, arguments)])``)."""
        return self.format([ToolCall(name, arguments)])


def calls_from_openai(tool_calls: Sequence[Mapping[str, Any]]) -> list[ToolCall]:
    """``[{"id", "type": "function", "function": {"name", "arguments": <JSON string>}}]`` ->
    `ToolCall`s. Arguments may also be an object; a call that is not a function call, has no
    name, or whose arguments are not a JSON object keeps going as a `parse_error`."""
    out = []
    for tc in tool_calls:
        fn = tc.get("function") if isinstance(tc, Mapping) else None
        if not isinstance(fn, Mapping) or tc.get("type", "function") != "function":
            out.append(ToolCall("", {}, json.dumps(tc, default=str), "expected a function tool call"))
            continue
        name, args = fn.get("name"), fn.get("arguments", {})
        raw = args if isinstance(args, str) else json.dumps(args, default=str)
        if not isinstance(name, str) or not name:
            out.append(ToolCall("", {}, raw, "tool call without a function name"))
            continue
        if isinstance(args, str):
            try:
                args = _loads(args) if args.strip() else {}
            except ValueError as e:  # JSONDecodeError included
                out.append(ToolCall(name, {}, raw, f"invalid JSON arguments: {e}"))
                continue
        if not isinstance(args, dict):
            out.append(ToolCall(name, {}, raw, "'arguments' must be a JSON object"))
            continue
        out.append(ToolCall(name, args, raw))
    return out


class HermesFormat(ToolCallFormat):
    """``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (Hermes, Qwen2.5, Qwen3)."""

    name = "hermes"
    malformed = ('<tool_call>{"name": "no_such_tool", "arguments": {}}</tool_call>',
                 "<tool_call>{not json</tool_call>", '<tool_call>{"name": 3}</tool_call>')

    def parse(self, text: str) -> list[ToolCall]:
        return parse_tool_calls(text)

    def format(self, calls: Sequence[ToolCall]) -> str:
        return "".join(_hermes_call(c) for c in calls)

    def instructions(self, schemas: Sequence[Mapping[str, Any]]) -> str:
        return ("You can call these tools:\n<tools>\n" + "\n".join(json.dumps(s) for s in schemas) + "\n</tools>\n"
                "To call a tool, write exactly:\n"
                '<tool_call>{"name": "<tool name>", "arguments": {<arguments as JSON>}}</tool_call>\n'
                "You may make several calls in one turn. Results come back in tool messages.")


def _hermes_call(c: ToolCall) -> str:
    if c.parse_error:  # an undecodable call: its arguments as written, so it stays an error
        return '<tool_call>{"name": ' + json.dumps(c.name) + ', "arguments": ' + c.raw + "}</tool_call>"
    return format_tool_call(c.name, c.arguments)


PYTHON_TAG = "<|python_tag|>"
_TURN_ENDS = ("<|eom_id|>", "<|eot_id|>")


class Llama3JsonFormat(ToolCallFormat):
    """Llama 3.x JSON tool calls: ``{"name": ..., "parameters": {...}}`` as the whole reply
    (``"arguments"`` is accepted for ``"parameters"``, and Meta's ``"type": "function"`` key is
    ignored), optionally after ``<|python_tag|>``; several calls separated by ``; ``."""

    name = "llama3_json"
    malformed = ('{"name": "no_such_tool", "parameters": {}}', "{not json", '{"name": 3}')
    separator: ClassVar[str] = "; "

    def parse(self, text: str) -> list[ToolCall]:
        body = text.strip()
        for end in _TURN_ENDS:  # a turn closed by <|eom_id|> keeps it in its text
            body = body.removesuffix(end).rstrip()
        tagged = PYTHON_TAG in body
        if tagged:
            body = body.split(PYTHON_TAG, 1)[1].strip()
        elif not body.startswith("{"):
            return []  # prose: a final answer
        if not body:
            return [ToolCall("", {}, "", f"nothing after {PYTHON_TAG}; expected a JSON function call")]
        if _json_depth(body) > MAX_JSON_DEPTH:
            return [ToolCall("", {}, body, f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels")]
        return _json_calls(body)

    def format(self, calls: Sequence[ToolCall]) -> str:
        return self.separator.join(_llama_call(c) for c in calls)

    def _calls_after_text(self, calls: Sequence[ToolCall], after_text: bool) -> str:
        # a reply that starts with prose is an answer, so calls after text go after the tag
        return (PYTHON_TAG if after_text else "") + self.format(calls)

    def instructions(self, schemas: Sequence[Mapping[str, Any]]) -> str:
        return ("You can call these functions:\n" + "\n\n".join(json.dumps(s, indent=4) for s in schemas) + "\n"
                "To call a function, reply with only a JSON object:\n"
                '{"name": "<function name>", "parameters": {<arguments as JSON>}}\n'
                'You may make several calls in one turn, separated by "; ". Results come back in tool messages.')


def _llama_call(c: ToolCall) -> str:
    if c.parse_error:
        return '{"name": ' + json.dumps(c.name) + ', "parameters": ' + c.raw + "}"
    return json.dumps({"name": c.name, "parameters": c.arguments})


def _json_calls(body: str) -> list[ToolCall]:
    """JSON objects one after another (``;``/whitespace between); prose after them is ignored."""
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    pos = 0
    while True:
        while pos < len(body) and (body[pos].isspace() or body[pos] == ";"):
            pos += 1
        if pos >= len(body) or (calls and body[pos] != "{"):
            return calls
        try:
            obj, end = decoder.raw_decode(body, pos)
        except json.JSONDecodeError as e:
            return calls + [ToolCall("", {}, body[pos:], f"invalid JSON: {e.msg} at char {e.pos - pos}")]
        raw, pos = body[pos:end], end
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            calls.append(ToolCall("", {}, raw, 'expected {"name": <string>, "parameters": {...}}'))
            continue
        args = obj.get("parameters", obj.get("arguments", {}))
        if isinstance(args, str):  # double-encoded
            try:
                args = _loads(args)
            except ValueError:
                pass
        if not isinstance(args, dict):
            calls.append(ToolCall(obj["name"], {}, raw, "'parameters' must be a JSON object"))
            continue
        calls.append(ToolCall(obj["name"], args, raw))


FORMATS: dict[str, ToolCallFormat] = {f.name: f for f in (HermesFormat(), Llama3JsonFormat())}
DEFAULT_FORMAT = "hermes"


def get_format(fmt: str | ToolCallFormat) -> ToolCallFormat:
    """A format by name (or the format itself); an unknown name is a one-line ValueError."""
    if isinstance(fmt, ToolCallFormat):
        return fmt
    if fmt not in FORMATS:
        raise ValueError(f"unknown tool-call format {fmt!r}; known: {', '.join(FORMATS)}")
    return FORMATS[fmt]
