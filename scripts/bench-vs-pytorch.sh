#!/usr/bin/env bash
# bench-vs-pytorch.sh [ROUNDS]: cxr's CPU kernels vs plain candle vs PyTorch vs
# onnxruntime on the same ResNet18 shapes, runs interleaved round by round,
# medians over rounds, ratios to cxr. Not a CI dependency: PyTorch and
# onnxruntime come from a venv (scripts/setup-torch-venv.sh, from PyPI).
#
#   ROUNDS (default 3) interleaved rounds; ITERS (default 10) steps per run
#   (half for training at 224, five times for batch 1).
#   CXR=path/to/cxr (default: target/release/cxr, built when missing).
#   SKIP_CANDLE=1 leaves out the plain-candle column (its training steps are slow).
#   RAW=path keeps every run's JSON line there (one line per engine, shape and
#   round), to see how the rounds spread.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
ITERS=${ITERS:-10}
VENV=${TORCH_VENV:-$HOME/.cache/cxr/torch-venv}
[[ -x $VENV/bin/python ]] || scripts/setup-torch-venv.sh
CXR=${CXR:-target/release/cxr}
[[ -x $CXR ]] || cargo build --release -p cxr-service
OUT=$(mktemp)
# (mode batch size) rows of the issue's table.
CASES=("infer 1 224" "infer 16 224" "train 16 128" "train 16 224")
for ((r = 1; r <= ROUNDS; r++)); do
  for c in "${CASES[@]}"; do
    read -r mode batch size <<<"$c"
    it=$ITERS; [[ $mode == train && $size -ge 224 ]] && it=$(( (ITERS + 1) / 2 ))
    # A batch-1 step is ~20 ms: five times the steps, so a run's median spans
    # more than a moment of this VM's noise.
    [[ $batch == 1 ]] && it=$(( ITERS * 5 ))
    echo "round $r: $mode batch $batch size $size" >&2
    "$CXR" bench --arch resnet18 --mode "$mode" --batch "$batch" --size "$size" --iters "$it" \
      | sed 's/^{/{"engine":"cxr",/' >>"$OUT"
    [[ -n ${SKIP_CANDLE:-} ]] || CXR_KERNELS=candle "$CXR" bench --arch resnet18 --mode "$mode" --batch "$batch" --size "$size" --iters "$it" \
      | sed 's/^{/{"engine":"candle",/' >>"$OUT"
    "$VENV/bin/python" scripts/bench_torch.py --engine torch --mode "$mode" --batch "$batch" --size "$size" --iters "$it" >>"$OUT"
    if [[ $mode == infer ]]; then
      "$VENV/bin/python" scripts/bench_torch.py --engine ort --mode "$mode" --batch "$batch" --size "$size" --iters "$it" 2>/dev/null >>"$OUT"
    fi
  done
done
python3 scripts/bench_table.py "$OUT"
if [[ -n ${RAW:-} ]]; then cp "$OUT" "$RAW"; fi
rm -f "$OUT"
