"""All of SmolLM2-135M's linear shapes applied to one bf16 row, by kernel (RESULTS.md, issue 10).

30 layers x (fused q/k/v, o, fused gate/up, down) with random weights, one row, best of five:
oneDNN's `linear`, `x @ w.T`, `torch.mv`, `linear` with oneDNN switched off (ATen's own kernel),
a product over a transposed contiguous copy, and oneDNN-packed weights (what the engine uses from
2 rows on). Prints ms and GB/s of weights streamed. Then the same at 1, 2, 8 and 32 rows in bf16
and fp32, and how far ATen's output is from oneDNN's.

Usage: .venv/bin/python benchmarks/one_row_linears.py   (alone on the cores)
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from token_path import timed  # noqa: E402

H, FF, L = 576, 1536, 30
SHAPES = [(H + 2 * 192, H), (H, H), (2 * FF, H), (H, FF)]


def best(f, reps=5) -> float:
    return timed(f, reps)


def main() -> None:
    torch.set_num_threads(2)
    w32 = [torch.randn(o, i) / i ** 0.5 for _ in range(L) for (o, i) in SHAPES]
    ws = [w.to(torch.bfloat16) for w in w32]
    nbytes = sum(w.numel() * 2 for w in ws)
    x = {i: torch.randn(1, i, dtype=torch.bfloat16) for i in (H, FF)}

    def over(f):
        return lambda: [f(x[w.shape[1]], w) for w in ws]

    def aten(a, w):
        with torch.backends.mkldnn.flags(enabled=False):
            return F.linear(a, w)

    wt = [w.t().contiguous() for w in ws]
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, 1) for w in ws]
    for name, f in [("oneDNN linear", over(F.linear)), ("x @ w.T", over(lambda a, w: a @ w.t())),
                    ("torch.mv", over(lambda a, w: torch.mv(w, a[0]))), ("ATen (oneDNN off)", over(aten)),
                    ("x @ transposed copy", lambda: [torch.mm(x[w.shape[0]], w) for w in wt]),
                    ("oneDNN packed", lambda: [torch.ops.mkldnn._linear_pointwise(x[w.shape[1]], p, None, "none", [], "")
                                               for w, p in zip(ws, packed)])]:
        s = best(f)
        print(f"bf16, 1 row, {name:22s} {s * 1e3:6.1f} ms  {nbytes / s / 1e9:5.1f} GB/s", flush=True)
    for dt in (torch.bfloat16, torch.float32):
        wd = [w.to(dt) for w in w32]
        nb = sum(w.numel() * w.element_size() for w in wd)
        for B in (1, 2, 8, 32):
            xb = {i: torch.randn(B, i, dtype=dt) for i in (H, FF)}
            def run(xb=xb, wd=wd):
                return [F.linear(xb[w.shape[1]], w) for w in wd]

            a = best(run, 4)
            with torch.backends.mkldnn.flags(enabled=False):
                b = best(run, 4)
            print(f"{str(dt):15s} {B:2d} rows: oneDNN {a * 1e3:6.1f} ms ({nb / a / 1e9:4.1f} GB/s), "
                  f"oneDNN off {b * 1e3:6.1f} ms ({nb / b / 1e9:4.1f} GB/s)", flush=True)
    diff = 0.0
    for w in ws[:8]:
        a = x[w.shape[1]]
        diff = max(diff, (F.linear(a, w).float() - aten(a, w).float()).abs().max().item())
    print(f"largest |oneDNN - ATen| over 8 layers: {diff:.2e}")


if __name__ == "__main__":
    main()
