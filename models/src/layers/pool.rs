//! Pooling ops with a backward pass.
//!
//! candle's `max_pool2d`/`avg_pool2d` have a backward only when kernel == stride,
//! and it has no adaptive pooling; these compose reshape, narrow and maximum so
//! that autograd handles them on every device (the stem max pool has a CPU
//! kernel of its own in `kernels::max_pool`).

use candle_core::{DType, Result, Tensor};

/// Max pool with a 3x3 kernel, stride 2 and padding 1 (ResNet's stem pool), as
/// PyTorch's `max_pool2d(x, 3, 2, 1)`: cxr's kernel for f32 on the CPU, else
/// candle ops (max is separable: rows, then columns).
pub fn max_pool_3x3_s2_p1(x: &Tensor) -> Result<Tensor> {
    if crate::kernels::max_pool_applies(x) {
        return crate::kernels::max_pool_3x3_s2_p1(x);
    }
    let x = max_along(x, 2)?;
    max_along(&x, 3)
}

/// Window-3, stride-2, pad-1 max along one spatial dimension.
fn max_along(x: &Tensor, dim: usize) -> Result<Tensor> {
    let len = x.dim(dim)?;
    let out = (len + 2 - 3) / 2 + 1;
    let padded_len = 2 * out + 2;
    let right = padded_len - 1 - len;
    let mut pad_shape = x.dims().to_vec();
    pad_shape[dim] = 1;
    let left =
        Tensor::full(f32::NEG_INFINITY, pad_shape.as_slice(), x.device())?.to_dtype(x.dtype())?;
    pad_shape[dim] = right;
    let right =
        Tensor::full(f32::NEG_INFINITY, pad_shape.as_slice(), x.device())?.to_dtype(x.dtype())?;
    let xp = Tensor::cat(&[&left, x, &right], dim)?;
    // View [.., 2*out, ..] as [.., out, 2, ..] and pick the offset within each pair.
    let pick = |start: usize, k: usize| -> Result<Tensor> {
        let v = xp.narrow(dim, start, 2 * out)?;
        let mut dims = v.dims().to_vec();
        dims[dim] = out;
        dims.insert(dim + 1, 2);
        v.reshape(dims.as_slice())?
            .narrow(dim + 1, k, 1)?
            .squeeze(dim + 1)
    };
    let a = pick(0, 0)?;
    let b = pick(0, 1)?;
    let c = pick(2, 0)?;
    a.maximum(&b)?.maximum(&c)
}

/// Average pool with kernel 2, stride 2, `ceil_mode=True`, `count_include_pad=False`:
/// fastai's ResNet-D shortcut pool. Odd sides keep their last row/column alone.
pub fn avg_pool2_ceil(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let mut xp = x.clone();
    if h % 2 == 1 {
        xp = xp.pad_with_zeros(2, 0, 1)?;
    }
    if w % 2 == 1 {
        xp = xp.pad_with_zeros(3, 0, 1)?;
    }
    let sums = xp.reshape((n, c, ho, 2, wo, 2))?.sum(5)?.sum(3)?;
    if h % 2 == 0 && w % 2 == 0 {
        return sums * 0.25;
    }
    let mut inv = Vec::with_capacity(ho * wo);
    for i in 0..ho {
        let rows = if h % 2 == 1 && i == ho - 1 { 1.0 } else { 2.0 };
        for j in 0..wo {
            let cols = if w % 2 == 1 && j == wo - 1 { 1.0 } else { 2.0 };
            inv.push(1.0f32 / (rows * cols));
        }
    }
    let inv = Tensor::from_vec(inv, (1, 1, ho, wo), x.device())?.to_dtype(x.dtype())?;
    sums.broadcast_mul(&inv)
}

/// Global average pool `[N, C, H, W] -> [N, C]`.
pub fn adaptive_avg_pool(x: &Tensor) -> Result<Tensor> {
    let (n, c, _, _) = x.dims4()?;
    let xf = x.to_dtype(DType::F32)?.reshape((n, c, ()))?;
    xf.mean(2)?.to_dtype(x.dtype())
}

/// fastai's AdaptiveConcatPool2d: `cat([max, avg], 1)` then flatten, `[N, C, H, W] -> [N, 2C]`.
pub fn adaptive_concat_pool(x: &Tensor) -> Result<Tensor> {
    let (n, c, _, _) = x.dims4()?;
    let flat = x.reshape((n, c, ()))?;
    let mx = flat.max(2)?;
    let avg = adaptive_avg_pool(x)?;
    Tensor::cat(&[&mx, &avg], 1)
}
