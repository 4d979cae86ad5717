//! Loading pretrained ImageNet weights into a network's body.
//!
//! Accepts what users download: torchvision's `.pth` (the zip that `torch.save`
//! writes), `.safetensors` with the same names (timm `resnet18.tv_in1k`,
//! conversions), and ONNX exports of torchvision's ResNet18. The classifier
//! (`fc`) is replaced by the network's own head unless it has the same shape.

use super::error::WeightsError;
use crate::network::{Arch, Network};
use crate::params::Kind;
use candle_core::{DType, Device, Tensor};
use std::path::Path;

/// What [`load_pretrained`] did, name by name.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Tensors copied from the file.
    pub loaded: Vec<String>,
    /// Tensors of the network that the file did not provide (the new head).
    pub new: Vec<String>,
    /// Tensors of the file that the network does not use (old `fc`, counters).
    pub ignored: Vec<String>,
}

impl LoadReport {
    pub fn summary(&self) -> String {
        format!(
            "loaded {} tensors; {} new (head: {}); ignored {} from the file ({})",
            self.loaded.len(),
            self.new.len(),
            abbreviate(&self.new),
            self.ignored.len(),
            abbreviate(&self.ignored)
        )
    }
}

fn abbreviate(names: &[String]) -> String {
    match names.len() {
        0 => "none".into(),
        1..=4 => names.join(", "),
        n => format!("{}, ... ({} more)", names[..3].join(", "), n - 3),
    }
}

/// Reads every tensor of a weights file by its (torchvision) name, on the CPU.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>, WeightsError> {
    if !path.exists() {
        return Err(WeightsError::NotFound(path.to_path_buf()));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    let unreadable = |e: candle_core::Error| WeightsError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut tensors = match ext.as_str() {
        "pth" | "pt" | "bin" => candle_core::pickle::read_all(path).map_err(unreadable)?,
        "safetensors" => candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(unreadable)?
            .into_iter()
            .collect(),
        "onnx" => super::onnx_import::read_onnx_resnet18(path)?,
        _ => return Err(WeightsError::UnknownExtension(path.to_path_buf())),
    };
    // Common wrappers: DataParallel's `module.`, Lightning's `model.`.
    for prefix in ["module.", "model."] {
        if !tensors.is_empty() && tensors.iter().all(|(n, _)| n.starts_with(prefix)) {
            for (n, _) in tensors.iter_mut() {
                *n = n[prefix.len()..].to_string();
            }
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors)
}

/// Loads ImageNet-pretrained ResNet18 weights into `net`'s body (and `fc` if the
/// shapes agree). Fails on a file of another architecture or a shape mismatch.
pub fn load_pretrained(net: &Network, path: &Path) -> Result<LoadReport, WeightsError> {
    if net.config.arch != Arch::Resnet18 {
        return Err(WeightsError::WrongArchitecture {
            path: path.to_path_buf(),
            reason: format!(
                "pretrained weights are supported for resnet18, not {}",
                net.config.arch
            ),
        });
    }
    let tensors = read_tensors(path)?;
    check_architecture(path, &tensors)?;
    let mut report = LoadReport::default();
    let ps = net.params();
    for (name, t) in &tensors {
        let Some(entry) = ps.get(name) else {
            report.ignored.push(name.clone());
            continue;
        };
        if !t.dtype().is_float() {
            report.ignored.push(name.clone());
            continue;
        }
        let is_head = net.group_of(name) == 2;
        if entry.var.dims() != t.dims() {
            if is_head {
                report.ignored.push(name.clone());
                continue;
            }
            return Err(WeightsError::ShapeMismatch {
                path: path.to_path_buf(),
                name: name.clone(),
                expected: entry.var.dims().to_vec(),
                found: t.dims().to_vec(),
            });
        }
        ps.set(name, &t.to_dtype(DType::F32)?)?;
        report.loaded.push(name.clone());
    }
    let loaded: std::collections::HashSet<&String> = report.loaded.iter().collect();
    let mut missing_body = Vec::new();
    for (name, e) in ps.iter() {
        if loaded.contains(&name.to_string()) {
            continue;
        }
        if net.group_of(name) == 2 {
            report.new.push(name.to_string());
        } else if e.kind == Kind::Param || e.kind == Kind::Buffer {
            missing_body.push(name.to_string());
        }
    }
    if !missing_body.is_empty() {
        return Err(WeightsError::WrongArchitecture {
            path: path.to_path_buf(),
            reason: format!(
                "{} body tensors are missing, e.g. {}",
                missing_body.len(),
                abbreviate(&missing_body)
            ),
        });
    }
    Ok(report)
}

fn check_architecture(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), WeightsError> {
    let wrong = |reason: String| WeightsError::WrongArchitecture {
        path: path.to_path_buf(),
        reason,
    };
    let has = |n: &str| tensors.iter().any(|(k, _)| k == n);
    if tensors.iter().any(|(k, _)| k.contains(".conv3.")) {
        return Err(wrong(
            "it has bottleneck blocks (conv3): a ResNet50 or deeper".into(),
        ));
    }
    if tensors
        .iter()
        .any(|(k, _)| k.starts_with("layer1.2.") || k.starts_with("layer4.2."))
    {
        return Err(wrong(
            "it has a third block per stage: a ResNet34 or deeper".into(),
        ));
    }
    if !has("conv1.weight") {
        let sample: Vec<String> = tensors.iter().take(3).map(|(k, _)| k.clone()).collect();
        return Err(wrong(format!(
            "no `conv1.weight` tensor (first names in the file: {})",
            abbreviate(&sample)
        )));
    }
    if let Some((_, t)) = tensors.iter().find(|(k, _)| k == "conv1.weight") {
        let d = t.dims();
        if d.len() != 4 || d[1] != 3 || d[2] != 7 || d[3] != 7 {
            return Err(wrong(format!(
                "conv1.weight has shape {d:?}, expected [C, 3, 7, 7]"
            )));
        }
    }
    Ok(())
}
