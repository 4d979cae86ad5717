//! Calls a closure after each epoch with the number of epochs done, the
//! learner and the optimizer (to save them).

use crate::learner::base::Learner;
use crate::learner::callback::{Callback, FitState, HookResult};
use crate::learner::events::FitError;
use crate::learner::optim::AdamW;

pub struct Checkpoint<F> {
    save: F,
}

impl<F> Checkpoint<F>
where
    F: FnMut(usize, &Learner, &AdamW) -> Result<(), FitError>,
{
    pub fn new(save: F) -> Self {
        Self { save }
    }
}

impl<F> Callback for Checkpoint<F>
where
    F: FnMut(usize, &Learner, &AdamW) -> Result<(), FitError>,
{
    /// After the recorder (-20), before the progress hook (10): a run
    /// cancelled on the epoch's event keeps that epoch's checkpoint.
    fn order(&self) -> i32 {
        -10
    }

    fn after_epoch(&mut self, s: &mut FitState<'_>) -> HookResult {
        (self.save)(s.epoch + 1, s.learn, s.opt)?;
        Ok(())
    }
}
