"""Model spec -> policy: the one place a new backend registers."""

from __future__ import annotations

from agentopd.inference.models import parse_spec
from agentopd.inference.sampling import TokenPolicy


def make_token_policy(spec: str, device: str = "cpu", max_batch: int = 32, dtype: str = "auto") -> TokenPolicy:
    """A token policy for `spec` (``hf:<name-or-path>``; ``vllm:`` and ``openai:`` come next)."""
    parsed = parse_spec(spec)
    if parsed.backend == "hf":
        from agentopd.inference.hf import HFPolicy

        return HFPolicy.from_spec(parsed.name, device=device, max_batch=max_batch, dtype=dtype)
    raise ValueError(f"backend {parsed.backend!r} is not available yet; use hf:<model> or oracle")
