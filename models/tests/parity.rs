//! The networks and loaders against fixtures that PyTorch produced
//! (`scripts/make-fixtures.py`; see `tests/fixtures/README.md`).

use candle_core::{DType, Tensor, D};
use cxr_models::head::HeadKind;
use cxr_models::layers::{avg_pool2_ceil, max_pool_3x3_s2_p1};
use cxr_models::weights::{
    export_onnx, load_model, load_pretrained, read_tensors, save_model, ModelCard, WeightsError,
};
use cxr_models::{Arch, NetConfig, Network};
use std::collections::HashMap;

mod support;

use support::*;

/// bf16 activations with f32 master weights (the mixed-precision forward)
/// against PyTorch's f32 logits. Tolerance: 5e-2 relative (bf16 keeps 8 bits
/// of mantissa). CPU convolutions have no bf16 kernels: CUDA only.
#[test]
fn bf16_forward_is_close_to_pytorch_f32() {
    if dev().is_cpu() {
        eprintln!("SKIPPED: bf16 convolutions need CUDA (CXR_TEST_DEVICE=cuda)");
        return;
    }
    let net = loaded_w8("resnet18_w8.pth");
    let t = io("resnet18_w8_io.safetensors");
    let x = t["input"].to_dtype(DType::BF16).unwrap();
    let logits = net
        .forward_t(&x, false)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let e = rel_err(&logits, &t["eval_logits"]);
    assert!(e < 5e-2, "bf16 eval logits rel err {e}");
}

#[test]
fn pth_loader_gives_pytorch_logits() {
    check_eval_logits(&loaded_w8("resnet18_w8.pth"));
}

#[test]
fn safetensors_loader_gives_pytorch_logits() {
    let net = loaded_w8("resnet18_w8.safetensors");
    check_eval_logits(&net);
}

#[test]
fn onnx_import_gives_pytorch_logits() {
    check_eval_logits(&loaded_w8("resnet18_w8.onnx"));
}

#[test]
fn train_mode_forward_loss_gradients_and_running_stats_match_pytorch() {
    check_train_step();
}

#[test]
fn max_pool_and_avg_pool_match_pytorch_forward_and_backward() {
    let t = io("pool_io.safetensors");
    for (case, f) in [
        (
            "maxpool",
            max_pool_3x3_s2_p1 as fn(&Tensor) -> candle_core::Result<Tensor>,
        ),
        ("maxpool8", max_pool_3x3_s2_p1),
        ("avgpool", avg_pool2_ceil),
    ] {
        let x = candle_core::Var::from_tensor(&t[&format!("{case}.input")]).unwrap();
        let y = f(x.as_tensor()).unwrap();
        assert!(
            max_abs_diff(&y, &t[&format!("{case}.output")]) < 1e-6,
            "{case} forward"
        );
        let l = (y * &t[&format!("{case}.weight")])
            .unwrap()
            .sum_all()
            .unwrap();
        let g = l.backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap();
        let d = max_abs_diff(gx, &t[&format!("{case}.grad_input")]);
        assert!(d < 1e-5, "{case} gradient differs by {d}");
    }
}

#[test]
fn fastai_head_matches_pytorch() {
    let t = io("head_io.safetensors");
    let cfg = NetConfig {
        arch: Arch::Resnet18,
        widths: [8, 16, 32, 64],
        n_classes: 3,
        head: HeadKind::Fastai,
        head_hidden: 32,
    };
    let net = Network::new(cfg, &dev(), 0).unwrap();
    let mut n = 0;
    for (k, v) in &t {
        if k.starts_with("head.") && !k.ends_with("num_batches_tracked") {
            net.params().set(k, v).unwrap();
            n += 1;
        }
    }
    assert_eq!(n, 10);
    let out = net.head_t(&t["features"], false).unwrap();
    let d = max_abs_diff(&out, &t["eval_out"]);
    assert!(d < 1e-4, "head output differs by {d}");
}

#[test]
fn onnx_export_round_trips_through_the_importer() {
    let net = loaded_w8("resnet18_w8.pth");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    export_onnx(&net, 64, &path).unwrap();
    let back = loaded_w8_from(&path);
    let t = io("resnet18_w8_io.safetensors");
    let a = net.forward_t(&t["input"], false).unwrap();
    let b = back.forward_t(&t["input"], false).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-4);
}

fn loaded_w8_from(path: &std::path::Path) -> Network {
    let net = Network::new(w8_config(), &dev(), 1).unwrap();
    load_pretrained(&net, path).unwrap();
    net
}

#[test]
fn wrong_architecture_and_shape_mismatch_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A ResNet34-like file: a third block in layer1.
    let mut tensors: HashMap<String, Tensor> = read_tensors(&fixture("resnet18_w8.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    tensors.insert(
        "layer1.2.conv1.weight".into(),
        Tensor::zeros((8, 8, 3, 3), DType::F32, &dev()).unwrap(),
    );
    let p34 = dir.path().join("r34.safetensors");
    candle_core::safetensors::save(&tensors, &p34).unwrap();
    let net = Network::new(w8_config(), &dev(), 0).unwrap();
    let err = load_pretrained(&net, &p34).unwrap_err();
    assert!(
        matches!(err, WeightsError::WrongArchitecture { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("ResNet34"), "{err}");
    // Full-width network, narrow file.
    let wide = Network::new(
        NetConfig {
            widths: [64, 128, 256, 512],
            ..w8_config()
        },
        &dev(),
        0,
    )
    .unwrap();
    let err = load_pretrained(&wide, &fixture("resnet18_w8.pth")).unwrap_err();
    assert!(matches!(err, WeightsError::ShapeMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("conv1.weight") || err.to_string().contains("shape mismatch"),
        "{err}"
    );
    // Missing file and unknown extension.
    let err = load_pretrained(&net, &dir.path().join("nope.pth")).unwrap_err();
    assert!(err.to_string().contains("no such file"), "{err}");
    std::fs::write(dir.path().join("w.txt"), "x").unwrap();
    assert!(matches!(
        load_pretrained(&net, &dir.path().join("w.txt")),
        Err(WeightsError::UnknownExtension(_))
    ));
    // Garbage in a .pth.
    std::fs::write(dir.path().join("bad.pth"), "not a zip").unwrap();
    assert!(load_pretrained(&net, &dir.path().join("bad.pth")).is_err());
}

#[test]
fn pretrained_body_gets_a_new_fastai_head() {
    let cfg = NetConfig {
        n_classes: 2,
        head: HeadKind::Fastai,
        head_hidden: 32,
        ..w8_config()
    };
    let net = Network::new(cfg, &dev(), 0).unwrap();
    let r = load_pretrained(&net, &fixture("resnet18_w8.pth")).unwrap();
    assert!(
        r.new.iter().any(|n| n == "head.4.weight"),
        "{}",
        r.summary()
    );
    assert!(
        r.ignored.iter().any(|n| n == "fc.weight"),
        "{}",
        r.summary()
    );
    let t = io("resnet18_w8_io.safetensors");
    let p = net.predict_proba(&t["input"]).unwrap();
    assert_eq!(p.dims(), &[4, 2]);
}

#[test]
fn saved_model_loads_back_identically() {
    let net = loaded_w8("resnet18_w8.pth");
    let dir = tempfile::tempdir().unwrap();
    let spec = cxr_models::preprocess::PreprocessSpec::new(
        64,
        cxr_models::preprocess::Normalize::gray(0.5, 0.25),
    );
    let card = ModelCard::new(
        net.config.clone(),
        vec!["A".into(), "B".into(), "C".into()],
        spec,
    );
    save_model(&net, &card, dir.path()).unwrap();
    let (back, card2) = load_model(dir.path(), &dev()).unwrap();
    assert_eq!(card, card2);
    let t = io("resnet18_w8_io.safetensors");
    let a = net.forward_t(&t["input"], false).unwrap();
    let b = back.forward_t(&t["input"], false).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    // A truncated weights file is an error, not a panic.
    let w = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    assert!(load_model(dir.path(), &dev()).is_err());
}

#[test]
fn batch_norm_trains_in_half_precision_with_f32_statistics() {
    // candle's CPU convolutions have no bf16/f16 kernels (half precision runs on
    // CUDA); the batch norm itself is checked here in bf16 and f16 on the CPU.
    use cxr_models::layers::BatchNorm;
    use cxr_models::params::ParamStore;
    let x = Tensor::randn(0f32, 1.0, (8, 4, 5, 5), &dev()).unwrap();
    let want = {
        let mut ps = ParamStore::new(&dev(), 0);
        let bn = BatchNorm::new(&mut ps, "bn", 4, false).unwrap();
        (
            bn.forward_t(&x, true).unwrap(),
            bn.running_var.as_tensor().clone(),
        )
    };
    for dt in [DType::BF16, DType::F16] {
        let mut ps = ParamStore::new(&dev(), 0);
        let bn = BatchNorm::new(&mut ps, "bn", 4, false).unwrap();
        let xh = candle_core::Var::from_tensor(&x.to_dtype(dt).unwrap()).unwrap();
        let y = bn.forward_t(xh.as_tensor(), true).unwrap();
        assert_eq!(y.dtype(), dt);
        let e = rel_err(&y.to_dtype(DType::F32).unwrap(), &want.0);
        assert!(e < 0.02, "{dt:?} output rel err {e}");
        // Running statistics stay f32 and match the f32 run closely.
        assert_eq!(bn.running_var.dtype(), DType::F32);
        assert!(rel_err(bn.running_var.as_tensor(), &want.1) < 0.01);
        let g = y
            .to_dtype(DType::F32)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(bn.weight.as_tensor()).is_some());
        assert!(g.get(xh.as_tensor()).is_some());
        let _ = D::Minus1;
    }
}
