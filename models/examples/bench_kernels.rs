//! Per-op timings of cxr's CPU kernels against plain candle on ResNet18's
//! shapes (batch 16 at 128 px by default): convolution forward, convolution
//! forward + backward, batch norm + ReLU forward + backward, the stem max pool,
//! the fused inference stem against its separate ops, and inference-mode conv + BN + residual + ReLU (forward only: "fwd+bwd"
//! there is the plain eval-mode conv, BN, add and ReLU with cxr's kernels).
//!
//! cargo run --release -p cxr-models --example bench_kernels [BATCH] [SIZE] [ITERS]

use candle_core::{Device, Result, Tensor, Var};
use cxr_models::kernels::{self, KernelSettings, Toggle};
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
/// every op with everything on (but `base`), then with `off` turned off too:
/// `[op 0 on, op 0 off, op 1 on, ...]`. Leaves `base` set.
fn min_on_off(
    iters: usize,
    (base, off): (KernelSettings, Toggle),
    ops: &[&dyn Fn() -> Result<()>],
) -> Result<Vec<f64>> {
    let mut best = vec![f64::MAX; 2 * ops.len()];
    for _ in 0..iters {
        for (i, on) in [true, false].into_iter().enumerate() {
            kernels::set_settings(if on { base } else { base.without(off) });
            for (j, op) in ops.iter().enumerate() {
                let s = Instant::now();
                op()?;
                best[2 * j + i] = best[2 * j + i].min(s.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    kernels::set_settings(base);
    Ok(best)
}

/// cxr's kernels (all on), or candle's ops.
fn set_kernels(on: bool) {
    kernels::set_settings(if on {
        KernelSettings::auto()
    } else {
        KernelSettings::candle()
    });
}

/// (name, c_in, c_out, k, stride, pad, input size)
type ConvCase = (&'static str, usize, usize, usize, usize, usize, usize);

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

/// The fused inference stem against its separate ops.
fn stem(dev: &Device, (n, size, iters): (usize, usize, usize)) -> Result<()> {
    let s = size;
    {
        println!(
            "stem, kept (frozen) weights (ms, min of {iters} interleaved): fused conv+bn+relu+max pool vs conv+bn+relu then max pool"
        );
        let mut ps = ParamStore::new(dev, 0);
        let conv = Conv2d::new(&mut ps, "c", 3, 64, 7, 2, 3, Init::KaimingNormal)?;
        let bn = BatchNorm::new(&mut ps, "bn", 64, false)?;
        let x = Tensor::randn(0f32, 1.0, (n, 3, s, s), dev)?;
        let cache = Arc::new(kernels::FrozenWeights::new());
        let best = min_on_off(
            iters,
            (KernelSettings::auto(), Toggle::Stem),
            &[&|| {
                kernels::inference_frozen(&cache, || conv_bn_relu_max_pool(&conv, &bn, &x, false))
                    .map(|_| ())
            }],
        )?;
        print_on_off("stem", &best);
    }
    Ok(())
}

/// Each convolution, forward and forward + backward, cxr against candle.
fn per_op(dev: &Device, (n, size, iters): (usize, usize, usize), convs: &[ConvCase]) -> Result<()> {
    println!("batch {n}, {size} px, median of {iters} (ms)");
    println!(
        "{:<20}{:>12}{:>12}{:>8}{:>14}{:>14}{:>8}",
        "op", "cxr fwd", "candle fwd", "x", "cxr fwd+bwd", "candle f+b", "x"
    );
    for &(name, ci, co, k, st, p, hw) in convs {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, ci, hw, hw), dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (co, ci, k, k), dev)?)?;
        let mut row = Vec::new();
        for on in [true, false] {
            set_kernels(on);
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
    Ok(())
}

/// The direct kernel against the GEMM paths (Winograd off).
fn direct(dev: &Device, (n, _, iters): (usize, usize, usize), convs: &[ConvCase]) -> Result<()> {
    println!(
        "conv path (ms, min of {iters} interleaved): direct vs GEMM, forward, input gradient and weight gradient"
    );
    kernels::set_settings(KernelSettings::auto().without(Toggle::Winograd));
    for &(name, ci, co, k, st, p, hw) in convs {
        let x = Tensor::randn(0f32, 1.0, (n, ci, hw, hw), dev)?;
        let w = Tensor::randn(0f32, 0.1, (co, ci, k, k), dev)?;
        let dy = kernels::conv2d(&x, &w, st, p, false)?;
        let best = min_on_off(
            iters,
            (
                KernelSettings::auto().without(Toggle::Winograd),
                Toggle::Direct,
            ),
            &[
                &|| kernels::conv2d(&x, &w, st, p, false).map(|_| ()),
                &|| kernels::conv_input_grad(&dy, &w, st, p, hw, hw).map(|_| ()),
                &|| kernels::conv_weight_grad(&dy, &x, st, p, (k, k)).map(|_| ()),
            ],
        )?;
        print_on_off(name, &best);
    }
    set_kernels(true);
    Ok(())
}

/// Winograd against without it, per call.
fn winograd(dev: &Device, (n, _, iters): (usize, usize, usize), convs: &[ConvCase]) -> Result<()> {
    println!(
        "3x3 stride-1 (ms, min of {iters} interleaved): Winograd vs without it, forward and input gradient"
    );
    for &(name, ci, co, k, st, p, hw) in convs {
        if (k, st) != (3, 1) {
            continue;
        }
        let x = Tensor::randn(0f32, 1.0, (n, ci, hw, hw), dev)?;
        let w = Tensor::randn(0f32, 0.1, (co, ci, k, k), dev)?;
        let dy = kernels::conv2d(&x, &w, st, p, false)?;
        let best = min_on_off(
            iters,
            (KernelSettings::auto(), Toggle::Winograd),
            &[
                &|| kernels::conv2d(&x, &w, st, p, false).map(|_| ()),
                &|| kernels::conv_input_grad(&dy, &w, st, p, hw, hw).map(|_| ()),
            ],
        )?;
        print_on_off(name, &best);
    }
    Ok(())
}

/// Winograd against without it, kept weights.
fn kept_winograd(dev: &Device, (n, size, iters): (usize, usize, usize)) -> Result<()> {
    let s = size;
    println!(
        "3x3 stride-1, kept (frozen) weights (ms, min of {iters} interleaved): Winograd vs without it, fused conv+bn+add+relu"
    );
    for (name, c, hw) in [
        ("layer1 3x3", 64, s / 4),
        ("layer2 3x3", 128, s / 8),
        ("layer3 3x3", 256, s / 16),
        ("layer4 3x3", 512, s / 32),
    ] {
        let x = Tensor::randn(0f32, 1.0, (n, c, hw, hw), dev)?;
        let w = Tensor::randn(0f32, 0.1, (c, c, 3, 3), dev)?;
        let (scale, shift) = (vec![1.0f32; c], vec![0.0f32; c]);
        let cache = Arc::new(kernels::FrozenWeights::new());
        let best = min_on_off(
            iters,
            (KernelSettings::auto(), Toggle::Winograd),
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
    Ok(())
}

/// The channels-on-lanes kernel against without it, kept weights.
fn lanes(dev: &Device, (n, _, iters): (usize, usize, usize), convs: &[ConvCase]) -> Result<()> {
    println!(
        "kept (frozen) weights (ms, min of {iters} interleaved): channels-on-lanes kernel vs without it, fused conv+bn+relu"
    );
    for &(name, ci, co, k, st, p, hw) in convs {
        if ci == 3 || (k, st) == (3, 1) && hw > 14 {
            continue;
        }
        let x = Tensor::randn(0f32, 1.0, (n, ci, hw, hw), dev)?;
        let w = Tensor::randn(0f32, 0.1, (co, ci, k, k), dev)?;
        let (scale, shift) = (vec![1.0f32; co], vec![0.0f32; co]);
        let cache = Arc::new(kernels::FrozenWeights::new());
        let best = min_on_off(
            iters,
            (KernelSettings::auto(), Toggle::Lanes),
            &[&|| {
                kernels::inference_frozen(&cache, || {
                    kernels::conv2d_affine(&x, &w, st, p, scale.clone(), shift.clone(), None, true)
                })
                .map(|_| ())
            }],
        )?;
        print_on_off(name, &best);
    }
    Ok(())
}

/// Batch norm + ReLU and the stem max pool, cxr against candle.
fn bn_and_pool(dev: &Device, (n, size, iters): (usize, usize, usize)) -> Result<()> {
    let s = size;
    for (name, c, hw) in [
        ("bn+relu layer1", 64, s / 4),
        ("bn+relu layer3", 256, s / 16),
    ] {
        let mut ps = ParamStore::new(dev, 0);
        let bn = BatchNorm::new(&mut ps, "bn", c, false)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, c, hw, hw), dev)?)?;
        let mut row = Vec::new();
        for on in [true, false] {
            set_kernels(on);
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
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, 64, s / 2, s / 2), dev)?)?;
        let mut row = Vec::new();
        for on in [true, false] {
            set_kernels(on);
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
    Ok(())
}

/// Inference conv+BN+add+ReLU fused against separate ops.
fn fused_block(dev: &Device, (n, size, iters): (usize, usize, usize)) -> Result<()> {
    let s = size;
    set_kernels(true);
    println!("inference block conv (ms): fused conv+bn+add+relu vs separate ops, both cxr kernels");
    for (name, c, hw) in [("layer1 3x3", 64, s / 4), ("layer3 3x3", 256, s / 16)] {
        let mut ps = ParamStore::new(dev, 0);
        let conv = Conv2d::new(&mut ps, "c", c, c, 3, 1, 1, Init::KaimingNormal)?;
        let bn = BatchNorm::new(&mut ps, "bn", c, false)?;
        let x = Tensor::randn(0f32, 1.0, (n, c, hw, hw), dev)?;
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
    let convs: [ConvCase; 7] = [
        ("conv1 7x7/2", 3, 64, 7, 2, 3, s),
        ("layer1 3x3", 64, 64, 3, 1, 1, s / 4),
        ("layer2 3x3/2", 64, 128, 3, 2, 1, s / 4),
        ("layer2 3x3", 128, 128, 3, 1, 1, s / 8),
        ("layer2 down 1x1/2", 64, 128, 1, 2, 0, s / 4),
        ("layer3 3x3", 256, 256, 3, 1, 1, s / 16),
        ("layer4 3x3", 512, 512, 3, 1, 1, s / 32),
    ];
    let sizes = (n, size, iters);
    stem(&dev, sizes)?;
    per_op(&dev, sizes, &convs)?;
    direct(&dev, sizes, &convs)?;
    winograd(&dev, sizes, &convs)?;
    kept_winograd(&dev, sizes)?;
    lanes(&dev, sizes, &convs)?;
    bn_and_pool(&dev, sizes)?;
    fused_block(&dev, sizes)?;
    Ok(())
}
