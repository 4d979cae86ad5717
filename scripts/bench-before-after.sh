#!/usr/bin/env bash
# bench-before-after.sh BEFORE_CXR AFTER_CXR [ROUNDS]: two cxr binaries (e.g.
# main before and after a change) through scripts/bench-vs-pytorch.sh, one
# round each in turn (before, after, before, ...), so both see the same moments
# of this VM; prints one table per binary (medians over its rounds; PyTorch
# and onnxruntime run in every round, so each table has its own reference).
#   ITERS as bench-vs-pytorch.sh; RAW=dir keeps every run's JSON lines.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=$1 AFTER=$2 ROUNDS=${3:-3}
RAWDIR=${RAW:-$(mktemp -d)}
mkdir -p "$RAWDIR"
for ((r = 1; r <= ROUNDS; r++)); do
  for side in before after; do
    bin=$BEFORE; [[ $side == after ]] && bin=$AFTER
    echo "== round $r: $side ($bin)" >&2
    CXR=$bin RAW="$RAWDIR/$side-$r.jsonl" scripts/bench-vs-pytorch.sh 1 >/dev/null
  done
done
for side in before after; do
  echo; echo "$side"
  python3 scripts/bench_table.py "$RAWDIR/$side"-*.jsonl
done
echo "raw runs: $RAWDIR" >&2
