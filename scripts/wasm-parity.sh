#!/usr/bin/env bash
# WASM vs native preprocessing parity: the browser must compute exactly the bytes
# the server computes. Builds cxr-wasm for Node and natively, generates test
# images (JPEG/PNG, gray/RGB/16-bit/alpha, odd/tiny/large sizes) into a temp dir,
# adds the real X-rays of $CXR_XRAY_DIR when present, and compares byte for byte
# for several model input sizes. Exits non-zero on any mismatch.
#
#   scripts/wasm-parity.sh [--no-build] [--bench]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD=1 BENCH=0
for a in "$@"; do
  case "$a" in
    --no-build) BUILD=0 ;;
    --bench) BENCH=1 ;;
    *) echo "unknown argument $a" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR="${CXR_WASM_TARGET_DIR:-$ROOT/target/wasm}"
XRAYS="${CXR_XRAY_DIR:-/work/shared/data/chest-xray-mini/test}"
NODE_PKG="$ROOT/target/wasm-node"

command -v node >/dev/null || { echo "node is required for the parity check" >&2; exit 1; }
if [[ "$BUILD" == 1 ]]; then
  scripts/build-wasm.sh
fi
[[ -f "$NODE_PKG/cxr_wasm.js" ]] || { echo "missing $NODE_PKG/cxr_wasm.js: run scripts/build-wasm.sh" >&2; exit 1; }
cargo build --release -p cxr-wasm --example parity_images --example native_preprocess
BIN="$CARGO_TARGET_DIR/release/examples"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$BIN/parity_images" "$TMP/img/synthetic"
# Files that must fail the same way on both sides.
printf 'this is not an image' >"$TMP/img/synthetic/not_an_image.jpg"
head -c 2000 "$TMP/img/synthetic/rgb_333x517.jpg" >"$TMP/img/synthetic/truncated.jpg"
head -c 300 "$TMP/img/synthetic/gray_333x517.png" >"$TMP/img/synthetic/truncated.png"
: >"$TMP/img/synthetic/empty.png"

FILES=("$TMP"/img/synthetic/*)
if compgen -G "$XRAYS/*/*" >/dev/null; then
  mapfile -t REAL < <(find "$XRAYS" -mindepth 2 -maxdepth 2 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | sort)
  echo "real X-rays: ${#REAL[@]} files from $XRAYS"
  FILES+=("${REAL[@]}")
else
  echo "real X-rays: skipped ($XRAYS not found; set CXR_XRAY_DIR)"
fi

spec() { printf '{"version":1,"size":%d,"resize":"squish","filter":"bilinear","mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225]}' "$1"; }
STATUS=0 TOTAL_P=0 TOTAL_F=0
for size in 224 64 333; do
  out="$TMP/native_$size"
  "$BIN/native_preprocess" --spec "$(spec "$size")" --out "$out" "${FILES[@]}" >/dev/null
  set +e
  line="$(node tests/wasm-parity/parity.mjs --wasm "$NODE_PKG" --spec "$(spec "$size")" --native "$out" --label "size $size" "${FILES[@]}")"
  rc=$?
  set -e
  echo "$line"
  summary="$(tail -n1 <<<"$line")"
  TOTAL_P=$((TOTAL_P + $(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$summary")))
  TOTAL_F=$((TOTAL_F + $(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$summary")))
  [[ $rc == 0 ]] || STATUS=1
done
echo "parity (${#FILES[@]} files x 3 input sizes): $TOTAL_P passed, $TOTAL_F failed"

if [[ "$BENCH" == 1 ]]; then
  big="$TMP/img/synthetic/gray_2000x2000.jpg"
  echo "timing: median ms to preprocess a 2000x2000 JPEG to 224x224 (decode + gray + resize)"
  echo "  native (release): $("$BIN/native_preprocess" --spec "$(spec 224)" --bench 15 "$big" | cut -f2)"
  echo "  wasm in node $(node --version): $(node tests/wasm-parity/parity.mjs --wasm "$NODE_PKG" --spec "$(spec 224)" --bench 15 "$big" | cut -f2)"
  big="$TMP/img/synthetic/rgb_2000x2000.jpg"
  echo "  (RGB) native: $("$BIN/native_preprocess" --spec "$(spec 224)" --bench 15 "$big" | cut -f2)  wasm: $(node tests/wasm-parity/parity.mjs --wasm "$NODE_PKG" --spec "$(spec 224)" --bench 15 "$big" | cut -f2)"
fi
exit $STATUS
