//! The callbacks: each trick of the training loop in its own module.
//!
//! - [`MixUp`]: fastai's MixUp (inputs and the loss);
//! - [`LabelSmoothing`]: fastai's label-smoothing cross-entropy;
//! - [`LossScaler`]: f16 dynamic loss scaling (fastai's MixedPrecision);
//! - [`OneCycleSchedule`]: the one-cycle learning rate and momentum;
//! - [`DivergenceGuard`]: fails the fit when the loss is not finite;
//! - [`Recorder`]: train loss, validation metrics ([`EpochMetrics`]), the
//!   batch losses of the loss plot, images/s;
//! - [`Checkpoint`]: a closure called after each epoch;
//! - [`ProgressHook`]: reports [`Event`]s to a closure, which cancels by
//!   returning `false`;
//! - [`LrFinder`]: fastai's lr_find.
//!
//! [`OptionCallbacks`] builds the ones [`LearnerOptions`] ask for.
//!
//! [`EpochMetrics`]: super::EpochMetrics
//! [`Event`]: super::Event

mod checkpoint;
mod divergence;
mod label_smoothing;
mod loss_scale;
mod lr_finder;
mod mixup;
mod one_cycle;
mod progress;
mod recorder;

pub use checkpoint::Checkpoint;
pub use divergence::DivergenceGuard;
pub use label_smoothing::LabelSmoothing;
pub use loss_scale::LossScaler;
pub use lr_finder::LrFinder;
pub use mixup::MixUp;
pub use one_cycle::OneCycleSchedule;
pub use progress::ProgressHook;
pub use recorder::Recorder;

use super::base::LossScale;
use super::callback::Callback;
use super::options::{LearnerOptions, Precision};

/// The callbacks [`LearnerOptions`] ask for: label smoothing (epsilon > 0),
/// mixup (an alpha) and loss scaling (f16).
#[derive(Debug)]
pub struct OptionCallbacks {
    pub label_smoothing: Option<LabelSmoothing>,
    pub mixup: Option<MixUp>,
    pub loss_scaler: Option<LossScaler>,
}

impl OptionCallbacks {
    /// `scale` is where the loss scaler starts (the learner's, from its last fit).
    pub fn new(opts: &LearnerOptions, scale: LossScale) -> Self {
        Self {
            label_smoothing: (opts.label_smoothing != 0.0)
                .then(|| LabelSmoothing::new(opts.label_smoothing)),
            mixup: opts.mixup.map(MixUp::new),
            loss_scaler: (opts.precision == Precision::F16).then(|| LossScaler::new(scale)),
        }
    }

    /// The callbacks, to hand to [`super::Learner::fit`] with others.
    pub fn callbacks(&mut self) -> Vec<&mut dyn Callback> {
        let mut v: Vec<&mut dyn Callback> = Vec::new();
        if let Some(c) = self.label_smoothing.as_mut() {
            v.push(c);
        }
        if let Some(c) = self.mixup.as_mut() {
            v.push(c);
        }
        if let Some(c) = self.loss_scaler.as_mut() {
            v.push(c);
        }
        v
    }

    /// The loss scale the scaler ended at, if there is one.
    pub fn loss_scale(&self) -> Option<LossScale> {
        self.loss_scaler.as_ref().map(|s| s.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_pick_the_callbacks() {
        let none = OptionCallbacks::new(&LearnerOptions::default(), LossScale::default());
        assert!(none.label_smoothing.is_none() && none.mixup.is_none());
        assert!(none.loss_scaler.is_none() && none.loss_scale().is_none());
        let opts = LearnerOptions {
            label_smoothing: 0.1,
            mixup: Some(0.4),
            precision: Precision::F16,
            ..Default::default()
        };
        let scale = LossScale {
            scale: 1024.0,
            good_steps: 7,
        };
        let mut all = OptionCallbacks::new(&opts, scale);
        assert_eq!(all.callbacks().len(), 3);
        assert_eq!(all.label_smoothing.map(|c| c.eps), Some(0.1));
        assert_eq!(all.mixup.as_ref().map(|c| c.alpha), Some(0.4));
        assert_eq!(all.loss_scale(), Some(scale));
    }
}
