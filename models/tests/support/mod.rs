//! What the fixture tests share: the device under test, the fixtures, the
//! error measures, and the checks against PyTorch's logits and gradients.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use cxr_models::head::HeadKind;
use cxr_models::weights::load_pretrained;
use cxr_models::{Arch, NetConfig, Network};
use std::collections::HashMap;
use std::path::PathBuf;

/// The device under test: `CXR_TEST_DEVICE=cuda` (or `cuda:N`) runs the same
/// checks on a GPU (scripts/gpu-check.sh does); default the CPU.
pub fn dev() -> Device {
    // One device for the whole binary: every Device::new_cuda is a distinct
    // device, and tensors of two of them cannot be combined.
    static DEV: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEV.get_or_init(|| match std::env::var("CXR_TEST_DEVICE").as_deref() {
        Ok(d) if d.starts_with("cuda") => {
            let n = d
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Device::new_cuda(n)
                .expect("CXR_TEST_DEVICE asks for CUDA, which this build or machine lacks")
        }
        _ => Device::Cpu,
    })
    .clone()
}

/// A tolerance stated for the CPU, loosened to `gpu` on CUDA (cuDNN/cuBLAS
/// pick other summation orders and may use TF32).
pub fn tol(cpu: f32, gpu: f32) -> f32 {
    if dev().is_cuda() {
        gpu
    } else {
        cpu
    }
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn io(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name), &dev()).expect("fixture")
}

pub fn w8_config() -> NetConfig {
    NetConfig {
        arch: Arch::Resnet18,
        widths: [8, 16, 32, 64],
        n_classes: 3,
        head: HeadKind::Linear,
        head_hidden: 512,
    }
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    max_abs_diff(a, b) / scale.max(1e-12)
}

pub fn loaded_w8(file: &str) -> Network {
    let net = Network::new(w8_config(), &dev(), 0).unwrap();
    let report = load_pretrained(&net, &fixture(file)).unwrap();
    assert!(
        report.new.is_empty(),
        "fc has the same shape, so nothing is new: {}",
        report.summary()
    );
    assert!(report.loaded.len() > 100, "{}", report.summary());
    net
}

pub fn check_eval_logits(net: &Network) {
    let t = io("resnet18_w8_io.safetensors");
    let logits = net.forward_t(&t["input"], false).unwrap();
    let d = max_abs_diff(&logits, &t["eval_logits"]);
    assert!(
        d < tol(1e-4, 5e-3),
        "eval logits differ from PyTorch by {d}"
    );
    // The same in inference mode, where conv + BN (+ residual, ReLU) run fused on the CPU.
    let fused = cxr_models::kernels::inference(|| net.forward_t(&t["input"], false)).unwrap();
    let d = max_abs_diff(&fused, &t["eval_logits"]);
    assert!(
        d < tol(1e-4, 5e-3),
        "inference-mode logits differ from PyTorch by {d}"
    );
}

/// ResNet18 (widths 8) in train mode against PyTorch: logits, loss, the
/// gradients and the running statistics after the step.
pub fn check_train_step() {
    let net = loaded_w8("resnet18_w8.pth");
    let t = io("resnet18_w8_io.safetensors");
    let logits = net.forward_t(&t["input"], true).unwrap();
    let e = rel_err(&logits, &t["train_logits"]);
    assert!(e < tol(1e-3, 1e-2), "train logits rel err {e}");
    let target = t["target"].to_dtype(DType::U32).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &target).unwrap();
    let e = rel_err(&loss.reshape(1).unwrap(), &t["train_loss"]);
    assert!(e < 1e-3, "loss rel err {e}");
    let grads = loss.backward().unwrap();
    let mut checked = 0;
    for (key, want) in &t {
        if let Some(name) = key.strip_prefix("grad.") {
            let var = &net.params().get(name).unwrap().var;
            let got = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let e = rel_err(got, want);
            assert!(e < tol(1e-3, 2e-2), "gradient of {name}: rel err {e}");
            checked += 1;
        }
        if let Some(name) = key.strip_prefix("after.") {
            let got = net.params().get(name).unwrap().var.as_tensor().clone();
            let e = rel_err(&got, want);
            assert!(e < 1e-4, "running stat {name}: rel err {e}");
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
}
