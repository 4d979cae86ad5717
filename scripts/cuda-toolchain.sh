#!/usr/bin/env bash
# Installs a CUDA toolchain (nvcc, headers, libraries) from NVIDIA's PyPI wheels into a local
# venv, with no GPU, no driver and no system CUDA, and prints the environment to build cxr with
# `--features cuda`:
#
#   eval "$(scripts/cuda-toolchain.sh)"            # or: scripts/cuda-toolchain.sh --cudnn [PREFIX]
#
# PREFIX defaults to $CXR_CUDA_PREFIX or $HOME/.cache/cxr/cuda-venv. Only the `export ...` lines go
# to stdout; progress goes to stderr. Idempotent: the wheels are installed once per pin set (a stamp
# file records it), and the CUDA_HOME folder and the stub driver are rebuilt cheaply each run.
#
# What a candle 0.11.1 build needs here (see ../shared/notes/cuda-build.md):
# - CUDA 13.0.x, not newer: the GPU machines' 580-series driver JIT-compiles PTX up to ISA 9.0,
#   which is what nvcc 13.0 writes (candle ships its kernels as PTX).
# - A CUDA_HOME with bin/ include/ nvvm/ lib64/ (symlinks into site-packages/nvidia/cu13), and the
#   unversioned .so names the linker looks for.
# - A libcuda.so to link against: no wheel ships the driver. The stub built here has every cu*
#   entry point of cudarc return 34 (CUDA_ERROR_STUB_LIBRARY); on a GPU machine the real driver's
#   libcuda.so.1 is found instead. With the stub on LD_LIBRARY_PATH the CUDA binary starts and
#   fails cleanly at the first CUDA call, which lets a GPU-less machine exercise that path.
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-0}"; }

CUDNN=0
PREFIX=
for a in "$@"; do
  case "$a" in
    --cudnn) CUDNN=1 ;;
    -h|--help) usage 0 ;;
    -*) echo "unknown option $a" >&2; usage 2 ;;
    *) PREFIX=$a ;;
  esac
done
PREFIX=${PREFIX:-${CXR_CUDA_PREFIX:-$HOME/.cache/cxr/cuda-venv}}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { echo "cuda-toolchain: $*" >&2; }

# The pins that were found to work together (CUDA 13.0 update 2).
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
)
CUDNN_WHEEL=nvidia-cudnn-cu13==9.13.0.50

# --- 1. the venv and the wheels ---------------------------------------------------------------
PY=${PYTHON:-python3}
if [ ! -x "$PREFIX/bin/python" ]; then
  log "creating venv $PREFIX"
  mkdir -p "$(dirname "$PREFIX")"
  "$PY" -m venv "$PREFIX"
fi
VPY=$PREFIX/bin/python
install_set() { # stamp-name wheels...
  local stamp=$PREFIX/.cxr-$1; shift
  local want; want=$(printf '%s\n' "$@")
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "wheels already installed ($(basename "$stamp"))"
    return
  fi
  log "pip install $* (about 1.7 GB installed; pip caches the downloads)"
  "$VPY" -m pip install --disable-pip-version-check -q "$@" >&2
  printf '%s\n' "$want" >"$stamp"
}
install_set cuda-wheels "${WHEELS[@]}"
[ "$CUDNN" = 1 ] && install_set cudnn-wheels "$CUDNN_WHEEL" "nvidia-cublas==13.0.2.14"

SP=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
CU=$SP/nvidia/cu13
for d in bin include nvvm lib; do
  [ -d "$CU/$d" ] || { log "missing $CU/$d: the wheels did not install as expected"; exit 1; }
done
[ -x "$CU/bin/nvcc" ] || { log "no nvcc in $CU/bin"; exit 1; }

# --- 2. CUDA_HOME: a folder of symlinks -------------------------------------------------------
CH=$PREFIX/cuda
mkdir -p "$CH/lib64/stubs"
for d in bin include nvvm; do ln -sfn "$CU/$d" "$CH/$d"; done
ln -sfn lib64 "$CH/lib"
link_libs() { # dir: link every lib*.so* of dir into lib64, and add the unversioned name
  local f base
  for f in "$1"/lib*.so*; do
    [ -e "$f" ] || continue
    base=$(basename "$f")
    ln -sfn "$f" "$CH/lib64/$base"
    # libcublas.so.13 -> libcublas.so (the linker wants the bare name)
    [[ "$base" =~ ^(lib[A-Za-z0-9_+-]+\.so)\.[0-9]+$ ]] && ln -sfn "$f" "$CH/lib64/${BASH_REMATCH[1]}"
  done
}
link_libs "$CU/lib"
if [ "$CUDNN" = 1 ] || [ -d "$SP/nvidia/cudnn/lib" ]; then
  [ -d "$SP/nvidia/cudnn/lib" ] && link_libs "$SP/nvidia/cudnn/lib"
fi
for so in libcudart.so libcublas.so libcublasLt.so libcurand.so libnvrtc.so; do
  [ -e "$CH/lib64/$so" ] || { log "missing $CH/lib64/$so"; exit 1; }
done

# --- 3. the stub driver library ---------------------------------------------------------------
# The cu* names come from the cudarc that Cargo.lock pins (src/driver/sys/mod.rs lists every
# driver entry point it may link with `dynamic-linking`).
CUDARC_VER=$(awk '/^name = "cudarc"$/ {getline; gsub(/version = |"/, ""); print; exit}' "$ROOT/Cargo.lock" 2>/dev/null || true)
CUDARC_VER=${CUDARC_VER:-0.19.10}
find_sys() { ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$CUDARC_VER"/src/driver/sys/mod.rs 2>/dev/null | head -1; }
SYS=$(find_sys)
if [ -z "$SYS" ]; then
  log "fetching crates to read cudarc $CUDARC_VER's driver symbols"
  (cd "$ROOT" && cargo fetch -q >&2)
  SYS=$(find_sys)
fi
[ -n "$SYS" ] || { log "cudarc-$CUDARC_VER source not found in the cargo registry"; exit 1; }
STUB_C=$CH/lib64/stubs/libcuda-stub.c
{
  echo "/* Generated by scripts/cuda-toolchain.sh from cudarc-$CUDARC_VER/src/driver/sys/mod.rs."
  echo "   A link-time stand-in for the NVIDIA driver's libcuda.so.1: every entry point"
  echo "   returns 34 = CUDA_ERROR_STUB_LIBRARY. Never ship it to a GPU machine. */"
  echo "#define STUB(name) int name(void) { return 34; }"
  grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$SYS" | sed -E 's/^\s+fn (cu[A-Za-z0-9_]+)\(/STUB(\1)/' | sort -u
} >"$STUB_C.new"
N=$(grep -c '^STUB(' "$STUB_C.new")
[ "$N" -gt 100 ] || { log "only $N cu* symbols found in $SYS"; exit 1; }
if ! cmp -s "$STUB_C.new" "$STUB_C" || [ ! -f "$CH/lib64/stubs/libcuda.so" ]; then
  mv "$STUB_C.new" "$STUB_C"
  ${CC:-gcc} -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$CH/lib64/stubs/libcuda.so" "$STUB_C"
  log "built stub libcuda.so ($N entry points)"
else
  rm -f "$STUB_C.new"
fi
ln -sfn libcuda.so "$CH/lib64/stubs/libcuda.so.1"

NVCC_VER=$("$CH/bin/nvcc" --version | sed -nE 's/.*release [0-9.]+, V([0-9.]+).*/\1/p')
log "nvcc $NVCC_VER, CUDA_HOME=$CH"

# --- 4. the environment -----------------------------------------------------------------------
cat <<EOF
export CUDA_HOME='$CH'
export CUDA_PATH='$CH'
export CUDA_ROOT='$CH'
export PATH='$CH/bin':"\$PATH"
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export CUDAFORGE_THREADS=\${CUDAFORGE_THREADS:-$(nproc)}
# To run a CUDA build here (no GPU): it fails cleanly with CUDA_ERROR_STUB_LIBRARY.
# export LD_LIBRARY_PATH='$CH/lib64/stubs:$CH/lib64'
EOF
