//! Both networks train end to end: each overfits 16 generated images.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use cxr_models::head::HeadKind;
use cxr_models::{Arch, NetConfig, Network};

/// 16 images of 32x32: class 1 has a bright blob in the lower right, class 0 in
/// the upper left, both over a noisy background.
fn images() -> (Tensor, Tensor) {
    let (n, s) = (16usize, 32usize);
    let mut data = vec![0f32; n * 3 * s * s];
    let mut labels = Vec::new();
    let mut seed = 7u32;
    for i in 0..n {
        let label = (i % 2) as u32;
        labels.push(label);
        let (cx, cy) = if label == 1 { (22.0, 22.0) } else { (9.0, 9.0) };
        for y in 0..s {
            for x in 0..s {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
                let v = (-d2 / 20.0).exp() * 2.0 + noise * 0.5;
                for c in 0..3 {
                    data[((i * 3 + c) * s + y) * s + x] = v;
                }
            }
        }
    }
    (
        Tensor::from_vec(data, (n, 3, s, s), &Device::Cpu).unwrap(),
        Tensor::from_vec(labels, n, &Device::Cpu).unwrap(),
    )
}

fn overfit(arch: Arch, head: HeadKind) -> (usize, f32) {
    let cfg = NetConfig {
        arch,
        widths: [16, 32, 64, 128],
        n_classes: 2,
        head,
        head_hidden: 64,
    };
    let net = Network::new(cfg, &Device::Cpu, 42).unwrap();
    let vars: Vec<_> = net
        .param_groups()
        .into_iter()
        .flatten()
        .map(|p| p.var)
        .collect();
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr: 3e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let (x, y) = images();
    for step in 1..=60 {
        let logits = net.forward_t(&x, true).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
        opt.backward_step(&loss).unwrap();
        let pred = net.forward_t(&x, false).unwrap().argmax(D::Minus1).unwrap();
        let correct = pred
            .eq(&y)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        if correct == 16.0 && step >= 5 {
            return (step, loss.to_scalar::<f32>().unwrap());
        }
    }
    panic!("{arch} did not reach 100% train accuracy in 60 steps");
}

#[test]
fn xresnet18_overfits_16_images() {
    let (steps, loss) = overfit(Arch::Xresnet18, HeadKind::Linear);
    eprintln!("xresnet18: 100% after {steps} steps (loss {loss:.4})");
}

#[test]
fn resnet18_with_fastai_head_overfits_16_images() {
    let (steps, loss) = overfit(Arch::Resnet18, HeadKind::Fastai);
    eprintln!("resnet18: 100% after {steps} steps (loss {loss:.4})");
}
