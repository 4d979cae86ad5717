//! Batch normalisation (optionally followed by ReLU) as fused CPU passes.
//!
//! Train mode: one pass for the per-channel statistics (f64 sums), one pass
//! that writes `relu?(x * a + b)`; backward is one reduction pass and one pass
//! that writes the input gradient, the weight and bias gradients coming out
//! of the same reduction. candle's tensor ops need about ten full passes, each
//! with its own buffer, forward and backward, for the same thing.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

/// (N, C, spatial) of a rank-2 (N, C) or rank-4 (N, C, H, W) layout.
fn ncs(shape: &Shape) -> Result<(usize, usize, usize)> {
    match shape.dims() {
        [n, c] => Ok((*n, *c, 1)),
        [n, c, h, w] => Ok((*n, *c, h * w)),
        d => candle_core::bail!("batch norm expects a rank 2 or 4 input, got shape {d:?}"),
    }
}

fn f32s<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::contiguous_f32(s, l, "batch norm", "input")
}

/// Per-channel mean and biased variance of a contiguous (N, C, S) buffer.
pub fn channel_stats(x: &[f32], n: usize, c: usize, s: usize) -> (Vec<f32>, Vec<f32>) {
    let m = (n * s) as f64;
    let stats: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sum, mut sq) = (0f64, 0f64);
            for i in 0..n {
                let plane = &x[(i * c + ch) * s..(i * c + ch + 1) * s];
                // f32 partial sums over a plane, f64 across planes.
                let (ps, pq) = lane_sums(plane, plane, |v, _| (v, v * v));
                sum += ps as f64;
                sq += pq as f64;
            }
            let mean = sum / m;
            ((mean) as f32, (sq / m - mean * mean).max(0.0) as f32)
        })
        .collect();
    stats.into_iter().unzip()
}

/// Lanes the reductions below keep apart, so that they vectorise (one
/// AVX-512 register of partial sums each).
const LANES: usize = 16;

/// `(sum f(x, y).0, sum f(x, y).1)` over two equally long slices, in
/// [`LANES`] partial sums each (f32) added at the end.
#[inline(always)]
fn lane_sums(x: &[f32], y: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f32, f32) {
    let (mut s0, mut s1) = ([0f32; LANES], [0f32; LANES]);
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (xs, ys) in xc.zip(yc) {
        for l in 0..LANES {
            let (a, b) = f(xs[l], ys[l]);
            s0[l] += a;
            s1[l] += b;
        }
    }
    for (l, (xv, yv)) in xr.iter().zip(yr).enumerate() {
        let (a, b) = f(*xv, *yv);
        s0[l] += a;
        s1[l] += b;
    }
    (s0.iter().sum(), s1.iter().sum())
}

/// A train-mode batch norm as the per-channel map `x * a + sh`: `a = w *
/// inv`, `sh = b - mean * a` (`inv` = 1 / sqrt(var + eps)).
fn folded(w: &[f32], b: &[f32], mean: &[f32], inv: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let a: Vec<f32> = w.iter().zip(inv).map(|(w, i)| w * i).collect();
    let sh = b
        .iter()
        .zip(mean)
        .zip(&a)
        .map(|((b, m), a)| b - m * a)
        .collect();
    (a, sh)
}

/// `y = relu?(x * a[c] + b[c] + r?)` over a contiguous (N, C, S) buffer,
/// `r` (a residual, same layout as `x`) optional.
fn affine(
    x: &[f32],
    a: &[f32],
    b: &[f32],
    r: Option<&[f32]>,
    c: usize,
    s: usize,
    relu: bool,
) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    let chunk = s.max(1) * 16.min(c);
    y.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .enumerate()
        .for_each(|(k, (yc, xc))| {
            let first = k * 16.min(c);
            for (p, (yp, xp)) in yc.chunks_mut(s).zip(xc.chunks(s)).enumerate() {
                let ch = (first + p) % c;
                let (ai, bi) = (a[ch], b[ch]);
                let start = k * chunk + p * s;
                match (r.map(|r| &r[start..start + xp.len()]), relu) {
                    (Some(rp), true) => {
                        for ((o, v), rv) in yp.iter_mut().zip(xp).zip(rp) {
                            *o = (v * ai + bi + rv).max(0.0);
                        }
                    }
                    (Some(rp), false) => {
                        for ((o, v), rv) in yp.iter_mut().zip(xp).zip(rp) {
                            *o = v * ai + bi + rv;
                        }
                    }
                    (None, true) => {
                        for (o, v) in yp.iter_mut().zip(xp) {
                            *o = (v * ai + bi).max(0.0);
                        }
                    }
                    (None, false) => {
                        for (o, v) in yp.iter_mut().zip(xp) {
                            *o = v * ai + bi;
                        }
                    }
                }
            }
        });
    y
}

/// Train-mode batch norm (+ ReLU) of `x` (f32, CPU) with the batch statistics
/// `mean`/`var` already computed; differentiable in x, weight and bias.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    mean: Vec<f32>,
    var: &[f32],
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        BnTrain {
            batch: Moments::new(mean, var, eps),
            relu,
        },
    )
}

/// A train-mode batch norm's batch statistics: the mean and `inv` = 1 /
/// sqrt(var + eps) per channel.
struct Moments {
    mean: Vec<f32>,
    inv: Vec<f32>,
}

impl Moments {
    fn new(mean: Vec<f32>, var: &[f32], eps: f64) -> Self {
        let inv = var
            .iter()
            .map(|v| (1.0 / (*v as f64 + eps).sqrt()) as f32)
            .collect();
        Self { mean, inv }
    }

    /// The per-channel map `x * a + sh` with weight `w` and bias `b` of `c`
    /// channels.
    fn map(&self, w: &[f32], b: &[f32], c: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        if w.len() != c || b.len() != c || self.mean.len() != c {
            candle_core::bail!("batch norm: {c} channels but {} weights", w.len())
        }
        Ok(folded(w, b, &self.mean, &self.inv))
    }

    /// What the backward needs, with the forward's weight and bias.
    fn saved(&self, w: Vec<f32>, b: Vec<f32>) -> BnSaved {
        BnSaved {
            mean: self.mean.clone(),
            inv: self.inv.clone(),
            w,
            b,
        }
    }
}

/// Per-channel mean and biased variance of `x` (f32, CPU), in one pass, no copy.
pub fn batch_stats(x: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
    let packed = x
        .contiguous()?
        .apply_op1_no_bwd(&BnStats)?
        .to_vec1::<f32>()?;
    let c = packed.len() / 2;
    Ok((packed[..c].to_vec(), packed[c..].to_vec()))
}

/// `x -> [mean (C), biased var (C)]`.
struct BnStats;

impl CustomOp1 for BnStats {
    fn name(&self) -> &'static str {
        "cxr-batch-norm-stats"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, s) = ncs(l1.shape())?;
        let (mut mean, var) = channel_stats(f32s(s1, l1)?, n, c, s);
        mean.extend(var);
        Ok((CpuStorage::F32(mean), Shape::from(2 * c)))
    }
}

/// Eval-mode (or frozen) batch norm as `relu?(x * scale + shift)`; differentiable in x.
pub fn batch_norm_eval(x: &Tensor, scale: Vec<f32>, shift: Vec<f32>, relu: bool) -> Result<Tensor> {
    x.contiguous()?.apply_op1(BnEval { scale, shift, relu })
}

/// Whether these kernels take a tensor: f32 on the CPU, with kernels enabled.
pub fn applies(x: &Tensor) -> bool {
    super::takes(&[x])
}

struct BnTrain {
    batch: Moments,
    relu: bool,
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "cxr-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, s) = ncs(l1.shape())?;
        let (x, w, b) = (f32s(s1, l1)?, f32s(s2, l2)?, f32s(s3, l3)?);
        let (a, sh) = self.batch.map(w, b, c)?;
        Ok((
            CpuStorage::F32(affine(x, &a, &sh, None, c, s, self.relu)),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = self.batch.mean.len();
        let op = BnTrainBackward {
            p: self.batch.saved(w.to_vec1::<f32>()?, b.to_vec1::<f32>()?),
            relu: self.relu,
        };
        let packed = dy.contiguous()?.apply_op2_no_bwd(&x.contiguous()?, &op)?;
        let len = x.elem_count();
        let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
        let dw = packed.narrow(0, len, c)?;
        let db = packed.narrow(0, len + c, c)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `(dy, x) -> [dx..., dweight (C), dbias (C)]` in one flat f32 tensor.
struct BnTrainBackward {
    p: BnSaved,
    relu: bool,
}

impl CustomOp2 for BnTrainBackward {
    fn name(&self) -> &'static str {
        "cxr-batch-norm-train-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, s) = ncs(l2.shape())?;
        let (dy, x) = (f32s(s1, l1)?, f32s(s2, l2)?);
        if dy.len() != x.len() {
            candle_core::bail!("batch norm backward: gradient and input sizes differ")
        }
        let mut out = vec![0f32; x.len() + 2 * c];
        let (dx, tail) = out.split_at_mut(x.len());
        self.p.backward(dy, x, (n, c, s), self.relu, dx, tail);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// What a train-mode batch norm's backward needs of its forward: the batch
/// statistics (`inv` = 1 / sqrt(var + eps)) and the weight and bias.
#[derive(Clone)]
struct BnSaved {
    mean: Vec<f32>,
    inv: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl BnSaved {
    /// Writes the input gradient of `x` ((N, C, S)) into `dx` and
    /// `[dweight (C), dbias (C)]` into `tail`, for the output gradient `dy`
    /// (of `relu(bn(x))` when `relu`, else of `bn(x)`).
    fn backward(
        &self,
        dy: &[f32],
        x: &[f32],
        (n, c, s): (usize, usize, usize),
        relu: bool,
        dx: &mut [f32],
        tail: &mut [f32],
    ) {
        let m = (n * s) as f64;
        // The forward's map per channel: y = x * a + sh (the ReLU mask is
        // taken from the same expression, so it agrees with the forward's).
        let (a, sh) = folded(&self.w, &self.b, &self.mean, &self.inv);
        // Pass 1: per channel, sum(g) (= dbias) and sum(g * xhat) (= dweight),
        // g being the gradient that reaches the normalised value.
        let sums: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mean, ak, sk) = (self.mean[ch], a[ch], sh[ch]);
                let (mut sg, mut sgx) = (0f64, 0f64);
                for i in 0..n {
                    let r = (i * c + ch) * s..(i * c + ch + 1) * s;
                    let (pg, pgx) = lane_sums(&x[r.clone()], &dy[r], |xv, gv| {
                        let gg = if relu && xv * ak + sk <= 0.0 { 0.0 } else { gv };
                        (gg, gg * (xv - mean))
                    });
                    sg += pg as f64;
                    sgx += pgx as f64;
                }
                (sg as f32, (sgx * self.inv[ch] as f64) as f32)
            })
            .collect();
        // Pass 2: dx = w * inv * (g - sum(g)/M - xhat * sum(g xhat)/M).
        dx.par_chunks_mut(s)
            .zip(x.par_chunks(s).zip(dy.par_chunks(s)))
            .enumerate()
            .for_each(|(p, (dxp, (xp, gp)))| {
                let ch = p % c;
                let (sg, sgx) = sums[ch];
                let (mean, inv, ak, sk) = (self.mean[ch], self.inv[ch], a[ch], sh[ch]);
                let k = self.w[ch] * inv;
                let (mg, mgx) = ((sg as f64 / m) as f32, (sgx as f64 / m) as f32);
                for ((d, &xv), &gv) in dxp.iter_mut().zip(xp).zip(gp) {
                    let gg = if relu && xv * ak + sk <= 0.0 { 0.0 } else { gv };
                    *d = k * (gg - mg - (xv - mean) * inv * mgx);
                }
            });
        for ch in 0..c {
            tail[ch] = sums[ch].1;
            tail[c + ch] = sums[ch].0;
        }
    }
}

/// Train-mode `relu(bn(x) + r)`, a ResNet block's end, in one pass of
/// `x` and `r` (f32, CPU, same shape); differentiable in x, weight, bias and
/// r. Apart, the add and the ReLU are two more passes forward and some ten
/// backward (candle's ReLU gradient builds a zero tensor, a mask, its f32
/// copy and a product; each of the add's two inputs gets a zero tensor plus
/// a sum).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_add_relu(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    mean: Vec<f32>,
    var: &[f32],
    eps: f64,
    residual: &Tensor,
) -> Result<Tensor> {
    if residual.shape() != x.shape() {
        candle_core::bail!(
            "batch norm + residual: input {:?} but residual {:?}",
            x.dims(),
            residual.dims()
        )
    }
    // CustomOp3 takes three inputs: weight and bias travel as one tensor.
    let wb = Tensor::cat(&[weight, bias], 0)?;
    let op = BnTrainAddRelu(Moments::new(mean, var, eps));
    x.contiguous()?.apply_op3(&wb, &residual.contiguous()?, op)
}

struct BnTrainAddRelu(Moments);

impl CustomOp3 for BnTrainAddRelu {
    fn name(&self) -> &'static str {
        "cxr-batch-norm-train-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, s) = ncs(l1.shape())?;
        let (x, wb, r) = (f32s(s1, l1)?, f32s(s2, l2)?, f32s(s3, l3)?);
        if r.len() != x.len() {
            candle_core::bail!("batch norm + residual: input and residual sizes differ")
        }
        let (w, b) = wb.split_at(c.min(wb.len()));
        let (a, sh) = self.0.map(w, b, c)?;
        Ok((
            CpuStorage::F32(affine(x, &a, &sh, Some(r), c, s, true)),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        _r: &Tensor,
        res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = self.0.mean.len();
        let mut w = wb.to_vec1::<f32>()?;
        let b = w.split_off(c);
        let op = BnAddReluBackward(self.0.saved(w, b));
        let packed =
            dy.contiguous()?
                .apply_op3_no_bwd(&x.contiguous()?, &res.contiguous()?, &op)?;
        let len = x.elem_count();
        let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
        let dr = packed.narrow(0, len, len)?.reshape(x.shape())?;
        let dwb = packed.narrow(0, 2 * len, 2 * c)?;
        Ok((Some(dx), Some(dwb), Some(dr)))
    }
}

/// `(dy, x, y) -> [dx..., dr..., dweight (C), dbias (C)]` in one flat f32
/// tensor, `y` being the forward's output: the ReLU passes the gradient
/// where `y > 0`, and that masked gradient is the residual's.
struct BnAddReluBackward(BnSaved);

impl CustomOp3 for BnAddReluBackward {
    fn name(&self) -> &'static str {
        "cxr-batch-norm-add-relu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, s) = ncs(l2.shape())?;
        let (dy, x, y) = (f32s(s1, l1)?, f32s(s2, l2)?, f32s(s3, l3)?);
        if dy.len() != x.len() || y.len() != x.len() {
            candle_core::bail!("batch norm + residual backward: gradient and input sizes differ")
        }
        let mut out = vec![0f32; 2 * x.len() + 2 * c];
        let (dx, rest) = out.split_at_mut(x.len());
        let (dr, tail) = rest.split_at_mut(x.len());
        let chunk = s.max(1) * 16;
        dr.par_chunks_mut(chunk)
            .zip(dy.par_chunks(chunk).zip(y.par_chunks(chunk)))
            .for_each(|(d, (g, o))| {
                for ((d, &g), &o) in d.iter_mut().zip(g).zip(o) {
                    *d = if o > 0.0 { g } else { 0.0 };
                }
            });
        self.0.backward(dr, x, (n, c, s), false, dx, tail);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

struct BnEval {
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
}

impl CustomOp1 for BnEval {
    fn name(&self) -> &'static str {
        "cxr-batch-norm-eval"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c, s) = ncs(l1.shape())?;
        if self.scale.len() != c {
            candle_core::bail!(
                "batch norm: {c} channels but {} statistics",
                self.scale.len()
            )
        }
        let y = affine(
            f32s(s1, l1)?,
            &self.scale,
            &self.shift,
            None,
            c,
            s,
            self.relu,
        );
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let shape: Vec<usize> = if x.rank() == 4 {
            vec![1, self.scale.len(), 1, 1]
        } else {
            vec![1, self.scale.len()]
        };
        let scale = Tensor::from_slice(&self.scale, shape.as_slice(), x.device())?;
        let g = if self.relu {
            (dy * res.gt(0f32)?.to_dtype(DType::F32)?)?
        } else {
            dy.clone()
        };
        Ok(Some(g.broadcast_mul(&scale)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The same batch norm from candle's tensor ops, as the reference.
    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
        let dims: &[usize] = if x.rank() == 4 { &[0, 2, 3] } else { &[0] };
        let shape: Vec<usize> = if x.rank() == 4 {
            vec![1, x.dim(1)?, 1, 1]
        } else {
            vec![1, x.dim(1)?]
        };
        let mean = x.mean_keepdim(dims)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(dims)?;
        let y = xc
            .broadcast_div(&(var + 1e-5)?.sqrt()?)?
            .broadcast_mul(&w.reshape(shape.as_slice())?)?
            .broadcast_add(&b.reshape(shape.as_slice())?)?;
        if relu {
            y.relu()
        } else {
            Ok(y)
        }
    }

    #[test]
    fn train_mode_matches_tensor_ops_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        for (shape, relu) in [
            (vec![4, 3, 5, 7], true),
            (vec![4, 3, 5, 7], false),
            (vec![6, 5], false),
            (vec![2, 20, 3, 3], true),
            (vec![2, 4, 8, 8], true),
        ] {
            let c = shape[1];
            let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, shape.as_slice(), &dev)? + 0.5)?)?;
            let w = Var::from_tensor(&Tensor::randn(1f32, 0.3, c, &dev)?)?;
            let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, c, &dev)?)?;
            let (mean, var) = batch_stats(x.as_tensor())?;
            let ours = batch_norm_train(
                x.as_tensor(),
                w.as_tensor(),
                b.as_tensor(),
                mean,
                &var,
                1e-5,
                relu,
            )?;
            let theirs = reference(x.as_tensor(), w.as_tensor(), b.as_tensor(), relu)?;
            let d = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-4, "{shape:?} relu={relu}: forward differs by {d}");
            let g = Tensor::randn(0f32, 1.0, shape.as_slice(), &dev)?;
            let go = (ours * &g)?.sum_all()?.backward()?;
            let gt = (theirs * &g)?.sum_all()?.backward()?;
            for (what, v) in [("x", &x), ("weight", &w), ("bias", &b)] {
                let (a, r) = (go.get(v).expect("ours"), gt.get(v).expect("reference"));
                let scale = r.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-3);
                let d = (a - r)?.abs()?.max_all()?.to_scalar::<f32>()? / scale;
                assert!(
                    d < 1e-3,
                    "{shape:?} relu={relu}: {what} gradient differs by {d} (relative)"
                );
            }
        }
        Ok(())
    }

    /// `relu(bn(x) + r)` in one op equals candle's ops, forward and the
    /// gradients of x, weight, bias and the residual.
    #[test]
    fn train_add_relu_matches_tensor_ops_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        for shape in [vec![4, 3, 5, 7], vec![2, 20, 3, 3], vec![3, 18, 4, 4]] {
            let c = shape[1];
            let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, shape.as_slice(), &dev)? + 0.5)?)?;
            let r = Var::from_tensor(&Tensor::randn(0f32, 1.0, shape.as_slice(), &dev)?)?;
            let w = Var::from_tensor(&Tensor::randn(1f32, 0.3, c, &dev)?)?;
            let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, c, &dev)?)?;
            let (mean, var) = batch_stats(x.as_tensor())?;
            let ours = batch_norm_train_add_relu(
                x.as_tensor(),
                w.as_tensor(),
                b.as_tensor(),
                mean,
                &var,
                1e-5,
                r.as_tensor(),
            )?;
            let theirs = (reference(x.as_tensor(), w.as_tensor(), b.as_tensor(), false)?
                + r.as_tensor())?
            .relu()?;
            let d = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-4, "{shape:?}: forward differs by {d}");
            let zeros = theirs.eq(0f32)?.to_dtype(DType::F32)?.mean_all()?;
            let zeros = zeros.to_scalar::<f32>()?;
            assert!(
                (0.1..0.9).contains(&zeros),
                "{shape:?}: ReLU zeroes {zeros}"
            );
            let g = Tensor::randn(0f32, 1.0, shape.as_slice(), &dev)?;
            let go = (ours * &g)?.sum_all()?.backward()?;
            let gt = (theirs * &g)?.sum_all()?.backward()?;
            for (what, v) in [("x", &x), ("weight", &w), ("bias", &b), ("residual", &r)] {
                let (a, e) = (go.get(v).expect("ours"), gt.get(v).expect("reference"));
                let scale = e.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-3);
                let d = (a - e)?.abs()?.max_all()?.to_scalar::<f32>()? / scale;
                assert!(
                    d < 1e-3,
                    "{shape:?}: {what} gradient differs by {d} (relative)"
                );
            }
        }
        let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &dev)?;
        let (w, b) = (
            Tensor::ones(3, DType::F32, &dev)?,
            Tensor::zeros(3, DType::F32, &dev)?,
        );
        let wrong = Tensor::zeros((2, 3, 4, 5), DType::F32, &dev)?;
        let err = batch_norm_train_add_relu(&x, &w, &b, vec![0.0; 3], &[1.0; 3], 1e-5, &wrong)
            .expect_err("a residual of another shape");
        assert!(err.to_string().contains("residual"), "{err}");
        Ok(())
    }

    #[test]
    fn eval_mode_is_the_affine_map_and_its_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 4, 2, 2), &dev)?)?;
        let (scale, shift) = (vec![0.5f32, -1.0, 2.0, 1.5], vec![0.1f32, 0.2, -0.3, 0.0]);
        let y = batch_norm_eval(x.as_tensor(), scale.clone(), shift.clone(), true)?;
        let st = Tensor::from_slice(&scale, (1, 4, 1, 1), &dev)?;
        let sh = Tensor::from_slice(&shift, (1, 4, 1, 1), &dev)?;
        let want = x
            .as_tensor()
            .broadcast_mul(&st)?
            .broadcast_add(&sh)?
            .relu()?;
        let d = (&y - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6);
        let ga = y.sum_all()?.backward()?;
        let gb = want.sum_all()?.backward()?;
        let d = (ga.get(&x).expect("ours") - gb.get(&x).expect("reference"))?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-6);
        Ok(())
    }
}
