//! The PyTorch fixtures under every `CXR_KERNELS` setting: everything on,
//! each algorithm turned off once, and candle's ops only. The settings are
//! process-wide, so this binary holds this one test.

mod support;

use cxr_models::kernels::{self, KernelSettings, Toggle};
use support::*;

/// Eval logits (plain, inference mode, a frozen model's prediction) and a
/// training step against PyTorch under each setting.
#[test]
fn parity_fixtures_pass_with_each_algorithm_turned_off() {
    let mut all = vec![KernelSettings::auto(), KernelSettings::candle()];
    all.extend(Toggle::ALL.map(|t| KernelSettings::auto().without(t)));
    for s in all {
        kernels::set_settings(s);
        eprintln!("CXR_KERNELS={s}");
        check_eval_logits(&loaded_w8("resnet18_w8.pth"));
        check_frozen_prediction();
        check_train_step();
    }
    kernels::set_settings(KernelSettings::auto());
}

/// A frozen model's probabilities (prepared weights kept, fused stem, hot
/// pool) against the softmax of PyTorch's eval logits.
fn check_frozen_prediction() {
    let t = io("resnet18_w8_io.safetensors");
    let net = loaded_w8("resnet18_w8.pth").freeze();
    let want = candle_nn::ops::softmax_last_dim(&t["eval_logits"]).expect("softmax");
    for _ in 0..2 {
        let p = net.predict_proba(&t["input"]).expect("prediction");
        let d = max_abs_diff(&p, &want);
        assert!(d < tol(1e-4, 5e-3), "frozen probabilities differ by {d}");
    }
}
