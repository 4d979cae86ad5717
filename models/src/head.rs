//! Classifier heads.
//!
//! - `Linear`: global average pool then `fc` (torchvision's and XResNet's head).
//! - `Fastai`: fastai's transfer head, named by its `nn.Sequential` indices:
//!   AdaptiveConcatPool2d, Flatten, BN1d (`head.2`), Dropout(0.25), Linear
//!   without bias (`head.4`), ReLU, BN1d (`head.6`), Dropout(0.5), Linear
//!   without bias (`head.8`).

use crate::layers::{adaptive_avg_pool, adaptive_concat_pool, BatchNorm, Dropout, Linear};
use crate::params::{Init, ParamStore};
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    Linear,
    Fastai,
}

/// One head per network: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Head {
    Linear(Linear),
    Fastai {
        bn1: BatchNorm,
        drop1: Dropout,
        lin1: Linear,
        bn2: BatchNorm,
        drop2: Dropout,
        lin2: Linear,
    },
}

impl Head {
    pub fn new(
        ps: &mut ParamStore,
        kind: HeadKind,
        c_in: usize,
        hidden: usize,
        n_classes: usize,
        seed: u64,
    ) -> Result<Self> {
        Ok(match kind {
            HeadKind::Linear => Head::Linear(Linear::new(
                ps,
                "fc",
                c_in,
                n_classes,
                true,
                Init::TorchDefault,
            )?),
            HeadKind::Fastai => Head::Fastai {
                bn1: BatchNorm::new(ps, "head.2", 2 * c_in, false)?,
                drop1: Dropout::new(0.25, seed ^ 0x5eed_0001),
                lin1: Linear::new(ps, "head.4", 2 * c_in, hidden, false, Init::KaimingNormal)?,
                bn2: BatchNorm::new(ps, "head.6", hidden, false)?,
                drop2: Dropout::new(0.5, seed ^ 0x5eed_0002),
                lin2: Linear::new(ps, "head.8", hidden, n_classes, false, Init::KaimingNormal)?,
            },
        })
    }

    /// Pooling part of the head: `[N, C, H, W] -> [N, F]`.
    pub fn pool(&self, feats: &Tensor) -> Result<Tensor> {
        match self {
            Head::Linear(_) => adaptive_avg_pool(feats),
            Head::Fastai { .. } => adaptive_concat_pool(feats),
        }
    }

    pub fn forward_t(&self, feats: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.pool(feats)?;
        match self {
            Head::Linear(fc) => fc.forward(&x),
            Head::Fastai {
                bn1,
                drop1,
                lin1,
                bn2,
                drop2,
                lin2,
            } => {
                let x = drop1.forward_t(&bn1.forward_t(&x, train)?, train)?;
                let x = lin1.forward(&x)?.relu()?;
                let x = drop2.forward_t(&bn2.forward_t(&x, train)?, train)?;
                lin2.forward(&x)
            }
        }
    }
}
