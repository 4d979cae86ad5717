//! fastai v2's XResNet18 (bag-of-tricks ResNet), for training from scratch.
//!
//! Stem of three 3x3 conv-BN-ReLU (32, 32, 64; the first with stride 2), a 3x3
//! stride-2 max pool, then BasicBlocks whose shortcut is ResNet-D (2x2 average
//! pool with ceil mode, then 1x1 conv-BN when the width changes). The last BN
//! of each residual branch starts at zero; convolutions use kaiming init.
//! Names: `stem.{0,1,2}.{conv,bn}`, `layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}`,
//! `layer{n}.0.shortcut.{conv,bn}`.

use crate::layers::{avg_pool2_ceil, conv_bn, max_pool_3x3_s2_p1, BatchNorm, Conv2d};
use crate::params::{Init, ParamStore};
use candle_core::{Result, Tensor};

pub const XRESNET18_WIDTHS: [usize; 4] = [64, 128, 256, 512];
const STEM: [usize; 3] = [32, 32, 64];

#[derive(Debug, Clone)]
pub(crate) struct ConvBn {
    pub(crate) conv: Conv2d,
    pub(crate) bn: BatchNorm,
}

impl ConvBn {
    fn new(
        ps: &mut ParamStore,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        zero_bn: bool,
    ) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(
                ps,
                &format!("{name}.conv"),
                c_in,
                c_out,
                k,
                stride,
                k / 2,
                Init::KaimingNormal,
            )?,
            bn: BatchNorm::new(ps, &format!("{name}.bn"), c_out, zero_bn)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        conv_bn(&self.conv, &self.bn, x, train, None, false)
    }

    fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        conv_bn(&self.conv, &self.bn, x, train, None, true)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct XBlock {
    pub(crate) conv1: Conv2d,
    pub(crate) bn1: BatchNorm,
    pub(crate) conv2: Conv2d,
    pub(crate) bn2: BatchNorm,
    pub(crate) pool: bool,
    pub(crate) shortcut: Option<ConvBn>,
}

impl XBlock {
    fn new(
        ps: &mut ParamStore,
        name: &str,
        c_in: usize,
        c_out: usize,
        stride: usize,
    ) -> Result<Self> {
        let init = Init::KaimingNormal;
        Ok(Self {
            conv1: Conv2d::new(
                ps,
                &format!("{name}.conv1"),
                c_in,
                c_out,
                3,
                stride,
                1,
                init,
            )?,
            bn1: BatchNorm::new(ps, &format!("{name}.bn1"), c_out, false)?,
            conv2: Conv2d::new(ps, &format!("{name}.conv2"), c_out, c_out, 3, 1, 1, init)?,
            bn2: BatchNorm::new(ps, &format!("{name}.bn2"), c_out, true)?,
            pool: stride != 1,
            shortcut: if c_in != c_out {
                Some(ConvBn::new(
                    ps,
                    &format!("{name}.shortcut"),
                    c_in,
                    c_out,
                    1,
                    1,
                    false,
                )?)
            } else {
                None
            },
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = conv_bn(&self.conv1, &self.bn1, x, train, None, true)?;
        let mut id = if self.pool {
            avg_pool2_ceil(x)?
        } else {
            x.clone()
        };
        if let Some(s) = &self.shortcut {
            id = s.forward_t(&id, train)?;
        }
        conv_bn(&self.conv2, &self.bn2, &y, train, Some(&id), true)
    }
}

/// The XResNet18 body: stem, pool and the four stages.
#[derive(Debug, Clone)]
pub struct XResNet18Body {
    pub(crate) stem: Vec<ConvBn>,
    pub(crate) layers: Vec<Vec<XBlock>>,
    widths: [usize; 4],
}

impl XResNet18Body {
    pub fn new(ps: &mut ParamStore, widths: [usize; 4]) -> Result<Self> {
        let mut stem = Vec::new();
        let mut c_in = 3;
        for (i, &c) in STEM.iter().enumerate() {
            let c = if i == 2 { widths[0] } else { c };
            stem.push(ConvBn::new(
                ps,
                &format!("stem.{i}"),
                c_in,
                c,
                3,
                if i == 0 { 2 } else { 1 },
                false,
            )?);
            c_in = c;
        }
        stem[0].conv.input_grad = false; // it sees the image
        let mut layers = Vec::new();
        for (i, &w) in widths.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let name = format!("layer{}", i + 1);
            let b0 = XBlock::new(ps, &format!("{name}.0"), c_in, w, stride)?;
            let b1 = XBlock::new(ps, &format!("{name}.1"), w, w, 1)?;
            layers.push(vec![b0, b1]);
            c_in = w;
        }
        Ok(Self {
            stem,
            layers,
            widths,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for s in &self.stem {
            x = s.forward_relu_t(&x, train)?;
        }
        let mut x = max_pool_3x3_s2_p1(&x)?;
        for layer in &self.layers {
            for block in layer {
                x = block.forward_t(&x, train)?;
            }
        }
        Ok(x)
    }

    pub fn out_channels(&self) -> usize {
        self.widths[3]
    }
}

/// Parameter groups: stem / body / head.
pub fn xresnet_group(name: &str) -> usize {
    if name.starts_with("stem") {
        0
    } else if name.starts_with("fc") || name.starts_with("head") {
        2
    } else {
        1
    }
}
