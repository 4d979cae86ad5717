//! Losses: cross-entropy, fastai's label-smoothing cross-entropy, and mixup.

use candle_core::{DType, Result, Tensor, D};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand_distr::{Beta, Distribution};

/// Per-sample cross-entropy `[N]` of logits `[N, C]` against class indices.
pub fn cross_entropy_per_sample(
    logits: &Tensor,
    target: &Tensor,
    smoothing: f64,
) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let nll = logp.gather(&target.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    // fastai's LabelSmoothingCrossEntropy: eps/C * sum(-log p) + (1-eps) * nll.
    let c = logits.dim(1)? as f64;
    let all = logp.sum(1)?.neg()?;
    (all * (smoothing / c))? + (nll * (1.0 - smoothing))?
}

/// Mean loss, with optional label smoothing.
pub fn loss(logits: &Tensor, target: &Tensor, smoothing: f64) -> Result<Tensor> {
    cross_entropy_per_sample(logits, target, smoothing)?.mean_all()
}

/// The loss function: cross-entropy, with fastai's label smoothing when
/// `smoothing` > 0 (the default, 0, is plain cross-entropy).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CrossEntropy {
    pub smoothing: f64,
}

impl CrossEntropy {
    /// Per-sample loss `[N]`.
    pub fn per_sample(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        cross_entropy_per_sample(logits, target, self.smoothing)
    }

    /// Mean loss.
    pub fn mean(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        loss(logits, target, self.smoothing)
    }
}

/// A mixed batch: `x = lam*x + (1-lam)*x[perm]`, loss mixed the same way per sample.
#[derive(Debug, Clone)]
pub struct Mixup {
    pub x: Tensor,
    pub target_b: Tensor,
    pub lam: Tensor,
}

/// fastai's MixUp(alpha): lam ~ Beta(alpha, alpha) per sample, `lam = max(lam, 1-lam)`.
pub fn mixup(x: &Tensor, target: &Tensor, alpha: f64, rng: &mut StdRng) -> Result<Mixup> {
    let n = x.dim(0)?;
    let beta = Beta::new(alpha, alpha)
        .map_err(|e| candle_core::Error::Msg(format!("mixup alpha: {e}")))?;
    let lam: Vec<f32> = (0..n)
        .map(|_| {
            let l: f64 = beta.sample(rng);
            l.max(1.0 - l) as f32
        })
        .collect();
    let mut perm: Vec<u32> = (0..n as u32).collect();
    perm.shuffle(rng);
    let perm = Tensor::from_vec(perm, n, x.device())?;
    let lam_t = Tensor::from_vec(lam, n, x.device())?;
    let xb = x.index_select(&perm, 0)?;
    let l4 = lam_t.reshape((n, 1, 1, 1))?.to_dtype(x.dtype())?;
    let mixed = (x.broadcast_mul(&l4)? + xb.broadcast_mul(&(1.0 - &l4)?)?)?;
    Ok(Mixup {
        x: mixed,
        target_b: target.index_select(&perm, 0)?,
        lam: lam_t,
    })
}

/// The mixup loss: `mean(lam * loss(y) + (1-lam) * loss(y[perm]))`.
pub fn mixup_loss(logits: &Tensor, target: &Tensor, m: &Mixup, smoothing: f64) -> Result<Tensor> {
    let a = cross_entropy_per_sample(logits, target, smoothing)?;
    let b = cross_entropy_per_sample(logits, &m.target_b, smoothing)?;
    ((a * &m.lam)? + (b * (1.0 - &m.lam)?)?)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;

    #[test]
    fn label_smoothing_matches_fastai_formula() {
        let logits = Tensor::new(&[[2.0f32, 0.0], [0.5, 1.5]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        let plain = loss(&logits, &y, 0.0).unwrap().to_scalar::<f32>().unwrap();
        let want_plain = ((1.0 + (-2.0f32).exp()).ln() + (1.0 + (-1.0f32).exp()).ln()) / 2.0;
        assert!((plain - want_plain).abs() < 1e-6);
        let smooth = loss(&logits, &y, 0.1).unwrap().to_scalar::<f32>().unwrap();
        // -log p for both classes of each row, summed, * eps / C, + (1-eps) nll.
        let lse0 = (2.0f32.exp() + 1.0).ln();
        let lse1 = (0.5f32.exp() + 1.5f32.exp()).ln();
        let all = ((lse0 - 2.0) + (lse0 - 0.0) + (lse1 - 0.5) + (lse1 - 1.5)) / 2.0;
        let want = all * 0.1 / 2.0 + 0.9 * want_plain;
        assert!((smooth - want).abs() < 1e-6, "{smooth} vs {want}");
    }

    #[test]
    fn mixup_keeps_shapes_and_lam_at_least_half() {
        let x = Tensor::arange(0f32, 48.0, &Device::Cpu)
            .unwrap()
            .reshape((3, 1, 4, 4))
            .unwrap();
        let y = Tensor::new(&[0u32, 1, 1], &Device::Cpu).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let m = mixup(&x, &y, 0.4, &mut rng).unwrap();
        assert_eq!(m.x.dims(), x.dims());
        for l in m.lam.to_vec1::<f32>().unwrap() {
            assert!((0.5..=1.0).contains(&l));
        }
        let logits = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
        let l = mixup_loss(&logits, &y, &m, 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((l - 2f32.ln()).abs() < 1e-6);
    }
}
