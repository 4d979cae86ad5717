#!/usr/bin/env bash
# bench-kernels.sh [BATCH] [SIZE] [ITERS]: cxr's CPU kernels vs plain candle,
# per op on ResNet18's layer shapes (models/examples/bench_kernels.rs), then
# the whole network (`cxr bench`, CXR_KERNELS=candle for candle's ops).
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH=${1:-16} SIZE=${2:-128} ITERS=${3:-5}
cargo build --release -q -p cxr-service -p cxr-models --example bench_kernels
echo "== per op"
target/release/examples/bench_kernels "$BATCH" "$SIZE" "$ITERS"
echo "== whole network (resnet18, batch $BATCH)"
for mode in train infer; do
  for k in auto candle; do
    printf '%-7s' "$k"
    CXR_KERNELS=$k target/release/cxr bench --arch resnet18 --mode "$mode" --batch "$BATCH" --size "$SIZE" --iters "$ITERS"
  done
done
