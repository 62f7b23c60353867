"""`DecodeEngine`: the sampler's fast path, a slot-based decoder for Llama-family models.

On a small model transformers' generic forward spends most of a decode step outside the matmuls
(per-module Python, cache objects, key/value repeats for grouped-query attention, attention
over left padding). The engine runs the same weights with a forward written for decoding:

- a KV cache of slots: row i's keys and values fill columns [0, len_i) of slot i, and live rows
  are kept in slots [0, n), so attention reads a view of the cache, never a gathered copy;
- rows join (a batched ragged prefill after a prefix-cache hit) and leave at any step, which is
  what continuous batching needs (`agentopd.inference.hf.Generation`);
- grouped-query attention without repeats: the G query heads of one key/value head are one
  (G x L) attention, since at decode they all sit at the same position;
- cascade attention over a prefix the rows share (an agent's system prompt and tool specs): it
  is held once, a row's slot keeps only its own columns, and each layer reads the prefix with
  one batched product for all rows, merged with the row's own attention by log-sum-exp. Decode
  attention on a CPU is bound by reading keys and values, and a 300-token system prompt was
  most of every row's cache (CPU only: it uses the CPU flash kernel's log-sum-exp).

On a CPU with oneDNN every linear layer (q/k/v and gate/up fused, the LM head too) runs over a
copy of its weight packed in oneDNN's blocked layout (`torch.ops.mkldnn._linear_pointwise`, what
torch.compile's CPU backend emits for a linear): measured on a 2-core EPYC it streams a weight
1.4-2.3x faster than `linear` over the (out, in) tensor at 1 to 64 rows, and 1.2x at 2,048 (see
RESULTS.md, issue 10). Elsewhere (a GPU) `linear` runs over the model's own tensors, or over
fused copies where the compute dtype differs from the weights'. Copies are rebuilt whenever a
parameter's version counter moves (an optimizer step, a checkpoint load): the engine never
samples from stale weights. At one row in bf16 on a CPU with bf16 units, the linears instead
run ATen's own matrix-vector kernel over (out, in) copies (oneDNN switched off for that decode
step: it streams bf16 weights at 29 GB/s there against oneDNN's 14-19; see `one_row_gemv`).
Supported: Llama, Mistral (without a sliding window), Qwen2, Qwen3; `unsupported(model)`
says why not, and `HFPolicy` then uses transformers' forward.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def unsupported(model) -> str | None:
    """Why the engine cannot run `model` (None: it can)."""
    cfg = model.config
    mt = getattr(cfg, "model_type", "")
    if mt not in _TYPES:
        return f"model type {mt!r} (the engine runs {', '.join(_TYPES)})"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r}"
    sliding = getattr(cfg, "sliding_window", None)
    if sliding and (mt == "mistral" or getattr(cfg, "use_sliding_window", False)):
        return "sliding-window attention"
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or ())):
        return "non-full attention layers"
    try:
        layer = model.model.layers[0]
        layer.self_attn.q_proj, layer.mlp.gate_proj, model.model.rotary_emb, model.lm_head  # noqa: B018
    except AttributeError as e:
        return f"unexpected module layout ({e})"
    return None


PACK_ROWS = 32
"""The row count oneDNN lays a packed weight out for (a hint: any count runs; measured on the
LM head, 32 was as fast as 1 at one row and 1.4x faster at 8-32 rows)."""


def can_pack(device: torch.device) -> bool:
    """Whether linear layers on `device` run over oneDNN-packed weights (a CPU with oneDNN)."""
    return (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def one_row_gemv(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether one-row decode steps run their linears through ATen's matrix-vector kernel (oneDNN
    off) over (out, in) copies: bf16 on a CPU with native bf16 units. Measured on a 2-core EPYC
    with avx512_bf16, all of SmolLM2-135M's linears at one row: 29 GB/s against 19 GB/s over
    oneDNN-packed weights and 14 GB/s through oneDNN's `linear`; at 2 rows the two tie and from 8
    rows oneDNN is far faster, and in fp32 both paths reach MKL's 12 GB/s (RESULTS.md, issue 10)."""
    from agentopd.inference.dtypes import cpu_bf16_units

    return (device.type == "cpu" and dtype == torch.bfloat16 and bool(cpu_bf16_units())
            and hasattr(torch._C, "_set_mkldnn_enabled"))


@dataclass(frozen=True, slots=True)
class _Linear:
    """``x (T, in) -> x w^T + b``: over a oneDNN-packed weight (`packed`) or an (out, in) tensor;
    `one`, if set, is the (out, in) weight a single row uses while oneDNN is switched off."""

    w: torch.Tensor
    b: torch.Tensor | None
    packed: bool
    one: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.one is not None and x.shape[0] == 1 and not torch._C._get_mkldnn_enabled():
            return F.linear(x, self.one, self.b)
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.w, self.b, "none", [], "")
        return F.linear(x, self.w, self.b)


def _version(model) -> int:
    return sum(p._version for p in model.parameters())


class DecodeEngine:
    """Slots of KV cache plus a forward over them; see the module docstring."""

    def __init__(self, model, dtype: torch.dtype | None = None):
        why = unsupported(model)
        if why is not None:
            raise ValueError(f"the decode engine cannot run this model: {why}")
        self.model = model
        cfg = model.config
        self.device = next(model.parameters()).device
        self.dtype = dtype or next(model.parameters()).dtype
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.hidden = cfg.hidden_size
        self.eps = cfg.rms_norm_eps
        self.scale = self.head_dim ** -0.5
        self.n_layers = cfg.num_hidden_layers
        self.packed = can_pack(self.device)
        self.gemv = self.packed and one_row_gemv(self.device, self.dtype)
        """One-row decode steps switch oneDNN off and use the (out, in) copies (`one_row_gemv`)."""
        self._version = -1
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.lens: list[int] = []
        """Filled cache columns of each live slot (slots [0, n) are live)."""
        self.off: list[int] = []
        """Per live row: the shared prefix's length if the row reads it (its slot's column c
        then holds position off + c), else 0."""
        self.cascade = self.device.type == "cpu"
        self.shared_len = 0
        self._shared: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pk: list[torch.Tensor] = []
        self._pv: list[torch.Tensor] = []
        self.sync()

    # -- weights -------------------------------------------------------------------------
    def sync(self) -> None:
        """Take the model's current weights. Packed or cast copies are rebuilt if any parameter
        moved since they were made (an optimizer step, a checkpoint load), so the engine never
        samples from stale weights; unpacked same-dtype layers read the parameters themselves."""
        v = _version(self.model)
        if v == self._version:
            return
        dt, pack = self.dtype, self.packed
        m = self.model.model

        def own(t):
            return t if t is None or t.dtype == dt else t.detach().to(dt)

        # q/k/v and gate/up fused into one (out, in) weight each, one matmul instead of three (two),
        # wherever copies are made anyway (packing, another compute dtype) and in bf16 on a CPU
        # (1.1-1.4x on those matmuls there; in fp32 `linear` measured no faster fused)
        fuse = pack or dt != next(self.model.parameters()).dtype or (dt == torch.bfloat16 and self.device.type == "cpu")

        def linear(*mods) -> _Linear:
            if len(mods) == 1 and not pack:
                return _Linear(own(mods[0].weight.detach()), own(mods[0].bias), False)
            w = torch.cat([mod.weight.detach() for mod in mods]).to(dt).contiguous()
            b = None
            if any(mod.bias is not None for mod in mods):
                b = torch.cat([mod.bias.detach() if mod.bias is not None else mod.weight.new_zeros(mod.weight.shape[0])
                               for mod in mods]).to(dt)
            # the one-row weight: the parameter itself where it already is (out, in) in dt, else w
            one = None
            if self.gemv:
                one = mods[0].weight.detach() if len(mods) == 1 and mods[0].weight.dtype == dt else w
            return _Linear(torch.ops.mkldnn._reorder_linear_weight(w, PACK_ROWS) if pack else w, b, pack, one)

        def lins(*mods) -> tuple[_Linear, ...]:
            return (linear(*mods),) if fuse else tuple(linear(mod) for mod in mods)

        with torch.no_grad():
            self.embed = own(m.embed_tokens.weight)
            self.norm = own(m.norm.weight)
            self.lm_head = linear(self.model.lm_head)
            self.wide = []
            for layer in m.layers:
                a, mlp = layer.self_attn, layer.mlp
                self.wide.append((own(layer.input_layernorm.weight), lins(a.q_proj, a.k_proj, a.v_proj),
                                  linear(a.o_proj), own(getattr(getattr(a, "q_norm", None), "weight", None)),
                                  own(getattr(getattr(a, "k_norm", None), "weight", None)),
                                  own(layer.post_attention_layernorm.weight), lins(mlp.gate_proj, mlp.up_proj),
                                  linear(mlp.down_proj)))
        self._version = v

    # -- cache slots -----------------------------------------------------------------------
    @property
    def n_live(self) -> int:
        return len(self.lens)

    def reserve(self, slots: int, cols: int) -> None:
        """Make room for `slots` live rows of up to `cols` cache columns each."""
        have_s = self.k[0].shape[0] if self.k else 0
        have_c = self.k[0].shape[2] if self.k else 0
        if slots <= have_s and cols <= have_c:
            return
        s = max(slots, have_s)
        c = max(cols, have_c)
        if cols > have_c and have_c:
            c = max(cols, have_c + have_c // 2)  # grow by half: fewer reallocations per batch
        n, used = self.n_live, max(self.lens, default=0)
        shape = (s, self.n_kv, c, self.head_dim)
        ks, vs = [], []
        for i in range(self.n_layers):
            # zeros, not empty: a masked column still meets v in the attention (0 * NaN = NaN)
            k = torch.zeros(shape, dtype=self.dtype, device=self.device)
            v = torch.zeros_like(k)
            if n and used:
                k[:n, :, :used] = self.k[i][:n, :, :used]
                v[:n, :, :used] = self.v[i][:n, :, :used]
            ks.append(k)
            vs.append(v)
        self.k, self.v = ks, vs

    def release(self) -> None:
        """Drop every row and the shared prefix, and free the cache memory."""
        self.lens, self.off = [], []
        self.k, self.v = [], []
        self.shared_len, self._shared, self._pk, self._pv = 0, [], [], []

    def share(self, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Hold `kv` ([(1, Hk, P, D) x 2] per layer) as the prefix that rows admitted with
        `shared=True` read (cascade attention); only when no live row reads the current one."""
        if not self.cascade:
            raise RuntimeError("cascade attention runs on the CPU only")
        if any(self.off):
            raise RuntimeError("live rows still read the current shared prefix")
        self._shared = [(k.to(self.dtype), v.to(self.dtype)) for k, v in kv]
        self._pk = [k[0].float().transpose(1, 2).contiguous() for k, _ in kv]  # (Hk, D, P)
        self._pv = [v[0].float().contiguous() for _, v in kv]  # (Hk, P, D)
        self.shared_len = kv[0][0].shape[2]

    def row_kv(self, i: int, n: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Copies of row i's keys and values for its first `n` positions (default: all), shared
        prefix included: [(1, H, n, D) x 2] per layer (PrefixCache format)."""
        o = self.off[i]
        n = o + self.lens[i] if n is None else n
        if not o:
            return [(k[i : i + 1, :, :n].clone(), v[i : i + 1, :, :n].clone()) for k, v in zip(self.k, self.v)]
        assert n >= o, "a row reading the shared prefix holds at least all of it"
        return [(torch.cat((pk, k[i : i + 1, :, : n - o]), 2), torch.cat((pv, v[i : i + 1, :, : n - o]), 2))
                for (pk, pv), k, v in zip(self._shared, self.k, self.v)]

    def remove(self, rows: Sequence[int]) -> list[int]:
        """Free the slots in `rows`, keeping live rows in [0, n): each freed slot below the new n
        takes a surviving row from above it, copied over that row's own columns. Returns, for
        each surviving row in its new order, its old index."""
        # Moving only the rows above the new n (not every row past a freed slot, over the longest
        # row's columns) keeps a removal's cost at the rows removed: a continuous batch removes a
        # row at every turn's end, and with 64 rows of 4k-token contexts the full shift had taken
        # 29% of a long-episode eval (RESULTS.md, issue 10).
        gone = set(rows)
        n = self.n_live
        m = n - len(gone)
        holes = [i for i in range(m) if i in gone]
        movers = [i for i in range(m, n) if i not in gone]
        order = list(range(m))
        for h, s in zip(holes, movers, strict=True):
            used = self.lens[s]
            for k, v in zip(self.k, self.v):
                k[h, :, :used] = k[s, :, :used]
                v[h, :, :used] = v[s, :, :used]
            order[h] = s
        self.lens = [self.lens[i] for i in order]
        self.off = [self.off[i] for i in order]
        return order

    # -- forward ---------------------------------------------------------------------------
    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # (F.rms_norm measured slower than this on the CPU)
            return x * torch.rsqrt(x.square().mean(-1, keepdim=True).add_(self.eps)) * w
        # as transformers: normalise in fp32, cast back, then scale in the compute dtype (rms_norm
        # computes in fp32 and returns the input's dtype: the same bits as an explicit round trip)
        return F.rms_norm(x, w.shape, None, self.eps) * w

    def _layers(self, ids: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor | slice, cols: torch.Tensor | int,
                attend) -> torch.Tensor:
        """Run every layer over tokens `ids` (T,) at positions `pos` (T,), writing their keys and
        values to (slot, column) (index tensors, or a slice of slots and one column);
        `attend(layer, q (T, Hq, D))` -> (T, Hq * D).
        Returns the final-normed hidden states (T, hidden)."""
        T = ids.shape[0]
        H, Hk, D = self.n_heads, self.n_kv, self.head_dim
        x = F.embedding(ids, self.embed)
        cos, sin = self.model.model.rotary_emb(x, pos[None])
        half = D // 2
        # rotate_half(t) * sin == roll(t, half) * [-sin_lo, sin_hi]: one roll instead of two
        # slices, a negation and a cat (the same bits: negation is exact)
        cos, sin = cos[0, :, None, :], torch.cat((-sin[0, :, :half], sin[0, :, half:]), -1)[:, None, :]  # (T, 1, D)

        def rope(t):
            return t * cos + t.roll(half, -1) * sin

        for li, (ln1, qkv_, o_, qn, kn, ln2, gu_, d_) in enumerate(self.wide):
            h = self._rms(x, ln1)
            # q and k side by side as (T, H + Hk, D), so one RoPE covers both
            if len(qkv_) == 1:  # fused: one matmul, then views
                qkv = qkv_[0](h)
                qk, v = qkv[:, : (H + Hk) * D].view(T, H + Hk, D), qkv[:, (H + Hk) * D :].view(T, Hk, D)
            else:
                qk, v = torch.cat([f(h).view(T, -1, D) for f in qkv_[:2]], 1), qkv_[2](h).view(T, Hk, D)
            if qn is not None:  # per-head q/k norms (Qwen3), before RoPE
                qk = torch.cat((self._rms(qk[:, :H], qn), self._rms(qk[:, H:], kn)), 1)
            qk = rope(qk)
            q, k = qk[:, :H], qk[:, H:]
            self.k[li][slots, :, cols] = k
            self.v[li][slots, :, cols] = v
            x = x + o_(attend(li, q))
            h = self._rms(x, ln2)
            if len(gu_) == 1:
                gu = gu_[0](h)
                g, u = gu[:, : gu.shape[1] // 2], gu[:, gu.shape[1] // 2 :]
            else:
                g, u = (f(h) for f in gu_)
            x = x + d_(F.silu(g) * u)
        return self._rms(x, self.norm)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(x).float()

    def _with_prefix(self, li: int, q: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
                     skip: torch.Tensor | None) -> torch.Tensor:
        """Merge attention over the shared prefix into attention over the rows' own columns.
        q, o: (T, Hk, M, D), the M query heads (and positions) that read key/value head h;
        lse: (T, Hk, M), the log-sum-exp of o's scores; skip: (T,) rows that do not read the
        prefix. The prefix part is one float32 product per layer for all T x M queries."""
        T, Hk, M, D = q.shape
        s = torch.bmm(q.permute(1, 0, 2, 3).reshape(Hk, T * M, D).float(), self._pk[li]).mul_(self.scale)
        top = s.amax(-1, keepdim=True)  # (Hk, T*M, 1)
        e = s.sub_(top).exp_()
        total = e.sum(-1, keepdim=True)
        o_p = torch.bmm(e, self._pv[li]).div_(total).view(Hk, T, M, D).permute(1, 0, 2, 3)
        lse_p = total.log_().add_(top).view(Hk, T, M).permute(1, 0, 2)
        if skip is not None:
            lse_p = lse_p.masked_fill(skip[:, None, None], float("-inf"))
        lse = lse.float()
        both = torch.logaddexp(lse_p, lse)
        out = o_p * (lse_p - both).exp_()[..., None] + o.float() * (lse - both).exp_()[..., None]
        return out.to(q.dtype)

    @torch.no_grad()
    def decode(self, tokens: Sequence[int]) -> torch.Tensor:
        """Feed one token to every live row (row i gets tokens[i]); logits (n, V) for the next."""
        n = self.n_live
        assert len(tokens) == n
        dev = self.device
        lens = torch.tensor(self.lens, device=dev)
        cols = int(max(self.lens)) + 1
        self.reserve(n, cols)
        mask = (torch.arange(cols, device=dev)[None, :] <= lens[:, None])[:, None, None, :]  # (n, 1, 1, L)
        full = min(self.lens) == cols - 1  # every row fills every column (batch 1): no mask to apply
        G = self.n_heads // self.n_kv
        cascade = any(self.off)
        if cascade:
            fmask = torch.zeros(mask.shape, dtype=self.dtype, device=dev).masked_fill_(~mask, float("-inf"))
            skip = torch.tensor([o == 0 for o in self.off], device=dev) if not all(self.off) else None

        def attend(li: int, q: torch.Tensor) -> torch.Tensor:
            qq = q.view(n, self.n_kv, G, self.head_dim)
            k, v = self.k[li][:n, :, :cols], self.v[li][:n, :, :cols]
            if cascade:
                o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                    qq, k, v, attn_mask=fmask, scale=self.scale)
                o = self._with_prefix(li, qq, o, lse, skip)
            else:
                o = F.scaled_dot_product_attention(qq, k, v, attn_mask=None if full else mask, scale=self.scale)
            return o.reshape(n, self.n_heads * self.head_dim)

        pos = lens + torch.tensor(self.off, device=dev) if cascade else lens
        # the new keys go to (slot i, column lens[i]); when every row is at one column, a plain
        # slice write instead of an indexed one
        slots: torch.Tensor | slice = slice(0, n) if full else torch.arange(n, device=dev)
        col: torch.Tensor | int = cols - 1 if full else lens
        # oneDNN's switch is process-wide: flipped only on the main thread, since another thread
        # (the overlapped rollouts' one) may sample while the main thread trains, never the reverse
        gemv = n == 1 and self.gemv and threading.current_thread() is threading.main_thread()
        was = torch._C._get_mkldnn_enabled()
        if gemv:
            torch._C._set_mkldnn_enabled(False)
        try:
            x = self._layers(torch.tensor(list(tokens), device=dev), pos, slots, col, attend)
            logits = self._logits(x)
        finally:
            if gemv:
                torch._C._set_mkldnn_enabled(was)
        self.lens = [n_ + 1 for n_ in self.lens]
        return logits

    @torch.no_grad()
    def prefill(self, rows: Sequence[tuple[Sequence[int], int, list | None, bool]]) -> torch.Tensor:
        """Admit rows given as (ids, n_cached, cached kv or None, shared): each takes the next
        free slot, its cached prefix is copied in (past the shared prefix, if it reads that:
        then n_cached >= its length) and the rest of `ids` runs in one ragged forward.
        Returns logits (len(rows), V) at each row's last token."""
        dev = self.device
        first = self.n_live
        G = self.n_heads // self.n_kv
        offs = [self.shared_len if shared else 0 for _, _, _, shared in rows]
        self.reserve(first + len(rows), max(len(ids) - o for (ids, _, _, _), o in zip(rows, offs)))
        toks: list[int] = []
        pos: list[int] = []
        col: list[int] = []
        slot: list[int] = []
        spans = []
        for r, ((ids, n, kv, _), o) in enumerate(zip(rows, offs)):
            s = first + r
            assert n >= o, "a row reading the shared prefix must have it cached"
            if n > o and kv is not None:
                for li, (k, v) in enumerate(kv):
                    self.k[li][s, :, : n - o] = k[0, :, o:n]
                    self.v[li][s, :, : n - o] = v[0, :, o:n]
            m = len(ids) - n
            assert m >= 1, "a row must keep at least one token to prefill"
            spans.append((s, n - o, len(toks), m, o > 0))
            toks.extend(ids[n:])
            pos.extend(range(n, len(ids)))
            col.extend(range(n - o, len(ids) - o))
            slot.extend([s] * m)
            self.lens.append(len(ids) - o)
            self.off.append(o)
        masks = [torch.arange(c + m, device=dev)[None, :] <= (c + torch.arange(m, device=dev))[:, None]
                 for _, c, _, m, _ in spans]
        # a sharing row's G heads x m positions form one (G m) x L attention: its mask, once for all layers
        fmasks = [torch.zeros(mask.shape, dtype=self.dtype, device=dev).masked_fill_(~mask, float("-inf"))
                  .repeat(G, 1)[None, None] if shared else None for (_, _, _, _, shared), mask in zip(spans, masks)]

        def attend(li: int, q: torch.Tensor) -> torch.Tensor:
            out = []
            for (s, c, o, m, _), mask, fmask in zip(spans, masks, fmasks):
                k, v = self.k[li][s : s + 1, :, : c + m], self.v[li][s : s + 1, :, : c + m]
                if fmask is not None:  # reads the shared prefix
                    qq = q[o : o + m].view(m, self.n_kv, G, self.head_dim).permute(1, 2, 0, 3)
                    qq = qq.reshape(1, self.n_kv, G * m, self.head_dim)
                    a, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                        qq, k, v, attn_mask=fmask, scale=self.scale)
                    a = self._with_prefix(li, qq, a, lse, None).view(self.n_kv, G, m, self.head_dim)
                    out.append(a.permute(2, 0, 1, 3).reshape(m, -1))
                    continue
                qq = q[o : o + m].transpose(0, 1)[None]  # (1, Hq, m, D)
                a = F.scaled_dot_product_attention(qq, k, v, attn_mask=mask, scale=self.scale,
                                                   enable_gqa=self.n_kv != self.n_heads)
                out.append(a[0].transpose(0, 1).reshape(m, -1))
            return torch.cat(out) if len(out) > 1 else out[0]

        x = self._layers(torch.tensor(toks, device=dev), torch.tensor(pos, device=dev),
                         torch.tensor(slot, device=dev), torch.tensor(col, device=dev), attend)
        last = torch.tensor([o + m - 1 for _, _, o, m, _ in spans], device=dev)
        return self._logits(x[last])
