"""`python -m agentopd ...` (what `torchrun --nproc-per-node N -m agentopd train ...` runs)."""

from agentopd.cli import app

if __name__ == "__main__":
    app()
