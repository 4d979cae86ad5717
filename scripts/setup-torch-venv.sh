#!/usr/bin/env bash
# Creates a Python venv with PyTorch & friends, used ONLY by developer tools:
#   scripts/make-fixtures.py  (regenerates models/tests/fixtures/)
#   scripts/check-onnx.sh     (ONNX round-trip cross-check against onnxruntime)
# Never a CI dependency: the fixtures are committed, and cargo tests need no Python.
# Downloads ~5 GB from PyPI (torch wheels bundle CUDA libraries).
#
# Usage: scripts/setup-torch-venv.sh        (venv at ${TORCH_VENV:-$HOME/.cache/cxr/torch-venv})
# Then:  "$TORCH_VENV/bin/python" scripts/make-fixtures.py
set -euo pipefail

VENV="${TORCH_VENV:-$HOME/.cache/cxr/torch-venv}"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating venv at $VENV" >&2
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi

"$VENV/bin/python" -m pip install --upgrade pip >&2
"$VENV/bin/python" -m pip install torch torchvision onnx onnxruntime safetensors numpy >&2

"$VENV/bin/python" - <<'PY'
import torch, torchvision, onnx, onnxruntime, safetensors, numpy
print("torch", torch.__version__, "| torchvision", torchvision.__version__,
      "| onnx", onnx.__version__, "| onnxruntime", onnxruntime.__version__,
      "| safetensors", safetensors.__version__, "| numpy", numpy.__version__)
PY
echo "$VENV"
