"""The compute dtype: bf16 where the hardware has it and it measures faster, fp32 otherwise.

CPUs differ: with native bf16 units (avx512_bf16, amx_bf16) a bf16 matmul can be twice as fast
as fp32; without them bf16 is emulated and several times slower. So ``auto`` never assumes: on a
CPU with native bf16 it times the two dtypes on the shapes a small model's decode and prefill
use, once per process, and picks the faster. ``AGENTOPD_AUTO_DTYPE=float32`` (or ``bfloat16``)
pins what ``auto`` means on CPUs, e.g. to reproduce fp32 results on a machine with bf16 units
(the test suite sets it: its exactness checks compare against fp32 references).
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import torch

NAMES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def cpu_bf16_units() -> list[str]:
    """The CPU's native bf16 instruction sets (empty: none; bf16 would be emulated)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    return sorted({f for f in flags if f in ("avx512_bf16", "amx_bf16")})


@functools.cache
def cpu_matmul_seconds() -> dict[str, float]:
    """Seconds for the same small-model matmuls (a 32-row decode and a 512-row prefill, 1024
    wide) in fp32 and in bf16 on this CPU."""
    out = {}
    g = torch.Generator().manual_seed(0)
    w32 = torch.randn(1024, 1024, generator=g)
    xs = [torch.randn(m, 1024, generator=g) for m in (32, 512)]
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        w = w32.to(dt)
        x = [a.to(dt) for a in xs]
        for a in x:  # warm up kernels
            torch.nn.functional.linear(a, w)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(4):
                for a in x:
                    torch.nn.functional.linear(a, w)
            best = min(best, time.perf_counter() - t)
        out[name] = best
    return out


def resolve_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """``auto``, ``float32`` or ``bfloat16`` -> a torch dtype for `device` (see the module doc)."""
    if name in NAMES:
        return NAMES[name]
    if name != "auto":
        raise ValueError(f"dtype {name!r}: use auto, float32 or bfloat16")
    dev = torch.device(device)
    pinned = os.environ.get("AGENTOPD_AUTO_DTYPE", "")
    if pinned and dev.type == "cpu":
        if pinned not in NAMES:
            raise ValueError(f"AGENTOPD_AUTO_DTYPE={pinned!r}: use float32 or bfloat16 (or unset it)")
        return NAMES[pinned]
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if dev.type != "cpu" or not cpu_bf16_units():
        return torch.float32
    t = cpu_matmul_seconds()
    return torch.bfloat16 if t["bfloat16"] < 0.9 * t["float32"] else torch.float32


def dtype_name(dt: torch.dtype | None) -> str:
    return {torch.float32: "float32", torch.bfloat16: "bfloat16", None: "float32"}.get(dt, str(dt))
