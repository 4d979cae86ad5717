//! cxr's own CPU kernels for the ops that dominate ResNet training and
//! inference, as candle custom ops (issue 7).
//!
//! candle 0.11's CPU convolution builds its patch matrix one value at a time
//! and computes the input gradient with a direct transposed-convolution loop;
//! here convolution forward, input gradient and weight gradient are
//! im2col/col2im with contiguous row copies around one GEMM per image (the
//! `gemm` crate, with its AVX-512 kernels enabled) or one GEMM per kernel tap
//! (`taps`), scratch buffers are reused per thread, and the image's own
//! gradient is never computed. On AVX-512 CPUs the forward and the stride-1
//! input gradient of 3x3/7x7 convolutions on maps at least 14 wide run the
//! `direct` kernel instead (no patch matrix, no packing; `CXR_DIRECT=0` or
//! [`set_direct_enabled`] turns it off), and their weight gradients with at
//! least 64 positions per image `direct_weight_grad` (the same padded image,
//! reduced over positions). Of those, 3x3 stride-1 convolutions on maps at
//! least 14 wide with a band of tiles in the batch run `winograd` F(4x4, 3x3)
//! forward and for the input gradient (`CXR_WINOGRAD=0` turns it off;
//! with weights kept by `frozen`, smaller maps too). `lanes`, a direct
//! kernel with the output channels on the vector lanes, takes the forward
//! of 3x3 stride-2 convolutions, and with kept weights that of 3x3 stride-1
//! ones on maps up to 14 wide and, at batch 1, the 1x1 stride-2 ones of 128
//! channels and more (`CXR_LANES=0` turns it off); in inference `stem` runs
//! ResNet's 7x7 stem convolution on it fused with the max pool after it
//! (`CXR_FUSED_STEM=0` turns that off). `prepared` holds the
//! chosen kernel's weights, which `frozen` keeps for a model that only
//! predicts. `adamw` is the optimizer's step as three
//! in-place passes. `hot_pool` runs a prediction or a training step with
//! the other rayon workers polling for work between its ops (`CXR_HOT_POOL=0`
//! turns it off).
//!
//! Only f32 on the CPU takes these paths; every other device and dtype (CUDA,
//! half precision) goes to candle's ops, so the model code is the same
//! everywhere. `CXR_KERNELS=candle` (or [`set_enabled`]) switches back to
//! candle's CPU ops, which is how the benchmarks compare the two.

mod adamw;
mod batch_norm;
mod conv;
mod conv_affine;
mod direct;
mod direct_weight_grad;
mod frozen;
mod gemm;
mod hot_pool;
mod im2col;
mod lanes;
mod max_pool;
mod prepared;
mod stem;
mod taps;
mod winograd;

pub use adamw::{adamw_step, applies as adamw_applies, AdamWStep};
pub use batch_norm::{
    applies as batch_norm_applies, batch_norm_eval, batch_norm_train, batch_norm_train_add_relu,
    batch_stats, channel_stats,
};
pub use conv::{
    conv2d, conv_input_grad_op as conv_input_grad, conv_weight_grad_op as conv_weight_grad,
    ConvGeom,
};
pub use conv_affine::{applies as conv_affine_applies, conv2d_affine};
pub use direct::set_enabled as set_direct_enabled;
pub use frozen::{inference_frozen, FrozenWeights};
pub use hot_pool::{hot_pool, set_enabled as set_hot_pool_enabled};
pub use lanes::set_enabled as set_lanes_enabled;
pub use max_pool::{applies as max_pool_applies, max_pool_3x3_s2_p1};
pub use stem::{
    applies as stem_applies, conv2d_affine_max_pool, set_enabled as set_fused_stem_enabled,
};
pub use winograd::set_enabled as set_winograd_enabled;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};
use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

/// The f32 values of a contiguous CPU tensor, as a custom op receives it;
/// `op` and `what` name it in the error otherwise.
pub(crate) fn contiguous_f32<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
    what: &str,
) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        other => candle_core::bail!("cxr {op}: {what} must be f32, got {:?}", other.dtype()),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("cxr {op}: {what} must be contiguous"),
    }
}

/// Whether cxr's kernels take these tensors: kernels enabled, and every one
/// of them f32 on the CPU (else the callers use candle's ops).
pub(crate) fn takes(ts: &[&candle_core::Tensor]) -> bool {
    enabled()
        && ts
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
}

static KERNELS: Switch = Switch::new("CXR_KERNELS", "candle");

/// Whether cxr's CPU kernels are used (default: yes, unless `CXR_KERNELS=candle`).
pub fn enabled() -> bool {
    KERNELS.on()
}

/// Turns cxr's CPU kernels on or off for the whole process.
pub fn set_enabled(on: bool) {
    KERNELS.set(on);
}

/// A kernel path's on/off switch: on unless its environment variable is
/// `off` (read once), or as last [`Switch::set`].
pub(crate) struct Switch {
    var: &'static str,
    off: &'static str,
    /// 0 = not decided yet, 1 = on, 2 = off.
    mode: AtomicU8,
}

impl Switch {
    pub(crate) const fn new(var: &'static str, off: &'static str) -> Self {
        Self {
            var,
            off,
            mode: AtomicU8::new(0),
        }
    }

    pub(crate) fn on(&self) -> bool {
        match self.mode.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                let on = std::env::var(self.var).as_deref() != Ok(self.off);
                self.set(on);
                on
            }
        }
    }

    pub(crate) fn set(&self, on: bool) {
        self.mode.store(if on { 1 } else { 2 }, Ordering::Relaxed);
    }
}

thread_local! {
    static INFERENCE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` in inference mode on this thread: eval-mode layers may then use
/// forward-only fused kernels ([`conv2d_affine`]) whose results cannot be
/// differentiated. Like PyTorch's `inference_mode`; nesting is fine.
pub fn inference<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            INFERENCE.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(INFERENCE.with(|m| m.replace(true)));
    f()
}

/// Whether this thread is inside [`inference`].
pub fn in_inference() -> bool {
    INFERENCE.with(|m| m.get())
}

#[cfg(test)]
mod tests {
    #[test]
    fn inference_mode_is_scoped_and_nests() {
        assert!(!super::in_inference());
        super::inference(|| {
            assert!(super::in_inference());
            super::inference(|| assert!(super::in_inference()));
            assert!(super::in_inference());
        });
        assert!(!super::in_inference());
    }
}
