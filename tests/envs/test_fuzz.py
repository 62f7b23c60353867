"""Fuzzing the parser, the renderer and `step` of every registered env (Hypothesis, bounded):
no exception may leave `step`, and every observation must render."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentopd.core.turn_info import TurnInfo
from agentopd.envs.registry import agentopd_env_ids, env_attr, make_env
from agentopd.rollout.render import Conversation, Renderer
from agentopd.tools.core import ToolCall, parse_tool_calls

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
SURROGATES = st.sampled_from(["\udcff", "\ud800", "\udfff", "/\udcff"])
nasty_text = st.one_of(st.text(max_size=200), st.lists(st.one_of(st.text(max_size=20), SURROGATES), max_size=8).map("".join))


@st.composite
def json_values(draw, depth=0):
    if depth > 3 or draw(st.booleans()):
        return draw(st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=False),
                              nasty_text))
    if draw(st.booleans()):
        return draw(st.lists(json_values(depth + 1), max_size=4))
    return draw(st.dictionaries(st.text(max_size=8), json_values(depth + 1), max_size=4))


def deep_json(n: int) -> str:
    return "[" * n + "]" * n


@st.composite
def turns(draw, tool_names=("calculator",)):
    """An assistant turn: prose, broken tags, or tool calls with arbitrary (often wrong) arguments."""
    kind = draw(st.sampled_from(["text", "call", "deep", "broken", "many"]))
    if kind == "text":
        return draw(nasty_text)
    if kind == "deep":
        return f'<tool_call>{{"name": "x", "arguments": {deep_json(draw(st.integers(50, 3000)))}}}</tool_call>'
    if kind == "broken":
        return draw(st.sampled_from(["<tool_call>", "<tool_call>{", "</tool_call>", "<tool_call><tool_call>{}</tool_call>",
                                     '<tool_call>{"name": null}</tool_call>', '<tool_call>{"name": "a", "arguments": "{"}</tool_call>']))
    name = draw(st.one_of(st.sampled_from(tool_names), st.text(max_size=10)))
    args = draw(st.dictionaries(st.text(max_size=12), json_values(), max_size=3))
    try:
        body = json.dumps({"name": name, "arguments": args}, ensure_ascii=draw(st.booleans()))
    except (UnicodeEncodeError, ValueError):
        body = "{}"
    call = f"<tool_call>{body}</tool_call>"
    return call * draw(st.integers(1, 3)) if kind == "many" else call


@FUZZ
@given(st.one_of(turns(), nasty_text))
def test_the_parser_never_raises(text):
    for c in parse_tool_calls(text):
        assert isinstance(c, ToolCall) and isinstance(c.arguments, dict)
        assert c.parse_error is None or isinstance(c.parse_error, str)


@FUZZ
@given(st.lists(nasty_text, min_size=1, max_size=3))
def test_every_observation_renders(tokenizer, texts):
    conv = Conversation.start(Renderer(tokenizer), [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    conv.add_assistant(tokenizer.encode("ok", add_special_tokens=False) + [tokenizer.eos_token_id], [0.0, 0.0])
    conv.add_observation([{"role": "tool", "name": "t", "content": t} for t in texts])
    assert len(conv.token_ids) == len(conv.loss_mask)


@pytest.mark.parametrize("env_id", agentopd_env_ids())
def test_no_exception_leaves_step(env_id):
    env = make_env(env_id)
    env.reset(seed=0)
    names = [s["function"]["name"] for s in env.unwrapped.toolset.schemas]
    examples = 60 if "Python" not in env_id else 25  # each Python turn may start a sandbox

    @settings(FUZZ, max_examples=examples)
    @given(st.integers(0, 10**6), st.lists(turns(tuple(names)), min_size=1, max_size=4))
    def run(seed, actions):
        obs, info = env.reset(seed=seed)
        for a in actions:
            obs, r, term, trunc, info = env.step(a)
            assert env.observation_space.contains(obs)
            TurnInfo.from_info(info, term)
            for m in obs:
                m["content"].encode("utf-8")  # renderable
            if term or trunc:
                break
            env_attr(env, "oracle_action")()  # the oracle still answers from the new state

    try:
        run()
    finally:
        env.close()
