//! Fails the fit as soon as a batch's loss is not finite (fastai's TerminateOnNaN,
//! as an error: [`FitError::Diverged`]).

use crate::learner::callback::{BatchState, Callback, FitState, HookResult, StepHooks};
use crate::learner::events::FitError;

#[derive(Debug, Clone, Copy, Default)]
pub struct DivergenceGuard;

impl Callback for DivergenceGuard {
    fn step_hooks(&mut self) -> Option<&mut dyn StepHooks> {
        Some(self)
    }
}

impl StepHooks for DivergenceGuard {
    fn after_loss(&mut self, _s: &mut FitState<'_>, b: &BatchState) -> HookResult {
        if !b.loss.is_finite() {
            return Err(FitError::Diverged(b.loss).into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learner::callback::Halt;
    use crate::learner::testutil::{dummy_batch, tiny_dls, tiny_learner};
    use crate::learner::LearnerOptions;

    #[test]
    fn a_loss_that_is_not_finite_fails_the_fit() {
        let (_tmp, dls) = tiny_dls();
        let mut l = tiny_learner(LearnerOptions::default());
        let mut opt = l.new_optimizer().unwrap();
        let mut s = FitState::new(&mut l, &mut opt, &dls, 1);
        let mut b = dummy_batch(0.7);
        assert!(DivergenceGuard.after_loss(&mut s, &b).is_ok());
        b.loss = f64::INFINITY;
        let r = DivergenceGuard.after_loss(&mut s, &b);
        assert!(matches!(r, Err(Halt::Error(FitError::Diverged(v))) if v == f64::INFINITY));
    }
}
