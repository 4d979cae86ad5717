//! Stride-1 convolutions without a patch matrix.
//!
//! On a zero-padded copy of an image whose rows are `wp` values wide, output
//! position `(oy, ox)` of kernel tap `(i, j)` reads `xp[c][(oy + i) * wp + ox + j]`:
//! the same matrix for every tap, shifted by `i * wp + j`. So a stride-1
//! convolution is one GEMM per tap over a shifted view of the padded image,
//! accumulated into an output that is also `wp` wide (its last `kw - 1`
//! columns are garbage and dropped). This skips im2col's `kh * kw` copies of
//! the input; padding and unpadding copy it once. The input gradient is the
//! same with flipped taps over the padded output gradient, and the weight
//! gradient one GEMM per tap against the same shifted views.

use super::gemm::{sgemm, MatRef};
use super::im2col::ConvGeom;

/// Whether this path computes `g`: stride 1, a real kernel, padding smaller than the kernel.
pub(super) fn computes(g: &ConvGeom) -> bool {
    g.stride == 1 && !g.is_pointwise() && g.pad < g.kh && g.pad < g.kw
}

/// A `c`-channel image zero-padded equally on each side to `hp x wp`
/// (`plane = hp * wp` values per channel), plus `tail` zeros after the last
/// plane (shifted views of the last channel read that far).
#[derive(Clone, Copy)]
struct Padded {
    c: usize,
    hp: usize,
    wp: usize,
    tail: usize,
}

impl Padded {
    /// The convolution's input, padded by its `pad`.
    fn input(g: &ConvGeom) -> Self {
        Self {
            c: g.c,
            hp: g.h + 2 * g.pad,
            wp: g.w + 2 * g.pad,
            tail: g.kw,
        }
    }

    /// The output gradient (`o` channels), padded by `k - 1 - pad`: the
    /// input of the input gradient's convolution.
    fn output_grad(g: &ConvGeom, o: usize) -> Self {
        Self {
            c: o,
            hp: g.oh + 2 * (g.kh - 1 - g.pad),
            wp: g.ow + 2 * (g.kw - 1 - g.pad),
            tail: g.kw,
        }
    }

    fn plane(&self) -> usize {
        self.hp * self.wp
    }

    fn len(&self) -> usize {
        self.c * self.plane() + self.tail
    }

    /// Writes `x` (`c x h x w`) into `dst` (`self.len()` values, any contents).
    fn fill(&self, x: &[f32], h: usize, w: usize, dst: &mut [f32]) {
        let (top, left) = ((self.hp - h) / 2, (self.wp - w) / 2);
        for (src, plane) in x
            .chunks_exact(h * w)
            .zip(dst.chunks_exact_mut(self.plane()))
        {
            plane[..top * self.wp].fill(0.0);
            plane[(top + h) * self.wp..].fill(0.0);
            for (row, out) in src
                .chunks_exact(w)
                .zip(plane[top * self.wp..].chunks_exact_mut(self.wp))
            {
                out[..left].fill(0.0);
                out[left..left + w].copy_from_slice(row);
                out[left + w..].fill(0.0);
            }
        }
        dst[self.c * self.plane()..].fill(0.0);
    }
}

/// `yp (m x oh*wp) = sum over taps of a(tap) (m x c) * xp shifted by the tap`,
/// where tap `(i, j)` of a `kh x kw` kernel reads offset `i * wp + j`.
#[allow(clippy::too_many_arguments)]
fn shifted_gemms<'a>(
    xp: &[f32],
    p: Padded,
    oh: usize,
    (kh, kw): (usize, usize),
    a: impl Fn(usize, usize) -> MatRef<'a>,
    yp: &mut [f32],
    threads: usize,
) {
    let n = oh * p.wp;
    for i in 0..kh {
        for j in 0..kw {
            let off = i * p.wp + j;
            let b = MatRef {
                data: &xp[off..],
                rows: p.c,
                cols: n,
                rs: p.plane(),
                cs: 1,
            };
            sgemm(yp, a(i, j), b, i + j > 0, threads);
        }
    }
}

/// Copies the first `ow` of every `wp` columns: `(m, oh, wp) -> (m, oh, ow)`.
fn unpad(yp: &[f32], wp: usize, ow: usize, y: &mut [f32]) {
    for (dst, src) in y.chunks_exact_mut(ow).zip(yp.chunks_exact(wp)) {
        dst.copy_from_slice(&src[..ow]);
    }
}

/// Scratch needed by [`forward`] and [`input_grad`] for one image.
pub fn scratch_len(g: &ConvGeom, o: usize) -> usize {
    let fwd = Padded::input(g);
    let bwd = Padded::output_grad(g, o);
    (fwd.len() + o * g.oh * fwd.wp).max(bwd.len() + g.c * g.h * bwd.wp)
}

/// One image: `y (o x oh*ow) = conv(x, w)`; `scratch` has [`scratch_len`] values.
pub fn forward(
    x: &[f32],
    w: &[f32],
    o: usize,
    g: &ConvGeom,
    y: &mut [f32],
    scratch: &mut [f32],
    t: usize,
) {
    let p = Padded::input(g);
    let (xp, rest) = scratch.split_at_mut(p.len());
    let yp = &mut rest[..o * g.oh * p.wp];
    p.fill(x, g.h, g.w, xp);
    let taps = g.kh * g.kw;
    let a = |i: usize, j: usize| MatRef {
        data: &w[i * g.kw + j..],
        rows: o,
        cols: g.c,
        rs: g.c * taps,
        cs: taps,
    };
    shifted_gemms(xp, p, g.oh, (g.kh, g.kw), a, yp, t);
    unpad(yp, p.wp, g.ow, y);
}

/// One image: `dx (c x h*w)` from `dy (o x oh*ow)`: the stride-1 convolution
/// of `dy` padded by `k - 1 - pad` with the flipped, transposed kernel.
pub fn input_grad(
    dy: &[f32],
    w: &[f32],
    o: usize,
    g: &ConvGeom,
    dx: &mut [f32],
    scratch: &mut [f32],
    t: usize,
) {
    let p = Padded::output_grad(g, o);
    let (dyp, rest) = scratch.split_at_mut(p.len());
    let dxp = &mut rest[..g.c * g.h * p.wp];
    p.fill(dy, g.oh, g.ow, dyp);
    let taps = g.kh * g.kw;
    // Tap (i, j) of the flipped kernel is W[:, :, kh-1-i, kw-1-j], read as c x o.
    let a = |i: usize, j: usize| MatRef {
        data: &w[(g.kh - 1 - i) * g.kw + (g.kw - 1 - j)..],
        rows: g.c,
        cols: o,
        rs: taps,
        cs: g.c * taps,
    };
    shifted_gemms(dyp, p, g.h, (g.kh, g.kw), a, dxp, t);
    unpad(dxp, p.wp, g.w, dx);
}

/// Scratch needed by [`weight_grad`] for one image (besides the `taps x o x c` sum).
pub fn weight_grad_scratch_len(g: &ConvGeom, o: usize) -> usize {
    let p = Padded::input(g);
    p.len() + o * g.oh * p.wp
}

/// One image's weight gradient added (or written, unless `accumulate`) into
/// `dw_taps` laid out `(kh*kw, o, c)`: per tap, `dy (o x oh*wp, zero in the
/// dropped columns) * shifted xp^T (oh*wp x c)`.
#[allow(clippy::too_many_arguments)]
pub fn weight_grad(
    dy: &[f32],
    x: &[f32],
    o: usize,
    g: &ConvGeom,
    dw_taps: &mut [f32],
    accumulate: bool,
    scratch: &mut [f32],
    t: usize,
) {
    let p = Padded::input(g);
    let n = g.oh * p.wp;
    let (xp, rest) = scratch.split_at_mut(p.len());
    let dyw = &mut rest[..o * n];
    p.fill(x, g.h, g.w, xp);
    for (dst, src) in dyw.chunks_exact_mut(p.wp).zip(dy.chunks_exact(g.ow)) {
        dst[..g.ow].copy_from_slice(src);
        dst[g.ow..].fill(0.0);
    }
    let dyw = MatRef::new(dyw, o, n);
    for (tap, dst) in dw_taps.chunks_exact_mut(o * g.c).enumerate() {
        let off = (tap / g.kw) * p.wp + tap % g.kw;
        let b = MatRef {
            data: &xp[off..],
            rows: n,
            cols: g.c,
            rs: 1,
            cs: p.plane(),
        };
        sgemm(dst, dyw, b, accumulate, t);
    }
}

/// `(kh*kw, o, c) -> (o, c, kh, kw)`.
pub fn taps_to_oihw(dw_taps: &[f32], o: usize, c: usize, taps: usize) -> Vec<f32> {
    let mut dw = vec![0.0f32; o * c * taps];
    for (tap, m) in dw_taps.chunks_exact(o * c).enumerate() {
        for (oc, v) in m.iter().enumerate() {
            dw[oc * taps + tap] = *v;
        }
    }
    dw
}
