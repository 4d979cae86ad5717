//! Convolution weights prepared once for a model whose weights no longer
//! change (a loaded model that only predicts): the Winograd, lanes or direct
//! kernel's prepared weights are kept per weight tensor, geometry and kernel, so a
//! forward pass does not prepare them again on every call (at batch 1 the
//! direct kernel's packing and its fresh buffers were ~8 % of a ResNet18
//! forward).
//!
//! The cache is keyed by candle's tensor id, which stays the same when a
//! tensor's values change in place (an optimizer step), so it is only used
//! inside [`inference_frozen`], which the caller runs only for weights that
//! are fixed for the cache's lifetime.

use super::conv::geom;
use super::im2col::ConvGeom;
use super::plan::{plan_now, Algorithm, Conv, Pass};
use super::prepared::{Kernel, Prepared};
use candle_core::{Result, Tensor, TensorId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Prepared weights of one frozen model; drop it with the model.
#[derive(Default)]
pub struct FrozenWeights {
    /// Keyed by weight, geometry and the kernel they are prepared for (a
    /// batch size can change which kernel takes the geometry).
    prepared: Mutex<HashMap<(TensorId, ConvGeom, Kernel), Arc<Prepared>>>,
}

impl FrozenWeights {
    pub fn new() -> Self {
        Self::default()
    }

    /// Packed weight tensors held.
    pub fn len(&self) -> usize {
        self.prepared.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

thread_local! {
    static FROZEN: RefCell<Option<Arc<FrozenWeights>>> = const { RefCell::new(None) };
}

/// [`super::inference`] for a model whose weights stay fixed while `cache`
/// lives: the Winograd, lanes and direct convolutions on this thread take
/// their prepared weights from `cache`, preparing each weight tensor once per
/// kernel.
pub fn inference_frozen<R>(cache: &Arc<FrozenWeights>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<FrozenWeights>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            FROZEN.with(|c| *c.borrow_mut() = prev);
        }
    }
    let _restore = Restore(FROZEN.with(|c| c.borrow_mut().replace(cache.clone())));
    super::inference(f)
}

/// Weight `w` prepared for the forward over input `x` (`stride`, `pad`),
/// from this thread's frozen-weights cache; `None` outside
/// [`inference_frozen`] or when none of those kernels takes the convolution.
pub(crate) fn prepared_forward(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    pad: usize,
) -> Result<Option<Arc<Prepared>>> {
    prepared_for(x, w, stride, pad, |conv| {
        plan_now(conv, Pass::FusedForward { kept: true })
    })
}

/// [`prepared_forward`] for the algorithm `pick` names, if it runs on
/// prepared weights.
pub(crate) fn prepared_for(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    pad: usize,
    pick: impl Fn(&Conv) -> Algorithm,
) -> Result<Option<Arc<Prepared>>> {
    let Some(cache) = FROZEN.with(|c| c.borrow().clone()) else {
        return Ok(None);
    };
    let ((n, c, h, wd), (_, _, kh, kw)) = (x.dims4()?, w.dims4()?);
    let g = geom((c, h, wd), (kh, kw), stride, pad)?;
    let o = w.dim(0)?;
    let Some(kernel) = Kernel::of(pick(&Conv { n, o, g })) else {
        return Ok(None);
    };
    let key = (w.id(), g, kernel);
    if let Some(p) = cache
        .prepared
        .lock()
        .ok()
        .and_then(|m| m.get(&key).cloned())
    {
        return Ok(Some(p));
    }
    let values = w.flatten_all()?.to_vec1::<f32>()?;
    let p = Arc::new(Prepared::new(kernel, &values, o, &g));
    if let Ok(mut m) = cache.prepared.lock() {
        m.insert(key, p.clone());
    }
    Ok(Some(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv2d_affine;
    use candle_core::Device;

    /// Inside the scope the prepared weights are kept and give the same
    /// output as preparing them per call; outside it nothing is kept. The
    /// 7x7 map of 12 images and the 14x14 map of one image (16 tiles) are
    /// ones that only kept weights take through Winograd.
    #[test]
    fn frozen_weights_are_prepared_once_and_give_the_same_output() -> Result<()> {
        let dev = Device::Cpu;
        for (n, c, side) in [(2, 16, 20), (12, 16, 7), (1, 32, 14)] {
            let x = Tensor::randn(0f32, 1.0, (n, c, side, side), &dev)?;
            let w = Tensor::randn(0f32, 0.1, (24, c, 3, 3), &dev)?;
            let (scale, shift) = (vec![0.5f32; 24], vec![0.1f32; 24]);
            let run = || conv2d_affine(&x, &w, 1, 1, scale.clone(), shift.clone(), None, true);
            let want = run()?.flatten_all()?.to_vec1::<f32>()?;
            let cache = Arc::new(FrozenWeights::new());
            for _ in 0..2 {
                let got = inference_frozen(&cache, run)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let err = got
                    .iter()
                    .zip(&want)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                let top = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                assert!(
                    err < 1e-4 * top,
                    "{c} ch {side}x{side}: max abs error {err}"
                );
            }
            let g = ConvGeom::new(c, side, side, 3, 3, 1, 1).expect("geometry");
            let kept = plan_now(&Conv { n, o: 24, g }, Pass::FusedForward { kept: true });
            let expected = usize::from(Kernel::of(kept).is_some());
            assert_eq!(
                cache.len(),
                expected,
                "one prepared weight when a kernel takes it"
            );
            run()?;
            assert_eq!(cache.len(), expected, "nothing added outside the scope");
        }
        Ok(())
    }
}
