//! fastai's MixUp(alpha): each batch is mixed with a shuffled copy of itself
//! (`lam ~ Beta(alpha, alpha)` per sample, `lam = max(lam, 1-lam)`), and the
//! loss is mixed the same way: `mean(lam * loss(y) + (1-lam) * loss(y[perm]))`
//! with the fit's loss function (label smoothing included). The draws come
//! from the learner's seeded stream ([`Learner::rng`]).
//!
//! [`Learner::rng`]: crate::learner::Learner::rng

use crate::learner::callback::{BatchState, Callback, FitState, HookResult, StepHooks};
use crate::learner::loss::{mixup, mixup_loss, Mixup};
use candle_core::Tensor;

#[derive(Debug)]
pub struct MixUp {
    pub alpha: f64,
    /// The current batch's mix, from `before_batch` to `loss`.
    mix: Option<Mixup>,
}

impl MixUp {
    pub fn new(alpha: f64) -> Self {
        Self { alpha, mix: None }
    }
}

impl Callback for MixUp {
    fn step_hooks(&mut self) -> Option<&mut dyn StepHooks> {
        Some(self)
    }
}

impl StepHooks for MixUp {
    fn before_batch(&mut self, s: &mut FitState<'_>, b: &mut BatchState) -> HookResult {
        let m = mixup(&b.x, &b.y, self.alpha, s.learn.rng())?;
        b.x = m.x.clone();
        self.mix = Some(m);
        Ok(())
    }

    fn loss(
        &mut self,
        s: &mut FitState<'_>,
        b: &BatchState,
        pred: &Tensor,
        loss: &mut Option<Tensor>,
    ) -> HookResult {
        if let Some(m) = self.mix.take() {
            *loss = Some(mixup_loss(pred, &b.y, &m, s.loss_func.smoothing)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learner::testutil::{tiny_dls, tiny_learner};
    use crate::learner::LearnerOptions;
    use candle_core::DType;

    #[test]
    fn mixup_mixes_the_inputs_from_the_learners_stream_and_mixes_the_loss() {
        let (_tmp, dls) = tiny_dls();
        let mut l = tiny_learner(LearnerOptions::default());
        let mut twin = tiny_learner(LearnerOptions::default());
        let mut opt = l.new_optimizer().unwrap();
        let raw = dls.train_batches(0).next().unwrap();
        let (x, y) = l.to_input(&raw).unwrap();
        let want = mixup(&x, &y, 0.4, twin.rng()).unwrap();
        let mut s = FitState::new(&mut l, &mut opt, &dls, 1);
        let mut b = BatchState::new(x.clone(), y.clone(), raw.n);
        let mut cb = MixUp::new(0.4);
        cb.before_batch(&mut s, &mut b).unwrap();
        let got = b.x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, want.x.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_ne!(got, x.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        // The loss: lam-weighted over both targets; uniform logits give ln 2.
        let pred = Tensor::zeros((raw.n, 2), DType::F32, &candle_core::Device::Cpu).unwrap();
        let mut loss = None;
        cb.loss(&mut s, &b, &pred, &mut loss).unwrap();
        let v = loss.unwrap().to_scalar::<f32>().unwrap();
        assert!((v - 2f32.ln()).abs() < 1e-6, "{v}");
    }
}
