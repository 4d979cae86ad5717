#!/usr/bin/env bash
# scripts/demo.sh [DATA_DIR]
#
# Builds cxr (release) and the web client, starts `cxr serve`, trains
# recipes/cpu-quick.toml on DATA_DIR as a fine-tune job (skipped when the home
# already has an active model; FORCE_TRAIN=1 trains anyway), activates the
# model and keeps serving. Open the printed URL to classify X-rays.
#
# DATA_DIR (Kaggle layout: train|val|test/NORMAL|PNEUMONIA) defaults to $CXR_DATA,
# else ../shared/data/chest-xray-mini when present.
# Environment: CXR_ADDR (127.0.0.1:8080), CXR_HOME (./cxr-home), CXR_TOKEN (generated).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${1:-${CXR_DATA:-}}
if [[ -z "$DATA" && -d ../shared/data/chest-xray-mini ]]; then
  DATA=../shared/data/chest-xray-mini
fi
if [[ -z "$DATA" || ! -d "$DATA/train" ]]; then
  cat >&2 <<'MSG'
No dataset. Pass DATA_DIR (or set CXR_DATA) to a folder in the Kaggle layout:
  DATA_DIR/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg
Get the data (Chest X-Ray Images (Pneumonia), Kermany et al.) from Kaggle:
  pip install kaggle   # API token in ~/.kaggle/kaggle.json
  kaggle datasets download -d paultimothymooney/chest-xray-pneumonia
  unzip chest-xray-pneumonia.zip      # -> chest_xray/{train,val,test}
  scripts/demo.sh chest_xray
MSG
  exit 1
fi
DATA=$(cd "$DATA" && pwd -P)
ADDR=${CXR_ADDR:-127.0.0.1:8080}
HOME_DIR=${CXR_HOME:-./cxr-home}
mkdir -p "$HOME_DIR"
if [[ -z "${CXR_TOKEN:-}" ]]; then
  CXR_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
fi
export CXR_TOKEN
URL="http://$ADDR"
log() { echo "[demo] $*" >&2; }
jget() { python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$1"; }

if [[ ! -f service/web/pkg/cxr.js ]]; then
  log "building the web client (scripts/build-wasm.sh)"
  scripts/build-wasm.sh || log "warning: the web client did not build; the API still works"
fi
log "building cxr (release)"
cargo build --release -p cxr-service >&2

target/release/cxr serve --addr "$ADDR" --home "$HOME_DIR" --datasets-root "$(dirname "$DATA")" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -fsS "$URL/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "$URL/healthz" >/dev/null || { log "cxr serve did not start"; exit 1; }

ACTIVE=$(curl -fsS "$URL/v1/models" | jget active)
if [[ -n "$ACTIVE" && -z "${FORCE_TRAIN:-}" ]]; then
  log "model $ACTIVE is already active in $HOME_DIR (FORCE_TRAIN=1 trains a new one)"
else
  log "training recipes/cpu-quick.toml on $DATA (about 15 minutes on 2 CPU cores)"
  JOB=$(curl -fsS -X POST "$URL/v1/jobs" -H "Authorization: Bearer $CXR_TOKEN" -H 'Content-Type: application/json' \
    -d "{\"dataset\": \"$(basename "$DATA")\", \"recipe\": \"cpu-quick\"}")
  ID=$(jget id <<<"$JOB")
  log "job $ID: following $URL/v1/jobs/$ID/events"
  # Epoch lines and the final state from the event stream.
  curl -sN "$URL/v1/jobs/$ID/events" | while IFS= read -r line; do
    case "$line" in
      "event: "*) ev=${line#event: } ;;
      "data: "*)
        data=${line#data: }
        case "$ev" in
          epoch) log "stage $(jget stage <<<"$data") epoch $(jget epoch <<<"$data"): accuracy $(jget accuracy <<<"$data") f1 $(jget f1 <<<"$data")" ;;
          stage) log "stage $(jget stage <<<"$data")/$(jget stages <<<"$data"): $(jget name <<<"$data")" ;;
          state)
            st=$(jget state <<<"$data")
            log "job $ID: $st"
            case "$st" in succeeded|failed|cancelled|interrupted) break ;; esac ;;
        esac ;;
    esac
  done
  J=$(curl -fsS "$URL/v1/jobs/$ID")
  [[ "$(jget state <<<"$J")" == succeeded ]] || { log "the job did not succeed: $(jget error <<<"$J")"; exit 1; }
  MID=$(jget model_id <<<"$J")
  curl -fsS -X POST "$URL/v1/models/$MID/activate" -H "Authorization: Bearer $CXR_TOKEN" >/dev/null
  log "model $MID is active (report: $URL/v1/jobs/$ID/report)"
fi
echo
echo "cxr is serving at $URL  (open it in a browser; API: $URL/openapi.json)"
echo "token for jobs and activation: $CXR_TOKEN"
echo "Ctrl-C stops the server."
wait $PID
