//! fastai's lr_find as a callback: before each batch every group's learning
//! rate follows an exponential sweep from 1e-7 to 10 over `num_it` batches;
//! after it, the loss is smoothed (beta 0.98, debiased) and recorded, and the
//! fit stops once it exceeds 4x the best, is not finite, or `num_it` batches
//! are done; a batch whose loss is not finite stops it before its step. The
//! weights (and BN statistics) are saved before and restored after.

use crate::learner::callback::{BatchState, Callback, FitState, Halt, HookResult, StepHooks};
use crate::learner::events::{FitError, LrFindResult};
use crate::learner::schedule::{sched_exp, suggest};
use candle_core::Tensor;
use std::ops::Range;

#[derive(Debug)]
pub struct LrFinder {
    pub num_it: usize,
    pub start_lr: f64,
    pub end_lr: f64,
    pub beta: f64,
    /// Learning rate and smoothed loss of each batch done.
    pub lrs: Vec<f64>,
    pub losses: Vec<f64>,
    avg: f64,
    best: f64,
    /// The learning rate of the current batch.
    lr: f64,
    /// Batches of the current epoch.
    epoch_batches: usize,
    saved: Vec<(String, Tensor)>,
}

impl LrFinder {
    /// The sweep runs as epochs 1000.. so that its shuffles are not the
    /// training epochs'.
    pub const FIRST_EPOCH: usize = 1000;

    pub fn new(num_it: usize) -> Self {
        Self {
            num_it,
            start_lr: 1e-7,
            end_lr: 10.0,
            beta: 0.98,
            lrs: Vec::new(),
            losses: Vec::new(),
            avg: 0.0,
            best: f64::INFINITY,
            lr: 0.0,
            epoch_batches: 0,
            saved: Vec::new(),
        }
    }

    /// The epochs to fit: enough for `num_it` batches (an epoch has one at
    /// least; the finder stops the fit at `num_it`).
    pub fn epochs(num_it: usize) -> Range<usize> {
        Self::FIRST_EPOCH..Self::FIRST_EPOCH + num_it
    }

    /// The recorded sweep and fastai's suggestions.
    pub fn result(&self) -> LrFindResult {
        LrFindResult {
            lrs: self.lrs.clone(),
            losses: self.losses.clone(),
            suggestions: suggest(&self.lrs, &self.losses, self.num_it),
        }
    }

    /// Records a batch's loss; true when the sweep is over.
    fn record(&mut self, loss: f64) -> bool {
        let it = self.lrs.len();
        self.avg = self.beta * self.avg + (1.0 - self.beta) * loss;
        let smooth = self.avg / (1.0 - self.beta.powi(it as i32 + 1));
        self.lrs.push(self.lr);
        self.losses.push(smooth);
        self.best = self.best.min(smooth);
        smooth > 4.0 * self.best || !smooth.is_finite() || it + 1 >= self.num_it
    }
}

impl Callback for LrFinder {
    fn before_fit(&mut self, s: &mut FitState<'_>) -> HookResult {
        self.saved = s
            .learn
            .net
            .params()
            .tensors()
            .into_iter()
            .map(|(n, t)| Ok((n, t.copy()?)))
            .collect::<candle_core::Result<_>>()?;
        Ok(())
    }

    fn before_epoch(&mut self, _s: &mut FitState<'_>) -> HookResult {
        self.epoch_batches = 0;
        Ok(())
    }

    fn after_batch(&mut self, _s: &mut FitState<'_>, b: &BatchState) -> HookResult {
        self.epoch_batches += 1;
        if self.record(b.loss) {
            return Err(Halt::Stop);
        }
        Ok(())
    }

    fn after_epoch(&mut self, _s: &mut FitState<'_>) -> HookResult {
        if self.epoch_batches == 0 {
            return Err(FitError::NoTrainBatches.into());
        }
        Ok(())
    }

    fn after_fit(&mut self, s: &mut FitState<'_>) -> HookResult {
        for (n, t) in &self.saved {
            s.learn.net.params().set(n, t)?;
        }
        self.saved.clear();
        Ok(())
    }

    fn step_hooks(&mut self) -> Option<&mut dyn StepHooks> {
        Some(self)
    }
}

impl StepHooks for LrFinder {
    fn before_batch(&mut self, s: &mut FitState<'_>, _b: &mut BatchState) -> HookResult {
        let pos = self.lrs.len() as f64 / self.num_it as f64;
        self.lr = sched_exp(self.start_lr, self.end_lr, pos);
        s.opt.set_lrs(&vec![self.lr; s.opt.n_groups()]);
        Ok(())
    }

    /// A loss that is not finite ends the sweep before its step.
    fn after_loss(&mut self, _s: &mut FitState<'_>, b: &BatchState) -> HookResult {
        if !b.loss.is_finite() {
            return Err(Halt::Stop);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learner::testutil::{dummy_batch, tiny_dls, tiny_learner};
    use crate::learner::LearnerOptions;

    #[test]
    fn sweeps_exponentially_and_stops_when_the_loss_explodes() {
        let (_tmp, dls) = tiny_dls();
        let mut l = tiny_learner(LearnerOptions::default());
        let mut opt = l.new_optimizer().unwrap();
        let mut s = FitState::new(&mut l, &mut opt, &dls, 1);
        let mut f = LrFinder::new(100);
        let mut b = dummy_batch(1.0);
        for i in 0..10 {
            f.before_batch(&mut s, &mut b).unwrap();
            assert_eq!(
                s.opt.lrs(),
                vec![sched_exp(1e-7, 10.0, i as f64 / 100.0); 3]
            );
            assert!(f.after_loss(&mut s, &b).is_ok());
            assert!(f.after_batch(&mut s, &b).is_ok(), "step {i}");
        }
        // Debiased smoothing of a constant is the constant.
        assert!(f.losses.iter().all(|&x| (x - 1.0).abs() < 1e-12));
        // 100 lifts the smoothed loss to ~10.9 > 4 x 1: stop.
        let b = dummy_batch(100.0);
        assert!(matches!(f.after_batch(&mut s, &b), Err(Halt::Stop)));
        assert_eq!(f.result().lrs.len(), 11);
    }

    #[test]
    fn stops_at_num_it_and_before_the_step_of_a_loss_that_is_not_finite() {
        let (_tmp, dls) = tiny_dls();
        let mut l = tiny_learner(LearnerOptions::default());
        let mut opt = l.new_optimizer().unwrap();
        let mut s = FitState::new(&mut l, &mut opt, &dls, 1);
        let mut f = LrFinder::new(3);
        let b = dummy_batch(0.5);
        assert!(f.after_batch(&mut s, &b).is_ok());
        assert!(f.after_batch(&mut s, &b).is_ok());
        assert!(matches!(f.after_batch(&mut s, &b), Err(Halt::Stop)));
        let nan = dummy_batch(f64::NAN);
        assert!(matches!(f.after_loss(&mut s, &nan), Err(Halt::Stop)));
        // An epoch without a batch is an error.
        f.before_epoch(&mut s).unwrap();
        assert!(matches!(
            f.after_epoch(&mut s),
            Err(Halt::Error(FitError::NoTrainBatches))
        ));
    }
}
