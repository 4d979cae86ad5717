//! Exporting a network to ONNX (opset 13) for onnxruntime and other runtimes.
//!
//! Eval mode: every BatchNorm is folded into the Conv (or, in the fastai head,
//! into the Linear) that it follows or precedes, so the graph has only Conv,
//! Relu, MaxPool, AveragePool, Add, global pools, Concat, Flatten, Gemm and a
//! final Softmax. Input `input` `[N, 3, S, S]` (batch dynamic), output `probs`.

use super::error::WeightsError;
use crate::head::Head;
use crate::layers::{BatchNorm, Conv2d, Linear};
use crate::network::{Body, Network};
use crate::resnet::ResNet18Body;
use crate::xresnet::XResNet18Body;
use candle_core::{DType, Device, Tensor};
use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use std::path::Path;

pub const OPSET: i64 = 13;

#[derive(Default)]
struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    count: usize,
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INTS.into(),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INT.into(),
        i: v,
        ..Default::default()
    }
}

impl Builder {
    fn fresh(&mut self, prefix: &str) -> String {
        self.count += 1;
        format!("{prefix}_{}", self.count)
    }

    fn init(&mut self, name: &str, t: &Tensor) -> Result<String, WeightsError> {
        let t = t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        let mut raw = Vec::with_capacity(values.len() * 4);
        for v in values {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        self.inits.push(TensorProto {
            name: name.into(),
            dims: t.dims().iter().map(|&d| d as i64).collect(),
            data_type: 1,
            raw_data: raw,
            ..Default::default()
        });
        Ok(name.into())
    }

    fn node(&mut self, op: &str, inputs: Vec<String>, attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name: format!("{out}_node"),
            input: inputs,
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    /// Conv followed by eval-mode BN, folded into one Conv; optional Relu.
    fn conv_bn(
        &mut self,
        x: &str,
        name: &str,
        conv: &Conv2d,
        bn: &BatchNorm,
        relu: bool,
    ) -> Result<String, WeightsError> {
        let (scale, shift) = bn.folded()?;
        let w = conv
            .weight
            .as_tensor()
            .broadcast_mul(&scale.reshape(((), 1, 1, 1))?)?;
        let b = match &conv.bias {
            Some(cb) => (cb.as_tensor().mul(&scale)? + shift)?,
            None => shift,
        };
        let w = self.init(&format!("{name}.weight"), &w)?;
        let b = self.init(&format!("{name}.bias"), &b)?;
        let k = conv.kernel_size() as i64;
        let (s, p) = (conv.stride as i64, conv.padding as i64);
        let y = self.node(
            "Conv",
            vec![x.into(), w, b],
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("strides", &[s, s]),
                attr_ints("pads", &[p, p, p, p]),
            ],
        );
        Ok(if relu {
            self.node("Relu", vec![y], vec![])
        } else {
            y
        })
    }

    fn max_pool(&mut self, x: String) -> String {
        self.node(
            "MaxPool",
            vec![x],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 1]),
            ],
        )
    }

    fn add_relu(&mut self, a: String, b: String) -> String {
        let y = self.node("Add", vec![a, b], vec![]);
        self.node("Relu", vec![y], vec![])
    }

    /// `Linear(bn(x))` with eval BN folded into the Gemm: `W (x*s + t) = (W*s) x + W t`.
    fn bn_gemm(
        &mut self,
        x: String,
        name: &str,
        bn: Option<&BatchNorm>,
        lin: &Linear,
    ) -> Result<String, WeightsError> {
        let mut w = lin.weight.as_tensor().clone();
        let mut b = match &lin.bias {
            Some(b) => b.as_tensor().clone(),
            None => Tensor::zeros(w.dim(0)?, DType::F32, w.device())?,
        };
        if let Some(bn) = bn {
            let (s, t) = bn.folded()?;
            b = (b + w.matmul(&t.unsqueeze(1)?)?.squeeze(1)?)?;
            w = w.broadcast_mul(&s.unsqueeze(0)?)?;
        }
        let w = self.init(&format!("{name}.weight"), &w)?;
        let b = self.init(&format!("{name}.bias"), &b)?;
        Ok(self.node("Gemm", vec![x, w, b], vec![attr_int("transB", 1)]))
    }
}

fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let shape = TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| tensor_shape_proto::Dimension {
                value: Some(match d {
                    Some(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                    None => tensor_shape_proto::dimension::Value::DimParam("batch".into()),
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let tensor = type_proto::Tensor {
        elem_type: 1,
        shape: Some(shape).into(),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.into(),
        type_: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

/// Writes `net` as an ONNX model for `[N, 3, size, size]` inputs (via a temporary file and a rename).
pub fn export_onnx(net: &Network, size: usize, path: &Path) -> Result<(), WeightsError> {
    let mut b = Builder::default();
    let x = match &net.body {
        Body::ResNet(r) => resnet_body(&mut b, r)?,
        Body::XResNet(r) => xresnet_body(&mut b, r)?,
    };
    let logits = head(&mut b, net, x)?;
    let model = model_proto(b, net, size, logits);
    let bytes = model
        .write_to_bytes()
        .map_err(|e| WeightsError::Format(format!("could not encode ONNX: {e}")))?;
    let tmp = path.with_extension("onnx.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| WeightsError::Io(tmp.clone(), e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| WeightsError::Io(path.to_path_buf(), e.to_string()))?;
    Ok(())
}

/// ResNet18's body from `input`; returns its output's name.
fn resnet_body(b: &mut Builder, r: &ResNet18Body) -> Result<String, WeightsError> {
    let mut x = "input".to_string();
    x = b.conv_bn(&x, "conv1", &r.conv1, &r.bn1, true)?;
    x = b.max_pool(x);
    for (li, layer) in r.layers.iter().enumerate() {
        for (bi, blk) in layer.iter().enumerate() {
            let p = format!("layer{}.{bi}", li + 1);
            let y = b.conv_bn(&x, &format!("{p}.conv1"), &blk.conv1, &blk.bn1, true)?;
            let y = b.conv_bn(&y, &format!("{p}.conv2"), &blk.conv2, &blk.bn2, false)?;
            let id = match &blk.downsample {
                Some((c, n)) => b.conv_bn(&x, &format!("{p}.downsample"), c, n, false)?,
                None => x.clone(),
            };
            x = b.add_relu(y, id);
        }
    }
    Ok(x)
}

/// XResNet18's body from `input`; returns its output's name.
fn xresnet_body(b: &mut Builder, r: &XResNet18Body) -> Result<String, WeightsError> {
    let mut x = "input".to_string();
    for (i, s) in r.stem.iter().enumerate() {
        x = b.conv_bn(&x, &format!("stem.{i}"), &s.conv, &s.bn, true)?;
    }
    x = b.max_pool(x);
    for (li, layer) in r.layers.iter().enumerate() {
        for (bi, blk) in layer.iter().enumerate() {
            let p = format!("layer{}.{bi}", li + 1);
            let y = b.conv_bn(&x, &format!("{p}.conv1"), &blk.conv1, &blk.bn1, true)?;
            let y = b.conv_bn(&y, &format!("{p}.conv2"), &blk.conv2, &blk.bn2, false)?;
            let mut id = x.clone();
            if blk.pool {
                id = b.node(
                    "AveragePool",
                    vec![id],
                    vec![
                        attr_ints("kernel_shape", &[2, 2]),
                        attr_ints("strides", &[2, 2]),
                        attr_int("ceil_mode", 1),
                        attr_int("count_include_pad", 0),
                    ],
                );
            }
            if let Some(s) = &blk.shortcut {
                id = b.conv_bn(&id, &format!("{p}.shortcut"), &s.conv, &s.bn, false)?;
            }
            x = b.add_relu(y, id);
        }
    }
    Ok(x)
}

/// The head on the body's output `x`; returns the logits' name.
fn head(b: &mut Builder, net: &Network, x: String) -> Result<String, WeightsError> {
    Ok(match net.head() {
        Head::Linear(fc) => {
            let p = b.node("GlobalAveragePool", vec![x], vec![]);
            let f = b.node("Flatten", vec![p], vec![attr_int("axis", 1)]);
            b.bn_gemm(f, "fc", None, fc)?
        }
        Head::Fastai {
            bn1,
            lin1,
            bn2,
            lin2,
            ..
        } => {
            let mx = b.node("GlobalMaxPool", vec![x.clone()], vec![]);
            let av = b.node("GlobalAveragePool", vec![x], vec![]);
            let c = b.node("Concat", vec![mx, av], vec![attr_int("axis", 1)]);
            let f = b.node("Flatten", vec![c], vec![attr_int("axis", 1)]);
            let h = b.bn_gemm(f, "head.4", Some(bn1), lin1)?;
            let h = b.node("Relu", vec![h], vec![]);
            b.bn_gemm(h, "head.8", Some(bn2), lin2)?
        }
    })
}

/// The model: `b`'s graph with a softmax after `logits`, `[N, 3, size, size]` in.
fn model_proto(mut b: Builder, net: &Network, size: usize, logits: String) -> ModelProto {
    b.nodes.push(NodeProto {
        op_type: "Softmax".into(),
        name: "softmax".into(),
        input: vec![logits],
        output: vec!["probs".into()],
        attribute: vec![attr_int("axis", 1)],
        ..Default::default()
    });
    let s = size as i64;
    let graph = GraphProto {
        name: format!("cxr_{}", net.config.arch),
        node: b.nodes,
        initializer: b.inits,
        input: vec![value_info("input", &[None, Some(3), Some(s), Some(s)])],
        output: vec![value_info(
            "probs",
            &[None, Some(net.config.n_classes as i64)],
        )],
        ..Default::default()
    };
    ModelProto {
        ir_version: 7,
        producer_name: "cxr".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
            ..Default::default()
        }],
        graph: Some(graph).into(),
        ..Default::default()
    }
}
