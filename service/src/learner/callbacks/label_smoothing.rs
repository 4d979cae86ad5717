//! fastai's label smoothing: the fit's loss function becomes
//! `LabelSmoothingCrossEntropy(eps)` (training and validation; mixup mixes it).

use crate::learner::callback::{Callback, FitState, HookResult};
use crate::learner::loss::CrossEntropy;

#[derive(Debug, Clone, Copy)]
pub struct LabelSmoothing {
    pub eps: f64,
}

impl LabelSmoothing {
    pub fn new(eps: f64) -> Self {
        Self { eps }
    }
}

impl Callback for LabelSmoothing {
    fn before_fit(&mut self, s: &mut FitState<'_>) -> HookResult {
        s.loss_func = CrossEntropy {
            smoothing: self.eps,
        };
        Ok(())
    }
}
