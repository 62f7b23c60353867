"""`HFPolicy`: a transformers causal LM as a batched token policy (CPU or CUDA).

Two forwards run the same weights: the decode engine (`agentopd.inference.engine`, Llama-family
models: slots of KV cache, rows joining and leaving at any step) and transformers' own forward
for any other causal LM. Either way the keys and values of each finished row and of a prompt
prefix shared by the batch are kept (`PrefixCache`), so the next turn of a multi-turn episode
prefills only its new tokens, and the recorded logprob of each sampled token is exact under the
distribution it was drawn from (after temperature / top-k / top-p), which is what importance
ratios need. Draws are a function of (seed, row key, token step) only (`uniforms`), so a row
samples the same tokens whatever batch it shares, and `reference_samples` (one row, no cache,
transformers' forward) is the ground truth the fast paths are tested against.

`HFPolicy.open` gives a `Generation`: a continuous batch that takes new prompts while others
decode (the rollout runner submits an episode's next turn as soon as its env has stepped).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from agentopd.inference.engine import DecodeEngine, _version, unsupported
from agentopd.inference.sampling import Sample, SamplingParams, sample_tokens, uniforms


class HFPolicy:
    """A transformers causal LM as a batched sampler (CPU or CUDA).

    `dtype` is the compute dtype (None: the weights'); `engine` is ``auto`` (the decode engine
    when the model is supported), ``engine`` (required) or ``hf`` (transformers' forward)."""

    def __init__(self, model, tokenizer, max_batch: int = 32, stop_token_ids: Sequence[int] | None = None,
                 dtype: torch.dtype | None = None, prefix_cache: bool = True,
                 prefix_cache_bytes: int = 2 << 30, engine: str = "auto"):
        if engine not in ("auto", "engine", "hf"):
            raise ValueError(f"engine {engine!r}: use auto, engine or hf")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        stops = set(stop_token_ids or [])
        stops.add(tokenizer.eos_token_id)
        self.stop_token_ids = sorted(s for s in stops if s is not None)
        self.dtype = dtype
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.prefix_cache = PrefixCache(prefix_cache_bytes) if prefix_cache else None
        why = unsupported(model)
        if engine == "engine" and why is not None:
            raise ValueError(f"engine=engine but the decode engine cannot run this model: {why}")
        self.engine_name = "hf" if engine == "hf" or why is not None else "engine"
        self._engine: DecodeEngine | None = None
        self._kv_version = -1

    owns_weights = False
    """Whether `model` is this sampler's own copy (`detached`), refreshed by `load_weights`
    after each optimizer step, rather than the learner's module itself."""

    def detached(self) -> HFPolicy:
        """The same sampler over its own copy of the weights: the learner can step (or be
        sharded) while this one samples, and `load_weights` brings it up to date."""
        import copy

        twin = HFPolicy(copy.deepcopy(self.model).eval(), self.tokenizer, self.max_batch, self.stop_token_ids,
                        self.dtype, self.prefix_cache is not None, engine=self.engine_name)
        twin.owns_weights = True
        return twin

    def load_weights(self, named: Iterable[tuple[str, torch.Tensor]]) -> float:
        """Copy (name, tensor) pairs in the model's own parameter names into this sampler's copy
        (the `WeightReceiver` contract; a `detached` policy only); returns the seconds it took.
        A parameter that does not arrive is an error: a half-synced sampler is a silent bug."""
        if not self.owns_weights:
            raise RuntimeError("load_weights needs a detached policy (its own copy of the weights)")
        t = time.perf_counter()
        params = dict(self.model.named_parameters())
        missing = set(params)
        with torch.no_grad():
            for name, w in named:
                p = params.get(name)
                if p is None:
                    raise KeyError(f"load_weights: the sampler has no parameter {name!r}")
                p.copy_(w.to(p.device, p.dtype))
                missing.discard(name)
        if missing:
            raise RuntimeError(f"load_weights: no tensor arrived for {', '.join(sorted(missing)[:3])}")
        self.invalidate()  # the cached keys/values belong to the old weights
        return time.perf_counter() - t

    def invalidate(self) -> None:
        """Forget cached keys/values (they are also dropped automatically when the weights move)."""
        if self.prefix_cache is not None:
            self.prefix_cache.clear()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_spec(cls, name: str, device: str = "cpu", dtype: str = "auto", max_batch: int = 32) -> HFPolicy:
        from agentopd.inference.dtypes import resolve_dtype
        from agentopd.inference.models import load_causal_lm, load_tokenizer

        tok = load_tokenizer(name)
        compute = resolve_dtype(dtype, device)
        model = load_causal_lm(name, device=device, dtype="bfloat16" if compute == torch.bfloat16 else "float32").eval()
        return cls(model, tok, max_batch=max_batch)

    def open(self, params: SamplingParams) -> Generation:
        """A continuous batch sampling with `params` (close it, or use it as a context manager)."""
        v = _version(self.model)
        if v != self._kv_version:  # stored keys/values belong to older weights
            self.invalidate()
            self._kv_version = v
        if self.engine_name == "hf":
            return _HFGeneration(self, params)
        if self._engine is None:
            self._engine = DecodeEngine(self.model, self.dtype)
        self._engine.sync()
        return _EngineGeneration(self, params, self._engine)

    def sample(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
               keys: Sequence[int] | None = None) -> list[Sample]:
        """Sample one continuation per prompt; `keys` (default 0..n-1) seed each row's draws."""
        keys = list(range(len(prompts))) if keys is None else list(keys)
        if len(set(keys)) != len(keys):
            raise ValueError("sample keys must be distinct")
        out: dict[int, Sample] = {}
        # Similar lengths together keeps the hf path's left padding small.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        with self.open(params) as gen:
            for i in order:
                gen.submit(prompts[i], keys[i])
            while gen.busy:
                out.update(gen.step())
        return [out[k] for k in keys]


@dataclass
class _Row:
    key: int
    prompt: tuple[int, ...]
    toks: list[int] = field(default_factory=list)
    lps: list[float] = field(default_factory=list)


class Generation(ABC):
    """An open batch: `submit` prompts at any time; `step` advances every live row by one token
    (admitting waiting prompts first) and returns the rows that finished, as (key, Sample)."""

    def __init__(self, policy: HFPolicy, params: SamplingParams):
        self.policy = policy
        self.params = params
        self.stops = set(policy.stop_token_ids)
        self.pending: list[tuple[int, tuple[int, ...]]] = []
        self._urgent = 0
        """How many of `pending` (at its head) were submitted urgent."""
        self.rows: list[_Row] = []

    def submit(self, prompt: Sequence[int], key: int, urgent: bool = False) -> None:
        """Queue a prompt. `urgent` ones go ahead of every non-urgent one waiting (first come,
        first served among themselves): an episode's next turn, whose history the prefix cache
        holds now, would otherwise wait behind a queue of new episodes until that entry is
        evicted and then prefill its whole context again."""
        if not prompt:
            raise ValueError("cannot sample from an empty prompt")
        if urgent:
            self.pending.insert(self._urgent, (key, tuple(prompt)))
            self._urgent += 1
        else:
            self.pending.append((key, tuple(prompt)))

    def _take(self, n: int) -> list[tuple[int, tuple[int, ...]]]:
        """The next `n` waiting prompts, urgent ones first."""
        out, self.pending = self.pending[:n], self.pending[n:]
        self._urgent = max(0, self._urgent - n)
        return out

    @property
    def busy(self) -> bool:
        return bool(self.pending or self.rows)

    @property
    def live(self) -> int:
        return len(self.rows)

    @abstractmethod
    def step(self, hold: int = 0) -> list[tuple[int, Sample]]:
        """Advance every live row one token, admitting waiting prompts into free slots first;
        `hold` free slots are kept from non-urgent prompts (for urgent ones still to come: turns
        whose episodes' env steps are running)."""

    def close(self) -> None:
        self.rows, self.pending, self._urgent = [], [], 0

    def __enter__(self) -> Generation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _draw(self, logits: torch.Tensor, rows: Sequence[_Row]) -> list[bool | str]:
        """Sample the next token of each row; returns each row's finish reason or False."""
        u = uniforms(self.params.seed, [r.key for r in rows], [len(r.toks) for r in rows])
        tok, lp = sample_tokens(logits, self.params, u)
        out: list[bool | str] = []
        for r, t, v in zip(rows, tok.tolist(), lp.tolist()):
            r.toks.append(t)
            r.lps.append(v)
            out.append("stop" if t in self.stops else "length" if len(r.toks) >= self.params.max_new_tokens else False)
        return out


class _EngineGeneration(Generation):
    def __init__(self, policy: HFPolicy, params: SamplingParams, engine: DecodeEngine):
        if engine.n_live:
            raise RuntimeError("this policy already has an open generation (close it first)")
        super().__init__(policy, params)
        self.engine = engine
        self.shared: tuple[int, ...] | None = None
        """The token ids of the engine's shared prefix (cascade attention), if any."""

    def step(self, hold: int = 0) -> list[tuple[int, Sample]]:
        eng, store = self.engine, self.policy.prefix_cache
        logits = []
        if self.rows:
            logits.append(eng.decode([r.toks[-1] for r in self.rows]))
        room = self.policy.max_batch - len(self.rows)
        urgent = min(room, self._urgent)
        admit = self._take(urgent + max(0, min(len(self.pending) - self._urgent, room - urgent - hold)))
        if admit:
            if store is not None and len(admit) > 1:
                self._share_prefix([p for _, p in admit])
            hits = [store.lookup(p) if store is not None else (0, None) for _, p in admit]
            shared = [self._reads_shared(p, n) for (_, p), (n, _) in zip(admit, hits)]
            eng.reserve(eng.n_live + len(admit), self.params.max_new_tokens + max(
                len(p) - (eng.shared_len if s else 0) for (_, p), s in zip(admit, shared)))
            logits.append(eng.prefill([(p, n, kv, s) for (_, p), (n, kv), s in zip(admit, hits, shared)]))
            self.rows += [_Row(k, p) for k, p in admit]
        if not self.rows:
            return []
        reasons = self._draw(torch.cat(logits) if len(logits) > 1 else logits[0], self.rows)
        done = [i for i, why in enumerate(reasons) if why]
        finished = []
        for i in done:
            r = self.rows[i]
            if store is not None:  # keep this row's keys/values for the episode's next turn
                store.store(r.prompt + tuple(r.toks[:-1]), eng.row_kv(i))
            finished.append((r.key, Sample(tuple(r.toks), tuple(r.lps), str(reasons[i]))))
        if done:
            self.rows = [self.rows[i] for i in eng.remove(done)]
        return finished

    def _reads_shared(self, prompt: tuple[int, ...], cached: int) -> bool:
        """Whether a row admitted with `cached` tokens of `prompt` cached reads the engine's
        shared prefix instead of holding its own copy."""
        key = self.shared
        return key is not None and cached >= len(key) and prompt[: len(key)] == key

    def _share_prefix(self, prompts: Sequence[tuple[int, ...]]) -> None:
        """A prefix the admitted rows share (>= 16 tokens): its keys and values are computed once
        (or taken from a row's cached history) into the prefix cache and, on the CPU, held by the
        engine for cascade attention while no live row reads an older one."""
        store, eng = self.policy.prefix_cache, self.engine
        assert store is not None
        c = min(_common_prefix_len(prompts), min(len(p) for p in prompts) - 1)
        if c < 16 or self.shared == prompts[0][:c]:
            return
        can_share = eng.cascade and not any(eng.off)
        cached = [store.lookup(p) for p in prompts]
        if not can_share and all(n >= c for n, _ in cached):
            return  # nothing to compute, and the engine cannot take it now
        key = prompts[0][:c]
        covering = next((kv for n, kv in cached if n >= c and kv is not None), None)
        if covering is not None:  # a row's stored history covers the prefix
            kv = [(k[:, :, :c].clone(), v[:, :, :c].clone()) for k, v in covering]
            store.store(key, kv)
        else:
            n, hit = store.lookup(key)
            eng.prefill([(key, n, hit, False)])
            i = eng.n_live - 1
            kv = eng.row_kv(i)
            store.store(key, kv)
            eng.remove([i])
        if can_share:
            eng.share(kv)
            self.shared = key

    def close(self) -> None:
        super().close()
        self.engine.release()


class _HFGeneration(Generation):
    """transformers' forward: the waiting prompts run as one batch to the end (no joining)."""

    def step(self, hold: int = 0) -> list[tuple[int, Sample]]:  # a batch runs to its end: nothing to hold
        batch = self._take(self.policy.max_batch)
        if not batch:
            return []
        return [(k, s) for (k, _), s in zip(batch, _hf_batch(self.policy, [p for _, p in batch],
                                                                [k for k, _ in batch], self.params))]


@torch.no_grad()
def _prefill_layout(policy: HFPolicy, prompts: Sequence[Sequence[int]]):
    """Batch layout ``[pad | cached prefix_i | pad | new suffix_i]`` per row, reusing stored KV.

    Returns (cache, suffix ids (B, S), attention mask (B, C+S), suffix position ids (B, S)).
    Padding holes sit in the attention mask; position ids count real tokens only, so every row
    sees exactly the positions and keys a plain left-padded prefill would give it.
    """
    dev = policy.device
    store = policy.prefix_cache
    hits = [store.lookup(p) if store else (0, None) for p in prompts]
    if store is not None and len(prompts) > 1:  # a prefix shared by the batch is computed once
        shared = _shareable_prefix(prompts, [n for n, _ in hits])
        if shared:
            _store_prefix(policy, tuple(prompts[0][:shared]))
            hits = [store.lookup(p) for p in prompts]
    B = len(prompts)
    C = max(n for n, _ in hits)
    S = max(len(p) - n for p, (n, _) in zip(prompts, hits))
    ids = torch.full((B, S), policy.pad_id, dtype=torch.long)
    attn = torch.zeros((B, C + S), dtype=torch.long)
    for i, (p, (n, _)) in enumerate(zip(prompts, hits)):
        suffix = list(p[n:])
        ids[i, S - len(suffix):] = torch.tensor(suffix, dtype=torch.long)
        attn[i, C - n : C] = 1
        attn[i, C + S - len(suffix):] = 1
    cache = make_cache(policy.model)
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
def _store_prefix(policy: HFPolicy, key: tuple[int, ...]) -> None:
    """Prefill `key` alone and keep its KV in the prefix cache."""
    assert policy.prefix_cache is not None
    cache = make_cache(policy.model)
    x = torch.tensor([list(key)], device=policy.device)
    with _autocast(policy):
        policy.model(input_ids=x, past_key_values=cache, use_cache=True, logits_to_keep=1)
    policy.prefix_cache.store(key, _row_kv(cache, 0, None))


def _autocast(policy: HFPolicy):
    dev = policy.device
    on = policy.dtype is not None and policy.dtype != next(policy.model.parameters()).dtype
    return torch.autocast(dev.type, dtype=policy.dtype, enabled=on)


@torch.no_grad()
def _hf_batch(policy: HFPolicy, prompts: Sequence[Sequence[int]], keys: Sequence[int],
              params: SamplingParams) -> list[Sample]:
    """Lock-step batched sampling with transformers' forward; finished rows drop out."""
    dev = policy.device
    B = len(prompts)
    cache, step_ids, attn, pos = _prefill_layout(policy, prompts)
    stops = torch.tensor(policy.stop_token_ids, device=dev)
    rows = torch.arange(B, device=dev)  # original row of each live batch entry
    toks: list[list[int]] = [[] for _ in range(B)]
    lps: list[list[float]] = [[] for _ in range(B)]
    finish = ["length"] * B
    for step in range(params.max_new_tokens):
        with _autocast(policy):
            logits = policy.model(input_ids=step_ids, attention_mask=attn, position_ids=pos,
                                  past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
        rows_l = rows.tolist()
        tok, lp = sample_tokens(logits, params, uniforms(params.seed, [keys[r] for r in rows_l], [step] * len(rows_l)))
        for r, t, v in zip(rows_l, tok.tolist(), lp.tolist()):
            toks[r].append(t)
            lps[r].append(v)
        tok = tok.to(dev)
        done = torch.isin(tok, stops)
        done_store = torch.ones_like(done) if step == params.max_new_tokens - 1 else done
        if policy.prefix_cache is not None:  # keep the KV of rows leaving the batch for their next turn
            for i in done_store.nonzero().squeeze(-1).tolist():
                r = rows_l[i]
                policy.prefix_cache.store(tuple(prompts[r]) + tuple(toks[r][:-1]), _row_kv(cache, i, attn[i]))
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


@torch.no_grad()
def reference_samples(model, prompts: Sequence[Sequence[int]], params: SamplingParams,
                      keys: Sequence[int] | None = None, stop_token_ids: Sequence[int] = ()) -> list[Sample]:
    """The ground truth for the fast paths: one row at a time, no cache, no padding, the whole
    sequence through transformers' forward at every token, the same draws (`uniforms`)."""
    keys = list(range(len(prompts))) if keys is None else list(keys)
    dev = next(model.parameters()).device
    stops = set(stop_token_ids)
    out = []
    for prompt, key in zip(prompts, keys):
        ids, lps, why = list(prompt), [], "length"
        for step in range(params.max_new_tokens):
            logits = model(input_ids=torch.tensor([ids], device=dev), use_cache=False).logits[:, -1, :]
            tok, lp = sample_tokens(logits, params, uniforms(params.seed, [key], [step]))
            ids.append(int(tok.item()))
            lps.append(float(lp.item()))
            if ids[-1] in stops:
                why = "stop"
                break
        out.append(Sample(tuple(ids[len(prompt):]), tuple(lps), why))
    return out


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


def _shareable_prefix(prompts: Sequence[Sequence[int]], cached: Sequence[int]) -> int:
    """Length of the batch's common prefix worth prefilling once (>= 16 tokens, at least one
    token left to every row, not already cached for every row); 0 if none."""
    shared = min(_common_prefix_len(prompts), min(len(p) for p in prompts) - 1)
    return shared if shared >= 16 and any(n < shared for n in cached) else 0


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
