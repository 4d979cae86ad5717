//! fastai's one-cycle schedule: before each batch, every group's learning rate
//! and Adam's beta1 at the position `(epoch * iters + iter) / (epochs * iters)`
//! of the whole fit (so a fit resumed at a later epoch continues the schedule).

use crate::learner::callback::{BatchState, Callback, FitState, HookResult, StepHooks};
use crate::learner::schedule::OneCycle;
use crate::learner::LrSpec;

#[derive(Debug, Clone)]
pub struct OneCycleSchedule {
    /// The peak learning rate(s).
    pub lr: LrSpec,
    pub sched: OneCycle,
    /// Peak per parameter group, set in `before_fit`.
    lr_max: Vec<f64>,
}

impl OneCycleSchedule {
    pub fn new(lr: LrSpec, sched: OneCycle) -> Self {
        Self {
            lr,
            sched,
            lr_max: Vec::new(),
        }
    }

    /// Position of the current batch in the whole schedule, in 0..1.
    pub fn pos(s: &FitState<'_>) -> f64 {
        let total = (s.epochs * s.iters).max(1) as f64;
        (s.epoch * s.iters + s.iter) as f64 / total
    }
}

impl Callback for OneCycleSchedule {
    fn before_fit(&mut self, s: &mut FitState<'_>) -> HookResult {
        self.lr_max = self.lr.per_group(s.opt.n_groups());
        Ok(())
    }

    fn step_hooks(&mut self) -> Option<&mut dyn StepHooks> {
        Some(self)
    }
}

impl StepHooks for OneCycleSchedule {
    fn before_batch(&mut self, s: &mut FitState<'_>, _b: &mut BatchState) -> HookResult {
        let pos = Self::pos(s);
        let lrs: Vec<f64> = self.lr_max.iter().map(|&m| self.sched.lr(m, pos)).collect();
        s.opt.set_lrs(&lrs);
        s.opt.set_beta1(self.sched.mom(pos));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learner::schedule::even_mults;
    use crate::learner::testutil::{dummy_batch, tiny_dls, tiny_learner};
    use crate::learner::LearnerOptions;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-12)
    }

    #[test]
    fn sets_every_groups_lr_and_beta1_at_the_fits_position() {
        let (_tmp, dls) = tiny_dls();
        let mut l = tiny_learner(LearnerOptions::default());
        let mut opt = l.new_optimizer().unwrap();
        let oc = OneCycle::default();
        let mut cb = OneCycleSchedule::new(LrSpec::Range(1e-5, 1e-3), oc);
        let mut s = FitState::new(&mut l, &mut opt, &dls, 4);
        s.iters = 5;
        cb.before_fit(&mut s).unwrap();
        let peaks = even_mults(1e-5, 1e-3, 3);
        let mut b = dummy_batch(f64::NAN);
        // (epoch, iter) -> position in the 4 x 5 batches of the fit.
        for (epoch, iter, pos) in [(0, 0, 0.0), (1, 0, 0.25), (2, 3, 0.65), (3, 4, 0.95)] {
            s.epoch = epoch;
            s.iter = iter;
            assert!(close(OneCycleSchedule::pos(&s), pos));
            cb.before_batch(&mut s, &mut b).unwrap();
            let lrs = s.opt.lrs();
            assert_eq!(lrs.len(), 3);
            for (got, &peak) in lrs.iter().zip(&peaks) {
                assert!(close(*got, oc.lr(peak, pos)), "{got} at {pos}");
            }
            assert!(close(s.opt.config.beta1, oc.mom(pos)));
        }
        // At the end of the warm-up every group is at its peak, beta1 at its low.
        s.epoch = 1;
        s.iter = 0;
        cb.before_batch(&mut s, &mut b).unwrap();
        assert!(close(s.opt.lrs()[2], 1e-3) && close(s.opt.config.beta1, 0.85));
    }
}
