"""How OpenMP's wait policy moves the decode engine, idle and beside a busy process (RESULTS.md, issue 10).

agentopd sets OMP_WAIT_POLICY=PASSIVE unless the environment already sets it (agentopd/__init__.py).
Run this once per setting, each in a fresh process, e.g.:

  for cfg in "OMP_WAIT_POLICY=PASSIVE" "OMP_WAIT_POLICY=ACTIVE" "OMP_WAIT_POLICY= GOMP_SPINCOUNT=3000"; do
    env $cfg .venv/bin/python benchmarks/omp_wait.py; done
  python3 -c "while 1: pass" & env OMP_WAIT_POLICY=ACTIVE .venv/bin/python benchmarks/omp_wait.py hog; kill %1

Prints ms per decode step of the engine at 1 and 32 rows (bf16 and fp32 weights, a 286-token
context) and ms of one 32-row linear.
"""

import os
import sys
import time

import agentopd  # noqa: F401  (sets OMP_WAIT_POLICY unless set)

WAIT = os.environ.get("OMP_WAIT_POLICY")  # what OpenMP will read: agentopd came before torch

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from agentopd.inference.engine import DecodeEngine  # noqa: E402
from agentopd.inference.models import load_causal_lm, load_tokenizer  # noqa: E402


def main() -> None:
    tok = load_tokenizer("smollm2-135m")
    fp32 = load_causal_lm("smollm2-135m").eval()
    bf16 = load_causal_lm("smollm2-135m").eval().to(torch.bfloat16)
    ids = tok.encode("You are a helpful assistant. " * 40)

    def decode_ms(model, dtype, B, n=24):
        eng = DecodeEngine(model, dtype)
        eng.prefill([(ids, 0, None, False)] * B)
        for _ in range(4):
            eng.decode([100] * B)
        t = time.perf_counter()
        for _ in range(n):
            eng.decode([100] * B)
        ms = (time.perf_counter() - t) / n * 1e3
        eng.release()
        return ms

    w, x = torch.randn(2 * 1536, 576), torch.randn(32, 576)
    for _ in range(3):
        F.linear(x, w)
    t = time.perf_counter()
    for _ in range(200):
        F.linear(x, w)
    lin = (time.perf_counter() - t) / 200 * 1e3
    tag = f"OMP_WAIT_POLICY={WAIT!r} GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')!r} {' '.join(sys.argv[1:])}"
    print(f"{tag}: ms a decode step: bf16 1 row {decode_ms(bf16, torch.bfloat16, 1):.1f}, fp32 1 row "
          f"{decode_ms(fp32, torch.float32, 1):.1f}, bf16 32 rows {decode_ms(bf16, torch.bfloat16, 32):.1f}, "
          f"fp32 32 rows {decode_ms(fp32, torch.float32, 32):.1f}; a 32-row linear {lin:.3f} ms", flush=True)


if __name__ == "__main__":
    main()
