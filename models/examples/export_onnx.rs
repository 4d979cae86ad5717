//! Writes `OUT_DIR/model.onnx` (cxr's ONNX export of a network with trained-looking
//! batch-norm statistics) and `OUT_DIR/io.safetensors` (`input`, and `probs`
//! computed by candle), for `scripts/check-onnx.sh` to compare with onnxruntime.
//!
//! Usage: export_onnx OUT_DIR [resnet18|xresnet18] [SIZE]

use candle_core::{DType, Device, Tensor};
use cxr_models::weights::export_onnx;
use cxr_models::{Arch, NetConfig, Network};
use std::collections::HashMap;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .ok_or("usage: export_onnx OUT_DIR [resnet18|xresnet18] [SIZE]")?,
    );
    let arch: Arch = args.next().unwrap_or_else(|| "resnet18".into()).parse()?;
    let size: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(96);
    std::fs::create_dir_all(&out)?;
    let dev = Device::Cpu;
    let net = Network::new(NetConfig::standard(arch, 2), &dev, 7)?;
    // A few train-mode passes give the BN layers non-trivial running statistics.
    for i in 0..3 {
        let x = (Tensor::randn(0f32, 1.0, (4, 3, size, size), &dev)? * (1.0 + i as f64))?;
        net.forward_t(&x, true)?;
    }
    let input = Tensor::randn(0f32, 1.0, (3, 3, size, size), &dev)?;
    let probs = net.predict_proba(&input)?;
    export_onnx(&net, size, &out.join("model.onnx"))?;
    let io: HashMap<String, Tensor> = [
        ("input".to_string(), input),
        ("probs".to_string(), probs.to_dtype(DType::F32)?),
    ]
    .into_iter()
    .collect();
    candle_core::safetensors::save(&io, out.join("io.safetensors"))?;
    eprintln!(
        "wrote {}/model.onnx ({arch}, {size}x{size}) and io.safetensors",
        out.display()
    );
    Ok(())
}
