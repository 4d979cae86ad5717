//! `fit_one_cycle`, `lr_find` and validation over a network and its data.

use super::loss::{loss, mixup, mixup_loss};
use super::metrics::{report, Report};
use super::optim::{AdamW, AdamWConfig};
use super::schedule::{sched_exp, suggest, LrSuggestions, OneCycle};
use super::LrSpec;
use crate::data::{Batch, DataLoaders};
use candle_core::{DType, Device, Tensor};
use cxr_models::network::ParamRef;
use cxr_models::Network;
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;

/// Activation dtype of the forward/backward pass; master weights stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// Half precision needs a GPU: candle's CPU convolutions have no bf16/f16 kernels.
    pub fn check_device(&self, device: &candle_core::Device) -> Result<(), String> {
        if *self != Precision::F32 && device.is_cpu() {
            return Err(format!(
                "precision {self:?} needs a GPU (--device cuda): candle's CPU convolutions have no half-precision kernels; use f32 on the CPU"
            ));
        }
        Ok(())
    }

    pub fn dtype(&self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" | "fp16" => Ok(Precision::F16),
            _ => Err(format!(
                "unknown precision {s:?} (expected f32, bf16 or f16)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LearnerOptions {
    pub wd: f64,
    /// Label-smoothing epsilon (0 = plain cross-entropy; fastai's is 0.1).
    pub label_smoothing: f64,
    /// Mixup alpha (None = off; fastai's is 0.4).
    pub mixup: Option<f64>,
    pub precision: Precision,
    pub seed: u64,
}

impl Default for LearnerOptions {
    fn default() -> Self {
        Self {
            wd: 0.01,
            label_smoothing: 0.0,
            mixup: None,
            precision: Precision::F32,
            seed: 42,
        }
    }
}

/// One row of the metrics table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub valid_loss: f64,
    pub accuracy: f64,
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    pub auc: f64,
    pub seconds: f64,
    pub images_per_s: f64,
}

/// What the learner reports while it runs. A hook returning `false` cancels.
#[derive(Debug, Clone)]
pub enum Event {
    EpochStart {
        epoch: usize,
        epochs: usize,
        iters: usize,
    },
    Batch {
        epoch: usize,
        iter: usize,
        iters: usize,
        loss: f64,
        lr: f64,
    },
    Epoch(EpochMetrics),
}

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("cancelled")]
    Cancelled,
    #[error("training diverged: the loss became {0} (try a lower learning rate)")]
    Diverged(f64),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct LrFindResult {
    pub lrs: Vec<f64>,
    pub losses: Vec<f64>,
    pub suggestions: Option<LrSuggestions>,
}

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
    loss_scale: f64,
    good_steps: usize,
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
            loss_scale: 65536.0,
            good_steps: 0,
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

    fn to_input(&self, b: &Batch) -> candle_core::Result<(Tensor, Tensor)> {
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

    /// One optimisation step on a batch; returns the (unscaled) loss. On the
    /// CPU on a hot thread pool ([`cxr_models::kernels::hot_pool`]): its
    /// rayon workers stay on the step's kernels between ops (train b16@128
    /// median step ~350 vs ~379 ms, 5 interleaved pairs of 8 steps).
    fn train_step(&mut self, opt: &mut AdamW, b: &Batch) -> Result<f64, FitError> {
        cxr_models::kernels::hot_pool(&self.device(), || self.step_here(opt, b))
    }

    fn step_here(&mut self, opt: &mut AdamW, b: &Batch) -> Result<f64, FitError> {
        let (x, y) = self.to_input(b)?;
        let ls = self.opts.label_smoothing;
        let l = match self.opts.mixup {
            Some(alpha) => {
                let m = mixup(&x, &y, alpha, &mut self.rng)?;
                let logits = self.net.forward_t(&m.x, true)?;
                mixup_loss(&logits, &y, &m, ls)?
            }
            None => {
                let logits = self.net.forward_t(&x, true)?;
                loss(&logits, &y, ls)?
            }
        };
        let value = f64::from(l.to_scalar::<f32>()?);
        if !value.is_finite() {
            return Err(FitError::Diverged(value));
        }
        if self.opts.precision == Precision::F16 {
            // Dynamic loss scaling, as fastai's MixedPrecision (GradScaler).
            let mut grads = (l * self.loss_scale)?.backward()?;
            let mut finite = true;
            for group in opt_vars(opt_groups(self)) {
                if let Some(g) = grads.get(group.as_tensor()) {
                    let s = f64::from(g.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?);
                    if !s.is_finite() {
                        finite = false;
                        break;
                    }
                    let unscaled = (g / self.loss_scale)?;
                    grads.insert(group.as_tensor(), unscaled);
                }
            }
            if finite {
                opt.step(&grads)?;
                self.good_steps += 1;
                if self.good_steps.is_multiple_of(500) {
                    self.loss_scale *= 2.0;
                }
            } else {
                self.loss_scale = (self.loss_scale / 2.0).max(1.0);
                self.good_steps = 0;
            }
        } else {
            let grads = l.backward()?;
            opt.step(&grads)?;
        }
        Ok(value)
    }

    /// Eval-mode pass over the validation set: mean loss and per-image probabilities.
    pub fn validate(&self, dls: &DataLoaders) -> Result<Validation, FitError> {
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
            let l = loss(&logits, &y, self.opts.label_smoothing)?;
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

    /// fastai's `fit_one_cycle(epochs, lr)`. `start_epoch` > 0 resumes a run
    /// whose first epochs are done (the schedule continues where it was) with
    /// the optimizer state saved then. `checkpoint` is called after each epoch.
    #[allow(clippy::too_many_arguments)]
    pub fn fit_one_cycle(
        &mut self,
        dls: &DataLoaders,
        epochs: usize,
        lr: LrSpec,
        start_epoch: usize,
        resume: Option<OptState>,
        hook: &mut dyn FnMut(&Event) -> bool,
        checkpoint: &mut dyn FnMut(usize, &Learner, &AdamW) -> Result<(), FitError>,
    ) -> Result<Vec<EpochMetrics>, FitError> {
        let sched = OneCycle::default();
        let mut opt = self.new_optimizer()?;
        if let Some(s) = resume {
            opt.load_state(&s.tensors, s.step, &self.device())?;
        }
        let lr_max = lr.per_group(opt.n_groups());
        let iters = dls.n_train_batches();
        let total = (epochs * iters).max(1) as f64;
        let mut out = Vec::new();
        self.batch_losses.clear();
        for epoch in start_epoch..epochs {
            if !hook(&Event::EpochStart {
                epoch,
                epochs,
                iters,
            }) {
                return Err(FitError::Cancelled);
            }
            let t0 = Instant::now();
            let mut sum = 0.0;
            let mut count = 0usize;
            let mut seen = 0usize;
            for (i, b) in dls.train_batches(epoch).enumerate() {
                let pos = (epoch * iters + i) as f64 / total;
                let lrs: Vec<f64> = lr_max.iter().map(|&m| sched.lr(m, pos)).collect();
                opt.set_lrs(&lrs);
                opt.set_beta1(sched.mom(pos));
                let l = self.train_step(&mut opt, &b)?;
                self.batch_losses.push(l);
                sum += l * b.n as f64;
                count += b.n;
                seen += b.n;
                let last_lr = lrs.last().copied().unwrap_or(0.0);
                if !hook(&Event::Batch {
                    epoch,
                    iter: i + 1,
                    iters,
                    loss: l,
                    lr: last_lr,
                }) {
                    return Err(FitError::Cancelled);
                }
            }
            let train_secs = t0.elapsed().as_secs_f64();
            let (valid_loss, probs, labels) = self.validate(dls)?;
            let r = report(&probs, &labels, dls.classes());
            let m = EpochMetrics {
                epoch,
                train_loss: if count == 0 {
                    f64::NAN
                } else {
                    sum / count as f64
                },
                valid_loss,
                accuracy: r.accuracy,
                f1: r.f1,
                precision: r.precision,
                recall: r.recall,
                auc: r.auc,
                seconds: t0.elapsed().as_secs_f64(),
                images_per_s: seen as f64 / train_secs.max(1e-9),
            };
            checkpoint(epoch + 1, self, &opt)?;
            let go_on = hook(&Event::Epoch(m.clone()));
            out.push(m);
            if !go_on {
                return Err(FitError::Cancelled);
            }
        }
        Ok(out)
    }

    /// fastai's `lr_find`: exponential sweep 1e-7..10 over `num_it` batches,
    /// loss smoothed (beta 0.98, debiased), stop when it exceeds 4x the best;
    /// the weights (and BN statistics) are restored afterwards.
    pub fn lr_find(&mut self, dls: &DataLoaders, num_it: usize) -> Result<LrFindResult, FitError> {
        let (start, end) = (1e-7, 10.0);
        let saved = self.net.params().tensors();
        let saved: Vec<(String, Tensor)> = saved
            .into_iter()
            .map(|(n, t)| Ok((n, t.copy()?)))
            .collect::<candle_core::Result<_>>()?;
        let mut opt = self.new_optimizer()?;
        let (mut lrs, mut losses) = (Vec::new(), Vec::new());
        let (mut avg, mut best) = (0.0f64, f64::INFINITY);
        let beta = 0.98f64;
        let mut it = 0usize;
        let mut epoch = 0usize;
        'outer: while it < num_it {
            let mut any = false;
            for b in dls.train_batches(1000 + epoch) {
                any = true;
                let lr = sched_exp(start, end, it as f64 / num_it as f64);
                opt.set_lrs(&vec![lr; opt.n_groups()]);
                let l = match self.train_step(&mut opt, &b) {
                    Ok(l) => l,
                    Err(FitError::Diverged(_)) => break 'outer,
                    Err(e) => return Err(e),
                };
                avg = beta * avg + (1.0 - beta) * l;
                let smooth = avg / (1.0 - beta.powi(it as i32 + 1));
                lrs.push(lr);
                losses.push(smooth);
                best = best.min(smooth);
                it += 1;
                if smooth > 4.0 * best || !smooth.is_finite() || it >= num_it {
                    break 'outer;
                }
            }
            if !any {
                return Err(FitError::Other("no training batches".into()));
            }
            epoch += 1;
        }
        for (n, t) in &saved {
            self.net.params().set(n, t)?;
        }
        let suggestions = suggest(&lrs, &losses, num_it);
        Ok(LrFindResult {
            lrs,
            losses,
            suggestions,
        })
    }
}

fn opt_groups(l: &Learner) -> Vec<Vec<ParamRef>> {
    l.trainable_groups()
}

fn opt_vars(groups: Vec<Vec<ParamRef>>) -> Vec<candle_core::Var> {
    groups.into_iter().flatten().map(|p| p.var).collect()
}
