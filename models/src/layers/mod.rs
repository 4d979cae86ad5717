//! Building blocks that train in candle (CPU and CUDA), in f32 or half precision.
//!
//! Weights are stored in f32 (the master copy) and cast to the activations'
//! dtype inside each forward, so a bf16/f16 forward still updates f32 weights.

mod batch_norm;
mod conv;
mod conv_bn;
mod dropout;
mod linear;
mod pool;

pub use batch_norm::{BatchNorm, BN_EPS};
pub use conv::Conv2d;
pub use conv_bn::{conv_bn, conv_bn_relu_max_pool};
pub use dropout::Dropout;
pub use linear::Linear;
pub use pool::{adaptive_avg_pool, adaptive_concat_pool, avg_pool2_ceil, max_pool_3x3_s2_p1};
