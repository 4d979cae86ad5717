//! f16 dynamic loss scaling, as fastai's MixedPrecision (PyTorch's
//! GradScaler): the loss is multiplied by the scale before backward, the
//! gradients divided by it after; a step whose gradients overflowed is
//! skipped and the scale halved (down to 1); after 500 good steps in a row
//! it doubles.

use crate::learner::base::LossScale;
use crate::learner::callback::{BatchState, Callback, FitState, HookResult, StepHooks};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

#[derive(Debug, Clone, Default)]
pub struct LossScaler {
    pub state: LossScale,
}

impl LossScaler {
    pub fn new(state: LossScale) -> Self {
        Self { state }
    }

    /// Divides the trainable parameters' gradients by the scale, in place;
    /// false (and the rest left as they are) at the first that is not finite.
    fn unscale(&self, s: &FitState<'_>, grads: &mut GradStore) -> candle_core::Result<bool> {
        for var in s
            .learn
            .trainable_groups()
            .into_iter()
            .flatten()
            .map(|p| p.var)
        {
            if let Some(g) = grads.get(var.as_tensor()) {
                let sum = f64::from(g.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?);
                if !sum.is_finite() {
                    return Ok(false);
                }
                let unscaled = (g / self.state.scale)?;
                grads.insert(var.as_tensor(), unscaled);
            }
        }
        Ok(true)
    }
}

impl Callback for LossScaler {
    fn step_hooks(&mut self) -> Option<&mut dyn StepHooks> {
        Some(self)
    }
}

impl StepHooks for LossScaler {
    fn before_backward(
        &mut self,
        _s: &mut FitState<'_>,
        _b: &BatchState,
        loss: &mut Tensor,
    ) -> HookResult {
        *loss = (&*loss * self.state.scale)?;
        Ok(())
    }

    fn after_backward(
        &mut self,
        s: &mut FitState<'_>,
        b: &mut BatchState,
        grads: &mut GradStore,
    ) -> HookResult {
        if !self.unscale(s, grads)? {
            self.state.update(false);
            b.skip_step = true;
        }
        Ok(())
    }

    fn after_step(&mut self, _s: &mut FitState<'_>, _b: &BatchState) -> HookResult {
        self.state.update(true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learner::testutil::{dummy_batch, tiny_dls, tiny_learner};
    use crate::learner::LearnerOptions;

    #[test]
    fn the_scale_halves_on_overflow_and_doubles_after_500_good_steps() {
        let mut st = LossScale::default();
        st.update(false);
        assert_eq!(
            st,
            LossScale {
                scale: 32768.0,
                good_steps: 0
            }
        );
        st.good_steps = 499;
        st.update(true);
        assert_eq!(
            st,
            LossScale {
                scale: 65536.0,
                good_steps: 500
            }
        );
        let mut low = LossScale {
            scale: 1.0,
            good_steps: 3,
        };
        low.update(false);
        assert_eq!(
            low,
            LossScale {
                scale: 1.0,
                good_steps: 0
            }
        );
    }

    #[test]
    fn scales_the_loss_unscales_the_gradients_and_skips_an_overflowed_step() {
        let (_tmp, dls) = tiny_dls();
        let mut l = tiny_learner(LearnerOptions::default());
        let mut opt = l.new_optimizer().unwrap();
        let var = l.trainable_groups()[2][0].var.clone();
        let mut s = FitState::new(&mut l, &mut opt, &dls, 1);
        let mut ls = LossScaler::default();
        // Finite: d(scale * sum(w))/dw = scale, unscaled to 1.
        let mut b = dummy_batch(1.0);
        let mut loss = var.as_tensor().sum_all().unwrap();
        ls.before_backward(&mut s, &b, &mut loss).unwrap();
        let mut grads = loss.backward().unwrap();
        ls.after_backward(&mut s, &mut b, &mut grads).unwrap();
        assert!(!b.skip_step);
        let g = grads.get(var.as_tensor()).unwrap();
        let ones = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(ones.iter().all(|&x| x == 1.0), "{ones:?}");
        ls.after_step(&mut s, &b).unwrap();
        assert_eq!(ls.state.good_steps, 1);
        // Overflow: the step is skipped and the scale halved.
        let mut loss = (var.as_tensor().sum_all().unwrap() * f64::INFINITY).unwrap();
        ls.before_backward(&mut s, &b, &mut loss).unwrap();
        let mut grads = loss.backward().unwrap();
        ls.after_backward(&mut s, &mut b, &mut grads).unwrap();
        assert!(b.skip_step);
        assert_eq!(
            ls.state,
            LossScale {
                scale: 32768.0,
                good_steps: 0
            }
        );
    }
}
