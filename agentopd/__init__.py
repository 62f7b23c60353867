"""agentopd: on-policy distillation for multi-turn tool-using LLM agents.

Importing the package registers its environments with gymnasium (``agentopd/<Name>-v0``).
"""

import os

# GNU OpenMP's default spin-then-yield barrier collapses when anything else wants the cores (an
# env subprocess, a teacher, another run): a batch-32 linear layer took 16 ms instead of 1.1 ms on
# 2 cores under load (benchmarks/RESULTS.md). Passive waiting must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# envs/ installs as agentopd.envs (pyproject's package-dir), which type checkers reading the source do not see.
from agentopd import envs as _envs  # type: ignore[attr-defined]  # noqa: E402,F401  (registers the env families)

__version__ = "0.1.0"
