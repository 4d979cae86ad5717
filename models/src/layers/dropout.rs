//! Dropout whose mask comes from a seeded RNG, so training runs are reproducible
//! (candle-nn's draws from an unseeded generator).

use candle_core::{Result, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::Mutex;

#[derive(Debug)]
pub struct Dropout {
    p: f32,
    rng: Mutex<StdRng>,
}

impl Dropout {
    pub fn new(p: f32, seed: u64) -> Self {
        Self {
            p,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p <= 0.0 {
            return Ok(x.clone());
        }
        let scale = 1.0 / (1.0 - self.p);
        let n = x.elem_count();
        let mask: Vec<f32> = {
            let mut rng = match self.rng.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            (0..n)
                .map(|_| {
                    if rng.random::<f32>() < self.p {
                        0.0
                    } else {
                        scale
                    }
                })
                .collect()
        };
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x * mask
    }
}
