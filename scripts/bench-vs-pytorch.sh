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
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
cases = sorted({(r["mode"], r["batch"], r["size"]) for r in rows}, key=lambda c: (c[0], c[2], c[1]))
engines = ["cxr", "candle", "torch", "ort"]
print(f"{'work':<22}" + "".join(f"{e + ' img/s':>14}{e + ' ms':>11}" for e in engines) + f"{'cxr/torch':>11}{'cxr/ort':>9}")
for m, b, s in cases:
    line, ips = f"{m + ' b' + str(b) + ' ' + str(s):<22}", {}
    for e in engines:
        rs = [r for r in rows if r["engine"] == e and (r["mode"], r["batch"], r["size"]) == (m, b, s)]
        if rs:
            ips[e] = statistics.median(r["images_per_s"] for r in rs)
            line += f"{ips[e]:>14.1f}{statistics.median(r['median_step_ms'] for r in rs):>11.1f}"
        else:
            line += f"{'-':>14}{'-':>11}"
    for e in ["torch", "ort"]:
        line += f"{ips['cxr'] / ips[e]:>{11 if e == 'torch' else 9}.2f}" if e in ips and "cxr" in ips else f"{'-':>{11 if e == 'torch' else 9}}"
    print(line)
PY
if [[ -n ${RAW:-} ]]; then cp "$OUT" "$RAW"; fi
rm -f "$OUT"
