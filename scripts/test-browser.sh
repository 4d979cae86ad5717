#!/usr/bin/env bash
# Real-browser end-to-end test of the web page (issue 5), on its own:
# builds `cxr` and the wasm client if needed, installs playwright-core (npm ci)
# and Debian's chromium if missing, then runs tests/browser/e2e.test.mjs with
# Node's test runner: `cxr serve` with a freshly trained tiny model, the page in
# headless Chromium, page predictions vs POST /v1/predict, the non-image message,
# a screenshot in tests/browser/artifacts/.
#
#   scripts/test-browser.sh
#
# Env: CXR_BIN (skip the cargo build and use this binary), CHROMIUM (default
# /usr/bin/chromium), CXR_XRAY_DIR (real X-rays to add), CXR_KEEP_TMP=1.
# Prints a closing line `N passed, M failed`; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ART=tests/browser/artifacts
mkdir -p "$ART"

fail() { echo "test-browser: $*" >&2; echo "0 passed, 1 failed"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "== installing chromium (apt)"
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || fail "could not install chromium; install it (apt-get install -y chromium) or set CHROMIUM"
  [ -x "$CHROMIUM" ] || fail "$CHROMIUM still missing after installing chromium"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing nodejs and npm (apt)"
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null \
    || fail "node and npm are needed (apt-get install -y nodejs npm)"
fi

if [ -z "${CXR_BIN:-}" ]; then
  echo "== cargo build -p cxr-service"
  cargo build -p cxr-service || fail "cargo build -p cxr-service failed"
  export CXR_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/cxr"
fi
[ -x "$CXR_BIN" ] || fail "no cxr binary at $CXR_BIN"

if [ ! -f service/web/pkg/cxr_wasm_bg.wasm ] || [ ! -f service/web/pkg/cxr.js ]; then
  echo "== scripts/build-wasm.sh (service/web/pkg is missing)"
  scripts/build-wasm.sh || fail "scripts/build-wasm.sh failed"
fi

echo "== npm ci (tests/browser)"
(cd tests/browser && npm ci --no-audit --no-fund --prefer-offline --loglevel=error) || fail "npm ci in tests/browser failed"

echo "== node --test tests/browser/e2e.test.mjs"
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
timeout "${CXR_BROWSER_TIMEOUT:-900}" node --test \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=./tests/browser/summary-reporter.mjs --test-reporter-destination="$summary" \
  tests/browser/e2e.test.mjs
rc=$?
echo "artifacts: $ART/ (page.png, compare.txt, server.log)"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$summary" | tail -1)
if [ -z "$line" ]; then
  echo "test-browser: the test runner ended without a result (exit $rc)" >&2
  line="0 passed, 1 failed"
  [ "$rc" = 0 ] && rc=1
fi
if [ "$rc" = 0 ] && ! [[ $line =~ ^[0-9]+\ passed,\ 0\ failed$ ]]; then rc=1; fi
echo "$line"
exit "$rc"
