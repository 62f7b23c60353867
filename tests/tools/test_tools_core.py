import json

import pytest

from agentopd.tools.calculator import calculator, evaluate
from agentopd.tools.core import (
    Tool,
    ToolFailure,
    ToolSet,
    ToolTimeout,
    format_tool_call,
    parse_tool_calls,
)


def move(src: str, dst: str, overwrite: bool = False, tags: list[str] | None = None) -> str:
    """Move a file.

    Args:
        src: Source path.
        dst: Destination path.
        overwrite: Replace an existing destination.
    """
    return f"{src}->{dst}:{overwrite}:{tags}"


def test_schema_from_signature_and_docstring():
    fn = Tool.from_function(move).schema["function"]
    assert fn["name"] == "move"
    assert fn["description"] == "Move a file."
    props = fn["parameters"]["properties"]
    assert props["src"] == {"type": "string", "description": "Source path."}
    assert props["overwrite"]["type"] == "boolean"
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert fn["parameters"]["required"] == ["src", "dst"]


def test_untyped_tool_is_refused():
    def bad(x):
        return x

    with pytest.raises(TypeError, match="no type hint"):
        Tool.from_function(bad)


def test_parse_several_calls_and_canonical_format():
    text = "thinking " + format_tool_call("move", {"src": "a", "dst": "b"}) + " and " + format_tool_call("move", {"src": "c", "dst": "d"})
    calls = parse_tool_calls(text)
    assert [(c.name, c.arguments) for c in calls] == [("move", {"src": "a", "dst": "b"}), ("move", {"src": "c", "dst": "d"})]
    assert all(c.parse_error is None for c in calls)


@pytest.mark.parametrize(
    "text, kind",
    [
        ("<tool_call>{not json}</tool_call>", "parse"),
        ('<tool_call>{"name": "move", "arguments": {"src": "a"', "parse"),
        ('<tool_call>["move"]</tool_call>', "parse"),
        ('<tool_call>{"name": "nope", "arguments": {}}</tool_call>', "unknown_tool"),
        ('<tool_call>{"name": "move", "arguments": {"src": "a"}}</tool_call>', "bad_arguments"),
        ('<tool_call>{"name": "move", "arguments": {"src": "a", "dst": 3}}</tool_call>', "bad_arguments"),
        ('<tool_call>{"name": "move", "arguments": {"src": "a", "dst": "b", "x": 1}}</tool_call>', "bad_arguments"),
        ('<tool_call>{"name": "move", "arguments": "oops"}</tool_call>', "parse"),
    ],
)
def test_every_failure_is_a_tool_error_not_an_exception(text, kind):
    (call,) = parse_tool_calls(text)
    res = ToolSet([move]).run(call)
    assert res.error == kind
    assert res.content.startswith("Error")


def test_exceptions_timeouts_and_huge_output_are_contained():
    def boom(x: int) -> str:
        """Boom."""
        raise ZeroDivisionError("kaboom")

    def slow(x: int) -> str:
        """Slow."""
        raise ToolTimeout("took 5s")

    def huge(x: int) -> str:
        """Huge."""
        return "y" * 100_000

    def agent_error(x: int) -> str:
        """Agent error."""
        raise ToolFailure("no such file: x")

    ts = ToolSet([boom, slow, huge, agent_error], max_output_chars=500)
    run = lambda name: ts.run(parse_tool_calls(format_tool_call(name, {"x": 1}))[0])  # noqa: E731
    assert run("boom").error == "exception" and "kaboom" in run("boom").content
    assert run("slow").error == "timeout"
    assert run("agent_error").content == "Error: no such file: x"
    out = run("huge")
    assert out.error is None and len(out.content) < 600 and "truncated" in out.content


def test_int_is_accepted_for_float_and_double_encoded_arguments():
    def scale(x: float) -> str:
        """Scale."""
        return str(x * 2)

    (call,) = parse_tool_calls('<tool_call>{"name": "scale", "arguments": "{\\"x\\": 2}"}</tool_call>')
    assert ToolSet([scale]).run(call).content == "4.0"


@pytest.mark.parametrize(
    "expr, value",
    [("2 + 3 * 4", 14), ("(12.5 * 4) - 7", 43), ("2 ** 10", 1024), ("-3 + sqrt(16)", 1.0), ("7 // 2", 3),
     ("1,234 + 1", 1235), ("2^3", 8), ("max(3, 9) - min(1, 2)", 8)],
)
def test_calculator_values(expr, value):
    assert evaluate(expr) == pytest.approx(value)


@pytest.mark.parametrize(
    "expr",
    ["__import__('os').system('echo hi')", "open('/etc/passwd')", "x + 1", "9 ** 9 ** 9", "1 / 0",
     "[1, 2]", "'a' * 3", "10 ** 400", "(lambda: 1)()", "a.b"],
)
def test_calculator_rejects_everything_but_arithmetic(expr):
    with pytest.raises(ToolFailure):
        evaluate(expr)


def test_calculator_tool_formats_results():
    assert calculator("10 / 4") == "2.5"
    assert calculator("10 / 2") == "5"
    assert json.loads(json.dumps(Tool.from_function(calculator).schema))["function"]["name"] == "calculator"
