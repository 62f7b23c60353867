"""Would torch.compile close the one-row bf16 decode gap? (RESULTS.md, issue 10)

The engine's one-row bf16 step is ~9 ms of linears and ~6 ms of some 600 small ops; this
rewrites that step as one plain function over the engine's own weights and KV cache (the same
ops: fused q/k/v, RoPE, flash attention, the (out, in) copies with oneDNN off) and times it eager
and under `torch.compile(dynamic=True)` (inductor's C++ kernels fuse the norms, RoPE, SiLU and
residual adds), after a 300-token prefill. Prints ms a token each and the compile time.

Usage: .venv/bin/python benchmarks/compile_one_row.py   (alone on the cores; needs a C++ compiler)
"""

import time

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from agentopd.inference.embedded import ensure_embedded_default
from agentopd.inference.engine import DecodeEngine


def main() -> None:
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(ensure_embedded_default(), dtype=torch.float32).eval()
    eng = DecodeEngine(model, torch.bfloat16)
    if not eng.gemv:
        raise SystemExit("this CPU does not run one-row bf16 steps through the gemv copies")
    eng.prefill([(list(range(100, 400)), 0, None, False)])
    eng.reserve(1, 600)
    H, Hk, D = eng.n_heads, eng.n_kv, eng.head_dim
    half = D // 2

    def one(lin) -> torch.Tensor:
        assert lin.one is not None
        return lin.one

    layers = [(ln1, one(qkv[0]), one(o), ln2, one(gu[0]), one(d)) for (ln1, qkv, o, _, _, ln2, gu, d) in eng.wide]
    head = one(eng.lm_head)
    kc, vc, eps = eng.k, eng.v, eng.eps

    def rms(x, w):
        return F.rms_norm(x, w.shape, None, eps) * w

    def step(tok, cos, sin, col: int, colt):
        x = F.embedding(tok, eng.embed)
        for li, (ln1, wqkv, wo, ln2, wgu, wd) in enumerate(layers):
            qkv = F.linear(rms(x, ln1), wqkv)
            qk, v = qkv[:, : (H + Hk) * D].view(1, H + Hk, D), qkv[:, (H + Hk) * D :].view(1, Hk, D)
            qk = qk * cos + qk.roll(half, -1) * sin
            kc[li][0].index_copy_(1, colt, qk[0, H:, None])  # a tensor column: no recompile per length
            vc[li][0].index_copy_(1, colt, v[0][:, None])
            a = F.scaled_dot_product_attention(qk[:, :H].view(1, Hk, H // Hk, D), kc[li][:1, :, : col + 1],
                                               vc[li][:1, :, : col + 1], scale=eng.scale)
            x = x + F.linear(a.reshape(1, H * D), wo)
            gu = F.linear(rms(x, ln2), wgu)
            x = x + F.linear(F.silu(gu[:, : gu.shape[1] // 2]) * gu[:, gu.shape[1] // 2 :], wd)
        return F.linear(rms(x, eng.norm), head).float()

    def run(f, n: int, start: int) -> float:
        t = time.perf_counter()
        for p in range(start, start + n):
            cos, sin = model.model.rotary_emb(torch.zeros(1, dtype=torch.bfloat16), torch.tensor([[p]]))
            sin = torch.cat((-sin[0, :, :half], sin[0, :, half:]), -1)[:, None, :]
            f(torch.tensor([123]), cos[0, :, None, :], sin, p, torch.tensor([p]))
        return (time.perf_counter() - t) / n

    torch._C._set_mkldnn_enabled(False)  # as the engine's one-row steps
    run(step, 3, 300)
    eager = run(step, 40, 303)
    fast = torch.compile(step, dynamic=True)
    first = run(fast, 2, 343) * 2
    compiled = run(fast, 40, 345)
    print(f"one-row bf16 decode, ~320-token context: eager {eager * 1e3:.2f} ms/token, "
          f"compiled {compiled * 1e3:.2f} ms/token ({eager / compiled:.2f}x), compile {first:.0f} s")


if __name__ == "__main__":
    main()
