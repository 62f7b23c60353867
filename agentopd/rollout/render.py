"""Incremental, prefix-preserving chat rendering: a tokenizer's chat template or a family's format.

`Conversation` holds one episode's token ids. The student's sampled ids are appended verbatim
(never re-tokenized); everything else (system, user, tool messages, template glue) is rendered
and only the new *suffix* of the text is tokenized. Where the rendering is prefix-preserving the
ids equal a one-shot render of the final conversation; one that rewrites earlier turns (e.g. the
official Qwen3 template, which drops old ``<think>`` blocks) raises `RenderError` instead of
silently drifting.

Renderers: `Renderer` is the tokenizer's own Jinja template (the HF fallback, and what
``Renderer(tokenizer)`` has always been). The family renderers write their format in Python, every
turn verbatim wherever it sits (thinking included, so the student trains on what it saw):
``chatml``, ``smollm`` (ChatML with SmolLM2's default system prompt), ``qwen2.5``, ``qwen3``
(``qwen3-nothink``: Qwen3 with thinking off) and ``llama3`` (Meta's reference chat format).
`make_renderer(tokenizer, name)` picks one by name or detects the family ("auto"), and checks any
renderer on a probe conversation (`check_prefix_preserving`) before it is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from agentopd.core.text import encodable
from agentopd.core.types import Message


class RenderError(RuntimeError):
    """The chat template is not prefix-preserving for this conversation."""


def _single_id(tokenizer, text: str) -> int | None:
    """The id of `text` when the tokenizer encodes it as exactly one token, else None."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


class Renderer:
    """Renders messages with a tokenizer's chat template (``hf``); the family renderers
    subclass it and override `text`."""

    name: ClassVar[str] = "hf"
    needs: ClassVar[tuple[str, ...]] = ()
    """Special tokens the format is written in; each must be one token of the tokenizer."""
    end_of_turn: ClassVar[str | None] = None
    """The token that ends an assistant turn (None: the tokenizer's eos)."""
    also_stops: ClassVar[tuple[str, ...]] = ()
    """Other tokens a sampled turn may end with (kept in its text)."""

    def __init__(self, tokenizer) -> None:
        if self.name == "hf" and tokenizer.chat_template is None:
            raise ValueError("the tokenizer has no chat template")
        split = [t for t in self.needs if _single_id(tokenizer, t) is None]
        if split:
            raise ValueError(f"renderer {self.name!r} needs {', '.join(split)} as single tokens, and "
                             "this tokenizer splits them: pick another renderer (or 'hf')")
        self.tokenizer = tokenizer
        if self.end_of_turn is None:
            self.eos_token_id = tokenizer.eos_token_id
            self.eos_text = tokenizer.eos_token or ""
        else:
            self.eos_token_id = _single_id(tokenizer, self.end_of_turn)
            self.eos_text = self.end_of_turn
        self.stop_token_ids: tuple[int, ...] = tuple(
            i for i in [self.eos_token_id, *(_single_id(tokenizer, t) for t in self.also_stops)] if i is not None)
        """What a sampler should stop on: the end-of-turn token (and `also_stops`)."""

    def text(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def full_ids(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> list[int]:
        """A one-shot render of a whole conversation (the reference for drift tests)."""
        return self.encode(self.text(messages, add_generation_prompt))


class _FamilyRenderer(Renderer):
    """A format written in Python: a beginning, one piece per message, a generation prompt."""

    generation_prompt: ClassVar[str] = ""

    def text(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        for m in messages:
            if "tool_calls" in m:
                raise RenderError(f"renderer {self.name!r} renders text turns only: write structured "
                                  "tool_calls into the content first (ToolCallFormat.openai_text)")
        parts = [self._begin(messages), *(self._message(messages, i) for i in range(len(messages)))]
        return "".join(parts) + (self.generation_prompt if add_generation_prompt else "")

    def _begin(self, messages: Sequence[Message]) -> str:
        return ""

    def _message(self, messages: Sequence[Message], i: int) -> str:
        raise NotImplementedError


class ChatMLRenderer(_FamilyRenderer):
    """``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message; prompt ``<|im_start|>assistant\\n``."""

    name = "chatml"
    needs: ClassVar[tuple[str, ...]] = ("<|im_start|>", "<|im_end|>")
    end_of_turn = "<|im_end|>"
    generation_prompt = "<|im_start|>assistant\n"
    default_system: ClassVar[str | None] = None
    """A system turn written first when the conversation does not start with one."""

    def _begin(self, messages: Sequence[Message]) -> str:
        if self.default_system is None or not messages or messages[0]["role"] == "system":
            return ""
        return f"<|im_start|>system\n{self.default_system}<|im_end|>\n"

    def _message(self, messages: Sequence[Message], i: int) -> str:
        m = messages[i]
        return f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"


class SmolLMRenderer(ChatMLRenderer):
    """SmolLM2-Instruct: ChatML (tool results as ``tool`` turns) with its default system prompt."""

    name = "smollm"
    default_system: ClassVar[str | None] = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


class Qwen25Renderer(ChatMLRenderer):
    """Qwen2.5-Instruct: ChatML; consecutive tool messages form one ``user`` turn, each result
    in ``\\n<tool_response>\\n...\\n</tool_response>``; Qwen's default system prompt."""

    name = "qwen2.5"
    default_system: ClassVar[str | None] = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

    def _message(self, messages: Sequence[Message], i: int) -> str:
        m = messages[i]
        if m["role"] != "tool":
            return super()._message(messages, i)
        first = i == 0 or messages[i - 1]["role"] != "tool"
        last = i == len(messages) - 1 or messages[i + 1]["role"] != "tool"
        return (("<|im_start|>user" if first else "") + f"\n<tool_response>\n{m['content']}\n</tool_response>"
                + ("<|im_end|>\n" if last else ""))


class Qwen3Renderer(Qwen25Renderer):
    """Qwen3 (thinking): as Qwen2.5 without a default system prompt; an assistant turn's
    ``<think>...</think>`` stays in history as sampled (the official template drops it from
    turns before the last user message, which is not prefix-preserving)."""

    name = "qwen3"
    needs = ("<|im_start|>", "<|im_end|>", "<think>", "</think>")
    default_system = None


EMPTY_THINK = "<think>\n\n</think>\n\n"


class Qwen3NoThinkRenderer(Qwen3Renderer):
    """Qwen3 with thinking off: the prompt (and so every assistant turn) opens with an empty
    ``<think>\\n\\n</think>\\n\\n`` block, as ``enable_thinking=False`` writes it."""

    name = "qwen3-nothink"
    generation_prompt = "<|im_start|>assistant\n" + EMPTY_THINK

    def _message(self, messages: Sequence[Message], i: int) -> str:
        m = messages[i]
        if m["role"] != "assistant":
            return super()._message(messages, i)
        return f"<|im_start|>assistant\n{EMPTY_THINK}{m['content']}<|im_end|>\n"


class Llama3Renderer(_FamilyRenderer):
    """Llama 3.x Instruct (Meta's reference format): ``<|begin_of_text|>``, then per message
    ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>``; tool results are
    ``ipython`` turns; an assistant turn sampled up to ``<|eom_id|>`` (waiting for a tool) keeps it
    as its end. No "Cutting Knowledge Date" preamble (the HF template's): put it in the system
    prompt if wanted."""

    name = "llama3"
    needs = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>")
    end_of_turn = "<|eot_id|>"
    also_stops = ("<|eom_id|>",)
    generation_prompt = "<|start_header_id|>assistant<|end_header_id|>\n\n"

    def _begin(self, messages: Sequence[Message]) -> str:
        return "<|begin_of_text|>"

    def _message(self, messages: Sequence[Message], i: int) -> str:
        m = messages[i]
        role = "ipython" if m["role"] == "tool" else m["role"]
        end = "" if m["role"] == "assistant" and m["content"].endswith("<|eom_id|>") else "<|eot_id|>"
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n{m['content']}{end}"


RENDERERS: dict[str, type[Renderer]] = {r.name: r for r in (
    Renderer, ChatMLRenderer, SmolLMRenderer, Qwen25Renderer, Qwen3Renderer, Qwen3NoThinkRenderer, Llama3Renderer)}


def detect_renderer(tokenizer) -> str:
    """The family a tokenizer belongs to, from its special tokens (and its chat template, when it
    has one, to tell e.g. a Qwen-vocabulary model with another template apart); "hf" when none fits."""
    template = tokenizer.chat_template
    template = str(template) if template is not None else None

    def has(*tokens: str) -> bool:
        return all(_single_id(tokenizer, t) is not None for t in tokens)

    def uses(text: str) -> bool:
        return template is None or text in template

    if has("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>") and uses("<|start_header_id|>"):
        return "llama3"
    if has("<|im_start|>", "<|im_end|>") and uses("<|im_start|>"):
        if has("<think>", "</think>"):
            return "qwen3"
        if has("<tool_call>", "</tool_call>"):
            return "qwen2.5"
        if template is not None and "named SmolLM" in template:
            return "smollm"
        return "hf" if template is not None else "chatml"
    return "hf"


PROBE: tuple[Message, ...] = (
    {"role": "system", "content": "You are a probe. Tools: <tools>[]</tools>"},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": '<think>\nUse the tool.\n</think>\n\n<tool_call>{"name": "calculator", '
                                     '"arguments": {"expression": "2+2"}}</tool_call>'},
    {"role": "tool", "name": "calculator", "content": "4"},
    {"role": "tool", "name": "calculator", "content": "4.0"},
    {"role": "assistant", "content": "<think>\nThe tool said 4.\n</think>\n\nAnswer: 4"},
    {"role": "user", "content": "And times 3?"},
    {"role": "assistant", "content": "Answer: 12"},
    {"role": "user", "content": "Thanks."},
)
"""A conversation that trips the usual non-prefix-preserving templates: thinking in history,
several tool results in a row, a second request."""


def check_prefix_preserving(renderer: Renderer, messages: Sequence[Message] = PROBE) -> None:
    """Play `messages` as `Conversation` would (observations with the generation prompt, each
    assistant turn closed) and raise `RenderError` naming the first message that an incremental
    render would get wrong. Text only: nothing is tokenized."""
    shown, i = "", 0
    try:
        while i < len(messages):
            if messages[i]["role"] == "assistant":
                closed = renderer.text(messages[: i + 1], add_generation_prompt=False)
                if not closed.startswith(shown + messages[i]["content"]):
                    raise RenderError(f"renderer {renderer.name!r} does not render assistant message {i} "
                                      "as sampled after its prompt (not prefix-preserving)")
                shown, i = closed, i + 1
                continue
            j = i
            while j < len(messages) and messages[j]["role"] != "assistant":
                j += 1
            opened = renderer.text(messages[:j], add_generation_prompt=True)
            if not opened.startswith(shown):
                raise RenderError(f"renderer {renderer.name!r} re-renders earlier turns differently once "
                                  f"message {i} ({messages[i]['role']}) is added (not prefix-preserving)")
            shown, i = opened, j
    except RenderError:
        raise
    except Exception as e:  # noqa: BLE001 - a template that cannot render the probe is unusable
        raise RenderError(f"renderer {renderer.name!r} failed on a probe conversation: {type(e).__name__}: {e}") from e


def make_renderer(tokenizer, name: str = "auto") -> Renderer:
    """The renderer `name` (``auto`` detects the family, see `detect_renderer`) over `tokenizer`,
    checked with `check_prefix_preserving`: a template that rewrites history is a `RenderError`
    here, before any episode is played."""
    chosen = detect_renderer(tokenizer) if name == "auto" else name
    if chosen not in RENDERERS:
        raise ValueError(f"unknown renderer {name!r}; known: auto, {', '.join(RENDERERS)}")
    renderer = RENDERERS[chosen](tokenizer)
    check_prefix_preserving(renderer)
    return renderer


@dataclass
class Conversation:
    """One episode's token stream, grown turn by turn."""

    renderer: Renderer
    messages: list[Message] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    _text: str = ""  # template text that `token_ids` stands for

    @classmethod
    def start(cls, renderer: Renderer, messages: Sequence[Message]) -> Conversation:
        conv = cls(renderer)
        conv.add_observation(messages)
        return conv

    def _append(self, ids: Sequence[int], student: bool, logprobs: Sequence[float] | None = None) -> None:
        self.token_ids.extend(ids)
        self.loss_mask.extend([1 if student else 0] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))

    def add_observation(self, messages: Sequence[Message]) -> None:
        """Append messages (system/user/tool) and the generation prompt; template tokens only.
        Text UTF-8 cannot encode (a lone surrogate in a tool result) becomes "?" first: the
        tokenizer would raise, and one bad observation must never end a run."""
        self.messages.extend({**m, "content": encodable(m["content"])} for m in messages)
        new_text = self.renderer.text(self.messages, add_generation_prompt=True)
        if not new_text.startswith(self._text):
            raise RenderError(f"renderer {self.renderer.name!r} re-rendered earlier turns differently "
                              "(not prefix-preserving)")
        self._append(self.renderer.encode(new_text[len(self._text):]), student=False)
        self._text = new_text

    def add_assistant(self, sampled_ids: Sequence[int], logprobs: Sequence[float],
                      trained: bool = True) -> tuple[int, int, str]:
        """Append the student's sampled ids verbatim, then the template's end-of-turn glue.
        `trained=False` appends a turn the student did not sample (an oracle's replayed turn):
        history, outside the loss mask.

        Returns (start, end, text): the sampled span in `token_ids` and its decoded content.
        """
        ids = list(sampled_ids)
        stopped = bool(ids) and ids[-1] == self.renderer.eos_token_id
        content = self.renderer.decode(ids[:-1] if stopped else ids)
        start = len(self.token_ids)
        self._append(ids, student=trained, logprobs=logprobs)
        end = len(self.token_ids)
        self.messages.append({"role": "assistant", "content": content})
        closed = self.renderer.text(self.messages, add_generation_prompt=False)
        head = self._text + content
        if not closed.startswith(head):
            raise RenderError(f"renderer {self.renderer.name!r} does not render the assistant turn as sampled")
        glue = closed[len(head):]
        if stopped and glue.startswith(self.renderer.eos_text):
            glue = glue[len(self.renderer.eos_text):]  # the sampled end-of-turn token is the template's
        self._append(self.renderer.encode(glue), student=False)
        self._text = closed
        return start, end, content
