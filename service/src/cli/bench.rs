//! `cxr bench`: images/s and the median step time of one network on random
//! input, inference or a full training step (forward, backward, AdamW).

use anyhow::Result;
use candle_core::{Device, Tensor};
use cxr_models::{Arch, NetConfig, Network};
use cxr_service::learner::optim::{AdamW, AdamWConfig};
use cxr_service::learner::Precision;
use std::time::Instant;

/// What `cxr bench` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    /// Eval forward + softmax, with the weights prepared once (as the server).
    Infer,
    /// Forward, backward and the AdamW step.
    Train,
}

#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    #[arg(long, default_value = "resnet18")]
    pub arch: Arch,
    #[arg(long, value_enum, default_value_t = BenchMode::Infer)]
    pub mode: BenchMode,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    #[arg(long, default_value = "cpu", value_parser = cxr_service::device::parse_device)]
    pub device: Device,
    /// Activation precision: f32, bf16 or f16 (half precision needs --device cuda).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Print the algorithm the CPU kernels take for each convolution of
    /// ResNet18 at --batch and --size (CXR_KERNELS applies), and exit.
    #[arg(long)]
    pub explain: bool,
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.batch == 0 || a.size < 32 || a.iters == 0 {
        anyhow::bail!("bench needs --batch >= 1, --size >= 32 and --iters >= 1");
    }
    if a.explain {
        return explain(&a);
    }
    a.precision
        .check_device(&a.device)
        .map_err(anyhow::Error::msg)?;
    let net = Network::new(NetConfig::standard(a.arch, 2), &a.device, 0)?;
    // Inference predicts with fixed weights, as the server does.
    let train = a.mode == BenchMode::Train;
    let net = if train { net } else { net.freeze() };
    // Master weights stay f32; the layers cast them to the activations' dtype.
    let x = Tensor::randn(0f32, 1.0, (a.batch, 3, a.size, a.size), &a.device)?
        .to_dtype(a.precision.dtype())?;
    let y = Tensor::from_vec(
        (0..a.batch as u32).map(|i| i % 2).collect::<Vec<_>>(),
        a.batch,
        &a.device,
    )?;
    let mut opt = AdamW::new(net.param_groups(), AdamWConfig::default())?;
    opt.set_lrs(&[1e-4; 3]);
    let mut step = || -> Result<()> {
        if train {
            // As the learner's step (`Learner::train_step`): on the CPU on a hot pool.
            cxr_models::kernels::hot_pool(&a.device, || -> Result<()> {
                let logits = net.forward_t(&x, true)?.to_dtype(candle_core::DType::F32)?;
                let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
                opt.step(&loss.backward()?)?;
                Ok(())
            })?;
        } else {
            let p = net.predict_proba(&x)?;
            p.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        }
        Ok(())
    };
    step()?; // warm-up
    let mut times = Vec::with_capacity(a.iters);
    for _ in 0..a.iters {
        let t = Instant::now();
        step()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "arch": a.arch.as_str(), "mode": if train { "train" } else { "infer" }, "batch": a.batch, "size": a.size,
            "iters": a.iters, "median_step_ms": (median * 1e3 * 100.0).round() / 100.0,
            "images_per_s": ((a.batch as f64 / median) * 100.0).round() / 100.0,
            "min_step_ms": (times[0] * 1e3 * 100.0).round() / 100.0,
            "device": format!("{:?}", a.device.location()),
            "precision": format!("{:?}", a.precision).to_lowercase(),
        })
    );
    Ok(())
}

/// `cxr bench --explain`: the kernel plan of ResNet18's convolutions (the
/// plan is the same whatever --arch; XResNet18's are not listed).
fn explain(a: &BenchArgs) -> Result<()> {
    let net = Network::new(NetConfig::standard(Arch::Resnet18, 2), &Device::Cpu, 0)?;
    let settings = cxr_models::kernels::settings();
    let table = net
        .explain_kernels(a.batch, a.size, &settings)
        .ok_or_else(|| anyhow::anyhow!("no ResNet18 body to explain"))?;
    println!("ResNet18, batch {}, {} px", a.batch, a.size);
    print!("{table}");
    Ok(())
}
