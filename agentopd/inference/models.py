"""Model specs and loading: ``hf:<name-or-path>``, ``vllm:...``, ``openai:<model>@<url>``, ``oracle``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentopd.inference.embedded import HUB_ID, ensure_embedded_default

DEFAULT_MODEL = "hf:smollm2-135m"
"""Spec of the embedded default student."""

_ALIASES = {"smollm2-135m", "smollm2", "default", HUB_ID}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec string."""

    backend: str
    """One of ``hf``, ``vllm``, ``openai``, ``oracle``."""
    name: str
    """Model name or path (for ``openai``, the model name)."""
    base_url: str | None = None
    """Server address, for ``openai:<model>@<base_url>`` only."""


def parse_spec(spec: str) -> ModelSpec:
    """Parse ``hf:<name>``, ``vllm:<name>``, ``openai:<model>@<url>`` or ``oracle``."""
    if spec == "oracle":
        return ModelSpec("oracle", "oracle")
    backend, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ValueError(
            f"model spec {spec!r} is not of the form hf:<name-or-path>, vllm:<name-or-path>, "
            "openai:<model>@<base_url> or 'oracle'"
        )
    if backend == "openai":
        model, at, url = rest.partition("@")
        if not at or not url:
            raise ValueError(f"openai spec {spec!r} needs a base url: openai:<model>@<base_url>")
        return ModelSpec("openai", model, url)
    if backend not in ("hf", "vllm"):
        raise ValueError(f"unknown model backend {backend!r} in {spec!r} (use hf, vllm, openai)")
    return ModelSpec(backend, rest)


def check_model_name(name: str) -> None:
    """Refuse, before loading, a local model path that does not hold a model (a hub id is only
    checked when it loads)."""
    if name in _ALIASES:
        return
    p = Path(name).expanduser()
    looks_local = name.startswith(("/", "./", "../", "~")) or p.exists()
    if looks_local and not (p / "config.json").exists():
        why = "does not exist" if not p.exists() else "holds no config.json"
        raise ValueError(f"model path {name!r} {why}: pass a directory saved by save_pretrained "
                         "(e.g. a run's step_<N>/), a hub id, or smollm2-135m")


def resolve_path(name: str) -> str:
    """Map a model name to something `from_pretrained` loads offline.

    Aliases of the embedded default resolve to the safetensors cache (built on first use).
    Anything else (a local directory or a hub id) is returned unchanged.
    """
    if name in _ALIASES:
        if Path(name).exists():
            return name
        return str(ensure_embedded_default())
    return name


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_path(name))
    if tok.chat_template is None:
        raise ValueError(f"tokenizer of {name!r} has no chat template; agentopd needs one")
    return tok


def load_causal_lm(name: str, device: str = "cpu", dtype: str = "auto"):
    """Load an `AutoModelForCausalLM` for inference or training."""
    import torch
    from transformers import AutoModelForCausalLM

    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(resolve_path(name), dtype=torch_dtype)
    return model.to(device)  # type: ignore[arg-type]  # transformers types `to` oddly
