//! ResNet's stem max pool (3x3 window, stride 2, padding 1) as a candle custom
//! op: one pass over each plane forward, and a backward that sends each
//! output's gradient to the first maximum of its window in row-major order
//! (PyTorch's rule, which matters after a ReLU, where ties at 0 are common).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::ops::Range;

/// Output side of a 3-wide, stride-2, pad-1 window along an axis of `len`.
pub(super) fn out_len(len: usize) -> usize {
    (len + 2 - 3) / 2 + 1
}

/// Whether cxr's kernel runs for `x` (f32 on the CPU, kernels enabled).
pub fn applies(x: &Tensor) -> bool {
    super::takes(&[x]) && x.rank() == 4
}

/// `max_pool2d(x, 3, stride=2, padding=1)` on a contiguous f32 CPU tensor.
pub fn max_pool_3x3_s2_p1(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool)
}

/// The input index `(iy, ix)` of the first maximum of output `(oy, ox)`'s window.
#[inline]
fn argmax(plane: &[f32], h: usize, w: usize, oy: usize, ox: usize) -> (usize, f32) {
    let (y0, x0) = ((2 * oy).saturating_sub(1), (2 * ox).saturating_sub(1));
    let (y1, x1) = ((2 * oy + 2).min(h), (2 * ox + 2).min(w));
    let mut best = (y0 * w + x0, plane[y0 * w + x0]);
    for iy in y0..y1 {
        for ix in x0..x1 {
            let v = plane[iy * w + ix];
            // NaN propagates as in PyTorch: it wins and stays.
            if v > best.1 || (v.is_nan() && !best.1.is_nan()) {
                best = (iy * w + ix, v);
            }
        }
    }
    best
}

/// NaN wins, as in PyTorch.
#[inline]
fn max_nan(a: f32, b: f32) -> f32 {
    if a > b || a.is_nan() {
        a
    } else {
        b
    }
}

/// One plane forward ([`pool_rows`] over all its rows).
fn pool_plane(plane: &[f32], h: usize, w: usize, out: &mut [f32], cm: &mut [f32]) {
    pool_rows(plane, 0, h, w, 0..out_len(h), out, cm);
}

/// Output rows `oys` of an `h x w` plane into `out` (`oys.len()` rows),
/// from `band`, the plane's rows from `r0` on (every row those outputs
/// read). For each output row, the column-wise max of its (up to) three
/// input rows into `cm[1..=w]` (`cm`, `2 * ow + 1` values at least, is `-inf`
/// on both sides, so every window is three wide), then the stride-2 max of
/// three along that row. Both loops are branch-free and vectorise.
pub(super) fn pool_rows(
    band: &[f32],
    r0: usize,
    h: usize,
    w: usize,
    oys: Range<usize>,
    out: &mut [f32],
    cm: &mut [f32],
) {
    let ow = out_len(w);
    let row = |iy: usize| &band[(iy - r0) * w..(iy - r0 + 1) * w];
    for (oy, orow) in oys.zip(out.chunks_exact_mut(ow)) {
        let (y0, y1) = ((2 * oy).saturating_sub(1), (2 * oy + 2).min(h));
        let inner = &mut cm[1..=w];
        inner.copy_from_slice(row(y0));
        for iy in y0 + 1..y1 {
            for (m, v) in inner.iter_mut().zip(row(iy)) {
                *m = max_nan(*m, *v);
            }
        }
        // Output ox covers input columns 2ox-1..=2ox+1, that is cm[2ox..=2ox+2].
        let cm = &cm[..2 * ow + 1];
        for (ox, o) in orow.iter_mut().enumerate() {
            let i = 2 * ox;
            *o = max_nan(max_nan(cm[i], cm[i + 1]), cm[i + 2]);
        }
    }
}

/// One plane backward: each output's gradient goes to its window's first
/// maximum. Windows inside the plane take a branch-free path (the max of the
/// nine, then the last-to-first scan for it); the border ones [`argmax`].
fn route_plane(plane: &[f32], h: usize, w: usize, g: &[f32], dplane: &mut [f32]) {
    let (oh, ow) = (out_len(h), out_len(w));
    for oy in 0..oh {
        let inner_rows = oy >= 1 && 2 * oy + 1 < h;
        for ox in 0..ow {
            let gv = g[oy * ow + ox];
            if inner_rows && ox >= 1 && 2 * ox + 1 < w {
                let at = (2 * oy - 1) * w + 2 * ox - 1;
                let win = [
                    plane[at],
                    plane[at + 1],
                    plane[at + 2],
                    plane[at + w],
                    plane[at + w + 1],
                    plane[at + w + 2],
                    plane[at + 2 * w],
                    plane[at + 2 * w + 1],
                    plane[at + 2 * w + 2],
                ];
                let m = win.iter().skip(1).fold(win[0], |a, &b| max_nan(a, b));
                let mut k = 8;
                for (i, &v) in win.iter().enumerate().rev() {
                    // NaN == NaN here: a NaN maximum is the first NaN.
                    if v == m || (v.is_nan() && m.is_nan()) {
                        k = i;
                    }
                }
                dplane[at + (k / 3) * w + k % 3] += gv;
            } else {
                dplane[argmax(plane, h, w, oy, ox).0] += gv;
            }
        }
    }
}

fn dims(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

struct MaxPool;

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "cxr-max-pool-3x3-s2-p1"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims(l)?;
        if h == 0 || w == 0 {
            candle_core::bail!("max pool: empty {h}x{w} input")
        }
        let x = super::contiguous_f32(s, l, "max pool", "input")?;
        let (oh, ow) = (out_len(h), out_len(w));
        let mut y = vec![0.0f32; n * c * oh * ow];
        y.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each_init(
                || vec![f32::NEG_INFINITY; 2 * ow + 1],
                |cm, (out, plane)| pool_plane(plane, h, w, out, cm),
            );
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &MaxPoolGrad)?))
    }
}

/// `(x, dy) -> dx`.
struct MaxPoolGrad;

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "cxr-max-pool-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims(l1)?;
        let (oh, ow) = (out_len(h), out_len(w));
        if dims(l2)? != (n, c, oh, ow) {
            candle_core::bail!("max pool backward: gradient shape does not match")
        }
        let x = super::contiguous_f32(s1, l1, "max pool", "input")?;
        let dy = super::contiguous_f32(s2, l2, "max pool", "gradient")?;
        let mut dx = vec![0.0f32; n * c * h * w];
        dx.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w).zip(dy.par_chunks(oh * ow)))
            .for_each(|(dplane, (plane, g))| route_plane(plane, h, w, g, dplane));
        Ok((CpuStorage::F32(dx), Shape::from((n, c, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_core::{Device, Var};

    /// The definition, one output at a time, with -inf padding.
    fn naive(x: &[f32], h: usize, w: usize) -> Vec<f32> {
        let (oh, ow) = (out_len(h), out_len(w));
        let mut y = vec![f32::NEG_INFINITY; oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                for dy in 0..3 {
                    for dx in 0..3 {
                        let (iy, ix) = ((2 * oy + dy) as isize - 1, (2 * ox + dx) as isize - 1);
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            let v = x[iy as usize * w + ix as usize];
                            y[oy * ow + ox] = y[oy * ow + ox].max(v);
                        }
                    }
                }
            }
        }
        y
    }

    #[test]
    fn forward_matches_the_definition_on_odd_and_even_sides() -> Result<()> {
        for &(h, w) in &[(1, 1), (2, 3), (7, 8), (9, 9), (16, 11)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &Device::Cpu)?;
            let y = max_pool_3x3_s2_p1(&x)?;
            let xs = x.flatten_all()?.to_vec1::<f32>()?;
            let ys = y.flatten_all()?.to_vec1::<f32>()?;
            let per = out_len(h) * out_len(w);
            for p in 0..6 {
                assert_eq!(
                    &ys[p * per..(p + 1) * per],
                    naive(&xs[p * h * w..][..h * w], h, w)
                );
            }
        }
        Ok(())
    }

    /// Ties (a ReLU's zeros) send the whole gradient to the window's first
    /// maximum, and overlapping windows add up: checked on a hand-made plane.
    #[test]
    fn backward_routes_to_the_first_maximum_and_adds_overlaps() -> Result<()> {
        #[rustfmt::skip]
        let x = [
            0.0, 0.0, 0.0, 0.0,
            0.0, 5.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0f32,
        ];
        let xv = Var::from_tensor(&Tensor::from_slice(&x, (1, 1, 4, 4), &Device::Cpu)?)?;
        let y = max_pool_3x3_s2_p1(xv.as_tensor())?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![5.0, 5.0, 5.0, 5.0]);
        let g = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0], (1, 1, 2, 2), &Device::Cpu)?;
        let grads = (y * g)?.sum_all()?.backward()?;
        let dx = grads
            .get(&xv)
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut want = [0.0f32; 16];
        want[5] = 10.0; // (1, 1) is every window's maximum
        assert_eq!(dx, want);
        // All zeros: each window's first element gets its gradient.
        let zv = Var::from_tensor(&Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu)?)?;
        let g = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0], (1, 1, 2, 2), &Device::Cpu)?;
        let grads = (max_pool_3x3_s2_p1(zv.as_tensor())? * g)?
            .sum_all()?
            .backward()?;
        let dz = grads
            .get(&zv)
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut want = [0.0f32; 16];
        want[0] = 1.0; // window (0,0) starts at (0,0)
        want[1] = 2.0; // window (0,1) starts at (0,1)
        want[4] = 3.0; // window (1,0) starts at (1,0)
        want[5] = 4.0; // window (1,1) starts at (1,1)
        assert_eq!(dz, want);
        Ok(())
    }

    /// The fast interior path routes exactly as the per-window [`argmax`], on
    /// planes full of ties (few distinct values) and a few NaNs.
    #[test]
    fn routing_matches_the_argmax_rule_with_ties_and_nans() {
        for &(h, w) in &[(5, 5), (8, 9), (12, 12), (3, 2)] {
            let mut plane: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % 5) as f32).collect();
            plane[(h * w) / 2] = f32::NAN;
            let (oh, ow) = (out_len(h), out_len(w));
            let g: Vec<f32> = (0..oh * ow).map(|i| 1.0 + i as f32).collect();
            let mut got = vec![0.0f32; h * w];
            route_plane(&plane, h, w, &g, &mut got);
            let mut want = vec![0.0f32; h * w];
            for oy in 0..oh {
                for ox in 0..ow {
                    want[argmax(&plane, h, w, oy, ox).0] += g[oy * ow + ox];
                }
            }
            assert_eq!(got, want, "{h}x{w}");
        }
    }

    /// The gradient is the adjoint of the forward's linearisation: <y, g> = <x, dx>
    /// when each window has a unique maximum (random data).
    #[test]
    fn gradient_is_consistent_with_the_forward() -> Result<()> {
        let xv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 9, 10), &Device::Cpu)?)?;
        let y = max_pool_3x3_s2_p1(xv.as_tensor())?;
        let g = Tensor::randn(0f32, 1.0, y.shape(), &Device::Cpu)?;
        let inner = (&y * &g)?.sum_all()?.to_scalar::<f32>()?;
        let grads = (y * g)?.sum_all()?.backward()?;
        let dx = grads.get(&xv).expect("gradient");
        let dot = (dx * xv.as_tensor())?.sum_all()?.to_scalar::<f32>()?;
        assert!(
            (dot - inner).abs() < 1e-3 * inner.abs().max(1.0),
            "{dot} vs {inner}"
        );
        Ok(())
    }
}
