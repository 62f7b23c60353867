"""Regression tests for hostile tool input found by hand (issue 9): each once hung a step,
raised out of it, or ended a training run."""

import time

import pytest

from agentopd.envs.registry import make_env
from agentopd.rollout.render import Conversation, Renderer
from agentopd.tools.calculator import evaluate
from agentopd.tools.core import ToolCall, ToolFailure, ToolSet, format_tool_call, parse_tool_calls
from agentopd.tools.vfs import MAX_DEPTH, VFS


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def test_calculator_bounds_round_digits_and_literals():
    with pytest.raises(ToolFailure, match="digits"):
        _, dt = _timed(lambda: evaluate("round(1, -10**7)"))  # once 12 s
    assert evaluate("round(2.567, 2)") == 2.57 and evaluate("round(1234, -2)") == 1200
    with pytest.raises(ToolFailure, match="too large"):
        evaluate("1" + "0" * 40 + " - 1")


def test_deep_json_is_a_parse_error_not_a_recursion_error():
    deep = '<tool_call>{"name": "x", "arguments": ' + "[" * 5000 + "]" * 5000 + "}</tool_call>"
    (call,) = parse_tool_calls(deep)
    assert "nested deeper" in call.parse_error
    env = make_env("agentopd/Calc-v0")
    env.reset(seed=0)
    *_, info = env.step(deep)  # raised RecursionError out of step before
    assert info["tool_errors"] == 1


def test_undecodable_tool_output_becomes_renderable_text(tokenizer):
    def echo_path(path: str) -> str:
        """Echo.

        Args:
            path: A path.
        """
        return f"no such file: {path}"

    result = ToolSet([echo_path]).run(ToolCall("echo_path", {"path": "/\udcff"}))
    result.content.encode("utf-8")
    conv = Conversation.start(Renderer(tokenizer), [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    conv.add_assistant(tokenizer.encode("ok", add_special_tokens=False) + [tokenizer.eos_token_id], [0.0, 0.0])
    conv.add_observation([{"role": "tool", "name": "t", "content": "bad \ud800 text"}])  # the renderer defends too
    assert "bad ? text" in conv.messages[-1]["content"]


def test_nesting_directories_by_mkdir_and_mv_is_bounded():
    vfs = VFS({})
    vfs.mkdir("a")
    with pytest.raises(ToolFailure, match="deeper"):
        for i in range(500):  # each round puts the whole tree one level deeper
            vfs.mkdir(f"b{i}")
            vfs.mv("a", f"b{i}")
            vfs.mv(f"b{i}", "a")
    assert i <= MAX_DEPTH
    env = make_env("agentopd/Files-v0", max_episode_steps=100)
    env.reset(seed=0)
    env.step(format_tool_call("mkdir", {"path": "/a"}))
    errors = 0
    for i in range(40):  # before: past the recursion limit, and the next step raised RecursionError
        *_, term, trunc, info = env.step("".join(format_tool_call(n, a) for n, a in (
            ("mkdir", {"path": f"/b{i}"}), ("mv", {"src": "/a", "dst": f"/b{i}"}), ("mv", {"src": f"/b{i}", "dst": "/a"}))))
        assert not (term or trunc)
        errors += info["tool_errors"]
    assert errors > 0  # the depth bound refused the moves past MAX_DEPTH
    env.unwrapped.oracle_action()  # the oracle's tree walk still works


@pytest.mark.parametrize("sql", [
    "SELECT " + " + ".join(["instr(printf('%.*c', 999000, 'a'), printf('%.*c', 500000, 'a') || 'b')"] * 3),
    "SELECT printf('%.*c', 1e9, 'x')",
    "SELECT printf('%1000000000c', 'x')",
    "SELECT length(zeroblob(1000000000))",
    "SELECT " + " + ".join(["instr(printf('%.*c', 19999, 'a'), printf('%.*c', 10000, 'a') || 'b')"] * 30),
])
def test_sql_time_limit_holds_for_slow_functions(sql):
    env = make_env("agentopd/SQL-v0")
    env.reset(seed=0)
    result, dt = _timed(lambda: env.unwrapped.toolset.run(ToolCall("run_query", {"sql": sql})))
    assert dt < env.unwrapped.db.time_limit_s + 0.5, (dt, result)  # 16 s and 3.7 s before


def test_sql_printf_still_formats():
    env = make_env("agentopd/SQL-v0")
    env.reset(seed=0)
    out = env.unwrapped.toolset.run(ToolCall("run_query", {"sql": "SELECT printf('%5.2f|%d|%s', 3.14159, 42, 'x')"}))
    assert " 3.14|42|x" in out.content and out.error is None
