//! cxr's own CPU kernels for the ops that dominate ResNet training and
//! inference, as candle custom ops. Only f32 on the CPU takes them; other
//! devices and dtypes (CUDA, half precision) run candle's ops, so the model
//! code is the same everywhere.
//!
//! **Which algorithm a convolution takes is decided in one place:
//! [`plan`]** (`plan.rs`), from its shape, the pass (forward, fused
//! inference forward, input or weight gradient), whether a frozen model keeps
//! its prepared weights, and the settings. `cxr bench --explain` prints the
//! plan for every convolution of ResNet18. The algorithms:
//!
//! - `winograd`: Winograd F(4x4, 3x3), 3x3 stride-1 convolutions on larger
//!   maps, forward and input gradient.
//! - `direct`: register tiles over a zero-padded copy of the image, no patch
//!   matrix (3x3 and 7x7, maps at least 14 wide); `direct_weight_grad` is its
//!   weight gradient.
//! - `lanes`: output channels on the vector lanes, for strided and small maps;
//!   `stem` runs ResNet's stem (conv, BN, ReLU, max pool) fused on it in
//!   inference.
//! - `taps` (one GEMM per kernel tap) and im2col/col2im around one GEMM
//!   (`gemm`, `im2col`) for everything else; small maps batch all images
//!   into one GEMM.
//!
//! `prepared` holds weights in the form a kernel takes, `frozen` keeps them
//! for a model that only predicts. Also: fused batch norm (`batch_norm`),
//! conv+BN+ReLU for inference (`conv_affine`), the max pool, the AdamW step,
//! and `hot_pool`, which keeps rayon's workers polling during a step.
//!
//! `CXR_KERNELS` ([`KernelSettings`], read once): `auto` (default: every
//! kernel where it pays), `candle` (candle's ops only; the hot pool stays
//! on), or a comma list turning single algorithms off: `-winograd`,
//! `-direct`, `-lanes`, `-taps`, `-stem`, `-hot-pool` (`candle,-hot-pool`
//! combines). The AVX-512 kernels (winograd, direct, lanes, stem) run only on
//! CPUs with AVX-512F.

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
mod par;
pub mod plan;
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
pub use frozen::{inference_frozen, FrozenWeights};
pub use hot_pool::hot_pool;
pub use max_pool::{applies as max_pool_applies, max_pool_3x3_s2_p1};
pub use plan::{
    init_from_env, plan, set_settings, settings, Algorithm, Conv, KernelSettings, Pass,
    SettingsError, Toggle,
};
pub use stem::{applies as stem_applies, conv2d_affine_max_pool};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};
use std::cell::Cell;

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

/// Whether cxr's CPU kernels are used (not `CXR_KERNELS=candle`).
pub fn enabled() -> bool {
    settings().kernels()
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
