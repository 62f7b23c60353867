import pytest

from agentopd.rollout.render import Conversation, Renderer, RenderError

SYSTEM = {"role": "system", "content": "You are terse. Tools: <tools>[]</tools>"}


def _assistant(conv, tok, text, stop=True):
    ids = tok.encode(text, add_special_tokens=False) + ([tok.eos_token_id] if stop else [])
    return ids, conv.add_assistant(ids, [-1.0] * len(ids))


def test_incremental_equals_full_render(tokenizer):
    r = Renderer(tokenizer)
    conv = Conversation.start(r, [SYSTEM, {"role": "user", "content": "What is 2+2?"}])
    assert conv.token_ids == r.full_ids(conv.messages, add_generation_prompt=True)
    _assistant(conv, tokenizer, '<tool_call>{"name": "calculator", "arguments": {"expression": "2+2"}}</tool_call>')
    conv.add_observation([{"role": "tool", "name": "calculator", "content": "4"}])
    _assistant(conv, tokenizer, "Answer: 4")
    conv.add_observation([{"role": "user", "content": "And times 3?"}])
    _assistant(conv, tokenizer, "Answer: 12 and some text cut mid-", stop=False)  # hit the token cap
    assert conv.token_ids == r.full_ids(conv.messages, add_generation_prompt=False)
    conv.add_observation([{"role": "user", "content": "Thanks."}])
    assert conv.token_ids == r.full_ids(conv.messages, add_generation_prompt=True)


def test_sampled_ids_are_never_retokenized(tokenizer):
    r = Renderer(tokenizer)
    conv = Conversation.start(r, [SYSTEM, {"role": "user", "content": "hi"}])
    # "hello" spelled one character per token: a valid sample, but not the canonical tokenization
    odd = [tokenizer.convert_tokens_to_ids(c) for c in "hello"] + [tokenizer.eos_token_id]
    start, end, text = conv.add_assistant(odd, [-2.0] * len(odd))
    conv.add_observation([{"role": "user", "content": "again"}])
    _assistant(conv, tokenizer, "ok")
    assert text == "hello"
    assert conv.token_ids[start:end] == odd
    assert conv.token_ids != r.full_ids(conv.messages)  # a re-render would have changed the ids


def test_loss_mask_covers_exactly_the_sampled_tokens(tokenizer):
    r = Renderer(tokenizer)
    conv = Conversation.start(r, [SYSTEM, {"role": "user", "content": "q1"}])
    spans = []
    for obs, reply in [({"role": "tool", "name": "t", "content": "r"}, "a1"), ({"role": "user", "content": "q2"}, "a2")]:
        ids, (s, e, _) = _assistant(conv, tokenizer, reply)
        spans.append((s, e, ids))
        conv.add_observation([obs])
    masked = [i for i, m in enumerate(conv.loss_mask) if m]
    assert masked == [i for s, e, _ in spans for i in range(s, e)]
    for s, e, ids in spans:
        assert conv.token_ids[s:e] == ids
    assert all(lp == 0.0 for lp, m in zip(conv.logprobs, conv.loss_mask) if not m)
    assert all(lp == -1.0 for lp, m in zip(conv.logprobs, conv.loss_mask) if m)
    assert len(conv.token_ids) == len(conv.loss_mask) == len(conv.logprobs)


def test_template_that_rewrites_history_is_detected(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    # Like templates that drop earlier reasoning: only the LAST assistant message keeps its content.
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' and not loop.last %}[hidden]{% else %}{{ m['content'] }}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    conv = Conversation.start(Renderer(tok), [SYSTEM, {"role": "user", "content": "hi"}])
    _assistant(conv, tok, "thinking out loud")
    with pytest.raises(RenderError):
        conv.add_observation([{"role": "user", "content": "next"}])
