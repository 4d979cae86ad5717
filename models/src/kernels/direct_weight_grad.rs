//! The weight gradient of a convolution without a patch matrix or GEMM
//! packing, on the direct path's padded image ([`TapLayout`]).
//!
//! `dW[o][k] = sum over output positions p of dy[o][p] * xp[q(p) + off[k]]`,
//! where `q(p)` is `p`'s grid position and `off[k]` the padded-image offset of
//! tap `k` (channel, row, column of the kernel). A register tile holds
//! [`WO`] output channels (`WV` vectors) by [`WR`] taps: per position, `WV`
//! vector loads of the transposed output gradient (`dyᵀ[p][o..o + 64]`),
//! `WR` broadcasts of the image and `WV * WR` fused multiply-adds. The sums
//! live in a `(taps, o)` buffer (one per thread) that every image adds to.

use super::direct::{self, TapLayout};
use super::im2col::ConvGeom;

/// 16-wide vectors of output channels per register tile.
const WV: usize = 4;
/// Output channels per register tile.
pub(super) const WO: usize = 16 * WV;
/// Taps per register tile.
const WR: usize = 6;
/// Output positions one pass over all tiles covers (at least, whole rows):
/// their slice of `dyᵀ` for one channel block (`positions x 64` values, 16
/// KB) stays in L1 while every tap block reads it.
const POSITIONS_PER_PASS: usize = 64;

/// `acc[r * stride + j] += sum over the span's images and positions p (grid
/// position q) of xp[off[r] + q] * dyt[p * ostride + ob + j]`, for `r < WR`,
/// `j < WO`.
type TileFn = unsafe fn(&Span, &[u32; WR], usize, *mut f32);

/// The output positions of one pass: rows `rows` of an `ow`-wide output, in
/// each of `images` (padded image, `dyᵀ`), grid rows `wq` wide, `dyᵀ` rows
/// `ostride` apart, sums `stride` apart.
struct Span<'a> {
    images: &'a [(*const f32, *const f32)],
    rows: std::ops::Range<usize>,
    ow: usize,
    wq: usize,
    ostride: usize,
    stride: usize,
}

/// The weight gradient of one convolution over the direct path's layout.
pub struct WeightGrad {
    o: usize,
    taps: TapLayout,
    /// The tap offsets, padded to whole tap blocks (padding reads offset 0
    /// and its sums are dropped).
    offs: Vec<u32>,
    kernel: TileFn,
}

impl WeightGrad {
    /// For a convolution the direct layout covers ([`direct::lays_out`]),
    /// with whole register tiles of output channels ([`WO`]); the plan
    /// ([`super::plan`]) says when it pays.
    pub fn new(o: usize, g: &ConvGeom) -> Self {
        assert!(
            direct::lays_out(g) && o.is_multiple_of(WO),
            "direct weight gradient: geometry"
        );
        Self::with_kernel(o, g, best_kernel())
    }

    fn with_kernel(o: usize, g: &ConvGeom, kernel: TileFn) -> Self {
        let taps = TapLayout::new(g);
        let mut offs = taps.offs.clone();
        offs.resize(offs.len().div_ceil(WR) * WR, 0);
        Self {
            o,
            taps,
            offs,
            kernel,
        }
    }

    /// Values of the per-thread `(taps, o)` sum.
    pub fn sum_len(&self) -> usize {
        self.offs.len() * self.o
    }

    /// Images that one pass over all tiles takes: enough that a pass covers
    /// [`POSITIONS_PER_PASS`] positions (small maps), else one.
    pub fn images_per_pass(&self) -> usize {
        POSITIONS_PER_PASS.div_ceil(self.taps.g.cols()).max(1)
    }

    /// Scratch values [`add_images`](Self::add_images) needs for `images` images.
    pub fn scratch_len(&self, images: usize) -> usize {
        images * (self.taps.buf_len + self.taps.g.cols() * self.o)
    }

    /// Adds the weight gradient of the images `xs` (`c x h x w` each) for
    /// the output gradients `dys` (`o x oh*ow` each) to `sum`
    /// ([`sum_len`](Self::sum_len) values), in passes of
    /// [`images_per_pass`](Self::images_per_pass) images.
    pub fn add_images(&self, dys: &[&[f32]], xs: &[&[f32]], sum: &mut [f32], scratch: &mut [f32]) {
        let g = &self.taps.g;
        let (o, positions, buf_len) = (self.o, g.cols(), self.taps.buf_len);
        assert_eq!(dys.len(), xs.len(), "direct weight grad: image counts");
        assert_eq!(sum.len(), self.sum_len(), "direct weight grad: sum size");
        let per = self.images_per_pass();
        for (dys, xs) in dys.chunks(per).zip(xs.chunks(per)) {
            let mut images = Vec::with_capacity(per);
            for ((dy, x), s) in dys
                .iter()
                .zip(xs)
                .zip(scratch.chunks_exact_mut(buf_len + positions * o))
            {
                assert_eq!(dy.len(), o * positions, "direct weight grad: gradient size");
                assert_eq!(x.len(), g.c * g.h * g.w, "direct weight grad: input size");
                let (buf, dyt) = s.split_at_mut(buf_len);
                self.taps.fill(x, buf);
                transpose(dy, o, positions, dyt);
                images.push((buf.as_ptr(), dyt.as_ptr()));
            }
            assert_eq!(images.len(), dys.len(), "direct weight grad: scratch size");
            let rows_per_pass = POSITIONS_PER_PASS.div_ceil(g.ow).max(1);
            for r0 in (0..g.oh).step_by(rows_per_pass) {
                let span = Span {
                    images: &images,
                    rows: r0..(r0 + rows_per_pass).min(g.oh),
                    ow: g.ow,
                    wq: self.taps.wq(),
                    ostride: o,
                    stride: o,
                };
                for ob in (0..o).step_by(WO) {
                    for (kb, offs) in self.offs.chunks_exact(WR).enumerate() {
                        let offs: &[u32; WR] = offs.try_into().expect("whole tap blocks");
                        // SAFETY: every read is `buf[off + yy * wq + xx]` with
                        // `yy < oh`, `xx < ow`: inside each padded image
                        // (`buf_len` covers every tap's reach); `dyt` rows
                        // `yy * ow + xx` of `o` values from `ob`, `ob + WO <= o`;
                        // the sums `WR` rows of `o` from `kb * WR`, `ob`.
                        unsafe {
                            (self.kernel)(&span, offs, ob, sum.as_mut_ptr().add(kb * WR * o + ob))
                        };
                    }
                }
            }
        }
    }

    /// The `(taps, o)` sum as PyTorch's `o x c x kh x kw` weight gradient.
    pub fn finish(&self, sum: &[f32]) -> Vec<f32> {
        let k = self.taps.offs.len();
        let mut dw = vec![0.0f32; self.o * k];
        for (kk, row) in sum.chunks_exact(self.o).take(k).enumerate() {
            for (oc, v) in row.iter().enumerate() {
                dw[oc * k + kk] = *v;
            }
        }
        dw
    }
}

/// `(rows x cols) -> (cols x rows)`, in 16 x 16 blocks.
fn transpose(a: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    const B: usize = 16;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    out[c * rows + r] = a[r * cols + c];
                }
            }
        }
    }
}

fn best_kernel() -> TileFn {
    #[cfg(target_arch = "x86_64")]
    if super::direct::avx512() {
        return avx512_tile;
    }
    portable_tile
}

/// The reference tile: the same sums, scalar.
///
/// # Safety
/// Every `xp[off[r] + yy * wq + xx]` and `dyt[(yy * ow + xx) * ostride + j]`
/// (`yy` in the span's rows, `xx < ow`, `j < WO`) must be readable, and
/// `acc[r * stride + j]` writable, for `r < WR`.
unsafe fn portable_tile(sp: &Span, offs: &[u32; WR], ob: usize, acc: *mut f32) {
    let mut s = [[0.0f32; WO]; WR];
    for &(xp, dyt) in sp.images {
        for yy in sp.rows.clone() {
            for xx in 0..sp.ow {
                let q = yy * sp.wq + xx;
                let d =
                    std::slice::from_raw_parts(dyt.add((yy * sp.ow + xx) * sp.ostride + ob), WO);
                for (r, row) in s.iter_mut().enumerate() {
                    let b = *xp.add(offs[r] as usize + q);
                    for (a, dv) in row.iter_mut().zip(d) {
                        *a += b * dv;
                    }
                }
            }
        }
    }
    for (r, row) in s.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            *acc.add(r * sp.stride + j) += v;
        }
    }
}

/// # Safety
/// As [`portable_tile`], and the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_tile(sp: &Span, offs: &[u32; WR], ob: usize, acc: *mut f32) {
    use std::arch::x86_64::*;
    let mut s = [[_mm512_setzero_ps(); WV]; WR];
    for &(xp, dyt) in sp.images {
        for yy in sp.rows.clone() {
            let q0 = yy * sp.wq;
            let base: [*const f32; WR] = std::array::from_fn(|r| xp.add(offs[r] as usize + q0));
            let mut dp = dyt.add(yy * sp.ow * sp.ostride + ob);
            for xx in 0..sp.ow {
                let mut d = [_mm512_setzero_ps(); WV];
                for (v, dv) in d.iter_mut().enumerate() {
                    *dv = _mm512_loadu_ps(dp.add(16 * v));
                }
                for (r, row) in s.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(*base[r].add(xx));
                    for (a, dv) in row.iter_mut().zip(&d) {
                        *a = _mm512_fmadd_ps(b, *dv, *a);
                    }
                }
                dp = dp.add(sp.ostride);
            }
        }
    }
    for (r, row) in s.iter().enumerate() {
        for (v, a) in row.iter().enumerate() {
            let p = acc.add(r * sp.stride + 16 * v);
            _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), *a));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::direct::tests::values;
    use crate::kernels::im2col::im2col;

    /// `dW = dy * col(x)^T`, summed over images, the plain way.
    fn reference(dy: &[f32], x: &[f32], n: usize, o: usize, g: &ConvGeom) -> Vec<f32> {
        let (rows, cols, per_in) = (g.rows(), g.cols(), g.c * g.h * g.w);
        let mut dw = vec![0.0f32; o * rows];
        let mut col = vec![0.0; rows * cols];
        for i in 0..n {
            im2col(&x[i * per_in..(i + 1) * per_in], g, &mut col);
            for oc in 0..o {
                let d = &dy[(i * o + oc) * cols..(i * o + oc + 1) * cols];
                for r in 0..rows {
                    let c = &col[r * cols..(r + 1) * cols];
                    dw[oc * rows + r] += d.iter().zip(c).map(|(a, b)| a * b).sum::<f32>();
                }
            }
        }
        dw
    }

    fn kernels() -> Vec<(&'static str, TileFn)> {
        let mut k: Vec<(&'static str, TileFn)> = vec![("portable", portable_tile)];
        #[cfg(target_arch = "x86_64")]
        if super::direct::avx512() {
            k.push(("avx512", avx512_tile));
        } else {
            eprintln!("direct weight grad: no AVX-512 here, only the portable kernel is checked");
        }
        k
    }

    #[test]
    fn matches_the_patch_matrix_product() {
        // (c, h, w, o, k, stride, pad, images): stride 1 and 2, odd sides,
        // tap counts that are not a multiple of the tile, two channel blocks.
        let cases = [
            (3, 20, 23, 64, 3, 1, 1, 2),
            (4, 17, 16, 64, 3, 2, 1, 1),
            (3, 30, 29, 64, 7, 2, 3, 2),
            (2, 15, 15, 128, 5, 1, 2, 1),
            (5, 16, 18, 64, 3, 1, 0, 3),
            (7, 14, 15, 64, 3, 1, 1, 1),
            // small maps: several images per pass, and a partial last pass
            (16, 4, 4, 64, 3, 1, 1, 11),
            (8, 7, 7, 128, 3, 2, 1, 9),
        ];
        for (name, kernel) in kernels() {
            for &(c, h, wd, o, k, s, p, n) in &cases {
                let g = ConvGeom::new(c, h, wd, k, k, s, p).unwrap();
                let x = values(n * c * h * wd, 1.0);
                let dy = values(n * o * g.cols(), 2.0);
                let want = reference(&dy, &x, n, o, &g);
                let wg = WeightGrad::with_kernel(o, &g, kernel);
                let mut sum = vec![0.0f32; wg.sum_len()];
                let mut scratch = vec![f32::NAN; wg.scratch_len(wg.images_per_pass())];
                let (per_in, per_out) = (c * h * wd, o * g.cols());
                let dys: Vec<&[f32]> = dy.chunks_exact(per_out).collect();
                let xs: Vec<&[f32]> = x.chunks_exact(per_in).collect();
                wg.add_images(&dys, &xs, &mut sum, &mut scratch);
                let got = wg.finish(&sum);
                let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * scale,
                        "{name} {:?} n={n}: dW[{i}] = {a}, want {b}",
                        (c, h, wd, o, k, s, p)
                    );
                }
            }
        }
    }
}
