"""Tools as typed functions: JSON schema from the signature, parsing, and safe dispatch.

A tool is a plain Python function with type hints and a Google-style docstring. Its OpenAI
function schema is derived from both. Calls are parsed from assistant text in the Hermes / Qwen
convention ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (several per turn; the
default format: `tools.formats` has the others).
`ToolSet.run` never raises: malformed JSON, unknown tools, wrong or missing arguments,
exceptions, timeouts and huge outputs each come back as a tool-error result.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentopd.core.text import encodable
from agentopd.core.types import ToolCall, ToolResult

TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
MAX_OUTPUT_CHARS = 2000


class ToolTimeout(Exception):
    """Raised by a tool whose own time limit ran out."""


class SandboxFailure(RuntimeError):
    """The isolation around a tool failed to start (not the agent's fault)."""


class ToolFailure(Exception):
    """Raised by a tool for an error the agent caused (bad path, bad SQL, ...).

    Its message is shown to the agent as is, without a traceback."""


_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _json_type(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if tp in _JSON_TYPES:
        return {"type": _JSON_TYPES[tp]}
    if origin in (list, Sequence, tuple):
        (item,) = typing.get_args(tp)[:1] or (str,)
        return {"type": "array", "items": _json_type(item)}
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _json_type(args[0])
        return {"anyOf": [_json_type(a) for a in args]}
    if origin is typing.Literal:
        vals = list(typing.get_args(tp))
        return {**_json_type(type(vals[0])), "enum": vals}
    raise TypeError(f"unsupported tool argument type {tp!r}")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its summary and per-argument descriptions."""
    summary_lines, args, current = [], {}, None
    in_args = False
    for line in inspect.cleandoc(doc or "").splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args:
            m = re.match(r"^(\w+)(?:\s*\(.*?\))?:\s*(.*)$", stripped)
            if m and line.startswith((" ", "\t")) is False or (m and line[:1].isspace()):
                current = m.group(1)
                args[current] = m.group(2)
            elif stripped and current:
                args[current] += " " + stripped
            elif not stripped:
                current = None
            continue
        if stripped in ("Returns:", "Raises:", "Guards:", "Does not guard:"):
            in_args = False
            current = None
            summary_lines.append("\0")  # end of the summary
            continue
        summary_lines.append(stripped)
    summary = " ".join(summary_lines).split("\0")[0]
    return " ".join(summary.split()), args


@dataclass(frozen=True)
class Tool:
    """A callable tool with its schema."""

    name: str
    fn: Callable[..., Any]
    schema: dict[str, Any]
    """OpenAI function-calling schema: ``{"type": "function", "function": {...}}``."""
    hints: dict[str, Any]

    @classmethod
    def from_function(cls, fn: Callable[..., Any], name: str | None = None) -> Tool:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
        summary, arg_docs = _parse_docstring(fn.__doc__ or "")
        props, required = {}, []
        for pname, param in sig.parameters.items():
            if pname not in hints:
                raise TypeError(f"tool {fn.__name__}: argument {pname!r} has no type hint")
            prop = _json_type(hints[pname])
            if pname in arg_docs:
                prop["description"] = arg_docs[pname]
            props[pname] = prop
            if param.default is inspect.Parameter.empty:
                required.append(pname)
        tool_name = name or fn.__name__
        schema = {
            "type": "function",
            "function": {
                "name": tool_name,
                "description": summary,
                "parameters": {"type": "object", "properties": props, "required": required},
            },
        }
        return cls(tool_name, fn, schema, {k: v for k, v in hints.items() if k != "return"})


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every ``<tool_call>`` block in `text`, parsed; unparseable ones carry `parse_error`."""
    calls = []
    for m in TOOL_CALL_RE.finditer(text):
        raw = m.group(1).strip()
        if not m.group(0).endswith("</tool_call>"):
            calls.append(ToolCall("", {}, raw, "unterminated <tool_call> (missing </tool_call>)"))
            continue
        try:
            obj = _loads(raw)
        except json.JSONDecodeError as e:
            calls.append(ToolCall("", {}, raw, f"invalid JSON: {e.msg} at char {e.pos}"))
            continue
        except ValueError as e:  # nested too deeply (json would overflow the stack)
            calls.append(ToolCall("", {}, raw, f"invalid JSON: {e}"))
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            calls.append(ToolCall("", {}, raw, 'expected {"name": <string>, "arguments": {...}}'))
            continue
        args = obj.get("arguments", {})
        if isinstance(args, str):  # some models double-encode the arguments
            try:
                args = _loads(args)
            except ValueError:  # JSONDecodeError included
                pass
        if not isinstance(args, dict):
            calls.append(ToolCall(obj["name"], {}, raw, "'arguments' must be a JSON object"))
            continue
        calls.append(ToolCall(obj["name"], args, raw))
    return calls


MAX_JSON_DEPTH = 64
"""Deeper JSON is refused before parsing: json's recursive decoder raised RecursionError at
about 1,000 levels, out of `step`."""


def _loads(text: str) -> Any:
    """`json.loads`, refusing nesting deeper than MAX_JSON_DEPTH (ValueError)."""
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text)


def _json_depth(text: str) -> int:
    """The deepest bracket nesting outside strings (an upper bound of the JSON depth)."""
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """The canonical text of one tool call (what oracles write)."""
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def _check_type(value: Any, tp: Any) -> Any:
    """Validate (and lightly coerce) one argument; raise TypeError with a readable reason."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for alt in typing.get_args(tp):
            if alt is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_type(value, alt)
            except TypeError as e:
                errors.append(str(e))
        raise TypeError(" or ".join(errors))
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise TypeError(f"must be one of {list(typing.get_args(tp))}")
        return value
    if origin in (list, Sequence, tuple):
        if not isinstance(value, list):
            raise TypeError(f"expected an array, got {type(value).__name__}")
        (item,) = typing.get_args(tp)[:1] or (str,)
        return [_check_type(v, item) for v in value]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in _JSON_TYPES:
        if isinstance(value, bool) and tp is not bool:
            raise TypeError(f"expected {_JSON_TYPES[tp]}, got boolean")
        if not isinstance(value, tp):
            raise TypeError(f"expected {_JSON_TYPES[tp]}, got {type(value).__name__}")
        return value
    return value


class ToolSet:
    """The tools one env exposes, with safe dispatch."""

    def __init__(self, tools: Sequence[Tool | Callable[..., Any]], max_output_chars: int = MAX_OUTPUT_CHARS):
        self.tools: dict[str, Tool] = {}
        for t in tools:
            tool = t if isinstance(t, Tool) else Tool.from_function(t)
            self.tools[tool.name] = tool
        self.max_output_chars = max_output_chars

    @property
    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema for t in self.tools.values()]

    def run(self, call: ToolCall) -> ToolResult:
        """Execute one call. Never raises; the result's text is always encodable."""
        r = self._run(call)
        return ToolResult(encodable(r.name), encodable(r.content), r.error)

    def _run(self, call: ToolCall) -> ToolResult:
        name = call.name or "?"
        if call.parse_error:
            return ToolResult(name, f"Error: could not parse tool call: {call.parse_error}", "parse")
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.tools))
            return ToolResult(name, f"Error: unknown tool {call.name!r}. Available: {known}", "unknown_tool")
        kwargs = {}
        required = tool.schema["function"]["parameters"]["required"]
        missing = [p for p in required if p not in call.arguments]
        extra = [k for k in call.arguments if k not in tool.hints]
        if missing or extra:
            why = []
            if missing:
                why.append(f"missing argument(s) {missing}")
            if extra:
                why.append(f"unexpected argument(s) {extra}")
            return ToolResult(name, f"Error: {name}: {'; '.join(why)}", "bad_arguments")
        for k, v in call.arguments.items():
            try:
                kwargs[k] = _check_type(v, tool.hints[k])
            except TypeError as e:
                return ToolResult(name, f"Error: {name}: argument {k!r}: {e}", "bad_arguments")
        try:
            out = tool.fn(**kwargs)
        except ToolTimeout as e:
            return ToolResult(name, f"Error: {name} timed out: {e}", "timeout")
        except ToolFailure as e:
            return ToolResult(name, f"Error: {e}", "tool_error")
        except SandboxFailure as e:
            return ToolResult(name, f"Error: {name}: sandbox failure: {e}", "sandbox")
        except Exception as e:  # noqa: BLE001 - a tool bug must not escape into the rollout
            return ToolResult(name, f"Error: {name} raised {type(e).__name__}: {e}", "exception")
        text = out if isinstance(out, str) else json.dumps(out, default=str)
        if len(text) > self.max_output_chars:
            cut = len(text) - self.max_output_chars
            text = text[: self.max_output_chars] + f"\n... [output truncated, {cut} more chars]"
        return ToolResult(name, text)
