"""The two kinds of policy and how one turn is sampled.

A `TokenPolicy` takes token-id prefixes and returns sampled ids with their logprobs (token-in /
token-out: the HF backend here, vLLM and OpenAI-compatible completions later). A
`MessagePolicy` takes the conversation as chat messages and returns the next assistant turn as
text (the env's oracle, a chat API); the runner renders its text into the student's tokens.
Both play episodes through the same runner (`agentopd.rollout.runner`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from agentopd.core.types import Message


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one assistant turn."""

    max_new_tokens: int = 256
    """Per-turn token cap (``finish_reason == "length"`` when hit)."""
    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    seed: int = 0
    """Seeds the sampler; same seed and prompts give the same samples on one backend."""


@dataclass(frozen=True)
class Sample:
    """One sampled continuation."""

    token_ids: tuple[int, ...]
    """Sampled ids, including the stop token when one was sampled."""
    logprobs: tuple[float, ...]
    """Logprob of each sampled id under the sampling distribution."""
    finish_reason: str
    """``stop`` or ``length``."""


@runtime_checkable
class TokenPolicy(Protocol):
    """Token-id prefixes in, sampled ids and their exact logprobs out."""

    tokenizer: object

    def sample(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Sample]: ...


@dataclass(frozen=True)
class MessageState:
    """What a message policy sees of one live episode."""

    messages: tuple[Message, ...]
    """The conversation so far, ending with the observation to answer."""
    env: Any
    """The episode's gymnasium env (outermost wrapper): privileged policies such as the oracle
    read the env's state through it (`get_wrapper_attr`); others ignore it."""


@runtime_checkable
class MessagePolicy(Protocol):
    """Chat messages in, the next assistant turn as text out."""

    def respond(self, states: Sequence[MessageState], params: SamplingParams) -> list[str]: ...


Policy = TokenPolicy | MessagePolicy
"""Anything the runner can play an episode with."""


def sample_tokens(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row of `logits` (B, V); return ids (B,) and their logprobs (B,)."""
    logits = logits.float()
    if params.temperature <= 0:
        logp = torch.log_softmax(logits, dim=-1)
        tok = logp.argmax(dim=-1)
        return tok, logp.gather(-1, tok[:, None]).squeeze(-1)
    logits = logits / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop_sorted = cum - torch.softmax(sorted_logits, dim=-1) > params.top_p  # keep the first token past p
        drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    logp = torch.log_softmax(logits, dim=-1)
    tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)
