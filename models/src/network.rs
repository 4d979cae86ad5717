//! A whole classifier: body (ResNet18 or XResNet18) plus head, its parameters,
//! and fastai's parameter groups.

use crate::head::{Head, HeadKind};
use crate::params::{Kind, ParamStore};
use crate::resnet::{resnet_group, ResNet18Body, RESNET18_WIDTHS};
use crate::xresnet::{xresnet_group, XResNet18Body};
use candle_core::{DType, Device, Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Resnet18,
    Xresnet18,
}

impl Arch {
    pub fn as_str(&self) -> &'static str {
        match self {
            Arch::Resnet18 => "resnet18",
            Arch::Xresnet18 => "xresnet18",
        }
    }
}

/// A name that is no [`Arch`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown architecture {0:?} (expected resnet18 or xresnet18)")]
pub struct UnknownArch(pub String);

impl std::str::FromStr for Arch {
    type Err = UnknownArch;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownArch> {
        match s.to_ascii_lowercase().as_str() {
            "resnet18" => Ok(Arch::Resnet18),
            "xresnet18" => Ok(Arch::Xresnet18),
            other => Err(UnknownArch(other.to_string())),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything needed to rebuild the same network (stored in the model card).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetConfig {
    pub arch: Arch,
    pub widths: [usize; 4],
    pub n_classes: usize,
    pub head: HeadKind,
    /// Hidden width of the fastai head (512 in fastai).
    #[serde(default = "default_hidden")]
    pub head_hidden: usize,
}

fn default_hidden() -> usize {
    512
}

impl NetConfig {
    /// Full-width network with the usual head: XResNet from scratch gets a linear
    /// head, a (pretrained) ResNet gets fastai's transfer head.
    pub fn standard(arch: Arch, n_classes: usize) -> Self {
        Self {
            arch,
            widths: RESNET18_WIDTHS,
            n_classes,
            head: match arch {
                Arch::Resnet18 => HeadKind::Fastai,
                Arch::Xresnet18 => HeadKind::Linear,
            },
            head_hidden: 512,
        }
    }
}

pub(crate) enum Body {
    ResNet(ResNet18Body),
    XResNet(XResNet18Body),
}

/// Number of parameter groups (fastai's splits).
pub const N_GROUPS: usize = 3;

pub struct Network {
    pub config: NetConfig,
    params: ParamStore,
    pub(crate) body: Body,
    head: Head,
    /// Set by [`Network::freeze`]: packed weights reused across predictions.
    frozen: Option<Arc<crate::kernels::FrozenWeights>>,
}

impl Network {
    pub fn new(config: NetConfig, device: &Device, seed: u64) -> Result<Self> {
        if config.n_classes < 2 {
            candle_core::bail!(
                "a classifier needs at least 2 classes, got {}",
                config.n_classes
            )
        }
        let mut ps = ParamStore::new(device, seed);
        let (body, c) = match config.arch {
            Arch::Resnet18 => {
                let b = ResNet18Body::new(&mut ps, config.widths)?;
                let c = b.out_channels();
                (Body::ResNet(b), c)
            }
            Arch::Xresnet18 => {
                let b = XResNet18Body::new(&mut ps, config.widths)?;
                let c = b.out_channels();
                (Body::XResNet(b), c)
            }
        };
        let head = Head::new(
            &mut ps,
            config.head,
            c,
            config.head_hidden,
            config.n_classes,
            seed,
        )?;
        Ok(Self {
            config,
            params: ps,
            body,
            head,
            frozen: None,
        })
    }

    /// Promises that the weights no longer change (a model loaded to
    /// predict): [`Network::predict_proba`] then packs each convolution's
    /// weights for the CPU kernels once instead of on every call. Do not
    /// train or load weights into a frozen network.
    pub fn freeze(mut self) -> Self {
        self.frozen = Some(Arc::new(crate::kernels::FrozenWeights::new()));
        self
    }

    pub fn device(&self) -> &Device {
        self.params.device()
    }

    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// The last feature map `[N, C, h, w]` (Grad-CAM's target layer).
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match &self.body {
            Body::ResNet(b) => b.forward_t(x, train),
            Body::XResNet(b) => b.forward_t(x, train),
        }
    }

    /// Logits from a feature map.
    pub fn head_t(&self, feats: &Tensor, train: bool) -> Result<Tensor> {
        self.head.forward_t(feats, train)
    }

    /// `[N, 3, S, S]` (f32, f16 or bf16) -> logits `[N, n_classes]` in f32.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let f = self.features_t(x, train)?;
        self.head_t(&f, train)?.to_dtype(DType::F32)
    }

    /// Class probabilities in eval mode.
    pub fn predict_proba(&self, x: &Tensor) -> Result<Tensor> {
        let run = || candle_nn::ops::softmax_last_dim(&self.forward_t(x, false)?);
        let predict = || match &self.frozen {
            Some(cache) => crate::kernels::inference_frozen(cache, run),
            None => crate::kernels::inference(run),
        };
        crate::kernels::hot_pool(x.device(), predict)
    }

    /// Which algorithm the CPU kernels take for each convolution of the
    /// body on `n` images of `size` pixels under settings `s`
    /// ([`crate::kernels::plan::explain`]); `None` for XResNet18, whose
    /// convolutions are not listed.
    pub fn explain_kernels(
        &self,
        n: usize,
        size: usize,
        s: &crate::kernels::KernelSettings,
    ) -> Option<String> {
        let body = self.resnet_body()?;
        Some(crate::kernels::plan::explain(&body.conv_sites(n, size), s))
    }

    /// The parameter group of a tensor name (0: stem/early body, 1: late body, 2: head).
    pub fn group_of(&self, name: &str) -> usize {
        match self.config.arch {
            Arch::Resnet18 => resnet_group(name),
            Arch::Xresnet18 => xresnet_group(name),
        }
    }

    /// Trainable variables by group, plus whether each takes weight decay and is a BN parameter.
    pub fn param_groups(&self) -> Vec<Vec<ParamRef>> {
        let mut groups: Vec<Vec<ParamRef>> = (0..N_GROUPS).map(|_| Vec::new()).collect();
        for (name, e) in self.params.iter() {
            if e.kind != Kind::Param {
                continue;
            }
            groups[self.group_of(name)].push(ParamRef {
                name: name.to_string(),
                var: e.var.clone(),
                no_decay: e.no_decay,
                is_bn: e.is_bn,
            });
        }
        groups
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn resnet_body(&self) -> Option<&ResNet18Body> {
        match &self.body {
            Body::ResNet(b) => Some(b),
            Body::XResNet(_) => None,
        }
    }
}

/// A trainable variable handed to an optimizer.
#[derive(Debug, Clone)]
pub struct ParamRef {
    pub name: String,
    pub var: Var,
    pub no_decay: bool,
    pub is_bn: bool,
}
