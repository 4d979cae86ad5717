#!/usr/bin/env bash
# The one prepared check for the GPU machine (NVIDIA driver, CUDA libraries and PyTorch; no Rust,
# no network). Run from the repo root with .gpu/ carried over (scripts/build-cuda.sh makes it):
#
#   scripts/gpu-check.sh OUT_DIR
#
# It runs what was built on the build machine and writes the figures as JSON into OUT_DIR
# (gpu-check.json, plus one log per step):
#   1. environment: nvidia-smi, the shared libraries the CUDA binary resolves;
#   2. the cxr-models test binaries (parity with PyTorch's fixtures);
#   3. `cxr bench` on cuda: inference at batch 1 and 32, the training step at batch 32;
#   4. one epoch of `cxr train --device cuda` on chest-xray-mini at 224, f32 and bf16 (images/s
#      from the run's metrics.jsonl), then `cxr predict --device cuda` on a few images;
#   5. the same ResNet18 training step in PyTorch (batch 32 at 224, AdamW; f32 and bf16 autocast),
#      and inference at batch 1 and 32, for the ratios.
# Every step has its own timeout; the whole stays within a few minutes (CXR_GPU_CHECK_BUDGET_S,
# default 420 s). A step that fails is recorded as such and the others still run.
set -uo pipefail
OUT=${1:?usage: scripts/gpu-check.sh OUT_DIR}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
G=$ROOT/.gpu
BUDGET=${CXR_GPU_CHECK_BUDGET_S:-420}
START=$(date +%s)
STEPS=$OUT/steps.jsonl
: >"$STEPS"
log() { echo "gpu-check: $*" | tee -a "$OUT/gpu-check.log" >&2; }
left() { echo $((BUDGET - ($(date +%s) - START))); }

# run NAME TIMEOUT CMD...: runs CMD with its output in OUT/NAME.log and records rc and seconds.
run() {
  local name=$1 t=$2; shift 2
  local l; l=$(left)
  if [ "$l" -lt 15 ]; then
    log "$name: skipped (budget spent)"
    printf '{"step":"%s","skipped":"budget"}\n' "$name" >>"$STEPS"
    return 99
  fi
  [ "$t" -gt "$l" ] && t=$l
  log "$name: $* (timeout ${t}s)"
  local t0 t1 rc
  t0=$(date +%s.%N)
  timeout -k 5 "$t" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  printf '{"step":"%s","rc":%d,"seconds":%.2f,"timed_out":%s}\n' "$name" "$rc" \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$([ $rc = 124 ] || [ $rc = 137 ] && echo true || echo false)" >>"$STEPS"
  log "$name: rc=$rc"
  [ $rc = 0 ] || tail -5 "$OUT/$name.log" | sed 's/^/    /' >&2
  return $rc
}

# The binaries travel packed (.gpu/bin.tar.xz, see build-cuda.sh); unpack them next to OUT.
B=$G
if [ -f "$G/bin.tar.xz" ]; then
  B=${CXR_GPU_BIN_DIR:-${TMPDIR:-/tmp}/cxr-gpu-bin}
  rm -rf "$B" && mkdir -p "$B"
  tar -C "$B" -xJf "$G/bin.tar.xz" 2>/dev/null ||
    "${PYTHON:-python3}" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$G/bin.tar.xz" "$B"
fi
[ -x "$B/cxr" ] || { log "no $B/cxr: run scripts/build-cuda.sh on the build machine and carry .gpu"; exit 2; }
cp "$G/BUILD_INFO" "$OUT/BUILD_INFO" 2>/dev/null

# --- 1. environment ---------------------------------------------------------------------------
PY=${PYTHON:-python3}
# CUDA libraries: the ones PyTorch's wheels installed (site-packages/nvidia/cu13/lib, cudnn/lib,
# and the CUDA 12 layout nvidia/*/lib in case), ahead of whatever is already on the path.
NVLIBS=$("$PY" - <<'EOF' 2>/dev/null
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
dirs = []
for r in roots:
    for d in ["cu13/lib", "cudnn/lib"] + sorted(os.path.relpath(p, r) for p in glob.glob(os.path.join(r, "*/lib"))):
        p = os.path.join(r, d)
        if os.path.isdir(p) and p not in dirs:
            dirs.append(p)
print(":".join(dirs))
EOF
)
export LD_LIBRARY_PATH=${NVLIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader >"$OUT/nvidia-smi.csv" 2>&1
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
ldd "$B/cxr" >"$OUT/ldd.txt" 2>&1
if grep -q 'not found' "$OUT/ldd.txt"; then
  log "the CUDA binary is missing libraries (carry them in .gpu/lib or install the wheel):"
  grep 'not found' "$OUT/ldd.txt" | sed 's/^/    /' >&2
fi
export RUST_BACKTRACE=1
# The driver JIT-compiles candle's PTX on first use; let its cache (~/.nv/ComputeCache) hold it all.
export CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-1073741824}

# --- 2. parity tests --------------------------------------------------------------------------
# The test binaries read their fixtures at env!("CARGO_MANIFEST_DIR")/tests/fixtures, the path of
# the models crate on the build machine (BUILD_INFO). Make that path resolve here.
MD=$(sed -n 's/^models_manifest_dir=//p' "$G/BUILD_INFO" 2>/dev/null)
MADE_LINK=
if [ -n "$MD" ] && [ ! -e "$MD/tests/fixtures/resnet18_w8_io.safetensors" ]; then
  if mkdir -p "$MD/tests" 2>/dev/null && ln -sfn "$G/fixtures" "$MD/tests/fixtures" 2>/dev/null; then
    MADE_LINK=$MD/tests/fixtures
    log "linked $MADE_LINK -> $G/fixtures"
  else
    log "cannot create $MD/tests/fixtures; the parity tests will not find their fixtures"
  fi
fi
# CXR_TEST_DEVICE=cuda: the parity tests build their networks on the GPU (CPU tolerances
# loosened as stated in models/tests/parity.rs; bf16 logits within 5e-2 relative).
for t in "$B"/tests/*; do
  [ -x "$t" ] || continue
  CXR_TEST_DEVICE=cuda run "test-$(basename "$t")" 180 "$t" --test-threads=4
done
[ -n "$MADE_LINK" ] && rm -f "$MADE_LINK"

# --- 3. cxr bench -----------------------------------------------------------------------------
CXR=$B/cxr
run bench-infer-b1 90 "$CXR" bench --arch resnet18 --mode infer --batch 1 --size 224 --iters 50 --device cuda
run bench-infer-b32 90 "$CXR" bench --arch resnet18 --mode infer --batch 32 --size 224 --iters 20 --device cuda
run bench-train-b32 120 "$CXR" bench --arch resnet18 --mode train --batch 32 --size 224 --iters 10 --device cuda
if "$CXR" bench --help 2>/dev/null | grep -q -- '--precision'; then
  run bench-train-b32-bf16 120 "$CXR" bench --arch resnet18 --mode train --batch 32 --size 224 --iters 10 --device cuda --precision bf16
  run bench-infer-b32-bf16 90 "$CXR" bench --arch resnet18 --mode infer --batch 32 --size 224 --iters 20 --device cuda --precision bf16
fi

# --- 4. one epoch of training, and predict ----------------------------------------------------
DATA=$G/data/chest-xray-mini
if [ -d "$DATA/train" ]; then
  for p in f32 bf16; do
    rm -rf "$OUT/run-$p"
    run "train-$p" 240 "$CXR" train --data "$DATA" --arch resnet18 --size 224 --epochs 1 --bs 32 \
      --precision "$p" --device cuda --quiet --out "$OUT/run-$p"
  done
  mapfile -t IMGS < <(find -L "$DATA/test" -type f \( -iname '*.jpeg' -o -iname '*.jpg' -o -iname '*.png' \) | sort | head -n 32)
  if [ -d "$OUT/run-f32" ] && [ "${#IMGS[@]}" -gt 0 ]; then
    run predict-1 60 "$CXR" predict --model "$OUT/run-f32" --device cuda "${IMGS[0]}"
    run predict-32 60 "$CXR" predict --model "$OUT/run-f32" --device cuda "${IMGS[@]}"
  fi
else
  log "no $DATA: training runs skipped"
fi

# --- 5. PyTorch, the same step ----------------------------------------------------------------
cat >"$OUT/torch_bench.py" <<'EOF'
import json, sys, time
import torch, torch.nn as nn

def resnet18(num_classes=2):
    try:
        import torchvision
        return torchvision.models.resnet18(num_classes=num_classes), "torchvision"
    except Exception:
        pass
    class Block(nn.Module):
        def __init__(s, cin, cout, stride):
            super().__init__()
            s.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False); s.b1 = nn.BatchNorm2d(cout)
            s.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False); s.b2 = nn.BatchNorm2d(cout)
            s.down = None
            if stride != 1 or cin != cout:
                s.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        def forward(s, x):
            y = torch.relu(s.b1(s.c1(x)))
            y = s.b2(s.c2(y))
            return torch.relu(y + (x if s.down is None else s.down(x)))
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers), "inline"

dev = torch.device("cuda")
torch.manual_seed(0)
out = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
       "gpu": torch.cuda.get_device_name(0),
       "allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "allow_tf32_cudnn": torch.backends.cudnn.allow_tf32,
       "cudnn_benchmark": torch.backends.cudnn.benchmark}

def timed(fn, warm, iters):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        t = time.perf_counter(); fn(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2], ts[0]

for prec in ["f32", "bf16"]:
    net, src = resnet18()
    out["model_source"] = src
    net = net.to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.01)
    x = torch.randn(32, 3, 224, 224, device=dev)
    y = (torch.arange(32, device=dev) % 2)
    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=(prec == "bf16")):
            loss = nn.functional.cross_entropy(net(x), y)
        loss.backward(); opt.step()
    med, mn = timed(step, 5, 20)
    out[f"train_b32_{prec}"] = {"median_step_ms": round(med * 1e3, 2), "min_step_ms": round(mn * 1e3, 2),
                                "images_per_s": round(32 / med, 1)}
    net.eval()
    for b in (1, 32):
        xb = torch.randn(b, 3, 224, 224, device=dev)
        def infer():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=(prec == "bf16")):
                torch.softmax(net(xb), -1).float().cpu()
        med, mn = timed(infer, 5, 30)
        out[f"infer_b{b}_{prec}"] = {"median_ms": round(med * 1e3, 3), "min_ms": round(mn * 1e3, 3),
                                     "images_per_s": round(b / med, 1)}
    del net, opt
    torch.cuda.empty_cache()
json.dump(out, open(sys.argv[1], "w"), indent=2)
print(json.dumps(out))
EOF
run torch 180 "$PY" "$OUT/torch_bench.py" "$OUT/torch.json"

# --- summary ----------------------------------------------------------------------------------
"$PY" - "$OUT" "$G" <<'EOF'
import json, os, re, sys, glob
out, g = sys.argv[1], sys.argv[2]
def rd(p, default=None):
    try:
        return open(p).read()
    except Exception:
        return default
def last_json(name):
    for line in reversed((rd(os.path.join(out, name + ".log")) or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except Exception:
                pass
    return None
steps = {}
for line in (rd(os.path.join(out, "steps.jsonl")) or "").splitlines():
    s = json.loads(line); steps[s["step"]] = s
r = {"build": dict(l.split("=", 1) for l in (rd(os.path.join(g, "BUILD_INFO")) or "").splitlines() if "=" in l),
     "gpu": (rd(os.path.join(out, "nvidia-smi.csv")) or "").strip(),
     "missing_libs": [l.strip() for l in (rd(os.path.join(out, "ldd.txt")) or "").splitlines() if "not found" in l],
     "steps": steps}
# parity tests: libtest's summary line
tests = {}
for name in steps:
    if name.startswith("test-"):
        txt = rd(os.path.join(out, name + ".log")) or ""
        m = re.findall(r"test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored", txt)
        tests[name[5:]] = ({"result": m[-1][0], "passed": int(m[-1][1]), "failed": int(m[-1][2]), "ignored": int(m[-1][3])}
                           if m else {"result": "no summary", "rc": steps[name].get("rc")})
r["tests"] = tests
r["tests_note"] = "the fixtures are PyTorch f32 outputs; the test binaries state their own tolerances (f32 on CUDA as on CPU; bf16 where tested)"
bench = {}
for name in steps:
    if name.startswith("bench-"):
        bench[name[6:]] = last_json(name) or {"error": (rd(os.path.join(out, name + ".log")) or "")[-400:]}
r["cxr_bench"] = bench
train = {}
for p in ("f32", "bf16"):
    rows = [json.loads(l) for l in (rd(os.path.join(out, f"run-{p}", "metrics.jsonl")) or "").splitlines() if l.strip()]
    if rows:
        m = rows[-1]
        train[p] = {k: m.get(k) for k in ("images_per_s", "seconds", "train_loss", "valid_loss", "accuracy", "auc")}
        train[p]["wall_s"] = steps.get(f"train-{p}", {}).get("seconds")
    elif f"train-{p}" in steps:
        train[p] = {"error": (rd(os.path.join(out, f"train-{p}.log")) or "")[-600:]}
r["cxr_train_1_epoch_224"] = train
pred = {}
for n in ("predict-1", "predict-32"):
    if n in steps:
        pred[n] = {"wall_s_incl_load": steps[n].get("seconds"), "rc": steps[n].get("rc")}
r["cxr_predict"] = pred
tj = json.loads(rd(os.path.join(out, "torch.json")) or "null") if os.path.exists(os.path.join(out, "torch.json")) else None
r["torch"] = tj
ratios = {}
def ips(d, *ks):
    for k in ks:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d
if tj:
    t32, tbf = ips(tj, "train_b32_f32", "images_per_s"), ips(tj, "train_b32_bf16", "images_per_s")
    c_step = ips(bench, "train-b32", "images_per_s")
    if c_step and t32:
        ratios["train_step_b32_f32_torch_over_cxr"] = round(t32 / c_step, 2)
    c_step_bf = ips(bench, "train-b32-bf16", "images_per_s")
    if c_step_bf and tbf:
        ratios["train_step_b32_bf16_torch_over_cxr"] = round(tbf / c_step_bf, 2)
    for p, t in (("f32", t32), ("bf16", tbf)):
        c = ips(train, p, "images_per_s")
        if c and t:
            ratios[f"epoch_{p}_torch_step_over_cxr_epoch"] = round(t / c, 2)
    for b in (1, 32):
        c, t = ips(bench, f"infer-b{b}", "images_per_s"), ips(tj, f"infer_b{b}_f32", "images_per_s")
        if c and t:
            ratios[f"infer_b{b}_f32_torch_over_cxr"] = round(t / c, 2)
r["ratios"] = ratios
r["ratios_note"] = ("torch images/s divided by cxr images/s (>1: PyTorch faster). The train-step ratio compares like "
                    "with like (random input, forward+backward+AdamW); the epoch ratio also counts cxr's data loading "
                    "and validation against PyTorch's bare step.")
json.dump(r, open(os.path.join(out, "gpu-check.json"), "w"), indent=2)
print(json.dumps({k: r[k] for k in ("gpu", "missing_libs", "tests", "cxr_bench", "cxr_train_1_epoch_224", "ratios")}, indent=1))
EOF
log "done in $(( $(date +%s) - START )) s; figures in $OUT/gpu-check.json"
