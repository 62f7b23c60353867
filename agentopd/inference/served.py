"""`ServedPolicy` (``openai:<model>@<base_url>``): a served model as a token policy, for evals.

Each turn is one completions request with the conversation's token ids as the prompt, so the
episode stays token-in / token-out: the server's sampled ids come back with vLLM's
``return_token_ids`` (and their log-probs with ``logprobs``). A server that returns no ids is
used through its text, re-tokenized here (`exact_ids` False, said once in the eval's output);
such episodes are fine to score but not to train on. Rows are sent concurrently (up to the
client's concurrency limit); the per-row seed is a function of the run's seed and the row key,
so a rerun asks for the same samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from agentopd.inference.openai_client import ServedClient
from agentopd.inference.sampling import Sample, SamplingParams


class ServedPolicy:
    """A model behind an OpenAI-compatible completions endpoint."""

    def __init__(self, client: ServedClient, tokenizer):
        self.client = client
        self.tokenizer = tokenizer
        self.exact_ids: bool | None = None
        """Whether the server returned its sampled ids (None until the first reply)."""

    def sample(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
               keys: Sequence[int] | None = None) -> list[Sample]:
        keys = list(keys) if keys is not None else list(range(len(prompts)))
        with ThreadPoolExecutor(self.client.concurrency) as pool:
            return list(pool.map(lambda pk: self._one(pk[0], pk[1], params), zip(prompts, keys)))

    def _one(self, prompt: Sequence[int], key: int, params: SamplingParams) -> Sample:
        extra = {"temperature": params.temperature, "top_p": params.top_p, "logprobs": 1,
                 "return_token_ids": True, "seed": (params.seed * 1_000_003 + key) % (2**31)}
        if params.top_k > 0:
            extra["top_k"] = params.top_k  # vLLM's extension
        choice = self.client.completion(list(prompt), params.max_new_tokens, cache=params.temperature == 0, **extra)
        ids = choice.get("token_ids")
        finish = "stop" if choice.get("finish_reason") == "stop" else "length"
        if isinstance(ids, list) and all(isinstance(t, int) for t in ids):
            self.exact_ids = True if self.exact_ids is None else self.exact_ids
        else:
            self.exact_ids = False
            ids = self.tokenizer.encode(choice.get("text") or "", add_special_tokens=False)
        eos = self.tokenizer.eos_token_id
        if finish == "stop" and (not ids or ids[-1] != eos):
            ids = [*ids, eos]  # stopped on a stop string or an id it does not echo: close the turn
        lp = ((choice.get("logprobs") or {}).get("token_logprobs") or [])
        logprobs = [float(x) if x is not None else 0.0 for x in lp][: len(ids)]
        logprobs += [0.0] * (len(ids) - len(logprobs))
        return Sample(tuple(ids), tuple(logprobs), finish)
