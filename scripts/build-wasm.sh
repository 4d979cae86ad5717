#!/usr/bin/env bash
# Builds the cxr browser client (crate cxr-wasm) and installs it into service/web/pkg/,
# where `cxr serve` serves it with the page. Also builds a Node (CommonJS) flavour
# into target/wasm-node/ for the parity check (scripts/wasm-parity.sh).
#
#   scripts/build-wasm.sh            # web + node
#   scripts/build-wasm.sh --web-only
#
# Needs: rustup (adds wasm32-unknown-unknown), wasm-bindgen-cli of the exact
# version in Cargo.lock (installed with cargo if missing), and optionally
# wasm-opt (binaryen from npm, pinned; Debian's 108 breaks wasm-bindgen output), else skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WEB_ONLY=0
[[ "${1:-}" == "--web-only" ]] && WEB_ONLY=1

# Own target dir: does not wait on the lock of concurrent native builds.
export CARGO_TARGET_DIR="${CXR_WASM_TARGET_DIR:-$ROOT/target/wasm}"
TARGET=wasm32-unknown-unknown
OUT_WEB="$ROOT/service/web/pkg"
OUT_NODE="$ROOT/target/wasm-node"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if command -v rustup >/dev/null; then
  rustup target list --installed | grep -qx "$TARGET" || { say "rustup target add $TARGET"; rustup target add "$TARGET"; }
fi

# wasm-bindgen CLI must match the library version exactly.
WB_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
if [[ -z "$WB_VERSION" ]]; then
  say "resolving dependencies (wasm-bindgen not in Cargo.lock yet)"
  cargo generate-lockfile --offline 2>/dev/null || cargo metadata --format-version 1 >/dev/null
  WB_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
fi
HAVE_WB="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
if [[ "$HAVE_WB" != "$WB_VERSION" ]]; then
  say "installing wasm-bindgen-cli $WB_VERSION (have: ${HAVE_WB:-none}); this takes a few minutes, once"
  # --locked first; if the registry mirror lacks a pinned crate, resolve afresh.
  cargo install wasm-bindgen-cli --version "$WB_VERSION" --locked \
    || cargo install wasm-bindgen-cli --version "$WB_VERSION"
fi

# wasm-opt: Debian's binaryen (108) breaks wasm-bindgen's externref table, so
# use binaryen from npm (pinned; a self-contained wasm build of the tools).
BINARYEN_VERSION="${BINARYEN_VERSION:-132.0.0}"
TOOLS="$ROOT/target/wasm-tools"
WASM_OPT="${WASM_OPT:-$TOOLS/node_modules/.bin/wasm-opt}"
if [[ ! -x "$WASM_OPT" ]] && command -v npm >/dev/null; then
  say "installing binaryen $BINARYEN_VERSION (wasm-opt) from npm into ${TOOLS#$ROOT/}"
  mkdir -p "$TOOLS"
  npm install --prefix "$TOOLS" --no-audit --no-fund "binaryen@$BINARYEN_VERSION" >/dev/null 2>&1 \
    || echo "note: could not install binaryen from npm"
fi
if [[ ! -x "$WASM_OPT" ]]; then
  WASM_OPT="$(command -v wasm-opt || true)"
fi
if [[ -z "$WASM_OPT" ]]; then
  echo "note: no wasm-opt available; the .wasm will not be size-optimised"
fi

say "cargo build --release --target $TARGET -p cxr-wasm"
cargo build --release --target "$TARGET" -p cxr-wasm
RAW="$CARGO_TARGET_DIR/$TARGET/release/cxr_wasm.wasm"
size_of() { stat -c %s "$1" 2>/dev/null || wc -c <"$1"; }
# (cargo's file still has the release profile's line tables; wasm-bindgen drops them)
echo "cargo output:            $(size_of "$RAW") bytes  ($RAW)"

bindgen() { # $1 = --target, $2 = out dir
  rm -rf "$2" && mkdir -p "$2"
  wasm-bindgen --target "$1" --out-dir "$2" --out-name cxr_wasm "$RAW"
  echo "wasm-bindgen ($1): $(size_of "$2/cxr_wasm_bg.wasm") bytes"
}

# wasm-opt: run it on the Node build first and check that the result still loads
# and works (old binaryen releases, e.g. Debian's 108, break wasm-bindgen's
# externref table); only then optimise the web build the same way.
OPT_OK=0
optimise() { # $1 = wasm file
  "$WASM_OPT" -Oz --strip-debug --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-multivalue --enable-reference-types \
    -o "$1.opt" "$1"
}
TMP_NODE="$(mktemp -d)"
trap 'rm -rf "$TMP_NODE"' EXIT
bindgen nodejs "$TMP_NODE"
if [[ -n "$WASM_OPT" ]]; then
  cp "$TMP_NODE/cxr_wasm_bg.wasm" "$TMP_NODE/raw.wasm"
  if optimise "$TMP_NODE/cxr_wasm_bg.wasm" && mv "$TMP_NODE/cxr_wasm_bg.wasm.opt" "$TMP_NODE/cxr_wasm_bg.wasm" \
    && command -v node >/dev/null \
    && node -e '
      const w = require(process.argv[1] + "/cxr_wasm.js");
      // 1x1 gray PNG
      const png = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==", "base64");
      const spec = JSON.stringify({version: w.spec_version(), size: 2, resize: "squish", filter: "bilinear", mean: [0,0,0], std: [1,1,1]});
      if (w.preprocess(png, spec).length !== 4) process.exit(1);
      try { w.preprocess(Buffer.from("nope"), spec); process.exit(1); } catch (e) { if (!/not a supported image/.test(e.message)) process.exit(1); }
    ' "$TMP_NODE" 2>/dev/null; then
    OPT_OK=1
    echo "after wasm-opt -Oz:  $(size_of "$TMP_NODE/cxr_wasm_bg.wasm") bytes ($("$WASM_OPT" --version))"
  else
    echo "note: $("$WASM_OPT" --version 2>/dev/null) produced a module that does not load (old binaryen vs wasm-bindgen's externref table); shipping the unoptimised .wasm. Install binaryen >= 116 for -Oz."
    mv "$TMP_NODE/raw.wasm" "$TMP_NODE/cxr_wasm_bg.wasm"
  fi
  rm -f "$TMP_NODE/raw.wasm"
fi

say "wasm-bindgen --target web -> ${OUT_WEB#$ROOT/}"
bindgen web "$OUT_WEB"
if [[ "$OPT_OK" == 1 ]]; then
  optimise "$OUT_WEB/cxr_wasm_bg.wasm" && mv "$OUT_WEB/cxr_wasm_bg.wasm.opt" "$OUT_WEB/cxr_wasm_bg.wasm"
  echo "after wasm-opt -Oz (web): $(size_of "$OUT_WEB/cxr_wasm_bg.wasm") bytes"
fi
cp wasm-client/js/cxr.js "$OUT_WEB/cxr.js"
if command -v gzip >/dev/null; then
  echo "gzip -9 of the web .wasm: $(gzip -9c "$OUT_WEB/cxr_wasm_bg.wasm" | wc -c) bytes"
fi

if [[ "$WEB_ONLY" == 0 ]]; then
  say "Node build -> ${OUT_NODE#$ROOT/}"
  rm -rf "$OUT_NODE" && mkdir -p "$OUT_NODE" && cp "$TMP_NODE"/* "$OUT_NODE"/
fi
say "done: service/web/pkg/{cxr.js,cxr_wasm.js,cxr_wasm_bg.wasm}"
