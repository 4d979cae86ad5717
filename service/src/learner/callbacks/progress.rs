//! Reports the fit's [`Event`]s to a closure (progress bars, the job runner,
//! metrics.jsonl); the closure returning `false` cancels the fit
//! ([`FitError::Cancelled`]).

use crate::learner::callback::{BatchState, Callback, FitState, HookResult};
use crate::learner::events::{Event, FitError};

pub struct ProgressHook<F> {
    hook: F,
}

impl<F: FnMut(&Event) -> bool> ProgressHook<F> {
    pub fn new(hook: F) -> Self {
        Self { hook }
    }

    fn send(&mut self, e: &Event) -> HookResult {
        if (self.hook)(e) {
            Ok(())
        } else {
            Err(FitError::Cancelled.into())
        }
    }
}

impl<F: FnMut(&Event) -> bool> Callback for ProgressHook<F> {
    /// Last: the epoch's event carries the recorder's metrics, and cancelling
    /// on it leaves the epoch's checkpoint written.
    fn order(&self) -> i32 {
        10
    }

    fn before_epoch(&mut self, s: &mut FitState<'_>) -> HookResult {
        self.send(&Event::EpochStart {
            epoch: s.epoch,
            epochs: s.epochs,
            iters: s.iters,
        })
    }

    fn after_batch(&mut self, s: &mut FitState<'_>, b: &BatchState) -> HookResult {
        self.send(&Event::Batch {
            epoch: s.epoch,
            iter: s.iter + 1,
            iters: s.iters,
            loss: b.loss,
            lr: s.opt.lrs().last().copied().unwrap_or(0.0),
        })
    }

    fn after_epoch(&mut self, s: &mut FitState<'_>) -> HookResult {
        match s.metrics.clone() {
            Some(m) => self.send(&Event::Epoch(m)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learner::callback::Halt;
    use crate::learner::testutil::{dummy_batch, tiny_dls, tiny_learner};
    use crate::learner::LearnerOptions;

    #[test]
    fn reports_events_and_a_false_cancels() {
        let (_tmp, dls) = tiny_dls();
        let mut l = tiny_learner(LearnerOptions::default());
        let mut opt = l.new_optimizer().unwrap();
        opt.set_lrs(&[1e-5, 1e-4, 1e-3]);
        let mut seen = Vec::new();
        let mut hook = ProgressHook::new(|e: &Event| {
            seen.push(format!("{e:?}"));
            !matches!(e, Event::Batch { iter: 2, .. })
        });
        let mut s = FitState::new(&mut l, &mut opt, &dls, 3);
        s.epoch = 1;
        assert!(hook.before_epoch(&mut s).is_ok());
        let b = dummy_batch(0.5);
        assert!(hook.after_batch(&mut s, &b).is_ok());
        s.iter = 1;
        let r = hook.after_batch(&mut s, &b);
        assert!(matches!(r, Err(Halt::Error(FitError::Cancelled))), "{r:?}");
        // No metrics (no recorder): no epoch event.
        assert!(hook.after_epoch(&mut s).is_ok());
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], "EpochStart { epoch: 1, epochs: 3, iters: 5 }");
        assert_eq!(
            seen[1],
            "Batch { epoch: 1, iter: 1, iters: 5, loss: 0.5, lr: 0.001 }"
        );
    }
}
