#!/usr/bin/env python3
"""One PyTorch or onnxruntime measurement, printed as one JSON line, the same
shape as `cxr bench`: used by scripts/bench-vs-pytorch.sh, which interleaves
runs of this with cxr's.

  bench_torch.py --engine torch|ort --arch resnet18 --mode infer|train --batch N --size N --iters N
"""
import argparse, json, os, statistics, sys, tempfile, time

p = argparse.ArgumentParser()
p.add_argument("--engine", choices=["torch", "ort"], required=True)
p.add_argument("--mode", choices=["infer", "train"], required=True)
p.add_argument("--batch", type=int, required=True)
p.add_argument("--size", type=int, required=True)
p.add_argument("--iters", type=int, default=10)
a = p.parse_args()

import torch, torchvision

threads = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
torch.set_num_threads(threads)
torch.manual_seed(0)
net = torchvision.models.resnet18(num_classes=2)
x = torch.randn(a.batch, 3, a.size, a.size)
times = []

if a.engine == "torch" and a.mode == "infer":
    net.eval()
    def step():
        with torch.inference_mode():
            torch.softmax(net(x), 1)
elif a.engine == "torch":
    net.train()
    y = torch.arange(a.batch) % 2
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.99), eps=1e-5)
    loss_fn = torch.nn.CrossEntropyLoss()
    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()
else:
    if a.mode != "infer":
        sys.exit("onnxruntime benchmarks inference only")
    import onnxruntime as ort
    net.eval()
    path = os.path.join(tempfile.mkdtemp(), "r18.onnx")
    torch.onnx.export(net, x, path, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}}, opset_version=13, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    def step():
        sess.run(None, {"x": xn})

step()  # warm-up
for _ in range(a.iters):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
med = statistics.median(times)
print(json.dumps({
    "engine": a.engine, "arch": "resnet18", "mode": a.mode, "batch": a.batch, "size": a.size,
    "iters": a.iters, "median_step_ms": round(med * 1e3, 2),
    "images_per_s": round(a.batch / med, 2), "min_step_ms": round(min(times) * 1e3, 2),
}))
