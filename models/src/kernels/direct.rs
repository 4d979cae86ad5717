//! Direct convolution: no patch matrix and no GEMM packing. The output
//! positions of one image are laid on a flat grid `oh x wq` (the padded input
//! row width, so the `wq - ow` extra columns of each row are computed and
//! dropped), and every kernel tap of every input channel is one fixed offset
//! into a zero-padded copy of the image. A register tile of `R` output
//! channels by `16 * V` grid positions then accumulates over all
//! `c * kh * kw` taps without leaving the registers: per tap, `V` vector loads
//! of the input, `R` broadcasts of weights and `R * V` fused multiply-adds.
//!
//! Stride 2 is the same computation over the four phase images (even/odd rows
//! by even/odd columns of the padded input): tap `(dy, dx)` reads phase
//! `(dy % 2, dx % 2)` at offset `(dy / 2, dx / 2)`, which is a stride-1 read.
//!
//! The microkernel is AVX-512 (`std::arch`, chosen at run time); a portable
//! version of the same loop backs it in tests and on other CPUs' test runs.

use super::im2col::ConvGeom;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU8, Ordering};

/// Output channels per register tile.
const R: usize = 8;
/// 16-wide vectors of grid positions per register tile.
const V: usize = 3;
/// Grid positions per register tile.
const TILE: usize = 16 * V;
/// Input channels whose taps one register tile takes through every
/// output-channel block before the next ones (their stretch of the image
/// then stays in L1; the tile's sums are stored and reloaded between chunks).
/// Measured single-threaded on layer1 to layer3 shapes: 10 to 15 % faster
/// than all taps at once per block.
const CHANNELS_PER_PASS: usize = 16;

/// Whether the direct kernel takes `g`: AVX-512 present, stride 1 or 2, a
/// kernel larger than 1x1 (a 1x1 convolution has one tap per channel, too
/// few to pay for the padded copy: 3.6x slower than its GEMM at batch 16),
/// and a map wide enough that the dropped grid columns cost little.
pub fn applies(g: &ConvGeom) -> bool {
    avx512() && suits(g) && enabled()
}

/// 0 = not decided yet, 1 = on, 2 = off.
static MODE: AtomicU8 = AtomicU8::new(0);

/// Whether the direct path may run (default: yes, unless `CXR_DIRECT=0`).
fn enabled() -> bool {
    match MODE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = std::env::var("CXR_DIRECT").as_deref() != Ok("0");
            MODE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
            on
        }
    }
}

/// Turns the direct convolution on or off (the GEMM paths take over), for
/// side-by-side benchmarks.
pub fn set_enabled(on: bool) {
    MODE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

fn suits(g: &ConvGeom) -> bool {
    (g.stride == 1 || g.stride == 2) && g.kh > 1 && g.kw > 1 && g.ow >= MIN_WIDTH
}

/// Below this output width the grid's extra columns and the rounding to a
/// whole register tile waste too much; the GEMM paths take those maps.
const MIN_WIDTH: usize = 14;

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A register-tile kernel: `out[r * TILE + j] (+)= sum_k w[k * R + r] * x[offs[k] + j]`,
/// adding to `out` when the flag says so (`out` holds `R * TILE` values).
type TileFn = unsafe fn(*const f32, &[u32], *const f32, &mut [f32], bool);

/// The layout of one padded (and, for stride 2, phase-split) image.
#[derive(Debug, Clone, Copy)]
struct Grid {
    /// Phase images per side: the stride.
    s: usize,
    /// Rows and columns of each phase image.
    hq: usize,
    wq: usize,
    /// Register tiles covering the `oh x wq` output grid.
    tiles: usize,
}

impl Grid {
    fn of(g: &ConvGeom) -> Self {
        let s = g.stride;
        let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
        let (hq, wq) = (hp.div_ceil(s), wp.div_ceil(s));
        Self {
            s,
            hq,
            wq,
            tiles: (g.oh * wq).div_ceil(TILE),
        }
    }

    fn plane(&self) -> usize {
        self.hq * self.wq
    }
}

/// The weights of one convolution in the kernel's order, with the input
/// offset of every tap: build once per call, use for every image.
pub struct Packed {
    o: usize,
    g: ConvGeom,
    grid: Grid,
    /// `k = (c * kh + dy) * kw + dx` -> offset into the padded image.
    offs: Vec<u32>,
    /// `[o / R blocks][k][R]`, zero rows past `o`.
    w: Vec<f32>,
    /// Values in the padded image buffer, reads past the last plane included.
    buf_len: usize,
    kernel: TileFn,
}

impl Packed {
    /// `w` is `o x c x kh x kw` (PyTorch's layout) for the convolution `g`.
    pub fn new(w: &[f32], o: usize, g: &ConvGeom) -> Self {
        Self::with_kernel(w, o, g, best_kernel())
    }

    fn with_kernel(w: &[f32], o: usize, g: &ConvGeom, kernel: TileFn) -> Self {
        let grid = Grid::of(g);
        let (s, c, kh, kw) = (grid.s, g.c, g.kh, g.kw);
        let plane = grid.plane();
        let taps = kh * kw;
        let mut offs = Vec::with_capacity(c * taps);
        for ch in 0..c {
            for dy in 0..kh {
                for dx in 0..kw {
                    let phase = (dy % s) * s + dx % s;
                    let off = (phase * c + ch) * plane + (dy / s) * grid.wq + dx / s;
                    offs.push(off as u32);
                }
            }
        }
        let k = c * taps;
        let blocks = o.div_ceil(R);
        let mut wp = vec![0.0f32; blocks * k * R];
        for oc in 0..o {
            let (b, r) = (oc / R, oc % R);
            for (kk, v) in w[oc * k..(oc + 1) * k].iter().enumerate() {
                wp[(b * k + kk) * R + r] = *v;
            }
        }
        let max_off = offs.iter().copied().max().unwrap_or(0) as usize;
        let buf_len = (s * s * c * plane).max(max_off + grid.tiles * TILE);
        Self {
            o,
            g: *g,
            grid,
            offs,
            w: wp,
            buf_len,
            kernel,
        }
    }

    /// Scratch values one image needs.
    pub fn scratch_len(&self) -> usize {
        self.buf_len
    }

    /// One image: `y (o x oh*ow) = conv(x, w)`, over `t` threads (split by
    /// output-channel blocks).
    pub fn forward(&self, x: &[f32], y: &mut [f32], scratch: &mut [f32], t: usize) {
        let buf = &mut scratch[..self.buf_len];
        self.fill(x, buf);
        let buf: &[f32] = buf;
        let blocks = self.o.div_ceil(R);
        let per_block = R * self.g.oh * self.g.ow;
        if t > 1 && blocks > 1 {
            let group = blocks.div_ceil(t);
            y.par_chunks_mut(group * per_block)
                .enumerate()
                .for_each(|(i, yg)| self.blocks(buf, i * group, yg));
        } else {
            self.blocks(buf, 0, y);
        }
    }

    /// The output-channel blocks from `first` on that `y` (their output
    /// planes) holds. Per register tile, the taps go in chunks of
    /// [`CHANNELS_PER_PASS`] input channels, each chunk through every block
    /// while that stretch of the image is in L1.
    fn blocks(&self, buf: &[f32], first: usize, y: &mut [f32]) {
        let k = self.offs.len();
        let (oh, ow, wq) = (self.g.oh, self.g.ow, self.grid.wq);
        let plane = oh * ow;
        let blocks = y.len().div_ceil(R * plane);
        let chunk = CHANNELS_PER_PASS * self.g.kh * self.g.kw;
        let mut acc = vec![0.0f32; blocks * R * TILE];
        for t in 0..self.grid.tiles {
            let start = t * TILE;
            for k0 in (0..k).step_by(chunk) {
                let offs = &self.offs[k0..(k0 + chunk).min(k)];
                for (b, a) in acc.chunks_exact_mut(R * TILE).enumerate() {
                    let w = &self.w[((first + b) * k + k0) * R..];
                    // SAFETY: every read is `buf[start + off + j]` for an
                    // offset in `offs` and `j < TILE`, below `buf_len` by
                    // construction; `w` holds `offs.len() * R` values from
                    // here and `a` is one `R x TILE` tile.
                    unsafe { (self.kernel)(buf.as_ptr().add(start), offs, w.as_ptr(), a, k0 > 0) };
                }
            }
            // Grid position q = y * wq + x lands at y * ow + x when x < ow.
            let mut q = start;
            while q < start + TILE {
                let (yy, xx) = (q / wq, q % wq);
                if yy >= oh {
                    break;
                }
                let run = (start + TILE - q).min(wq - xx);
                if xx < ow {
                    let len = run.min(ow - xx);
                    let j = q - start;
                    for (oc, plane_y) in y.chunks_exact_mut(plane).enumerate() {
                        let src = &acc[(oc / R) * R * TILE + (oc % R) * TILE + j..][..len];
                        plane_y[yy * ow + xx..][..len].copy_from_slice(src);
                    }
                }
                q += run;
            }
        }
    }

    /// The zero-padded image, split into `s * s` phase images for stride `s`.
    fn fill(&self, x: &[f32], buf: &mut [f32]) {
        buf.fill(0.0);
        let (g, grid) = (&self.g, &self.grid);
        let (s, plane, wq) = (grid.s, grid.plane(), grid.wq);
        for ch in 0..g.c {
            let src = &x[ch * g.h * g.w..(ch + 1) * g.h * g.w];
            for (r, row) in src.chunks_exact(g.w).enumerate() {
                let rr = r + g.pad;
                if s == 1 {
                    let at = ch * plane + rr * wq + g.pad;
                    buf[at..at + g.w].copy_from_slice(row);
                } else {
                    for (col, v) in row.iter().enumerate() {
                        let cc = col + g.pad;
                        let phase = (rr % s) * s + cc % s;
                        buf[(phase * g.c + ch) * plane + (rr / s) * wq + cc / s] = *v;
                    }
                }
            }
        }
    }
}

fn best_kernel() -> TileFn {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        return avx512_tile;
    }
    portable_tile
}

/// The reference kernel (and the fallback): the same sums, scalar.
///
/// # Safety
/// `x + offs[k] + j` must be readable for every `k` and `j < TILE`, and `w`
/// must hold `offs.len() * R` values.
unsafe fn portable_tile(x: *const f32, offs: &[u32], w: *const f32, out: &mut [f32], add: bool) {
    let out = &mut out[..R * TILE];
    if !add {
        out.fill(0.0);
    }
    for (k, &off) in offs.iter().enumerate() {
        let xs = std::slice::from_raw_parts(x.add(off as usize), TILE);
        let ws = std::slice::from_raw_parts(w.add(k * R), R);
        for (r, wv) in ws.iter().enumerate() {
            for (o, xv) in out[r * TILE..(r + 1) * TILE].iter_mut().zip(xs) {
                *o += wv * xv;
            }
        }
    }
}

/// # Safety
/// As [`portable_tile`], and the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_tile(x: *const f32, offs: &[u32], w: *const f32, out: &mut [f32], add: bool) {
    use std::arch::x86_64::*;
    let out = &mut out[..R * TILE];
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    if add {
        for (r, row) in acc.iter_mut().enumerate() {
            for (v, a) in row.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(out.as_ptr().add(r * TILE + 16 * v));
            }
        }
    }
    let mut wp = w;
    for &off in offs {
        let xp = x.add(off as usize);
        let mut xv = [_mm512_setzero_ps(); V];
        for (v, xr) in xv.iter_mut().enumerate() {
            *xr = _mm512_loadu_ps(xp.add(16 * v));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let wr = _mm512_set1_ps(*wp.add(r));
            for (a, xr) in row.iter_mut().zip(&xv) {
                *a = _mm512_fmadd_ps(wr, *xr, *a);
            }
        }
        wp = wp.add(R);
    }
    for (r, row) in acc.iter().enumerate() {
        for (v, a) in row.iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add(r * TILE + 16 * v), *a);
        }
    }
}

/// The input gradient of a stride-1 convolution is itself a stride-1
/// convolution of the output gradient: padding `k - 1 - pad`, kernel flipped
/// and with input and output channels swapped. Returns its weights
/// (`c x o x kh x kw`) and geometry; `None` when that does not hold.
pub fn input_grad_as_forward(w: &[f32], o: usize, g: &ConvGeom) -> Option<(Vec<f32>, ConvGeom)> {
    if g.stride != 1 || g.pad >= g.kh || g.pad >= g.kw || g.kh != g.kw {
        return None;
    }
    let pad = g.kh - 1 - g.pad;
    let gt = ConvGeom::new(o, g.oh, g.ow, g.kh, g.kw, 1, pad)?;
    if (gt.oh, gt.ow) != (g.h, g.w) {
        return None;
    }
    let (c, kh, kw) = (g.c, g.kh, g.kw);
    let mut wt = vec![0.0f32; c * o * kh * kw];
    for oc in 0..o {
        for ch in 0..c {
            for dy in 0..kh {
                for dx in 0..kw {
                    wt[((ch * o + oc) * kh + kh - 1 - dy) * kw + kw - 1 - dx] =
                        w[((oc * c + ch) * kh + dy) * kw + dx];
                }
            }
        }
    }
    Some((wt, gt))
}

/// Whether the input gradient of `g` runs as a direct forward convolution.
pub fn input_grad_applies(g: &ConvGeom) -> bool {
    avx512()
        && enabled()
        && g.stride == 1
        && g.kh == g.kw
        && g.pad < g.kh
        && !g.is_pointwise()
        && g.w >= MIN_WIDTH
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::im2col::im2col;

    fn reference(x: &[f32], w: &[f32], o: usize, g: &ConvGeom) -> Vec<f32> {
        let (rows, cols) = (g.rows(), g.cols());
        let mut col = vec![0.0; rows * cols];
        im2col(x, g, &mut col);
        let mut y = vec![0.0; o * cols];
        for oc in 0..o {
            for r in 0..rows {
                let wv = w[oc * rows + r];
                for (yv, cv) in y[oc * cols..(oc + 1) * cols]
                    .iter_mut()
                    .zip(&col[r * cols..(r + 1) * cols])
                {
                    *yv += wv * cv;
                }
            }
        }
        y
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.618).sin()).collect()
    }

    fn kernels() -> Vec<(&'static str, TileFn)> {
        let mut k: Vec<(&'static str, TileFn)> = vec![("portable", portable_tile)];
        #[cfg(target_arch = "x86_64")]
        if avx512() {
            k.push(("avx512", avx512_tile));
        } else {
            eprintln!("direct conv: no AVX-512 here, only the portable kernel is checked");
        }
        k
    }

    #[test]
    fn matches_the_patch_matrix_product() {
        // (c, h, w, o, k, stride, pad): stride 1 and 2, odd sides, channel
        // counts that are not a multiple of the register tile.
        let cases = [
            (3, 20, 23, 5, 3, 1, 1),
            (4, 17, 16, 9, 3, 2, 1),
            (3, 30, 29, 16, 7, 2, 3),
            (2, 15, 15, 8, 5, 1, 2),
            (5, 16, 18, 3, 3, 1, 0),
            (6, 21, 20, 17, 1, 2, 0),
            (8, 14, 14, 24, 3, 1, 1),
            (37, 14, 15, 20, 3, 1, 1),
            (20, 16, 16, 12, 3, 2, 1),
        ];
        for (name, kernel) in kernels() {
            for &(c, h, wd, o, k, s, p) in &cases {
                let g = ConvGeom::new(c, h, wd, k, k, s, p).unwrap();
                let x = values(c * h * wd, 1.0);
                let w = values(o * c * k * k, 2.0);
                let want = reference(&x, &w, o, &g);
                let packed = Packed::with_kernel(&w, o, &g, kernel);
                for t in [1, 2] {
                    let mut y = vec![f32::NAN; o * g.cols()];
                    let mut scratch = vec![f32::NAN; packed.scratch_len()];
                    packed.forward(&x, &mut y, &mut scratch, t);
                    for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() < 1e-4,
                            "{name} kernel, case {:?}, {t} threads, value {i}: {a} vs {b}",
                            (c, h, wd, o, k, s, p)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn input_gradient_is_the_adjoint() {
        // <conv(x), dy> == <x, conv_t(dy)> for the flipped, transposed kernel.
        let (c, h, wd, o, k, p) = (3, 15, 17, 5, 3, 1);
        let g = ConvGeom::new(c, h, wd, k, k, 1, p).unwrap();
        let x = values(c * h * wd, 3.0);
        let w = values(o * c * k * k, 4.0);
        let dy = values(o * g.cols(), 5.0);
        let y = reference(&x, &w, o, &g);
        let (wt, gt) = input_grad_as_forward(&w, o, &g).unwrap();
        let packed = Packed::with_kernel(&wt, c, &gt, portable_tile);
        let mut dx = vec![0.0; c * h * wd];
        let mut scratch = vec![0.0; packed.scratch_len()];
        packed.forward(&dy, &mut dx, &mut scratch, 1);
        let lhs: f32 = y.iter().zip(&dy).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
        assert!(
            (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
        assert!(
            input_grad_as_forward(&w, o, &ConvGeom::new(c, h, wd, k, k, 2, p).unwrap()).is_none()
        );
    }
}
