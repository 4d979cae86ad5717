#!/usr/bin/env bash
# ONNX cross-check (developer tool; not part of CI): exports cxr's model with
# the `export_onnx` example, then runs it in onnxruntime and compares with the
# candle outputs saved next to it. Prints one JSON line; exits 1 on mismatch.
#
# Usage: scripts/check-onnx.sh   (KEEP=1 keeps the temp dir; TORCH_VENV picks the venv)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TORCH_VENV:-$HOME/.cache/cxr/torch-venv}"
export TORCH_VENV="$VENV"

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import onnx, onnxruntime, safetensors, numpy' 2>/dev/null; then
    "$ROOT/scripts/setup-torch-venv.sh"
fi

OUT_DIR="$(mktemp -d "${TMPDIR:-/tmp}/cxr-onnx.XXXXXX")"
if [[ -z "${KEEP:-}" ]]; then
    trap 'rm -rf "$OUT_DIR"' EXIT
else
    echo "keeping $OUT_DIR" >&2
fi

status=0
for arch in resnet18 xresnet18; do
    # 97 is odd on purpose: it exercises ceil-mode pooling in the export.
    (cd "$ROOT" && cargo run --release -q -p cxr-models --example export_onnx -- "$OUT_DIR/$arch" "$arch" 97)
    "$VENV/bin/python" "$ROOT/scripts/check_onnx.py" "$OUT_DIR/$arch" || status=1
done
exit $status
