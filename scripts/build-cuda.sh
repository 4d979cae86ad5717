#!/usr/bin/env bash
# Builds the CUDA artifact of cxr on a machine without a GPU, and bundles what the GPU machine
# needs into .gpu/ (git-ignored; the device tool's `carry` path, kept under 64 MiB):
#
#   scripts/build-cuda.sh [--cudnn] [--no-bundle] [--max-images N]
#
# - the toolchain comes from scripts/cuda-toolchain.sh (PyPI wheels, cached under ~/.cache/cxr);
# - `cargo build --release -p cxr-service --features cuda` and the cxr-models test binaries
#   (`cargo test --no-run --release -p cxr-models --features cuda`, for the parity checks on CUDA),
#   both into target/cuda (CARGO_TARGET_DIR) so the CPU build is left alone;
# - .gpu/: bin.tar.xz (cxr and tests/<name>, stripped), fixtures/, data/chest-xray-mini/ (from
#   ../shared/data, a subset if the whole does not fit), BUILD_INFO. Run on the GPU machine with
#   scripts/gpu-check.sh OUT_DIR.
#
# The CUDA binary links libcuda.so.1 (the driver) directly, so it is a separate artifact from the
# CPU build: where no driver is installed the loader stops it before main. With the toolchain's
# stub on LD_LIBRARY_PATH it starts and fails cleanly (CUDA_ERROR_STUB_LIBRARY).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

FEATURE=cuda
BUNDLE=1
MAX_IMAGES=${CXR_GPU_MAX_IMAGES:-}
BUDGET_MIB=${CXR_GPU_BUDGET_MIB:-62}
while [ $# -gt 0 ]; do
  case "$1" in
    --cudnn) FEATURE=cudnn ;;
    --no-bundle) BUNDLE=0 ;;
    --max-images) MAX_IMAGES=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

TOOLCHAIN_ARGS=()
[ "$FEATURE" = cudnn ] && TOOLCHAIN_ARGS+=(--cudnn)
ENV_LINES=$(scripts/cuda-toolchain.sh "${TOOLCHAIN_ARGS[@]}")
eval "$ENV_LINES"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/cuda}
# No debug info: the binary has to travel (carry limit), and it halves link time.
export CARGO_PROFILE_RELEASE_DEBUG=${CARGO_PROFILE_RELEASE_DEBUG:-0}

echo "build-cuda: CUDA_HOME=$CUDA_HOME CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CUDAFORGE_THREADS=$CUDAFORGE_THREADS"
echo "build-cuda: CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
JSON=$CARGO_TARGET_DIR/build-cuda.json
mkdir -p "$CARGO_TARGET_DIR"
: >"$JSON"

T0=$(date +%s)
# One cargo invocation for the binary and the models crate's test binaries, so both resolve
# the same features (two invocations rebuilt candle and its CUDA kernels a second time).
set -x
cargo test --no-run --release -p cxr-service -p cxr-models \
  --features "cxr-service/$FEATURE,cxr-models/$FEATURE" --message-format=json-render-diagnostics >>"$JSON"
{ set +x; } 2>/dev/null
T1=$(date +%s)
T2=$(date +%s)

BIN=$(jq -r 'select(.reason=="compiler-artifact" and .target.name=="cxr" and (.target.kind|index("bin")) and .profile.test==false) | .executable // empty' "$JSON" | tail -1)
BIN=${BIN:-$CARGO_TARGET_DIR/release/cxr}
# name<TAB>path of each test executable of cxr-models (lib unit tests and tests/*.rs)
TESTS=$(jq -r 'select(.reason=="compiler-artifact" and .profile.test==true and (.package_id|test("cxr-models|models#"))) | select(.executable != null) | "\(.target.name)\t\(.executable)"' "$JSON" | sort -u)

fmt() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
echo "build-cuda: cxr and the test binaries (--features $FEATURE) built in $(fmt $((T2 - T0)))"
echo "build-cuda: binary $BIN ($(du -h "$BIN" | cut -f1))"
echo "$TESTS" | sed 's/^/build-cuda: test binary /'

[ "$BUNDLE" = 1 ] || exit 0

# --- .gpu/ ------------------------------------------------------------------------------------
G=$ROOT/.gpu
rm -rf "$G"
mkdir -p "$G/data"
# The binaries embed candle's kernels (PTX text and sm_90a cubins): 67 MB stripped for cxr, ~50 MB
# per test binary. xz packs them all into ~22 MB (the kernels repeat across binaries);
# gpu-check.sh unpacks bin.tar.xz (with tar, or Python's tarfile where xz is missing).
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/tests"
cp "$BIN" "$STAGE/cxr"
strip "$STAGE/cxr"
while IFS=$'\t' read -r name exe; do
  [ -n "$name" ] || continue
  cp "$exe" "$STAGE/tests/$name"
  strip "$STAGE/tests/$name"
done <<<"$TESTS"
echo "build-cuda: packing .gpu/bin.tar.xz (cxr $(du -h "$STAGE/cxr" | cut -f1), tests $(du -sh "$STAGE/tests" | cut -f1), stripped)"
tar -C "$STAGE" -cf - cxr tests | xz -T2 -6 >"$G/bin.tar.xz"
cp -r models/tests/fixtures "$G/fixtures"
{
  echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git_rev=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo -dirty)"
  echo "features=$FEATURE"
  echo "cuda_compute_cap=$CUDA_COMPUTE_CAP"
  echo "nvcc=$(nvcc --version | sed -nE 's/.*release [0-9.]+, V([0-9.]+).*/\1/p')"
  # The test binaries find their fixtures at env!("CARGO_MANIFEST_DIR")/tests/fixtures, fixed at
  # build time; gpu-check.sh makes that path resolve on the GPU machine.
  echo "models_manifest_dir=$ROOT/models"
  echo "build_seconds=$((T2 - T0))"
} >"$G/BUILD_INFO"

DATA=$ROOT/../shared/data/chest-xray-mini
if [ -d "$DATA" ]; then
  used=$(du -sm "$G" | cut -f1)
  data_mib=$(du -smL "$DATA" | cut -f1)
  room=$((BUDGET_MIB - used))
  [ "$room" -lt 1 ] && room=1
  if [ -z "$MAX_IMAGES" ] && [ "$data_mib" -le "$room" ]; then
    cp -rL "$DATA" "$G/data/chest-xray-mini"
    echo "build-cuda: copied chest-xray-mini whole (${data_mib} MiB)"
  else
    # A subset: the same share of every split/class, at most MAX_IMAGES (or what fits) in all.
    total=$(find -L "$DATA" -type f \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.jpeg' \) | wc -l)
    if [ -z "$MAX_IMAGES" ]; then
      MAX_IMAGES=$((total * room * 9 / 10 / (data_mib > 0 ? data_mib : 1)))
      [ "$MAX_IMAGES" -lt 40 ] && MAX_IMAGES=40
    fi
    mkdir -p "$G/data/chest-xray-mini"
    find -L "$DATA" -maxdepth 1 -type f -exec cp {} "$G/data/chest-xray-mini/" \;
    for dir in $(cd "$DATA" && find -L . -mindepth 2 -maxdepth 2 -type d | sort); do
      n=$(find -L "$DATA/$dir" -maxdepth 1 -type f | wc -l)
      keep=$(( (n * MAX_IMAGES + total - 1) / (total > 0 ? total : 1) ))
      mkdir -p "$G/data/chest-xray-mini/$dir"
      find -L "$DATA/$dir" -maxdepth 1 -type f | sort | head -n "$keep" | xargs -r cp -t "$G/data/chest-xray-mini/$dir"
    done
    echo "subset=$MAX_IMAGES of $total images" >>"$G/BUILD_INFO"
    echo "build-cuda: chest-xray-mini does not fit whole (${data_mib} MiB, ${room} MiB left): copied a subset of about $MAX_IMAGES of $total images"
    echo "build-cuda: note: manifest.csv (if any) still lists the whole set"
  fi
else
  echo "build-cuda: $DATA not found; gpu-check.sh will skip the training runs"
fi
echo "build-cuda: .gpu/ is $(du -sh "$G" | cut -f1) ($(du -sm "$G" | cut -f1) MiB; carry limit 64 MiB)"
du -sh "$G"/* | sed 's/^/build-cuda:   /'
