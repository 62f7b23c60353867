"""Model spec -> policy: the one place a new backend registers."""

from __future__ import annotations

from agentopd.inference.models import parse_spec
from agentopd.inference.sampling import TokenPolicy


def make_token_policy(spec: str, device: str = "cpu", max_batch: int = 32, dtype: str = "auto") -> TokenPolicy:
    """A token policy for `spec`: ``hf:<name-or-path>``, ``vllm:<name-or-path>``, or
    ``openai:<model>@<base_url>`` (a served model; its tokenizer loads here by the model's name,
    so the name must be a local path or a hub id this machine can read, or the embedded alias)."""
    parsed = parse_spec(spec)
    if parsed.backend == "hf":
        from agentopd.inference.hf import HFPolicy

        return HFPolicy.from_spec(parsed.name, device=device, max_batch=max_batch, dtype=dtype)
    if parsed.backend == "openai":
        import os

        from agentopd.inference.models import load_tokenizer
        from agentopd.inference.openai_client import ServedClient
        from agentopd.inference.served import ServedPolicy

        try:
            tok = load_tokenizer(parsed.name)
        except (OSError, ValueError) as e:
            raise ValueError(f"the served model's tokenizer must load here to render its turns; {parsed.name!r} "
                             f"does not ({str(e).splitlines()[0]}): name the model by a local path or hub id") from None
        client = ServedClient(parsed.base_url or "", parsed.name, api_key=os.environ.get("OPENAI_API_KEY"),
                              concurrency=max_batch)
        return ServedPolicy(client, tok)
    if parsed.backend == "vllm":
        from agentopd.inference.vllm import VLLMPolicy

        return VLLMPolicy.from_spec(parsed.name, device=device, dtype=dtype, max_batch=max_batch)
    raise ValueError(f"backend {parsed.backend!r} is not available yet; use hf:<model> or oracle")
