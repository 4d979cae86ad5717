//! Importing an ONNX export of torchvision's ResNet18.
//!
//! `torch.onnx.export` in eval mode folds each BatchNorm into the preceding
//! Conv and renames initializers (`onnx::Conv_193`), so names cannot be
//! matched. Instead the graph is walked: the 7x7 Conv is `conv1`, the 3x3
//! Convs in execution order are the blocks' `conv1`/`conv2`, the 1x1 Convs
//! are the three `downsample` convs, and the Gemm is `fc`. A folded Conv bias
//! becomes an identity BN (weight 1, running stats 0 / 1-eps) carrying it.

use super::error::WeightsError;
use crate::layers::BN_EPS;
use candle_core::{Device, Tensor};
use onnx_protobuf::{GraphProto, Message, ModelProto, NodeProto, TensorProto};
use std::collections::HashMap;
use std::path::Path;

/// A Conv's weight and optional bias, or the Gemm's.
type WeightBias = (Tensor, Option<Tensor>);

/// The graph's weights by kind, in execution order.
#[derive(Default)]
struct Found {
    stem: Vec<WeightBias>,
    k3: Vec<WeightBias>,
    k1: Vec<WeightBias>,
    gemm: Vec<WeightBias>,
}

/// Why an ONNX initializer could not be read as an f32 tensor.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitializerError {
    #[error("initializer {name} has data type {data_type}, expected FLOAT")]
    NotFloat { name: String, data_type: i32 },
    #[error("initializer {0} has a negative dim")]
    NegativeDim(String),
    #[error("initializer {name}: {bytes} bytes for {n} floats")]
    RawLength {
        name: String,
        bytes: usize,
        n: usize,
    },
    #[error("initializer {0} uses external data, which is not supported")]
    ExternalData(String),
    #[error("initializer {name} has {floats} floats for shape {dims:?}")]
    FloatCount {
        name: String,
        floats: usize,
        dims: Vec<usize>,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

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
    let found = find_weights(path, graph)?;
    let (stem, k3, k1, gemm) = (
        found.stem.len(),
        found.k3.len(),
        found.k1.len(),
        found.gemm.len(),
    );
    if (stem, k3, k1, gemm) != (1, 16, 3, 1) {
        return Err(wrong(format!(
            "expected 1 7x7 conv, 16 3x3 convs, 3 1x1 convs and 1 Gemm; found {stem}, {k3}, {k1}, {gemm}"
        )));
    }
    torchvision_names(found)
}

/// The Conv and Gemm weights of `graph`, sorted by kernel size.
fn find_weights(path: &Path, graph: &GraphProto) -> Result<Found, WeightsError> {
    let wrong = |reason: String| WeightsError::WrongArchitecture {
        path: path.to_path_buf(),
        reason,
    };
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
        tensor_from_proto(t).map_err(|e| WeightsError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    };
    let bias = |node: &NodeProto| -> Result<Option<Tensor>, WeightsError> {
        if node.input.len() > 2 {
            Ok(Some(get(node, 2)?))
        } else {
            Ok(None)
        }
    };
    let mut found = Found::default();
    for node in &graph.node {
        match node.op_type.as_str() {
            "Conv" => {
                let w = get(node, 1)?;
                let b = bias(node)?;
                match w.dims() {
                    [_, _, 7, 7] => found.stem.push((w, b)),
                    [_, _, 3, 3] => found.k3.push((w, b)),
                    [_, _, 1, 1] => found.k1.push((w, b)),
                    d => return Err(wrong(format!("unexpected Conv kernel shape {d:?}"))),
                }
            }
            "Gemm" => {
                let trans_b = node.attribute.iter().find(|a| a.name == "transB").map(|a| a.i).unwrap_or(0);
                let w = get(node, 1)?;
                let w = if trans_b == 1 { w } else { w.t()?.contiguous()? };
                found.gemm.push((w, bias(node)?));
            }
            "BatchNormalization" => {
                return Err(wrong(
                    "the graph keeps BatchNormalization nodes; export it in eval mode (torch.onnx.export folds BN)".into(),
                ))
            }
            _ => {}
        }
    }
    Ok(found)
}

/// A folded Conv as torchvision's conv and an identity BN carrying its bias.
fn push_conv(
    out: &mut Vec<(String, Tensor)>,
    conv: &str,
    bn: &str,
    (w, b): WeightBias,
) -> Result<(), WeightsError> {
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
}

/// The found weights under torchvision's names, in its order.
fn torchvision_names(found: Found) -> Result<Vec<(String, Tensor)>, WeightsError> {
    let mut out = Vec::new();
    let mut stem = found.stem.into_iter();
    if let Some(s) = stem.next() {
        push_conv(&mut out, "conv1", "bn1", s)?;
    }
    let mut k3 = found.k3.into_iter();
    let mut k1 = found.k1.into_iter();
    for layer in 1..=4 {
        for block in 0..2 {
            let p = format!("layer{layer}.{block}");
            for i in 1..=2 {
                if let Some(c) = k3.next() {
                    push_conv(&mut out, &format!("{p}.conv{i}"), &format!("{p}.bn{i}"), c)?;
                }
            }
            if layer > 1 && block == 0 {
                if let Some(c) = k1.next() {
                    push_conv(
                        &mut out,
                        &format!("{p}.downsample.0"),
                        &format!("{p}.downsample.1"),
                        c,
                    )?;
                }
            }
        }
    }
    if let Some((w, b)) = found.gemm.into_iter().next() {
        out.push(("fc.weight".into(), w));
        if let Some(b) = b {
            out.push(("fc.bias".into(), b));
        }
    }
    Ok(out)
}

/// An f32 initializer (raw little-endian bytes or `float_data`).
pub(crate) fn tensor_from_proto(t: &TensorProto) -> Result<Tensor, InitializerError> {
    const FLOAT: i32 = 1;
    if t.data_type != FLOAT {
        return Err(InitializerError::NotFloat {
            name: t.name.clone(),
            data_type: t.data_type,
        });
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| InitializerError::NegativeDim(t.name.clone())))
        .collect::<Result<_, _>>()?;
    let n: usize = dims.iter().product();
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        if t.raw_data.len() != 4 * n {
            return Err(InitializerError::RawLength {
                name: t.name.clone(),
                bytes: t.raw_data.len(),
                n,
            });
        }
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else if t.float_data.len() == n {
        t.float_data.clone()
    } else if !t.external_data.is_empty() {
        return Err(InitializerError::ExternalData(t.name.clone()));
    } else {
        return Err(InitializerError::FloatCount {
            name: t.name.clone(),
            floats: t.float_data.len(),
            dims,
        });
    };
    Ok(Tensor::from_vec(values, dims, &Device::Cpu)?)
}
