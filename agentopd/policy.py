"""Student policies: a batch of token-id prefixes in, sampled ids and their logprobs out.

The interface is backend-neutral so vLLM and OpenAI-compatible backends slot in without
changing the rollout. `HFPolicy` runs a transformers causal LM with its own batched sampling
loop over a KV cache: rows that hit a stop token drop out of the batch, and the recorded
logprob of each sampled token is exact under the distribution it was drawn from (after
temperature / top-k / top-p), which is what importance ratios need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


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


class Policy(Protocol):
    """What the rollout needs from a student backend."""

    tokenizer: object

    def sample(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Sample]: ...


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


class HFPolicy:
    """A transformers causal LM as a batched sampler (CPU or CUDA)."""

    def __init__(self, model, tokenizer, max_batch: int = 32, stop_token_ids: Sequence[int] | None = None,
                 autocast_dtype: torch.dtype | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        stops = set(stop_token_ids or [])
        stops.add(tokenizer.eos_token_id)
        self.stop_token_ids = sorted(s for s in stops if s is not None)
        self.autocast_dtype = autocast_dtype
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_spec(cls, name: str, device: str = "cpu", dtype: str = "auto", max_batch: int = 32) -> HFPolicy:
        from agentopd.models import load_causal_lm, load_tokenizer

        tok = load_tokenizer(name)
        model = load_causal_lm(name, device=device, dtype=dtype).eval()
        return cls(model, tok, max_batch=max_batch)

    def sample(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Sample]:
        out: list[Sample | None] = [None] * len(prompts)
        # Similar lengths together keeps left padding small.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        gen = torch.Generator(device="cpu").manual_seed(params.seed)
        for c in range(0, len(order), self.max_batch):
            chunk = order[c : c + self.max_batch]
            for i, s in zip(chunk, self._sample_batch([prompts[i] for i in chunk], params, gen)):
                out[i] = s
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def _sample_batch(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                      gen: torch.Generator) -> list[Sample]:
        from transformers import DynamicCache

        dev = self.device
        B, L = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((B, L), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, L - len(p):] = torch.tensor(list(p), dtype=torch.long)
            attn[i, L - len(p):] = 1
        ids, attn = ids.to(dev), attn.to(dev)
        stops = torch.tensor(self.stop_token_ids, device=dev)
        cache = DynamicCache(config=self.model.config)
        rows = torch.arange(B, device=dev)  # original row of each live batch entry
        toks: list[list[int]] = [[] for _ in range(B)]
        lps: list[list[float]] = [[] for _ in range(B)]
        finish = ["length"] * B
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        step_ids = ids
        for _ in range(params.max_new_tokens):
            with torch.autocast(dev.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                logits = self.model(input_ids=step_ids, attention_mask=attn, position_ids=pos,
                                    past_key_values=cache, use_cache=True,
                                    logits_to_keep=1).logits[:, -1, :]
            tok, lp = sample_tokens(logits.to("cpu") if dev.type != "cpu" and gen.device.type == "cpu" else logits,
                                    params, gen)
            tok_l, lp_l, rows_l = tok.tolist(), lp.tolist(), rows.tolist()
            for r, t, v in zip(rows_l, tok_l, lp_l):
                toks[r].append(t)
                lps[r].append(v)
            tok = tok.to(dev)
            done = torch.isin(tok, stops)
            for r in rows[done].tolist():
                finish[r] = "stop"
            if bool(done.all()):
                break
            if bool(done.any()):  # finished rows drop out of the batch
                keep = (~done).nonzero().squeeze(-1)
                cache.reorder_cache(keep)
                rows, tok, attn, pos = rows[keep], tok[keep], attn[keep], pos[keep]
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=-1)
            pos = pos[:, -1:] + 1
            step_ids = tok[:, None]
        return [Sample(tuple(toks[i]), tuple(lps[i]), finish[i]) for i in range(B)]
