"""The two kinds of policy and how one turn is sampled.

A `TokenPolicy` takes token-id prefixes and returns sampled ids with their logprobs (token-in /
token-out: the HF backend here, vLLM and OpenAI-compatible completions later). A
`MessagePolicy` takes the conversation as chat messages and returns the next assistant turn as
text (the env's oracle, a chat API); the runner renders its text into the student's tokens.
Both play episodes through the same runner (`agentopd.rollout.runner`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

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

    def sample(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
               keys: Sequence[int] | None = None) -> list[Sample]:
        """One continuation per prompt. `keys` (default 0..n-1) name each row's random stream:
        the same (seed, key) draws the same uniforms whatever else is in the batch."""
        ...


@runtime_checkable
class WeightReceiver(Protocol):
    """The one boundary from learner to sampler: a sampler that holds its own copy of the
    student's weights (`HFPolicy.detached`, vLLM's engine) takes the learner's new tensors
    after each optimizer step. `Run.sync_policy` is the only caller; a sharded learner streams
    its parameters through it one gathered tensor at a time."""

    owns_weights: bool

    def load_weights(self, named: Iterable[tuple[str, Any]]) -> float:
        """Take (parameter name, tensor) pairs; returns the seconds it took."""
        ...


@dataclass(frozen=True)
class MessageState:
    """What a message policy sees of one live episode."""

    messages: tuple[Message, ...]
    """The conversation so far, ending with the observation to answer."""
    env: Any
    """The episode's gymnasium env (outermost wrapper), or under a remote env pool its handle,
    whose `get_wrapper_attr(name)` is a callable that runs where the env lives: privileged
    policies such as the oracle read the env's state through it; others ignore it."""


@runtime_checkable
class MessagePolicy(Protocol):
    """Chat messages in, the next assistant turn as text out."""

    def respond(self, states: Sequence[MessageState], params: SamplingParams) -> list[str]: ...


Policy = TokenPolicy | MessagePolicy
"""Anything the runner can play an episode with."""


_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def uniforms(seed: int, keys: Sequence[int], steps: Sequence[int]) -> torch.Tensor:
    """One uniform in [0, 1) per row, a pure function of (seed, row key, token step).

    A row's draws do not depend on which other rows share its batch, when it joined, or the batch
    size, so batched, continuous and one-at-a-time sampling pick the same tokens from the same
    distributions (the reference test of the fast paths rests on this)."""
    s = _splitmix64(seed & _M64)
    out = [(_splitmix64(_splitmix64(s ^ (k & _M64)) ^ (t & _M64)) >> 11) * 2.0**-53 for k, t in zip(keys, steps)]
    return torch.tensor(out, dtype=torch.float64)


def processed_logprobs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Log-probs (B, V) of the distribution a token is drawn from: temperature, then top-k, then
    top-p (the smallest head of mass >= p), renormalised. Greedy (temperature 0) is the plain
    softmax, whose argmax is taken."""
    logits = logits.float()
    if params.temperature <= 0:
        return torch.log_softmax(logits, dim=-1)
    if params.temperature != 1.0:  # (x / 1 == x: one (B, V) pass fewer on the common path)
        logits = logits / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
        p = torch.softmax(sorted_logits, dim=-1)
        drop_sorted = p.cumsum(-1) - p > params.top_p  # keep the first token past p
        drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.log_softmax(logits, dim=-1)


_BLOCK = 256
"""Vocabulary block of the two-level inverse CDF in `draw`."""


def _last_positive(w: torch.Tensor) -> torch.Tensor:
    """Index (B, 1) of each row's last positive entry of `w` (B, N)."""
    idx = torch.arange(w.shape[-1], device=w.device)
    return torch.where(w > 0, idx, -1).amax(-1, keepdim=True)


def draw(logp: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw of one token per row of `logp` (B, V) with uniforms `u` (B,).

    Two levels, so no (B, V) float64 cumsum is built (on a CPU that cumsum was half of a
    32-row decode step): float64 sums of vocabulary blocks locate the block holding u x total,
    and a float64 cumsum inside that one block locates the token. It is the inverse CDF of the
    same distribution; only float64 rounding of the partial sums differs from a flat cumsum."""
    B, V = logp.shape
    p = logp.exp()
    pad = (-V) % _BLOCK
    if pad:
        p = F.pad(p, (0, pad))
    blocks = p.view(B, -1, _BLOCK)
    sums = blocks.sum(-1, dtype=torch.float64)  # (B, blocks)
    csum = sums.cumsum(-1)
    x = (u.to(csum.device, torch.float64) * csum[:, -1])[:, None]
    # the sums round differently from the block's own cumsum: past either end, take the last
    # block (token) that has mass, never one the distribution excludes
    j = torch.minimum(torch.searchsorted(csum, x, right=True), _last_positive(sums))  # (B, 1)
    before = torch.where(j > 0, csum.gather(-1, (j - 1).clamp(min=0)), torch.zeros_like(x))
    block = blocks.gather(1, j[:, :, None].expand(B, 1, _BLOCK))[:, 0]
    k = torch.searchsorted(block.double().cumsum(-1) + before, x, right=True)
    tok = (j * _BLOCK + torch.minimum(k, _last_positive(block))).squeeze(-1)
    bad = ~torch.isfinite(logp.gather(-1, tok[:, None]).squeeze(-1))  # a NaN row
    return torch.where(bad, logp.argmax(-1), tok)


def sample_tokens(
    logits: torch.Tensor, params: SamplingParams, u: torch.Tensor | torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row of `logits` (B, V) with uniforms `u` (B,) (or fresh ones from a
    generator); return ids (B,) and their logprobs (B,) under the distribution drawn from."""
    logp = processed_logprobs(logits, params)
    if params.temperature <= 0:
        tok = logp.argmax(dim=-1)
    else:
        if not isinstance(u, torch.Tensor):
            u = torch.rand(logits.shape[0], generator=u, dtype=torch.float64)
        tok = draw(logp, u)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)
