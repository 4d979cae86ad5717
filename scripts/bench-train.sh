#!/usr/bin/env bash
# The fastai recipe's single stage on chest-xray-mini, for the side-by-side
# comparison with ../shared/bench/fastai_recipe.py: xresnet18 from scratch,
# size 128, presize 256, 5 epochs, bs 32, lr 3e-3, oversample 3, merged
# val+test, normalized; seeds 42, 1 and 2 (SEEDS="42" for one).
# Prints one JSON line per seed and one with the means.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${1:-${CXR_DATA:-$ROOT/../shared/data/chest-xray-mini}}"
SEEDS="${SEEDS:-42 1 2}"
EPOCHS="${EPOCHS:-5}"
if [[ ! -d "$DATA/train" ]]; then
    echo "error: no dataset at $DATA (expected the Kaggle layout train|val|test/NORMAL|PNEUMONIA)" >&2
    exit 1
fi
(cd "$ROOT" && cargo build --release -q -p cxr-service)
CXR="$ROOT/target/release/cxr"
OUT="${OUT:-$ROOT/runs/bench-train}"
results=()
for seed in $SEEDS; do
    run="$OUT/seed-$seed"
    start=$(date +%s.%N)
    "$CXR" train --data "$DATA" --arch xresnet18 --size 128 --presize 256 --epochs "$EPOCHS" --bs 32 --lr 3e-3 \
        --oversample 3 --merge-val-test --normalize --seed "$seed" --out "$run" --quiet >&2
    end=$(date +%s.%N)
    line=$(python3 - "$run" "$start" "$end" "$seed" <<'PY'
import json, sys
run, start, end, seed = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
r = json.load(open(f"{run}/report.json"))
m = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
ips = sum(x["images_per_s"] for x in m) / len(m)
print(json.dumps({"tool": "cxr", "seed": seed, "accuracy": round(r["accuracy"], 4), "f1": round(r["f1"], 4),
                  "precision": round(r["precision"], 4), "recall": round(r["recall"], 4), "auc": round(r["auc"], 4),
                  "confusion": r["confusion_matrix"]["matrix"], "wall_s": round(end - start, 1),
                  "train_images_per_s": round(ips, 2), "n_valid": r["n"]}))
PY
)
    echo "$line"
    results+=("$line")
done
printf '%s\n' "${results[@]}" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
mean = lambda k: round(sum(r[k] for r in rows) / len(rows), 4)
print(json.dumps({"tool": "cxr", "seeds": [r["seed"] for r in rows], "mean_accuracy": mean("accuracy"), "mean_f1": mean("f1"),
                  "mean_wall_s": mean("wall_s"), "mean_train_images_per_s": mean("train_images_per_s")}))'
