#!/usr/bin/env python3
"""bench_table.py FILE...: the table of bench-vs-pytorch.sh from its JSON lines
(one line per engine, shape and round): medians over rounds, ratios to cxr."""
import json, statistics, sys
rows = [json.loads(l) for f in sys.argv[1:] for l in open(f) if l.startswith("{")]
cases = sorted({(r["mode"], r["batch"], r["size"]) for r in rows}, key=lambda c: (c[0], c[2], c[1]))
engines = ["cxr", "candle", "torch", "ort"]
print(f"{'work':<22}" + "".join(f"{e + ' img/s':>14}{e + ' ms':>11}" for e in engines) + f"{'cxr/torch':>11}{'cxr/ort':>9}")
for m, b, s in cases:
    line, ips = f"{m + ' b' + str(b) + ' ' + str(s):<22}", {}
    for e in engines:
        rs = [r for r in rows if r["engine"] == e and (r["mode"], r["batch"], r["size"]) == (m, b, s)]
        if rs:
            ips[e] = statistics.median(r["images_per_s"] for r in rs)
            line += f"{ips[e]:>14.1f}{statistics.median(r['median_step_ms'] for r in rs):>11.1f}"
        else:
            line += f"{'-':>14}{'-':>11}"
    for e in ["torch", "ort"]:
        line += f"{ips['cxr'] / ips[e]:>{11 if e == 'torch' else 9}.2f}" if e in ips and "cxr" in ips else f"{'-':>{11 if e == 'torch' else 9}}"
    print(line)
