//! Records the fit: every batch's loss (the learner's `batch_losses`, for the
//! loss plot), and after each epoch the train loss, the validation metrics
//! and the speed, as an [`EpochMetrics`] row (also left in
//! [`FitState::metrics`] for the callbacks after it).

use crate::learner::callback::{BatchState, Callback, FitState, HookResult};
use crate::learner::events::EpochMetrics;
use crate::learner::metrics::report;
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Recorder {
    /// One row per epoch of the fit.
    pub metrics: Vec<EpochMetrics>,
    t0: Option<Instant>,
    /// Sum of the batch losses weighted by batch size, and the images seen.
    sum: f64,
    count: usize,
}

impl Callback for Recorder {
    /// First: the others read its metrics.
    fn order(&self) -> i32 {
        -20
    }

    fn before_fit(&mut self, s: &mut FitState<'_>) -> HookResult {
        s.learn.batch_losses.clear();
        Ok(())
    }

    fn before_epoch(&mut self, _s: &mut FitState<'_>) -> HookResult {
        self.t0 = Some(Instant::now());
        self.sum = 0.0;
        self.count = 0;
        Ok(())
    }

    fn after_batch(&mut self, s: &mut FitState<'_>, b: &BatchState) -> HookResult {
        s.learn.batch_losses.push(b.loss);
        self.sum += b.loss * b.n as f64;
        self.count += b.n;
        Ok(())
    }

    fn after_epoch(&mut self, s: &mut FitState<'_>) -> HookResult {
        let t0 = self.t0.unwrap_or_else(Instant::now);
        let train_secs = t0.elapsed().as_secs_f64();
        let (valid_loss, probs, labels) = s.learn.validate_with(s.dls, s.loss_func)?;
        let r = report(&probs, &labels, s.dls.classes());
        let m = EpochMetrics {
            epoch: s.epoch,
            train_loss: if self.count == 0 {
                f64::NAN
            } else {
                self.sum / self.count as f64
            },
            valid_loss,
            accuracy: r.accuracy,
            f1: r.f1,
            precision: r.precision,
            recall: r.recall,
            auc: r.auc,
            seconds: t0.elapsed().as_secs_f64(),
            images_per_s: self.count as f64 / train_secs.max(1e-9),
        };
        s.metrics = Some(m.clone());
        self.metrics.push(m);
        Ok(())
    }
}
