//! Per-op timings of cxr's CPU kernels against plain candle on ResNet18's
//! shapes (batch 16 at 128 px by default): convolution forward, convolution
//! forward + backward, batch norm + ReLU forward + backward, the stem max pool,
//! the fused inference stem against its separate ops, and inference-mode conv + BN + residual + ReLU (forward only: "fwd+bwd"
//! there is the plain eval-mode conv, BN, add and ReLU with cxr's kernels).
//!
//! cargo run --release -p cxr-models --example bench_kernels [BATCH] [SIZE] [ITERS]

use candle_core::{Device, Result, Tensor, Var};
use cxr_models::kernels;
use cxr_models::layers::{conv_bn, conv_bn_relu_max_pool, max_pool_3x3_s2_p1, BatchNorm, Conv2d};
use cxr_models::params::Init;
use cxr_models::params::ParamStore;
use std::sync::Arc;
use std::time::Instant;

fn median_ms(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t: Vec<f64> = Vec::with_capacity(iters);
    for _ in 0..iters {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// One table row: `row[0]` with cxr's kernels, `row[1]` with candle's, each (fwd, fwd+bwd) ms.
fn print_row(name: &str, row: &[(f64, f64)]) {
    let (cxr, candle) = (row[0], row[1]);
    println!(
        "{:<20}{:>12.2}{:>12.2}{:>8.1}{:>14.2}{:>14.2}{:>8.1}",
        name,
        cxr.0,
        candle.0,
        candle.0 / cxr.0,
        cxr.1,
        candle.1,
        candle.1 / cxr.1
    );
}

/// The best time (ms) of each op over `iters` rounds, each round running
/// every op with `toggle(true)` then `toggle(false)`: `[op 0 on, op 0 off,
/// op 1 on, ...]`. Leaves the toggle on.
fn min_on_off(iters: usize, toggle: fn(bool), ops: &[&dyn Fn() -> Result<()>]) -> Result<Vec<f64>> {
    let mut best = vec![f64::MAX; 2 * ops.len()];
    for _ in 0..iters {
        for (i, on) in [true, false].into_iter().enumerate() {
            toggle(on);
            for (j, op) in ops.iter().enumerate() {
                let s = Instant::now();
                op()?;
                best[2 * j + i] = best[2 * j + i].min(s.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    toggle(true);
    Ok(best)
}

/// One row of [`min_on_off`] times: per op, on, off and off / on.
fn print_on_off(name: &str, best: &[f64]) {
    let mut line = format!("{name:<20}");
    for pair in best.chunks_exact(2) {
        line += &format!(
            "{:>12.2}{:>12.2}{:>8.2}",
            pair[0],
            pair[1],
            pair[1] / pair[0]
        );
    }
    println!("{line}");
}

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, size, iters) = (
        args.first().copied().unwrap_or(16),
        args.get(1).copied().unwrap_or(128),
        args.get(2).copied().unwrap_or(5),
    );
    let dev = Device::Cpu;
    // (name, c_in, c_out, k, stride, pad, input size)
    let s = size;
    let convs = [
        ("conv1 7x7/2", 3, 64, 7, 2, 3, s),
        ("layer1 3x3", 64, 64, 3, 1, 1, s / 4),
        ("layer2 3x3/2", 64, 128, 3, 2, 1, s / 4),
        ("layer2 3x3", 128, 128, 3, 1, 1, s / 8),
        ("layer2 down 1x1/2", 64, 128, 1, 2, 0, s / 4),
        ("layer3 3x3", 256, 256, 3, 1, 1, s / 16),
        ("layer4 3x3", 512, 512, 3, 1, 1, s / 32),
    ];
    {
        println!(
            "stem, kept (frozen) weights (ms, min of {iters} interleaved): fused conv+bn+relu+max pool vs conv+bn+relu then max pool"
        );
        let mut ps = ParamStore::new(&dev, 0);
        let conv = Conv2d::new(&mut ps, "c", 3, 64, 7, 2, 3, Init::KaimingNormal)?;
        let bn = BatchNorm::new(&mut ps, "bn", 64, false)?;
        let x = Tensor::randn(0f32, 1.0, (n, 3, s, s), &dev)?;
        let cache = Arc::new(kernels::FrozenWeights::new());
        let best = min_on_off(
            iters,
            kernels::set_fused_stem_enabled,
            &[&|| {
                kernels::inference_frozen(&cache, || conv_bn_relu_max_pool(&conv, &bn, &x, false))
                    .map(|_| ())
            }],
        )?;
        print_on_off("stem", &best);
    }
    println!("batch {n}, {size} px, median of {iters} (ms)");
    println!(
        "{:<20}{:>12}{:>12}{:>8}{:>14}{:>14}{:>8}",
        "op", "cxr fwd", "candle fwd", "x", "cxr fwd+bwd", "candle f+b", "x"
    );
    for (name, ci, co, k, st, p, hw) in convs {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, ci, hw, hw), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (co, ci, k, k), &dev)?)?;
        let mut row = Vec::new();
        for on in [true, false] {
            kernels::set_enabled(on);
            let input_grad = ci != 3;
            let fwd = median_ms(iters, || {
                kernels::conv2d(x.as_tensor(), w.as_tensor(), st, p, input_grad).map(|_| ())
            })?;
            let both = median_ms(iters, || {
                let y = kernels::conv2d(x.as_tensor(), w.as_tensor(), st, p, input_grad)?;
                y.sum_all()?.backward().map(|_| ())
            })?;
            row.push((fwd, both));
        }
        print_row(name, &row);
    }
    println!(
        "conv path (ms, min of {iters} interleaved): direct vs GEMM, forward, input gradient and weight gradient"
    );
    kernels::set_enabled(true);
    kernels::set_winograd_enabled(false);
    for (name, ci, co, k, st, p, hw) in convs {
        let x = Tensor::randn(0f32, 1.0, (n, ci, hw, hw), &dev)?;
        let w = Tensor::randn(0f32, 0.1, (co, ci, k, k), &dev)?;
        let dy = kernels::conv2d(&x, &w, st, p, false)?;
        let best = min_on_off(
            iters,
            kernels::set_direct_enabled,
            &[
                &|| kernels::conv2d(&x, &w, st, p, false).map(|_| ()),
                &|| kernels::conv_input_grad(&dy, &w, st, p, hw, hw).map(|_| ()),
                &|| kernels::conv_weight_grad(&dy, &x, st, p, (k, k)).map(|_| ()),
            ],
        )?;
        print_on_off(name, &best);
    }
    kernels::set_winograd_enabled(true);
    println!(
        "3x3 stride-1 (ms, min of {iters} interleaved): Winograd vs without it, forward and input gradient"
    );
    for (name, ci, co, k, st, p, hw) in convs {
        if (k, st) != (3, 1) {
            continue;
        }
        let x = Tensor::randn(0f32, 1.0, (n, ci, hw, hw), &dev)?;
        let w = Tensor::randn(0f32, 0.1, (co, ci, k, k), &dev)?;
        let dy = kernels::conv2d(&x, &w, st, p, false)?;
        let best = min_on_off(
            iters,
            kernels::set_winograd_enabled,
            &[
                &|| kernels::conv2d(&x, &w, st, p, false).map(|_| ()),
                &|| kernels::conv_input_grad(&dy, &w, st, p, hw, hw).map(|_| ()),
            ],
        )?;
        print_on_off(name, &best);
    }
    println!(
        "3x3 stride-1, kept (frozen) weights (ms, min of {iters} interleaved): Winograd vs without it, fused conv+bn+add+relu"
    );
    for (name, c, hw) in [
        ("layer1 3x3", 64, s / 4),
        ("layer2 3x3", 128, s / 8),
        ("layer3 3x3", 256, s / 16),
        ("layer4 3x3", 512, s / 32),
    ] {
        let x = Tensor::randn(0f32, 1.0, (n, c, hw, hw), &dev)?;
        let w = Tensor::randn(0f32, 0.1, (c, c, 3, 3), &dev)?;
        let (scale, shift) = (vec![1.0f32; c], vec![0.0f32; c]);
        let cache = Arc::new(kernels::FrozenWeights::new());
        let best = min_on_off(
            iters,
            kernels::set_winograd_enabled,
            &[&|| {
                kernels::inference_frozen(&cache, || {
                    kernels::conv2d_affine(
                        &x,
                        &w,
                        1,
                        1,
                        scale.clone(),
                        shift.clone(),
                        Some(&x),
                        true,
                    )
                })
                .map(|_| ())
            }],
        )?;
        print_on_off(name, &best);
    }
    println!(
        "kept (frozen) weights (ms, min of {iters} interleaved): channels-on-lanes kernel vs without it, fused conv+bn+relu"
    );
    for (name, ci, co, k, st, p, hw) in convs {
        if ci == 3 || (k, st) == (3, 1) && hw > 14 {
            continue;
        }
        let x = Tensor::randn(0f32, 1.0, (n, ci, hw, hw), &dev)?;
        let w = Tensor::randn(0f32, 0.1, (co, ci, k, k), &dev)?;
        let (scale, shift) = (vec![1.0f32; co], vec![0.0f32; co]);
        let cache = Arc::new(kernels::FrozenWeights::new());
        let best = min_on_off(
            iters,
            kernels::set_lanes_enabled,
            &[&|| {
                kernels::inference_frozen(&cache, || {
                    kernels::conv2d_affine(&x, &w, st, p, scale.clone(), shift.clone(), None, true)
                })
                .map(|_| ())
            }],
        )?;
        print_on_off(name, &best);
    }
    for (name, c, hw) in [
        ("bn+relu layer1", 64, s / 4),
        ("bn+relu layer3", 256, s / 16),
    ] {
        let mut ps = ParamStore::new(&dev, 0);
        let bn = BatchNorm::new(&mut ps, "bn", c, false)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, c, hw, hw), &dev)?)?;
        let mut row = Vec::new();
        for on in [true, false] {
            kernels::set_enabled(on);
            let fwd = median_ms(iters, || bn.forward_relu_t(x.as_tensor(), true).map(|_| ()))?;
            let both = median_ms(iters, || {
                bn.forward_relu_t(x.as_tensor(), true)?
                    .sum_all()?
                    .backward()
                    .map(|_| ())
            })?;
            row.push((fwd, both));
        }
        print_row(name, &row);
    }
    {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, 64, s / 2, s / 2), &dev)?)?;
        let mut row = Vec::new();
        for on in [true, false] {
            kernels::set_enabled(on);
            let fwd = median_ms(iters, || max_pool_3x3_s2_p1(x.as_tensor()).map(|_| ()))?;
            let both = median_ms(iters, || {
                max_pool_3x3_s2_p1(x.as_tensor())?
                    .sum_all()?
                    .backward()
                    .map(|_| ())
            })?;
            row.push((fwd, both));
        }
        print_row("max pool stem", &row);
    }
    kernels::set_enabled(true);
    println!("inference block conv (ms): fused conv+bn+add+relu vs separate ops, both cxr kernels");
    for (name, c, hw) in [("layer1 3x3", 64, s / 4), ("layer3 3x3", 256, s / 16)] {
        let mut ps = ParamStore::new(&dev, 0);
        let conv = Conv2d::new(&mut ps, "c", c, c, 3, 1, 1, Init::KaimingNormal)?;
        let bn = BatchNorm::new(&mut ps, "bn", c, false)?;
        let x = Tensor::randn(0f32, 1.0, (n, c, hw, hw), &dev)?;
        let fused = median_ms(iters, || {
            kernels::inference(|| conv_bn(&conv, &bn, &x, false, Some(&x), true)).map(|_| ())
        })?;
        let separate = median_ms(iters, || {
            conv_bn(&conv, &bn, &x, false, Some(&x), true).map(|_| ())
        })?;
        println!(
            "{:<20}{:>12.2}{:>12.2}{:>8.2}",
            name,
            fused,
            separate,
            separate / fused
        );
    }
    Ok(())
}
