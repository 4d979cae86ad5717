#!/usr/bin/env python3
"""Regenerates the PyTorch-made test fixtures in models/tests/fixtures/.

Developer tool only; CI never runs it (the fixtures are committed). Needs the venv
made by scripts/setup-torch-venv.sh:

    scripts/setup-torch-venv.sh
    ~/.cache/cxr/torch-venv/bin/python scripts/make-fixtures.py [OUT_DIR]

Idempotent: fixed seeds, files overwritten in place. Everything is f32 except
class targets and BN `num_batches_tracked` (int64, as PyTorch stores them).
"""
import inspect
import os
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import safetensors
import safetensors.torch
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import BasicBlock, ResNet

REPO = Path(__file__).resolve().parent.parent
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "models" / "tests" / "fixtures"
WIDTHS = (8, 16, 32, 64)
N_CLASSES = 3

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def save_st(tensors, path):
    """safetensors.torch.save_file with contiguous, detached, CPU tensors."""
    out = OrderedDict((k, v.detach().cpu().contiguous().clone()) for k, v in tensors.items())
    safetensors.torch.save_file(out, str(path))


class SmallResNet18(ResNet):
    """torchvision's ResNet (BasicBlock, [2,2,2,2]) with widths WIDTHS.

    Built by torchvision's own ResNet.__init__ then rebuilt with its own
    _make_layer, so module/parameter names are exactly torchvision's."""

    def __init__(self, widths=WIDTHS, num_classes=N_CLASSES):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        w0 = widths[0]
        # Same constructors as ResNet.__init__, narrower. Re-assigning an existing
        # attribute keeps its position in _modules, so state_dict order is unchanged.
        self.inplanes = w0
        self.conv1 = nn.Conv2d(3, w0, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(w0)
        self.layer1 = self._make_layer(BasicBlock, widths[0], 2)
        self.layer2 = self._make_layer(BasicBlock, widths[1], 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, widths[2], 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, widths[3], 2, stride=2)
        self.fc = nn.Linear(widths[3] * BasicBlock.expansion, num_classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def reference_resnet_keys():
    """Names of torchvision's real resnet18 (no weights downloaded) for a structural check."""
    ref = torchvision.models.resnet18(weights=None, num_classes=N_CLASSES)
    return [(k, v.dim(), v.dtype) for k, v in ref.state_dict().items()]


def onnx_export(model, x, path):
    kwargs = dict(
        opset_version=13,
        do_constant_folding=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # classic TorchScript exporter: folds BN into Conv
    torch.onnx.export(model, (x,), str(path), **kwargs)


def make_resnet(summary):
    torch.manual_seed(0)
    model = SmallResNet18()
    randomize_bn(model)
    model.eval()

    sd = model.state_dict()
    got = [(k, v.dim(), v.dtype) for k, v in sd.items()]
    assert got == reference_resnet_keys(), "names/ranks/dtypes differ from torchvision resnet18"
    sd_copy = OrderedDict((k, v.detach().clone()) for k, v in sd.items())

    torch.save(sd_copy, OUT / "resnet18_w8.pth")
    save_st(sd_copy, OUT / "resnet18_w8.safetensors")
    summary["num_batches_tracked dtype"] = str(sd_copy["bn1.num_batches_tracked"].dtype)

    x = torch.randn(4, 3, 64, 64)
    target = torch.randint(0, N_CLASSES, (4,), dtype=torch.int64)

    with torch.no_grad():
        eval_logits = model.eval()(x)

    onnx_export(model.eval(), x, OUT / "resnet18_w8.onnx")
    # The export must not have touched the buffers.
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd_copy[k]), f"export changed {k}"
    m = onnx.load(str(OUT / "resnet18_w8.onnx"))
    onnx.checker.check_model(m)
    ops = []
    for n in m.graph.node:
        if n.op_type not in ops:
            ops.append(n.op_type)
    summary["onnx ops"] = ops
    summary["onnx BN folded"] = "BatchNormalization" not in ops
    summary["onnx opset"] = [(o.domain or "ai.onnx", o.version) for o in m.opset_import]

    model.train()
    model.zero_grad(set_to_none=True)
    train_logits = model(x)
    train_loss = F.cross_entropy(train_logits, target).reshape(1)
    train_loss.backward()

    grads = [
        "conv1.weight", "bn1.weight", "layer1.0.bn1.weight", "layer1.0.conv2.weight",
        "layer3.0.downsample.0.weight", "layer4.1.conv2.weight", "fc.weight", "fc.bias",
    ]
    params = dict(model.named_parameters())
    bufs = dict(model.named_buffers())
    io = OrderedDict()
    io["input"] = x
    io["eval_logits"] = eval_logits
    io["target"] = target
    io["train_logits"] = train_logits
    io["train_loss"] = train_loss
    for g in grads:
        io["grad." + g] = params[g].grad
    for b in ["bn1.running_mean", "bn1.running_var",
              "layer4.1.bn2.running_mean", "layer4.1.bn2.running_var"]:
        io["after." + b] = bufs[b]
    assert bufs["bn1.num_batches_tracked"].item() == 1
    save_st(io, OUT / "resnet18_w8_io.safetensors")

    # Self-check: onnxruntime on the exported graph vs PyTorch eval logits.
    try:
        import onnxruntime as ort
        sess = ort.InferenceSession(str(OUT / "resnet18_w8.onnx"), providers=["CPUExecutionProvider"])
        (y,) = sess.run(None, {"input": x.numpy()})
        summary["onnx vs torch max abs diff"] = float(np.abs(y - eval_logits.numpy()).max())
    except ImportError:
        pass
    summary["train_loss"] = float(train_loss.item())
    summary["resnet params"] = sum(p.numel() for p in model.parameters())


def make_pool(summary):
    torch.manual_seed(0)
    io = OrderedDict()

    def case(prefix, shape, fn):
        x = torch.randn(*shape, requires_grad=True)
        out = fn(x)
        w = torch.randn(out.shape)
        (gx,) = torch.autograd.grad((out * w).sum(), x)
        io[prefix + ".input"] = x
        io[prefix + ".weight"] = w
        io[prefix + ".output"] = out
        io[prefix + ".grad_input"] = gx

    maxpool = lambda x: F.max_pool2d(x, 3, stride=2, padding=1)
    case("maxpool", (2, 3, 9, 9), maxpool)
    case("maxpool8", (2, 3, 8, 8), maxpool)
    case("avgpool", (2, 3, 7, 7),
         lambda x: F.avg_pool2d(x, 2, stride=2, ceil_mode=True, count_include_pad=False))
    save_st(io, OUT / "pool_io.safetensors")
    summary["pool shapes"] = {k: list(v.shape) for k, v in io.items() if k.endswith(".output")}


class AdaptiveConcatPool2d(nn.Module):
    """fastai's: cat of adaptive max then avg pool."""

    def __init__(self, size=1):
        super().__init__()
        self.ap, self.mp = nn.AdaptiveAvgPool2d(size), nn.AdaptiveMaxPool2d(size)

    def forward(self, x):
        return torch.cat([self.mp(x), self.ap(x)], 1)


def make_head(summary):
    torch.manual_seed(0)
    nf = 64
    head = nn.Sequential(
        AdaptiveConcatPool2d(),          # 0
        nn.Flatten(),                    # 1
        nn.BatchNorm1d(2 * nf),          # 2
        nn.Dropout(0.25),                # 3
        nn.Linear(2 * nf, 32, bias=False),  # 4
        nn.ReLU(inplace=True),           # 5
        nn.BatchNorm1d(32),              # 6
        nn.Dropout(0.5),                 # 7
        nn.Linear(32, N_CLASSES, bias=False),  # 8
    )
    randomize_bn(head)
    head.eval()
    features = torch.randn(4, nf, 3, 3)
    with torch.no_grad():
        eval_out = head(features)
    io = OrderedDict(("head." + k, v) for k, v in head.state_dict().items())
    io["features"] = features
    io["eval_out"] = eval_out
    save_st(io, OUT / "head_io.safetensors")
    summary["head keys"] = [k for k in io if k.startswith("head.")]


def describe(path):
    with safetensors.safe_open(str(path), framework="numpy") as f:
        rows = []
        for k in f.keys():
            t = f.get_tensor(k)
            rows.append(f"  - `{k}` {list(t.shape)} {t.dtype}")
    return "\n".join(rows)


def write_readme(summary):
    v = (f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
         f"onnx {onnx.__version__}, safetensors {safetensors.__version__}, numpy {np.__version__}")
    text = f"""# PyTorch-made test fixtures

Made by `scripts/make-fixtures.py` (run once by a developer, never by CI):

    scripts/setup-torch-venv.sh
    ~/.cache/cxr/torch-venv/bin/python scripts/make-fixtures.py

with {v}. Seeds are fixed (`torch.manual_seed(0)`); all tensors f32 unless noted.

## The model

A torchvision `ResNet(BasicBlock, [2,2,2,2])` with channel widths {list(WIDTHS)} instead of
(64,128,256,512) and `fc = Linear(64, 3)`: parameter names are exactly torchvision's resnet18
(`conv1`, `bn1`, `layer{{1..4}}.{{0,1}}.{{conv1,bn1,conv2,bn2}}`, `layer{{2,3,4}}.0.downsample.{{0,1}}`, `fc`).
All BatchNorm parameters and buffers are randomised: weight ~ U(0.5,1.5), bias ~ N(0,0.1),
running_mean ~ N(0,0.1), running_var ~ U(0.5,1.5). BN eps 1e-5, momentum 0.1.

- `resnet18_w8.pth`: `torch.save(model.state_dict())` (zip format), including
  `*.num_batches_tracked` ({summary['num_batches_tracked dtype']}, value 0).
- `resnet18_w8.safetensors`: the same state dict (same keys, `num_batches_tracked` as I64).
- `resnet18_w8.onnx`: classic TorchScript exporter, opset 13, `do_constant_folding=True`, eval mode;
  input `input` [batch,3,64,64] (only batch dynamic), output `logits` [batch,3]. BatchNorm folded into Conv:
  {summary['onnx BN folded']}. Node op types: {', '.join(summary['onnx ops'])}.
- `resnet18_w8_io.safetensors`:
{describe(OUT / 'resnet18_w8_io.safetensors')}

  `eval_logits` = model.eval()(input), computed before any train-mode forward.
  `train_logits` = model.train()(input) (batch statistics); `train_loss` = mean cross-entropy
  vs `target` (int64). `grad.*` are the gradients after `train_loss.backward()`.
  `after.*` are BN running buffers after that one train-mode forward (momentum 0.1,
  running_var updated with the unbiased batch variance).

## `pool_io.safetensors`

For each case: `input` (x ~ N(0,1)), `weight` (w ~ N(0,1), shape of the output), `output`,
`grad_input` = d(sum(output * w))/d input.

- `maxpool.*`: `F.max_pool2d(x, 3, stride=2, padding=1)` on [2,3,9,9].
- `maxpool8.*`: the same on [2,3,8,8].
- `avgpool.*`: `F.avg_pool2d(x, 2, stride=2, ceil_mode=True, count_include_pad=False)` on [2,3,7,7]
  (fastai's ResNet-D shortcut pool).

{describe(OUT / 'pool_io.safetensors')}

## `head_io.safetensors`

fastai's transfer head (`create_head(64, 3)` layout, flat Sequential indices) on features [4,64,3,3]:
0 AdaptiveConcatPool2d (`cat([maxpool, avgpool], 1)`), 1 Flatten, 2 BatchNorm1d(128),
3 Dropout(0.25), 4 Linear(128,32,bias=False), 5 ReLU, 6 BatchNorm1d(32), 7 Dropout(0.5),
8 Linear(32,3,bias=False). BN parameters/buffers randomised as above. `features` ~ N(0,1),
`eval_out` = head.eval()(features).

{describe(OUT / 'head_io.safetensors')}
"""
    (OUT / "README.md").write_text(text)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    summary = OrderedDict()
    make_resnet(summary)
    make_pool(summary)
    make_head(summary)
    write_readme(summary)
    print(f"torch {torch.__version__} torchvision {torchvision.__version__} onnx {onnx.__version__}")
    for k, v in summary.items():
        print(f"{k}: {v}")
    total = 0
    for p in sorted(OUT.iterdir()):
        total += p.stat().st_size
        print(f"{p.stat().st_size:>10}  {p.relative_to(REPO) if p.is_relative_to(REPO) else p}")
    print(f"{total:>10}  total")


if __name__ == "__main__":
    main()
