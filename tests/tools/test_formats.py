"""Tool-call formats: golden texts from each format's definition, parsing, malformed calls as
tool errors, OpenAI structured calls, and envs playing in each format."""

import json

import gymnasium as gym
import pytest

import agentopd  # noqa: F401  (registers the envs)
from agentopd.core.types import ToolCall
from agentopd.envs.registry import agentopd_env_ids
from agentopd.tools.core import ToolSet, format_tool_call, parse_tool_calls
from agentopd.tools.formats import (
    FORMATS,
    HermesFormat,
    Llama3JsonFormat,
    calls_from_openai,
    get_format,
)

HERMES, LLAMA = HermesFormat(), Llama3JsonFormat()


def move(src: str, dst: str) -> str:
    """Move a file.

    Args:
        src: From.
        dst: To.
    """
    return f"moved {src} -> {dst}"


def _pairs(calls):
    return [(c.name, c.arguments, c.parse_error) for c in calls]


# ---- golden texts ------------------------------------------------------------------------------
def test_hermes_is_the_existing_format_byte_for_byte():
    calls = [ToolCall("move", {"src": "a", "dst": "b"}), ToolCall("move", {"src": "c", "dst": "d"})]
    assert HERMES.format(calls) == (
        '<tool_call>{"name": "move", "arguments": {"src": "a", "dst": "b"}}</tool_call>'
        '<tool_call>{"name": "move", "arguments": {"src": "c", "dst": "d"}}</tool_call>')
    assert HERMES.call("move", {"src": "a", "dst": "b"}) == format_tool_call("move", {"src": "a", "dst": "b"})
    for text in ("x <tool_call>{not json}</tool_call>", '<tool_call>{"name": "move", "arguments": {"src": "a"',
                 '<tool_call>{"name": "m", "arguments": "{\\"x\\": 2}"}</tool_call> and more'):
        assert HERMES.parse(text) == parse_tool_calls(text)


def test_llama3_json_golden_text():
    calls = [ToolCall("calculator", {"expression": "17 * 23"}), ToolCall("move", {"src": "a", "dst": "b"})]
    assert LLAMA.format(calls[:1]) == '{"name": "calculator", "parameters": {"expression": "17 * 23"}}'
    assert LLAMA.format(calls) == ('{"name": "calculator", "parameters": {"expression": "17 * 23"}}; '
                                   '{"name": "move", "parameters": {"src": "a", "dst": "b"}}')


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=list(FORMATS))
def test_format_then_parse_is_the_identity(fmt):
    calls = [ToolCall("move", {"src": "a;b", "dst": "{x}"}), ToolCall("noargs", {}),
             ToolCall("deep", {"a": [1, {"b": None}], "u": "é ✓"})]
    assert _pairs(fmt.parse(fmt.format(calls))) == [(c.name, c.arguments, None) for c in calls]
    assert fmt.parse("Answer: 42") == []


def test_the_system_prompt_is_unchanged_for_hermes():
    """The default env's system prompt, byte for byte as the TOOL_PROMPT template wrote it."""
    old = """You can call these tools:
<tools>
{schemas}
</tools>
To call a tool, write exactly:
<tool_call>{{"name": "<tool name>", "arguments": {{<arguments as JSON>}}}}</tool_call>
You may make several calls in one turn. Results come back in tool messages.
When you have what you need, reply without any tool call. {answer_format}{example}"""
    for env_id in agentopd_env_ids():
        env = gym.make(env_id).unwrapped
        obs, _ = env.reset(seed=0)
        want = env.instructions + "\n\n" + old.format(
            schemas="\n".join(json.dumps(s) for s in env.toolset.schemas), answer_format=env.answer_format,
            example=f"\n\nExample:\n{env.example.strip()}" if env.example else "")
        assert obs[0]["content"] == want, env_id


# ---- llama3_json parsing -----------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    '{"name": "move", "parameters": {"src": "a", "dst": "b"}}',
    '<|python_tag|>{"name": "move", "parameters": {"src": "a", "dst": "b"}}',
    '<|python_tag|>{"name": "move", "parameters": {"src": "a", "dst": "b"}}<|eom_id|>',
    '  \n{"name": "move", "arguments": {"src": "a", "dst": "b"}}\n',
    '{"type": "function", "name": "move", "parameters": {"src": "a", "dst": "b"}}',
    '{"name": "move", "parameters": "{\\"src\\": \\"a\\", \\"dst\\": \\"b\\"}"}',
    'Let me move it. <|python_tag|>{"name": "move", "parameters": {"src": "a", "dst": "b"}}',
    '{"name": "move", "parameters": {"src": "a", "dst": "b"}} I moved it.',
])
def test_llama3_json_accepts_the_usual_spellings(text):
    assert _pairs(LLAMA.parse(text)) == [("move", {"src": "a", "dst": "b"}, None)]


def test_llama3_json_several_calls_and_prose():
    two = [("move", {"src": "a", "dst": "b"}, None), ("move", {"src": "c", "dst": "d"}, None)]
    for sep in ("; ", ";", "\n", ""):
        text = sep.join(json.dumps({"name": "move", "parameters": p}) for p in ({"src": "a", "dst": "b"},
                                                                                 {"src": "c", "dst": "d"}))
        assert _pairs(LLAMA.parse(text)) == two, sep
    assert LLAMA.parse("Answer: 4") == []
    assert LLAMA.parse('The call would be {"name": "move", "parameters": {}}') == []  # prose first: an answer
    assert LLAMA.parse("") == []


@pytest.mark.parametrize("text, kind, why", [
    ("{not json}", "parse", "invalid JSON"),
    ('{"name": "move", "parameters": {"src": "a"', "parse", "invalid JSON"),
    ('<|python_tag|>print("hi")', "parse", "invalid JSON"),
    ("<|python_tag|>", "parse", "nothing after"),
    ('{"name": 3}', "parse", "expected {"),
    ('{"names": "move"}', "parse", "expected {"),
    ('{"name": "move", "parameters": "oops"}', "parse", "must be a JSON object"),
    ('{"name": "move", "parameters": [1]}', "parse", "must be a JSON object"),
    ("{" * 5000, "parse", "nested deeper"),
    ('{"name": "nope", "parameters": {}}', "unknown_tool", "unknown tool"),
    ('{"name": "move", "parameters": {"src": "a"}}', "bad_arguments", "missing"),
    ('{"name": "move", "parameters": {"src": "a", "dst": 3}}', "bad_arguments", "expected string"),
])
def test_llama3_json_malformed_calls_are_tool_errors(text, kind, why):
    (call,) = LLAMA.parse(text)
    res = ToolSet([move]).run(call)
    assert res.error == kind and res.content.startswith("Error") and why in res.content


def test_a_bad_call_after_good_ones_is_kept_as_an_error():
    calls = LLAMA.parse('{"name": "move", "parameters": {"src": "a", "dst": "b"}}; {"name": "move", "parameters": {')
    assert [c.parse_error is None for c in calls] == [True, False]


# ---- OpenAI structured calls -------------------------------------------------------------------
OPENAI = [
    {"id": "call_1", "type": "function", "function": {"name": "move", "arguments": '{"src": "a", "dst": "b"}'}},
    {"id": "call_2", "type": "function", "function": {"name": "move", "arguments": {"src": "c", "dst": "d"}}},
    {"id": "call_3", "type": "function", "function": {"name": "noargs", "arguments": ""}},
]


def test_from_openai_gives_records():
    assert _pairs(calls_from_openai(OPENAI)) == [
        ("move", {"src": "a", "dst": "b"}, None), ("move", {"src": "c", "dst": "d"}, None), ("noargs", {}, None)]
    assert calls_from_openai(OPENAI)[0].raw == '{"src": "a", "dst": "b"}'


@pytest.mark.parametrize("bad, why", [
    ({"id": "x", "type": "function", "function": {"name": "move", "arguments": '{"src": '}}, "invalid JSON"),
    ({"id": "x", "type": "function", "function": {"name": "move", "arguments": "[1, 2]"}}, "JSON object"),
    ({"id": "x", "type": "function", "function": {"arguments": "{}"}}, "without a function name"),
    ({"id": "x", "type": "code_interpreter", "code_interpreter": {}}, "function tool call"),
])
def test_from_openai_keeps_bad_calls_as_errors(bad, why):
    (call,) = calls_from_openai([bad])
    assert call.parse_error and why in call.parse_error


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=list(FORMATS))
def test_openai_reply_becomes_the_formats_text(fmt):
    text = fmt.openai_text(None, OPENAI)
    assert text == fmt.format(calls_from_openai(OPENAI))
    assert _pairs(fmt.parse(text)) == _pairs(calls_from_openai(OPENAI))
    assert fmt.openai_text("Answer: 4", None) == "Answer: 4"
    # an undecodable call stays a parse error once the env reads the text back
    bad = [{"id": "x", "type": "function", "function": {"name": "move", "arguments": '{"src": "a", '}}]
    (call,) = fmt.parse(fmt.openai_text("Moving.", bad))
    assert ToolSet([move]).run(call).error == "parse"


def test_openai_text_is_content_then_calls():
    assert HERMES.openai_text("Moving.", OPENAI[:1]) == (
        'Moving.\n<tool_call>{"name": "move", "arguments": {"src": "a", "dst": "b"}}</tool_call>')
    # after prose, Llama's calls follow <|python_tag|> (a reply that starts with prose is an answer)
    assert LLAMA.openai_text("Moving.", OPENAI[:1]) == (
        'Moving.\n<|python_tag|>{"name": "move", "parameters": {"src": "a", "dst": "b"}}')
    assert LLAMA.openai_text("", OPENAI[:1]) == '{"name": "move", "parameters": {"src": "a", "dst": "b"}}'


def test_unknown_format_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^unknown tool-call format 'xml'; known: hermes, llama3_json$"):
        get_format("xml")
    with pytest.raises(ValueError, match="known: hermes, llama3_json"):
        gym.make("agentopd/Calc-v0", tool_format="xml")
    assert get_format(LLAMA) is LLAMA


# ---- envs in each format -----------------------------------------------------------------------
def _play_oracle(env, task):
    env.reset(seed=0, options={"task": task})
    transcript, terminated = [], False
    while not terminated:
        action = env.oracle_action()
        _, _, terminated, _, info = env.step(action)
        transcript.append((action, info))
    return transcript


@pytest.mark.parametrize("env_id", agentopd_env_ids())
def test_envs_play_in_llama3_json(env_id):
    hermes = gym.make(env_id).unwrapped
    llama = gym.make(env_id, tool_format="llama3_json").unwrapped
    obs, _ = llama.reset(seed=0)
    system = obs[0]["content"]
    assert "<tool_call>" not in system and '"parameters"' in system and "You can call these functions" in system
    if llama.example:
        assert '{"name": ' in system.split("Example:")[1]  # the example's calls, in JSON
    for task in [t.id for t in hermes.tasks[:8]]:
        h, lt = _play_oracle(hermes, task), _play_oracle(llama, task)
        assert all("<tool_call>" not in a for a, _ in lt)
        assert llama.request_success == hermes.request_success and all(llama.request_success), task
        calls = [[(c.name, c.arguments) for c in HERMES.parse(a)] for a, _ in h]
        assert [[(c.name, c.arguments) for c in LLAMA.parse(a)] for a, _ in lt] == calls  # same plan
        assert all(info["oracle_ok"] for _, info in lt)


def test_llama3_env_answers_malformed_calls_with_tool_errors():
    env = gym.make("agentopd/Calc-v0", tool_format="llama3_json")
    env.reset(seed=0)
    for bad in ('{"name": "no_such_tool", "parameters": {}}', "{not json", '{"name": 3}',
                '<|python_tag|>{"name": "calculator", "parameters": {"expression": "1+"'):
        env.reset(seed=0)
        obs, _, terminated, _, info = env.step(bad)
        assert not terminated and info["tool_errors"] == 1 and obs[0]["role"] == "tool"
        assert obs[0]["content"].startswith("Error")
    env.reset(seed=0)
    obs, *_ = env.step('{"name": "calculator", "parameters": {"expression": "6 * 7"}}<|eom_id|>')
    assert obs[0]["content"] == "42"


def test_check_env_plays_malformed_calls_in_the_envs_own_format():
    from agentopd.envs.checker import check_malformed_calls
    from agentopd.envs.registry import make_env

    for name in FORMATS:
        assert check_malformed_calls(make_env("agentopd/Calc-v0", split="test", tool_format=name)) == [], name
    # the hermes examples are prose to a llama3_json env: it answers them, no tool error
    env = make_env("agentopd/Calc-v0", split="test", tool_format="llama3_json")
    env.reset(seed=0)
    _, _, _, _, info = env.step(HermesFormat.malformed[0])
    assert info.get("tool_errors", 0) == 0
