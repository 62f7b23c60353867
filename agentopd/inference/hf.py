"""`HFPolicy`: a transformers causal LM as a batched token policy (CPU or CUDA).

`HFPolicy` runs a transformers causal LM with its own batched sampling
loop over a KV cache: rows that hit a stop token drop out of the batch; the keys and values of
each finished row and of a prompt prefix shared by the batch are kept (`PrefixCache`), so the
next turn of a multi-turn episode prefills only its new tokens; and the recorded
logprob of each sampled token is exact under the distribution it was drawn from (after
temperature / top-k / top-p), which is what importance ratios need.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from agentopd.inference.sampling import Sample, SamplingParams, sample_tokens


class HFPolicy:
    """A transformers causal LM as a batched sampler (CPU or CUDA)."""

    def __init__(self, model, tokenizer, max_batch: int = 32, stop_token_ids: Sequence[int] | None = None,
                 autocast_dtype: torch.dtype | None = None, prefix_cache: bool = True,
                 prefix_cache_bytes: int = 2 << 30):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        stops = set(stop_token_ids or [])
        stops.add(tokenizer.eos_token_id)
        self.stop_token_ids = sorted(s for s in stops if s is not None)
        self.autocast_dtype = autocast_dtype
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.prefix_cache = PrefixCache(prefix_cache_bytes) if prefix_cache else None

    def invalidate(self) -> None:
        """Forget cached keys/values: call after the weights change (every optimizer step)."""
        if self.prefix_cache is not None:
            self.prefix_cache.clear()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_spec(cls, name: str, device: str = "cpu", dtype: str = "auto", max_batch: int = 32) -> HFPolicy:
        from agentopd.inference.models import load_causal_lm, load_tokenizer

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
    def _prefill_layout(self, prompts: Sequence[Sequence[int]]):
        """Batch layout ``[pad | cached prefix_i | pad | new suffix_i]`` per row, reusing stored KV.

        Returns (cache, suffix ids (B, S), attention mask (B, C+S), suffix position ids (B, S)).
        Padding holes sit in the attention mask; position ids count real tokens only, so every row
        sees exactly the positions and keys a plain left-padded prefill would give it.
        """
        dev = self.device
        store = self.prefix_cache
        hits = [store.lookup(p) if store else (0, None) for p in prompts]
        if store is not None and len(prompts) > 1:  # a prefix shared by the batch is computed once
            shared = _common_prefix_len(prompts)
            shared = min(shared, min(len(p) for p in prompts) - 1)
            if shared >= 16 and any(n < shared for n, _ in hits):
                self._store_prefix(tuple(prompts[0][:shared]))
                hits = [store.lookup(p) for p in prompts]
        B = len(prompts)
        C = max(n for n, _ in hits)
        S = max(len(p) - n for p, (n, _) in zip(prompts, hits))
        ids = torch.full((B, S), self.pad_id, dtype=torch.long)
        attn = torch.zeros((B, C + S), dtype=torch.long)
        for i, (p, (n, _)) in enumerate(zip(prompts, hits)):
            suffix = list(p[n:])
            ids[i, S - len(suffix):] = torch.tensor(suffix, dtype=torch.long)
            attn[i, C - n : C] = 1
            attn[i, C + S - len(suffix):] = 1
        cache = make_cache(self.model)
        if C > 0:
            first = next(kv for _, kv in hits if kv is not None)
            for layer in range(len(first)):
                ref = first[layer][0][0]  # (H, n, D)
                k = ref.new_zeros((B, ref.shape[0], C, ref.shape[2]))
                v = torch.zeros_like(k)
                for i, (n, kv) in enumerate(hits):
                    if n and kv is not None:
                        k[i, :, C - n :] = kv[layer][0][0]
                        v[i, :, C - n :] = kv[layer][1][0]
                cache.update(k, v, layer)
        attn = attn.to(dev)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)[:, C:]
        return cache, ids.to(dev), attn, pos

    @torch.no_grad()
    def _store_prefix(self, key: tuple[int, ...]) -> None:
        """Prefill `key` alone and keep its KV in the prefix cache."""
        assert self.prefix_cache is not None
        cache = make_cache(self.model)
        x = torch.tensor([list(key)], device=self.device)
        self.model(input_ids=x, past_key_values=cache, use_cache=True, logits_to_keep=1)
        self.prefix_cache.store(key, _row_kv(cache, 0, None))

    @torch.no_grad()
    def _sample_batch(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                      gen: torch.Generator) -> list[Sample]:
        dev = self.device
        B = len(prompts)
        cache, step_ids, attn, pos = self._prefill_layout(prompts)
        stops = torch.tensor(self.stop_token_ids, device=dev)
        rows = torch.arange(B, device=dev)  # original row of each live batch entry
        toks: list[list[int]] = [[] for _ in range(B)]
        lps: list[list[float]] = [[] for _ in range(B)]
        finish = ["length"] * B
        for step in range(params.max_new_tokens):
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
            if step == params.max_new_tokens - 1:
                done_store = torch.ones_like(done)
            else:
                done_store = done
            if self.prefix_cache is not None:  # keep the KV of rows leaving the batch for their next turn
                for i in done_store.nonzero().squeeze(-1).tolist():
                    r = rows_l[i]
                    key = tuple(prompts[r]) + tuple(toks[r][:-1])
                    self.prefix_cache.store(key, _row_kv(cache, i, attn[i]))
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


def make_cache(model):
    """A transformers DynamicCache whose full-attention layers grow in place (amortized doubling)
    instead of re-concatenating all keys and values at every decoded token; on a CPU that copy
    was the single largest cost of batched decoding."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [_GrowingLayer() for _ in cache.layers]
    return cache


def _growing_layer_class():
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """DynamicLayer over preallocated buffers; `keys`/`values` are views of the filled part."""

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._n = 0
                self._kbuf = self._vbuf = None
            need = self._n + key_states.shape[-2]
            buf = self._kbuf
            if buf is None or need > buf.shape[-2] or buf.shape[0] != key_states.shape[0]:
                cap = max(need + 64, 2 * (buf.shape[-2] if buf is not None else 0))
                shape = (key_states.shape[0], key_states.shape[1], cap, key_states.shape[3])
                k, v = key_states.new_empty(shape), value_states.new_empty(shape)
                if self._n:
                    k[:, :, : self._n] = self._kbuf[:, :, : self._n]
                    v[:, :, : self._n] = self._vbuf[:, :, : self._n]
                self._kbuf, self._vbuf = k, v
            self._kbuf[:, :, self._n : need] = key_states
            self._vbuf[:, :, self._n : need] = value_states
            self._n = need
            self.keys, self.values = self._kbuf[:, :, :need], self._vbuf[:, :, :need]
            return self.keys, self.values

        def reorder_cache(self, beam_idx):
            if self.get_seq_length() > 0:
                idx = beam_idx.to(self._kbuf.device)
                self._kbuf, self._vbuf = self._kbuf.index_select(0, idx), self._vbuf.index_select(0, idx)
                self.keys, self.values = self._kbuf[:, :, : self._n], self._vbuf[:, :, : self._n]

        def batch_select_indices(self, indices):
            self.reorder_cache(indices)

    return GrowingLayer


class _LazyGrowing:
    cls = None

    def __call__(self):
        if _LazyGrowing.cls is None:
            _LazyGrowing.cls = _growing_layer_class()
        return _LazyGrowing.cls()


_GrowingLayer = _LazyGrowing()


def _common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


def _row_kv(cache, i: int, attn_row: torch.Tensor | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Row i's keys and values per layer, padding columns removed: [(1, H, n, D) x 2] per layer."""
    out = []
    cols = attn_row.bool() if attn_row is not None else None
    for layer in cache.layers:
        k, v = layer.keys[i : i + 1], layer.values[i : i + 1]
        if cols is not None:
            n = k.shape[2]
            k, v = k[:, :, cols[:n]], v[:, :, cols[:n]]
        out.append((k.clone(), v.clone()))
    return out


class PrefixCache:
    """Keys and values of token prefixes seen before (an episode's history, a shared system
    prompt), so a multi-turn rollout prefills only each turn's new tokens. LRU, bounded in bytes.

    Entries are exact token tuples; only a stored sequence that is a strict prefix of a prompt is
    reused, so a hit can never change what the model conditions on."""

    def __init__(self, max_bytes: int = 2 << 30):
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple[int, ...], list] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.hit_tokens = 0
        self.lookups = 0

    @staticmethod
    def _size(kv: list) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)

    def lookup(self, ids: Sequence[int]) -> tuple[int, list | None]:
        """Longest stored strict prefix of `ids` (at least one token must stay to prefill)."""
        self.lookups += 1
        best, best_key = 0, None
        for key in self.entries:
            n = len(key)
            if best < n < len(ids) and tuple(ids[:n]) == key:
                best, best_key = n, key
        if best_key is None:
            return 0, None
        self.entries.move_to_end(best_key)
        self.hits += 1
        self.hit_tokens += best
        return best, self.entries[best_key]

    def store(self, key: tuple[int, ...], kv: list) -> None:
        if not key:
            return
        for old in [k for k in self.entries if len(k) < len(key) and key[: len(k)] == k]:
            # An episode's earlier turn is superseded by its extension; a prefix that other
            # entries also extend (a shared system prompt) stays.
            if not any(len(k) > len(old) and k[: len(old)] == old for k in self.entries):
                self.bytes -= self._size(self.entries.pop(old))
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        self.entries[key] = kv
        self.bytes += self._size(kv)
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= self._size(dropped)

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0
