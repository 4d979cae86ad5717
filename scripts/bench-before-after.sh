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
python3 - "$RAWDIR" <<'PY'
import glob, json, os, statistics, sys
d = sys.argv[1]
for side in ["before", "after"]:
    rows = [json.loads(l) for f in sorted(glob.glob(os.path.join(d, side + "-*.jsonl"))) for l in open(f) if l.startswith("{")]
    print(f"\n{side}")
    cases = sorted({(r["mode"], r["batch"], r["size"]) for r in rows}, key=lambda c: (c[0], c[2], c[1]))
    engines = ["cxr", "candle", "torch", "ort"]
    print(f"{'work':<16}" + "".join(f"{e + ' img/s':>13}{e + ' ms':>10}" for e in engines) + f"{'cxr/torch':>10}{'cxr/ort':>9}")
    for m, b, s in cases:
        line, ips = f"{m + ' b' + str(b) + ' ' + str(s):<16}", {}
        for e in engines:
            rs = [r for r in rows if r["engine"] == e and (r["mode"], r["batch"], r["size"]) == (m, b, s)]
            if rs:
                ips[e] = statistics.median(r["images_per_s"] for r in rs)
                line += f"{ips[e]:>13.1f}{statistics.median(r['median_step_ms'] for r in rs):>10.1f}"
            else:
                line += f"{'-':>13}{'-':>10}"
        for e, w in [("torch", 10), ("ort", 9)]:
            line += f"{ips['cxr'] / ips[e]:>{w}.2f}" if e in ips and "cxr" in ips else f"{'-':>{w}}"
        print(line)
PY
echo "raw runs: $RAWDIR" >&2
