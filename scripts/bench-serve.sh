#!/usr/bin/env bash
# scripts/bench-serve.sh [DURATION_S]
#
# Load test of `cxr serve` with a ResNet18 at 224 (the speed does not depend on
# the weights: the model is a 1-epoch training on a small slice of
# chest-xray-mini, reused on later runs), once with dynamic batching (default
# --max-batch/--max-wait-ms) and once with batching off (--max-batch 1), using
# ../shared/bench/load_test.sh (oha; warm-up, then concurrency 1, 8, 32).
# Prints one JSON line per phase, tagged with the mode.
#
# Environment: DURATION_S (30), PORT (18181), CXR_DATA (../shared/data/chest-xray-mini),
#   BENCH_HOME (target/bench-serve), MAX_BATCH (4, the server default), MAX_WAIT_MS (5), MODES ("batched unbatched"),
#   and load_test.sh's own (WARMUP_S, CONCURRENCIES, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION_S=${1:-${DURATION_S:-30}}
PORT=${PORT:-18181}
DATA=${CXR_DATA:-../shared/data/chest-xray-mini}
BENCH_HOME=${BENCH_HOME:-target/bench-serve}
MAX_BATCH=${MAX_BATCH:-4}
MAX_WAIT_MS=${MAX_WAIT_MS:-5}
MODES=${MODES:-"batched unbatched"}
LOAD_TEST=../shared/bench/load_test.sh
log() { echo "[bench-serve] $*" >&2; }
[[ -d "$DATA/test" ]] || { log "no dataset at $DATA (set CXR_DATA)"; exit 1; }
[[ -x "$LOAD_TEST" || -f "$LOAD_TEST" ]] || { log "missing $LOAD_TEST"; exit 1; }

log "building cxr (release)"
cargo build --release -p cxr-service >&2
BIN=target/release/cxr
export CXR_TOKEN=${CXR_TOKEN:-bench-token}
mkdir -p "$BENCH_HOME/datasets"

# A small slice of the data to train the benchmark model quickly.
SLICE="$BENCH_HOME/datasets/bench-slice"
if [[ ! -d "$SLICE/train" ]]; then
  for split in train val test; do
    for cls in NORMAL PNEUMONIA; do
      mkdir -p "$SLICE/$split/$cls"
      n=$([[ $split == train ]] && echo 24 || echo 6)
      find "$DATA/$split/$cls" -type f | LC_ALL=C sort | head -n "$n" | xargs -I{} cp {} "$SLICE/$split/$cls/"
    done
  done
fi

PID=
start() {  # start MAX_BATCH
  "$BIN" serve --addr "127.0.0.1:$PORT" --home "$BENCH_HOME/home" --datasets-root "$BENCH_HOME/datasets" \
    --max-batch "$1" --max-wait-ms "$MAX_WAIT_MS" 2>>"$BENCH_HOME/serve.log" &
  PID=$!
  for _ in $(seq 1 150); do
    curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "cxr serve did not start (see $BENCH_HOME/serve.log)"; exit 1
}
stop() { [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true; PID=; }
trap stop EXIT INT TERM

start "$MAX_BATCH"
URL="http://127.0.0.1:$PORT"
if ! curl -fsS "$URL/readyz" >/dev/null 2>&1; then
  log "training the benchmark model: resnet18 at 224, 1 epoch on a slice of $DATA"
  JOB=$(curl -fsS -X POST "$URL/v1/jobs" -H "Authorization: Bearer $CXR_TOKEN" -H 'Content-Type: application/json' \
    -d '{"dataset": "bench-slice", "stages": [{"arch": "resnet18", "size": 224, "presize": 224, "epochs": 1, "bs": 8, "lr": 0.001}]}')
  ID=$(jq -r .id <<<"$JOB")
  while :; do
    ST=$(curl -fsS "$URL/v1/jobs/$ID" | jq -r .state)
    case "$ST" in
      succeeded) break ;;
      failed|cancelled|interrupted) log "training job $ID ended $ST: $(curl -fsS "$URL/v1/jobs/$ID" | jq -r .error)"; exit 1 ;;
    esac
    sleep 2
  done
  MID=$(curl -fsS "$URL/v1/jobs/$ID" | jq -r .model_id)
  curl -fsS -X POST "$URL/v1/models/$MID/activate" -H "Authorization: Bearer $CXR_TOKEN" >/dev/null
fi
log "active model: $(curl -fsS "$URL/v1/models" | jq -c '.models[] | select(.active) | {id, arch: .card.arch, size: .card.preprocess.size}')"

for mode in $MODES; do
  stop
  if [[ $mode == batched ]]; then start "$MAX_BATCH"; else start 1; fi
  log "$mode (max-batch $([[ $mode == batched ]] && echo "$MAX_BATCH" || echo 1)): load test, $DURATION_S s per concurrency"
  SERVER_PIDS="$PID" bash "$LOAD_TEST" "$URL/v1/predict" "$DATA/test" "$DURATION_S" \
    | while IFS= read -r line; do jq -c --arg mode "$mode" '{mode: $mode} + .' <<<"$line" 2>/dev/null || echo "$line"; done
  curl -fsS "$URL/metrics" | grep -E '^cxr_inference_batch_size_(sum|count)' >&2 || true
done
