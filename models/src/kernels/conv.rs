//! 2D convolution (forward, input gradient, weight gradient) as candle custom
//! ops: im2col/col2im around one GEMM per image, images spread over the rayon
//! pool, patch matrices in reused per-thread scratch buffers.

use super::direct_weight_grad::WeightGrad;
use super::gemm::{sgemm, MatRef};
pub use super::im2col::ConvGeom;
use super::im2col::{col2im, col2im_at, im2col, im2col_at, im2col_par};
use super::par::{per_image, threads, with_scratch};
use super::plan::{plan_now, Algorithm, Conv, Pass};
use super::prepared::{Kernel, Prepared};
use super::{direct, taps, winograd};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x` (N, C, H, W) convolved with `w` (O, C, KH, KW), PyTorch semantics
/// (dilation 1, one group, no bias). On the CPU in f32 this runs cxr's
/// kernels; elsewhere candle's `conv2d`. `input_grad = false` skips the
/// gradient with respect to `x` (the network's input image needs none).
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    pad: usize,
    input_grad: bool,
) -> Result<Tensor> {
    if super::takes(&[x, w]) {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        x.apply_op2(
            &w,
            Conv2dOp {
                stride,
                pad,
                input_grad,
            },
        )
    } else {
        x.conv2d(w, pad, stride, 1, 1)
    }
}

pub(super) fn f32s<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, "conv", what)
}

/// The batch size, output channels and geometry of the convolution of an
/// input laid out as `x` by a kernel laid out as `w` (`stride`, `pad`), or
/// the error `op` gives when the two do not fit.
pub(super) fn conv_of(
    x: &Layout,
    w: &Layout,
    stride: usize,
    pad: usize,
    op: &str,
) -> Result<(usize, usize, ConvGeom)> {
    let (n, c, h, wd) = x.shape().dims4()?;
    let (o, c2, kh, kw) = w.shape().dims4()?;
    if c != c2 {
        candle_core::bail!("{op}: input has {c} channels, the kernel expects {c2}")
    }
    Ok((n, o, geom((c, h, wd), (kh, kw), stride, pad)?))
}

pub(super) fn geom(
    x: (usize, usize, usize),
    k: (usize, usize),
    stride: usize,
    pad: usize,
) -> Result<ConvGeom> {
    match ConvGeom::new(x.0, x.1, x.2, k.0, k.1, stride, pad) {
        Some(g) => Ok(g),
        None => candle_core::bail!(
            "conv2d: a {}x{} kernel with stride {stride} and padding {pad} does not fit a {}x{} input",
            k.0,
            k.1,
            x.1,
            x.2
        ),
    }
}

/// All images' patch matrices side by side: `rows x (n * cols)`.
fn batch_im2col(x: &[f32], n: usize, g: &ConvGeom, col: &mut [f32]) {
    let (cols, per_in) = (g.cols(), g.c * g.h * g.w);
    for i in 0..n {
        im2col_at(&x[i * per_in..(i + 1) * per_in], g, col, n * cols, i * cols);
    }
}

/// NCHW `(n, o, cols)` <-> the batched layout `(o, n * cols)`.
fn to_batched(y: &[f32], n: usize, o: usize, cols: usize, out: &mut [f32]) {
    for i in 0..n {
        for oc in 0..o {
            out[oc * n * cols + i * cols..][..cols]
                .copy_from_slice(&y[(i * o + oc) * cols..][..cols]);
        }
    }
}

fn from_batched(yb: &[f32], n: usize, o: usize, cols: usize, out: &mut [f32]) {
    for i in 0..n {
        for oc in 0..o {
            out[(i * o + oc) * cols..][..cols]
                .copy_from_slice(&yb[oc * n * cols + i * cols..][..cols]);
        }
    }
}

/// Forward: per image `y = W (O x CKK) * col(x) (CKK x OH*OW)`.
pub fn conv_forward(x: &[f32], w: &[f32], n: usize, o: usize, g: &ConvGeom) -> Vec<f32> {
    conv_forward_then(x, w, n, o, g, &|_, _| {})
}

/// Per-image work on a convolution's output, run right after that image's
/// GEMM while its output is still in cache: `(image index, o x OH*OW values)`.
pub type Epilogue<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// [`conv_forward`] with `epilogue` applied to each image's output.
pub fn conv_forward_then(
    x: &[f32],
    w: &[f32],
    n: usize,
    o: usize,
    g: &ConvGeom,
    epilogue: Epilogue<'_>,
) -> Vec<f32> {
    let alg = plan_now(&Conv { n, o, g: *g }, Pass::Forward);
    if alg == Algorithm::BatchedGemm {
        return batched_forward(x, w, n, o, g, epilogue);
    }
    let mut out = vec![0.0f32; n * o * g.cols()];
    if let Some(kernel) = Kernel::of(alg) {
        Prepared::new(kernel, w, o, g).forward(x, n, g, &mut out, &direct::Post::default());
        for (i, y) in out.chunks_mut(o * g.cols()).enumerate() {
            epilogue(i, y);
        }
        return out;
    }
    let (rows, cols, per_in) = (g.rows(), g.cols(), g.c * g.h * g.w);
    let wm = MatRef::new(w, o, rows);
    per_image(&mut out, n, |i, y, t| {
        let xi = &x[i * per_in..(i + 1) * per_in];
        match alg {
            Algorithm::Pointwise => sgemm(y, wm, MatRef::new(xi, rows, cols), false, t),
            Algorithm::Taps => with_scratch(taps::scratch_len(g, o), |s| {
                taps::forward(xi, w, o, g, y, s, t)
            }),
            _ => with_scratch(rows * cols, |col| {
                if t > 1 {
                    im2col_par(xi, g, col);
                } else {
                    im2col(xi, g, col);
                }
                sgemm(y, wm, MatRef::new(col, rows, cols), false, t);
            }),
        }
        epilogue(i, y);
    });
    out
}

/// The forward as one GEMM over all images' patch matrices side by side.
fn batched_forward(
    x: &[f32],
    w: &[f32],
    n: usize,
    o: usize,
    g: &ConvGeom,
    epilogue: Epilogue<'_>,
) -> Vec<f32> {
    let (rows, cols) = (g.rows(), g.cols());
    let mut out = vec![0.0f32; n * o * cols];
    let mut yb = vec![0.0f32; n * o * cols];
    with_scratch(rows * n * cols, |col| {
        batch_im2col(x, n, g, col);
        sgemm(
            &mut yb,
            MatRef::new(w, o, rows),
            MatRef::new(col, rows, n * cols),
            false,
            threads(),
        );
    });
    from_batched(&yb, n, o, cols, &mut out);
    for (i, y) in out.chunks_mut(o * cols).enumerate() {
        epilogue(i, y);
    }
    out
}

/// `relu?(conv(x) * scale + shift + residual?)` per output channel: fused
/// into the Winograd, lanes or direct kernel's store when one of them takes `g`
/// (with `prepared`, the weights already prepared for it, when they fit),
/// else `fallback` (the same map as an [`Epilogue`]) after each image's GEMM.
#[allow(clippy::too_many_arguments)]
pub fn conv_forward_affine(
    x: &[f32],
    w: &[f32],
    n: usize,
    o: usize,
    g: &ConvGeom,
    affine: (&[f32], &[f32]),
    residual: Option<&[f32]>,
    relu: bool,
    fallback: Epilogue<'_>,
    prepared: Option<&Prepared>,
) -> Vec<f32> {
    let kept = prepared.is_some();
    let Some(kernel) = Kernel::of(plan_now(&Conv { n, o, g: *g }, Pass::FusedForward { kept }))
    else {
        return conv_forward_then(x, w, n, o, g, fallback);
    };
    let owned;
    let prepared = match prepared {
        Some(p) if p.fits(kernel, o, g) => p,
        _ => {
            owned = Prepared::new(kernel, w, o, g);
            &owned
        }
    };
    let mut out = vec![0.0f32; n * o * g.cols()];
    let post = direct::Post {
        affine: Some(affine),
        residual,
        relu,
    };
    prepared.forward(x, n, g, &mut out, &post);
    out
}

/// Input gradient: per image `dcol = W^T (CKK x O) * dy (O x OH*OW)`, then
/// col2im; or, stride 1, the Winograd or direct forward of `dy`.
pub fn conv_input_grad(dy: &[f32], w: &[f32], n: usize, o: usize, g: &ConvGeom) -> Vec<f32> {
    let mut dx = vec![0.0f32; n * g.c * g.h * g.w];
    let alg = plan_now(&Conv { n, o, g: *g }, Pass::InputGrad);
    let flipped = match alg {
        Algorithm::BatchedGemm => {
            batched_input_grad(dy, w, n, o, g, &mut dx);
            return dx;
        }
        Algorithm::Winograd | Algorithm::Direct => direct::input_grad_as_forward(w, o, g),
        _ => None,
    };
    match (alg, flipped) {
        (Algorithm::Winograd, Some((wt, gt))) => {
            let wg = winograd::Weights::new(&wt, g.c, o);
            wg.forward(dy, n, &gt, &mut dx, &direct::Post::default());
        }
        (Algorithm::Direct, Some((wt, gt))) => {
            let p = direct::Packed::new(&wt, g.c, &gt);
            let per_out = o * g.cols();
            per_image(&mut dx, n, |i, dxi, t| {
                let dyi = &dy[i * per_out..(i + 1) * per_out];
                with_scratch(p.scratch_len(), |s| {
                    p.forward(dyi, dxi, s, t, &direct::Post::default())
                });
            });
        }
        _ => gemm_input_grad(alg, dy, w, n, o, g, &mut dx),
    }
    dx
}

/// The input gradient as one GEMM over the whole batch, then col2im per image.
fn batched_input_grad(dy: &[f32], w: &[f32], n: usize, o: usize, g: &ConvGeom, dx: &mut [f32]) {
    let (rows, cols, per_in) = (g.rows(), g.cols(), g.c * g.h * g.w);
    let wt = MatRef::new(w, o, rows).t();
    let mut dyb = vec![0.0f32; n * o * cols];
    to_batched(dy, n, o, cols, &mut dyb);
    with_scratch(rows * n * cols, |dcol| {
        sgemm(dcol, wt, MatRef::new(&dyb, o, n * cols), false, threads());
        for (i, dxi) in dx.chunks_mut(per_in).enumerate() {
            col2im_at(dcol, g, dxi, n * cols, i * cols);
        }
    });
}

/// The input gradient by one GEMM per image: on `dy` itself (1x1), per tap
/// ([`Algorithm::Taps`]), or followed by col2im.
fn gemm_input_grad(
    alg: Algorithm,
    dy: &[f32],
    w: &[f32],
    n: usize,
    o: usize,
    g: &ConvGeom,
    dx: &mut [f32],
) {
    let (rows, cols) = (g.rows(), g.cols());
    let wt = MatRef::new(w, o, rows).t();
    per_image(dx, n, |i, dxi, t| {
        let dyi = MatRef::new(&dy[i * o * cols..(i + 1) * o * cols], o, cols);
        match alg {
            Algorithm::Pointwise => sgemm(dxi, wt, dyi, false, t),
            Algorithm::Taps => with_scratch(taps::scratch_len(g, o), |s| {
                taps::input_grad(dyi.data, w, o, g, dxi, s, t)
            }),
            _ => with_scratch(rows * cols, |dcol| {
                sgemm(dcol, wt, dyi, false, t);
                col2im(dcol, g, dxi);
            }),
        }
    });
}

/// Weight gradient: `dW (O x CKK) = sum over images of dy (O x OH*OW) * col(x)^T`.
/// Images are split into one contiguous run per thread, each with its own
/// partial sum, added at the end.
pub fn conv_weight_grad(dy: &[f32], x: &[f32], n: usize, o: usize, g: &ConvGeom) -> Vec<f32> {
    let alg = plan_now(&Conv { n, o, g: *g }, Pass::WeightGrad);
    if alg == Algorithm::Direct {
        return direct_weight_grad(&WeightGrad::new(o, g), dy, x, n);
    }
    if n == 0 {
        return vec![0.0f32; o * g.rows()];
    }
    if alg == Algorithm::BatchedGemm {
        return batched_weight_grad(dy, x, n, o, g);
    }
    let len = o * g.rows();
    let dw = if threads().min(n) <= 1 {
        let mut dw = vec![0.0f32; len];
        accumulate_weight_grad(alg, (dy, x), o, g, 0..n, &mut dw, threads());
        dw
    } else {
        sum_over_runs(n, len, |run, part| {
            accumulate_weight_grad(alg, (dy, x), o, g, run, part, 1)
        })
    };
    // The shifted-tap path sums into a (taps, o, c) layout, reordered here.
    if alg == Algorithm::Taps {
        taps::taps_to_oihw(&dw, o, g.c, g.kh * g.kw)
    } else {
        dw
    }
}

/// Adds the weight gradient of images `range` of `(dy, x)` into `dw` by
/// one GEMM per image (per tap for [`Algorithm::Taps`]), over `t` threads.
fn accumulate_weight_grad(
    alg: Algorithm,
    (dy, x): (&[f32], &[f32]),
    o: usize,
    g: &ConvGeom,
    range: std::ops::Range<usize>,
    dw: &mut [f32],
    t: usize,
) {
    let (rows, cols, per_in) = (g.rows(), g.cols(), g.c * g.h * g.w);
    for (k, i) in range.enumerate() {
        let dyi = MatRef::new(&dy[i * o * cols..(i + 1) * o * cols], o, cols);
        let xi = &x[i * per_in..(i + 1) * per_in];
        match alg {
            Algorithm::Taps => with_scratch(taps::weight_grad_scratch_len(g, o), |s| {
                taps::weight_grad(dyi.data, xi, o, g, dw, k > 0, s, t)
            }),
            Algorithm::Pointwise => sgemm(dw, dyi, MatRef::new(xi, rows, cols).t(), k > 0, t),
            _ => with_scratch(rows * cols, |col| {
                im2col(xi, g, col);
                sgemm(dw, dyi, MatRef::new(col, rows, cols).t(), k > 0, t);
            }),
        }
    }
}

/// The weight gradient as one GEMM over all images side by side.
fn batched_weight_grad(dy: &[f32], x: &[f32], n: usize, o: usize, g: &ConvGeom) -> Vec<f32> {
    let (rows, cols) = (g.rows(), g.cols());
    let mut dw = vec![0.0f32; o * rows];
    let mut dyb = vec![0.0f32; n * o * cols];
    to_batched(dy, n, o, cols, &mut dyb);
    with_scratch(rows * n * cols, |col| {
        batch_im2col(x, n, g, col);
        let colt = MatRef::new(col, rows, n * cols).t();
        sgemm(
            &mut dw,
            MatRef::new(&dyb, o, n * cols),
            colt,
            false,
            threads(),
        );
    });
    dw
}

/// Splits images `0..n` into one contiguous run per thread; `run` adds its
/// images into its own zeroed buffer of `len` values; returns their sum.
fn sum_over_runs(
    n: usize,
    len: usize,
    run: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    let chunk = n.div_ceil(threads().min(n).max(1)).max(1);
    let partials: Vec<Vec<f32>> = (0..n.div_ceil(chunk))
        .into_par_iter()
        .map(|p| {
            let mut part = vec![0.0f32; len];
            run(p * chunk..((p + 1) * chunk).min(n), &mut part);
            part
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut sum = partials.next().unwrap_or_else(|| vec![0.0f32; len]);
    for part in partials {
        for (d, v) in sum.iter_mut().zip(&part) {
            *d += *v;
        }
    }
    sum
}

/// [`conv_weight_grad`] on the direct path: each thread adds a contiguous
/// run of images into its own sum; the sums are added at the end.
fn direct_weight_grad(wg: &WeightGrad, dy: &[f32], x: &[f32], n: usize) -> Vec<f32> {
    let (per_in, per_out) = (x.len() / n.max(1), dy.len() / n.max(1));
    let sum = sum_over_runs(n, wg.sum_len(), |run, sum| {
        let dys: Vec<&[f32]> = run.clone().map(|i| &dy[i * per_out..][..per_out]).collect();
        let xs: Vec<&[f32]> = run.map(|i| &x[i * per_in..][..per_in]).collect();
        with_scratch(wg.scratch_len(wg.images_per_pass()), |s| {
            wg.add_images(&dys, &xs, sum, s)
        });
    });
    wg.finish(&sum)
}

/// The forward op; its backward runs [`ConvInputGrad`] and [`ConvWeightGrad`].
#[derive(Debug, Clone, Copy)]
struct Conv2dOp {
    stride: usize,
    pad: usize,
    input_grad: bool,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "cxr-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, o, g) = conv_of(l1, l2, self.stride, self.pad, "conv2d")?;
        let y = conv_forward(f32s(s1, l1, "input")?, f32s(s2, l2, "weight")?, n, o, &g);
        Ok((CpuStorage::F32(y), Shape::from((n, o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let dx = if self.input_grad {
            Some(conv_input_grad_op(dy, w, self.stride, self.pad, h, wd)?)
        } else {
            None
        };
        let dw = conv_weight_grad_op(dy, x, self.stride, self.pad, (kh, kw))?;
        Ok((dx, Some(dw)))
    }
}

/// The input gradient of [`conv2d`] on an `h x w` input, as its backward
/// computes it (CPU f32 only; exposed for benchmarks).
pub fn conv_input_grad_op(
    dy: &Tensor,
    w: &Tensor,
    stride: usize,
    pad: usize,
    h: usize,
    wd: usize,
) -> Result<Tensor> {
    dy.contiguous()?.apply_op2_no_bwd(
        &w.contiguous()?,
        &ConvInputGrad {
            stride,
            pad,
            h,
            w: wd,
        },
    )
}

/// `(dy, w) -> dx` for an input of `h x w`.
struct ConvInputGrad {
    stride: usize,
    pad: usize,
    h: usize,
    w: usize,
}

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "cxr-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, o, oh, ow) = l1.shape().dims4()?;
        let (o2, c, kh, kw) = l2.shape().dims4()?;
        let g = geom((c, self.h, self.w), (kh, kw), self.stride, self.pad)?;
        if o != o2 || (oh, ow) != (g.oh, g.ow) {
            candle_core::bail!("conv2d backward: gradient shape does not match the convolution")
        }
        let dx = conv_input_grad(f32s(s1, l1, "gradient")?, f32s(s2, l2, "weight")?, n, o, &g);
        Ok((CpuStorage::F32(dx), Shape::from((n, c, self.h, self.w))))
    }
}

/// The weight gradient of the convolution of `x` with a `kh x kw` kernel
/// for the output gradient `dy`, as [`conv2d`]'s backward computes it (CPU
/// f32 only; exposed for benchmarks).
pub fn conv_weight_grad_op(
    dy: &Tensor,
    x: &Tensor,
    stride: usize,
    pad: usize,
    (kh, kw): (usize, usize),
) -> Result<Tensor> {
    dy.contiguous()?.apply_op2_no_bwd(
        &x.contiguous()?,
        &ConvWeightGrad {
            stride,
            pad,
            kh,
            kw,
        },
    )
}

/// `(dy, x) -> dW` for a `kh x kw` kernel.
struct ConvWeightGrad {
    stride: usize,
    pad: usize,
    kh: usize,
    kw: usize,
}

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "cxr-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, o, oh, ow) = l1.shape().dims4()?;
        let (n2, c, h, w) = l2.shape().dims4()?;
        let g = geom((c, h, w), (self.kh, self.kw), self.stride, self.pad)?;
        if n != n2 || (oh, ow) != (g.oh, g.ow) {
            candle_core::bail!("conv2d backward: gradient shape does not match the convolution")
        }
        let dw = conv_weight_grad(f32s(s1, l1, "gradient")?, f32s(s2, l2, "input")?, n, o, &g);
        Ok((CpuStorage::F32(dw), Shape::from((o, c, self.kh, self.kw))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_core::{Device, Var};

    /// Forward and both gradients against candle's own conv2d, over the
    /// shapes ResNet18 and XResNet18 use (and odd sizes).
    #[test]
    fn matches_candle_forward_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let cases = [
            // (n, c, h, w, o, k, stride, pad)
            (2, 3, 17, 15, 4, 7, 2, 3),
            (3, 4, 9, 9, 5, 3, 1, 1),
            (2, 4, 9, 9, 6, 3, 2, 1),
            (2, 6, 8, 8, 5, 1, 1, 0),
            (2, 6, 9, 9, 5, 1, 2, 0),
            (1, 3, 10, 12, 2, 3, 1, 1),
            (4, 2, 5, 5, 3, 3, 1, 0),
            (1, 3, 5, 5, 4, 3, 1, 1),
            (300, 2, 1, 1, 3, 1, 1, 0),
            // One GEMM per image (>= BATCHED_BELOW_COLS output positions).
            (2, 3, 20, 20, 4, 3, 1, 1),
            (2, 4, 33, 33, 3, 3, 2, 1),
            (3, 5, 17, 17, 2, 1, 1, 0),
            // Stride 1 without a patch matrix (shifted taps): other pads and kernels.
            (2, 3, 11, 13, 4, 5, 1, 2),
            (2, 3, 12, 10, 4, 3, 1, 0),
            (3, 7, 8, 9, 6, 3, 1, 1),
            // Winograd F(4x4, 3x3) on AVX-512 (3x3, stride 1, sides >= 14,
            // at least 48 tiles of 4x4 in the batch).
            (3, 5, 14, 15, 6, 3, 1, 1),
            (1, 9, 30, 28, 17, 3, 1, 1),
        ];
        for (i, &(n, c, h, w, o, k, s, p)) in cases.iter().enumerate() {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?)?;
            let wt = Var::from_tensor(&Tensor::randn(0f32, 0.5, (o, c, k, k), &dev)?)?;
            let g = Tensor::randn(
                0f32,
                1.0,
                (n, o, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1),
                &dev,
            )?;
            let ours = conv2d(x.as_tensor(), wt.as_tensor(), s, p, true)?;
            let theirs = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, 1)?;
            // Relative to the largest output: Winograd's transforms round
            // differently from a direct sum, and an absolute bound flaked
            // (1.006e-4 on outputs of ~10 in one CI run).
            let top = theirs.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            let fwd = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()? / top;
            assert!(fwd < 5e-5, "case {i}: forward differs by {fwd} (relative)");
            let go = (ours * &g)?.sum_all()?.backward()?;
            let gt = (theirs * &g)?.sum_all()?.backward()?;
            for (what, v) in [("input", &x), ("weight", &wt)] {
                let a = go.get(v).expect("our grad");
                let b = gt.get(v).expect("candle grad");
                let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()? / scale;
                assert!(
                    d < 1e-5,
                    "case {i}: {what} gradient differs by {d} (relative)"
                );
            }
        }
        Ok(())
    }

    /// Convolution is linear in each argument, so `<conv(x, w), g>` equals
    /// both `<x, dx>` and `<w, dw>`: an exact check that needs no reference
    /// implementation (candle's own backward gets even sizes with stride 2 wrong).
    #[test]
    fn gradients_are_the_adjoints_even_for_even_sizes_with_stride_2() -> Result<()> {
        let dev = Device::Cpu;
        for &(h, w, k, s, p) in &[
            (8, 8, 3, 2, 1),
            (10, 6, 1, 2, 0),
            (16, 16, 7, 2, 3),
            (12, 12, 3, 1, 1),
        ] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 4, h, w), &dev)?)?;
            let wt = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 4, k, k), &dev)?)?;
            let y = conv2d(x.as_tensor(), wt.as_tensor(), s, p, true)?;
            let g = Tensor::randn(0f32, 1.0, y.shape(), &dev)?;
            let inner = (&y * &g)?.sum_all()?.to_scalar::<f32>()?;
            let grads = (y * g)?.sum_all()?.backward()?;
            for v in [&x, &wt] {
                let d = grads.get(v).expect("gradient");
                let dot = (d * v.as_tensor())?.sum_all()?.to_scalar::<f32>()?;
                assert!(
                    (dot - inner).abs() <= 1e-3 * inner.abs().max(1.0),
                    "{h}x{w} k{k} s{s}: {dot} vs {inner}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn skips_the_input_gradient_when_asked() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 8, 8), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 3, 3, 3), &dev)?)?;
        let grads = conv2d(x.as_tensor(), w.as_tensor(), 1, 1, false)?
            .sum_all()?
            .backward()?;
        assert!(grads.get(&x).is_none());
        assert!(grads.get(&w).is_some());
        Ok(())
    }

    #[test]
    fn a_kernel_larger_than_the_input_is_an_error_not_a_panic() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &dev)?;
        let w = Tensor::zeros((1, 1, 5, 5), DType::F32, &dev)?;
        assert!(conv2d(&x, &w, 1, 0, true).is_err());
        Ok(())
    }
}
