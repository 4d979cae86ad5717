#!/usr/bin/env python3
"""Cross-checks cxr's ONNX export against onnxruntime.

    python scripts/check_onnx.py OUT_DIR [--expected probs] [--tol 1e-4]

OUT_DIR holds `model.onnx` and `io.safetensors` (tensors `input` and the expected
output, `probs` by default, as computed by candle). Runs onnxruntime (CPU) on `input`,
compares its FIRST output (whatever its name) with the expected tensor, and prints one
JSON line. Exit 0 if ok, 1 if the model fails onnx.checker, the run fails, shapes differ,
or max |diff| >= tol.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--model", default="model.onnx")
    ap.add_argument("--io", default="io.safetensors")
    ap.add_argument("--expected", default="probs", help="key of the expected output in the io file")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    model_path = args.out_dir / args.model
    res = {"max_abs_diff": None, "ok": False, "onnxruntime": ort.__version__, "opset": None}
    try:
        model = onnx.load(str(model_path))
        res["opset"] = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        onnx.checker.check_model(str(model_path), full_check=True)

        io = load_file(str(args.out_dir / args.io))
        x = io["input"].astype(np.float32, copy=False)
        expected = io[args.expected]

        sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        inputs = sess.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"expected 1 graph input, got {[i.name for i in inputs]}")
        out_meta = sess.get_outputs()[0]
        res["input_name"] = inputs[0].name
        res["output_name"] = out_meta.name
        y = sess.run([out_meta.name], {inputs[0].name: x})[0]
        res["shape"] = list(y.shape)
        if y.shape != expected.shape:
            raise ValueError(f"output shape {list(y.shape)} != expected {list(expected.shape)}")
        if not np.all(np.isfinite(y)):
            raise ValueError("onnxruntime output has non-finite values")
        diff = float(np.max(np.abs(y.astype(np.float64) - expected.astype(np.float64))))
        res["max_abs_diff"] = diff
        res["ok"] = bool(diff < args.tol)
    except Exception as e:  # report in the JSON line, not as a traceback
        res["error"] = f"{type(e).__name__}: {e}"
        res["ok"] = False
    print(json.dumps(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
