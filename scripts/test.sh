#!/usr/bin/env bash
# The test command (README, CI): every Rust test of the workspace (unit tests,
# PyTorch-fixture parity, end-to-end tests of the real `cxr` binary and its
# HTTP server, the real-data smoke run when ../shared/data/chest-xray-mini is
# present), then the WASM-vs-native preprocessing parity and the headless
# browser test.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
echo "== cargo test --workspace"
# `cargo test --workspace` builds the `cxr` binary the end-to-end tests drive (cxr-service has
# integration tests). Building it separately with `-p cxr-service` would resolve features
# differently and compile candle and friends twice; the browser test reuses this binary too.
cargo test --workspace -- --test-threads 2
export CXR_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/cxr"
echo "== WASM parity"
scripts/wasm-parity.sh
if [[ -x scripts/test-browser.sh ]]; then
    echo "== browser end-to-end"
    scripts/test-browser.sh
fi
