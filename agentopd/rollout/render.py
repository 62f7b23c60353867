"""Incremental, prefix-preserving chat rendering over a tokenizer's chat template.

`Conversation` holds one episode's token ids. The student's sampled ids are appended verbatim
(never re-tokenized); everything else (system, user, tool messages, template glue) is rendered by
the chat template and only the new *suffix* of the text is tokenized. Where the template is
prefix-preserving (ChatML and most others), the ids equal a full render of the final
conversation; a template that rewrites earlier turns (e.g. one that drops old ``<think>``
blocks) is detected and raises `RenderError` instead of silently drifting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agentopd.core.text import encodable
from agentopd.core.types import Message


class RenderError(RuntimeError):
    """The chat template is not prefix-preserving for this conversation."""


class Renderer:
    """Renders messages with a tokenizer's chat template."""

    def __init__(self, tokenizer):
        if tokenizer.chat_template is None:
            raise ValueError("the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.eos_text = tokenizer.eos_token or ""

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
            raise RenderError("chat template re-rendered earlier turns differently (not prefix-preserving)")
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
            raise RenderError("chat template does not render the assistant turn as sampled")
        glue = closed[len(head):]
        if stopped and glue.startswith(self.renderer.eos_text):
            glue = glue[len(self.renderer.eos_text):]  # the sampled end-of-turn token is the template's
        self._append(self.renderer.encode(glue), student=False)
        self._text = closed
        return start, end, content
