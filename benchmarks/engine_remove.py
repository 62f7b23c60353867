"""What a row leaving a continuous batch costs the decode engine (RESULTS.md, issue 10).

SmolLM2-135M's cache shape (30 layers, 3 KV heads of 64, fp32), 64 live rows of 500-4,000
columns, one row leaving from slot 0 (as the first of a batch finishes its turn): the engine's
`remove` (the rows above the new count fill the freed slots, each over its own columns) against
the order-keeping shift it replaced (every row past the freed slot moves down, over the longest
moved row's columns). Best of five; ms per removal.

Usage: .venv/bin/python benchmarks/engine_remove.py   (alone on the cores)
"""

import random
import time

import torch
from transformers import AutoConfig

from agentopd.inference.embedded import ensure_embedded_default
from agentopd.inference.engine import DecodeEngine


def shift(eng: DecodeEngine, rows: list[int]) -> None:
    """The order-keeping removal `remove` replaced (for comparison only)."""
    keep = [i for i in range(eng.n_live) if i not in set(rows)]
    moves = [(new, old) for new, old in enumerate(keep) if new != old]
    if moves:
        used = max(eng.lens[old] for _, old in moves)
        dst, src = torch.tensor([d for d, _ in moves]), torch.tensor([s for _, s in moves])
        for k, v in zip(eng.k, eng.v):
            k[dst, :, :used] = k[src, :, :used]
            v[dst, :, :used] = v[src, :, :used]
    eng.lens = [eng.lens[i] for i in keep]
    eng.off = [eng.off[i] for i in keep]


def main() -> None:
    torch.set_num_threads(2)
    cfg = AutoConfig.from_pretrained(ensure_embedded_default())
    eng = DecodeEngine.__new__(DecodeEngine)  # the cache alone: no weights needed to move rows
    eng.n_layers, eng.n_kv, eng.head_dim = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    eng.dtype, eng.device, eng.k, eng.v = torch.float32, torch.device("cpu"), [], []
    rng = random.Random(0)
    for name, f in (("remove (fill from the top)", DecodeEngine.remove), ("order-keeping shift", shift)):
        best = float("inf")
        for _ in range(5):
            eng.lens, eng.off, eng.k, eng.v = [], [], [], []
            eng.reserve(64, 4001)
            eng.lens, eng.off = [rng.randint(500, 4000) for _ in range(64)], [0] * 64
            t = time.perf_counter()
            f(eng, [0])
            best = min(best, time.perf_counter() - t)
        print(f"{name:28s} {best * 1e3:8.1f} ms per row leaving (64 rows, 500-4,000 columns)", flush=True)


if __name__ == "__main__":
    main()
