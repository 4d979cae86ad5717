//! Importing an ONNX export of torchvision's ResNet18.
//!
//! `torch.onnx.export` in eval mode folds each BatchNorm into the preceding
//! Conv and renames initializers (`onnx::Conv_193`), so names cannot be
//! matched. Instead the graph is walked: the 7x7 Conv is `conv1`, the 3x3
//! Convs in execution order are the blocks' `conv1`/`conv2`, the 1x1 Convs
//! are the three `downsample` convs, and the Gemm is `fc`. A folded Conv bias
//! becomes an identity BN (weight 1, running stats 0 / 1-eps) carrying it.

use super::import::WeightsError;
use crate::layers::BN_EPS;
use candle_core::{Device, Tensor};
use onnx_protobuf::{Message, ModelProto, NodeProto, TensorProto};
use std::collections::HashMap;
use std::path::Path;

/// Reads an ONNX ResNet18 and returns its weights under torchvision's names.
pub fn read_onnx_resnet18(path: &Path) -> Result<Vec<(String, Tensor)>, WeightsError> {
    let bytes =
        std::fs::read(path).map_err(|e| WeightsError::Io(path.to_path_buf(), e.to_string()))?;
    let model = ModelProto::parse_from_bytes(&bytes).map_err(|e| WeightsError::Unreadable {
        path: path.to_path_buf(),
        reason: format!("not an ONNX model: {e}"),
    })?;
    let wrong = |reason: String| WeightsError::WrongArchitecture {
        path: path.to_path_buf(),
        reason,
    };
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| wrong("the model has no graph".into()))?;
    let inits: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let get = |node: &NodeProto, i: usize| -> Result<Tensor, WeightsError> {
        let name = node
            .input
            .get(i)
            .ok_or_else(|| wrong(format!("{} node without input {i}", node.op_type)))?;
        let t = inits.get(name.as_str()).ok_or_else(|| {
            wrong(format!(
                "{} input {name} is not an initializer",
                node.op_type
            ))
        })?;
        tensor_from_proto(t).map_err(|reason| WeightsError::Unreadable {
            path: path.to_path_buf(),
            reason,
        })
    };

    let (mut stem, mut k3, mut k1, mut gemm) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for node in &graph.node {
        match node.op_type.as_str() {
            "Conv" => {
                let w = get(node, 1)?;
                let b = if node.input.len() > 2 { Some(get(node, 2)?) } else { None };
                match w.dims() {
                    [_, _, 7, 7] => stem.push((w, b)),
                    [_, _, 3, 3] => k3.push((w, b)),
                    [_, _, 1, 1] => k1.push((w, b)),
                    d => return Err(wrong(format!("unexpected Conv kernel shape {d:?}"))),
                }
            }
            "Gemm" => {
                let trans_b = node.attribute.iter().find(|a| a.name == "transB").map(|a| a.i).unwrap_or(0);
                let w = get(node, 1)?;
                let w = if trans_b == 1 { w } else { w.t()?.contiguous()? };
                let b = if node.input.len() > 2 { Some(get(node, 2)?) } else { None };
                gemm.push((w, b));
            }
            "BatchNormalization" => {
                return Err(wrong(
                    "the graph keeps BatchNormalization nodes; export it in eval mode (torch.onnx.export folds BN)".into(),
                ))
            }
            _ => {}
        }
    }
    if stem.len() != 1 || k3.len() != 16 || k1.len() != 3 || gemm.len() != 1 {
        return Err(wrong(format!(
            "expected 1 7x7 conv, 16 3x3 convs, 3 1x1 convs and 1 Gemm; found {}, {}, {}, {}",
            stem.len(),
            k3.len(),
            k1.len(),
            gemm.len()
        )));
    }
    let mut out = Vec::new();
    let mut push_conv =
        |conv: &str, bn: &str, (w, b): (Tensor, Option<Tensor>)| -> Result<(), WeightsError> {
            let c = w.dim(0)?;
            let bias = match b {
                Some(b) => b,
                None => Tensor::zeros(c, candle_core::DType::F32, &Device::Cpu)?,
            };
            out.push((format!("{conv}.weight"), w));
            out.push((
                format!("{bn}.weight"),
                Tensor::ones(c, candle_core::DType::F32, &Device::Cpu)?,
            ));
            out.push((format!("{bn}.bias"), bias));
            out.push((
                format!("{bn}.running_mean"),
                Tensor::zeros(c, candle_core::DType::F32, &Device::Cpu)?,
            ));
            out.push((
                format!("{bn}.running_var"),
                Tensor::full(1.0f32 - BN_EPS as f32, c, &Device::Cpu)?,
            ));
            Ok(())
        };
    let mut stem = stem.into_iter();
    if let Some(s) = stem.next() {
        push_conv("conv1", "bn1", s)?;
    }
    let mut k3 = k3.into_iter();
    let mut k1 = k1.into_iter();
    for layer in 1..=4 {
        for block in 0..2 {
            let p = format!("layer{layer}.{block}");
            for i in 1..=2 {
                if let Some(c) = k3.next() {
                    push_conv(&format!("{p}.conv{i}"), &format!("{p}.bn{i}"), c)?;
                }
            }
            if layer > 1 && block == 0 {
                if let Some(c) = k1.next() {
                    push_conv(
                        &format!("{p}.downsample.0"),
                        &format!("{p}.downsample.1"),
                        c,
                    )?;
                }
            }
        }
    }
    if let Some((w, b)) = gemm.into_iter().next() {
        out.push(("fc.weight".into(), w));
        if let Some(b) = b {
            out.push(("fc.bias".into(), b));
        }
    }
    Ok(out)
}

/// An f32 initializer (raw little-endian bytes or `float_data`).
pub(crate) fn tensor_from_proto(t: &TensorProto) -> Result<Tensor, String> {
    const FLOAT: i32 = 1;
    if t.data_type != FLOAT {
        return Err(format!(
            "initializer {} has data type {}, expected FLOAT",
            t.name, t.data_type
        ));
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| format!("initializer {} has a negative dim", t.name))
        })
        .collect::<Result<_, _>>()?;
    let n: usize = dims.iter().product();
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        if t.raw_data.len() != 4 * n {
            return Err(format!(
                "initializer {}: {} bytes for {n} floats",
                t.name,
                t.raw_data.len()
            ));
        }
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else if t.float_data.len() == n {
        t.float_data.clone()
    } else if !t.external_data.is_empty() {
        return Err(format!(
            "initializer {} uses external data, which is not supported",
            t.name
        ));
    } else {
        return Err(format!(
            "initializer {} has {} floats for shape {dims:?}",
            t.name,
            t.float_data.len()
        ));
    };
    Tensor::from_vec(values, dims, &Device::Cpu).map_err(|e| e.to_string())
}
