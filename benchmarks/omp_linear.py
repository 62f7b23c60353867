"""Time one SmolLM2-sized linear layer at batch 1 and 32 (100 calls).

Compare, while another process keeps both cores busy:
  OMP_WAIT_POLICY=ACTIVE python benchmarks/omp_linear.py
  OMP_WAIT_POLICY=PASSIVE python benchmarks/omp_linear.py
(this script does not import agentopd, which would set PASSIVE itself)."""

import time

import torch

for batch in (1, 32):
    x, w = torch.randn(batch, 576), torch.randn(1536, 576)
    for _ in range(3):
        torch.nn.functional.linear(x, w)
    t = time.perf_counter()
    for _ in range(100):
        torch.nn.functional.linear(x, w)
    print(f"batch {batch}: {(time.perf_counter() - t) * 10:.3f} ms per call")
