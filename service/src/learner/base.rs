//! The learner: a network with its options and state, and what needs no
//! training loop: parameter groups, the optimizer, batches as tensors,
//! validation. The loop itself is in [`super::fit`].

use super::events::FitError;
use super::loss::CrossEntropy;
use super::metrics::{report, Report};
use super::optim::{AdamW, AdamWConfig};
use super::options::LearnerOptions;
use crate::data::{Batch, DataLoaders};
use candle_core::{Device, Tensor};
use cxr_models::network::ParamRef;
use cxr_models::Network;
use rand::{rngs::StdRng, SeedableRng};
use std::collections::HashMap;

/// Mean validation loss, per-image probabilities and the true labels.
pub type Validation = (f64, Vec<Vec<f32>>, Vec<u32>);

/// A checkpoint taken after an epoch: network weights are in the network itself.
pub struct OptState {
    pub tensors: HashMap<String, Tensor>,
    pub step: u64,
}

pub struct Learner {
    pub net: Network,
    pub opts: LearnerOptions,
    /// Only the head (and every BN layer, fastai's `train_bn`) trains.
    pub frozen: bool,
    /// Train loss of every batch of the last fit (for the loss plot).
    pub batch_losses: Vec<f64>,
    rng: StdRng,
    /// f16's dynamic loss scale, carried from one fit to the next.
    loss_scale: LossScale,
}

impl Learner {
    pub fn new(net: Network, opts: LearnerOptions) -> Self {
        let rng = StdRng::seed_from_u64(opts.seed ^ 0x6d69_7875);
        Self {
            net,
            opts,
            frozen: false,
            batch_losses: Vec::new(),
            rng,
            loss_scale: LossScale::default(),
        }
    }

    pub fn device(&self) -> Device {
        self.net.device().clone()
    }

    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    pub fn unfreeze(&mut self) {
        self.frozen = false;
    }

    /// The learner's random stream (mixup draws from it), seeded from `opts.seed`.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// The f16 loss scale the learner's next fit starts from.
    pub fn loss_scale(&self) -> LossScale {
        self.loss_scale
    }

    /// Keeps the loss scale a fit ended at (see `OptionCallbacks::loss_scale`).
    pub fn set_loss_scale(&mut self, scale: LossScale) {
        self.loss_scale = scale;
    }

    /// The parameter groups handed to the optimizer: all of them, or when frozen
    /// only the head and the BN parameters of the body.
    pub fn trainable_groups(&self) -> Vec<Vec<ParamRef>> {
        let last = cxr_models::network::N_GROUPS - 1;
        self.net
            .param_groups()
            .into_iter()
            .enumerate()
            .map(|(i, g)| {
                if self.frozen && i != last {
                    g.into_iter().filter(|p| p.is_bn).collect()
                } else {
                    g
                }
            })
            .collect()
    }

    pub fn new_optimizer(&self) -> candle_core::Result<AdamW> {
        AdamW::new(
            self.trainable_groups(),
            AdamWConfig {
                wd: self.opts.wd,
                ..Default::default()
            },
        )
    }

    /// A batch as tensors on the model's device: inputs in the learner's
    /// precision, and the class indices.
    pub fn to_input(&self, b: &Batch) -> candle_core::Result<(Tensor, Tensor)> {
        let dev = self.device();
        let x = match &b.raw {
            // The augmentation runs here, on the model's device.
            Some(raw) => crate::data::device_augment::device_input(raw, b.size, &dev)?,
            None => Tensor::from_slice(&b.images, (b.n, 3, b.size, b.size), &dev)?,
        }
        .to_dtype(self.opts.precision.dtype())?;
        let y = Tensor::from_slice(&b.labels, b.n, &dev)?;
        Ok((x, y))
    }

    /// Eval-mode pass over the validation set: mean loss (with the options'
    /// label smoothing) and per-image probabilities.
    pub fn validate(&self, dls: &DataLoaders) -> Result<Validation, FitError> {
        self.validate_with(
            dls,
            CrossEntropy {
                smoothing: self.opts.label_smoothing,
            },
        )
    }

    /// [`Learner::validate`] with the loss function `loss_func`.
    pub fn validate_with(
        &self,
        dls: &DataLoaders,
        loss_func: CrossEntropy,
    ) -> Result<Validation, FitError> {
        let mut total = 0.0;
        let mut n = 0usize;
        let mut probs = Vec::new();
        let mut labels = Vec::new();
        for b in dls.valid_batches() {
            let (x, y) = self.to_input(&b)?;
            // No gradients here: the fused inference kernels may run.
            let logits = cxr_models::kernels::hot_pool(x.device(), || {
                cxr_models::kernels::inference(|| self.net.forward_t(&x, false))
            })?;
            let l = loss_func.mean(&logits, &y)?;
            total += f64::from(l.to_scalar::<f32>()?) * b.n as f64;
            n += b.n;
            let p = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2::<f32>()?;
            probs.extend(p);
            labels.extend_from_slice(&b.labels);
        }
        Ok((
            if n == 0 { f64::NAN } else { total / n as f64 },
            probs,
            labels,
        ))
    }

    /// The validation report (confusion matrix and classification report).
    pub fn valid_report(&self, dls: &DataLoaders) -> Result<Report, FitError> {
        let (_, probs, labels) = self.validate(dls)?;
        Ok(report(&probs, &labels, dls.classes()))
    }
}

/// The scaler's state, kept by the learner from one fit to the next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScale {
    pub scale: f64,
    /// Good steps since the last overflow.
    pub good_steps: usize,
}

impl Default for LossScale {
    fn default() -> Self {
        Self {
            scale: 65536.0,
            good_steps: 0,
        }
    }
}

impl LossScale {
    /// Good steps in a row after which the scale doubles.
    pub const GROWTH_INTERVAL: usize = 500;

    /// Records a step: `finite` gradients were applied, else skipped.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps.is_multiple_of(Self::GROWTH_INTERVAL) {
                self.scale *= 2.0;
            }
        } else {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
        }
    }
}
