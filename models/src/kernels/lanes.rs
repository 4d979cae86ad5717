//! Direct convolution with the output channels on the vector lanes, for the
//! small maps and strided convolutions where [`super::direct`] (positions on
//! the lanes) wastes its register tile: a 7x7 map fills 49 of its 96 lanes,
//! and a stride-2 grid computes every other column for nothing.
//!
//! A register tile is [`OB`] output channels (four 16-lane vectors) by up to
//! [`P`] consecutive outputs of the flattened output plane (rows wrap, so a
//! 7x7 map wastes nothing but its last tile's spare lanes). Per input channel
//! and kernel tap it loads the tap's four weight vectors and, for each
//! output, broadcasts the one input value that output reads into four fused
//! multiply-adds. Nothing is laid out for the input but its zero
//! padding; the weights are packed once as `[o / OB][c][kh][kw][OB]`. The
//! tile's sums go to the output planes through the [`Post`] map.
//!
//! The microkernel is AVX-512 (chosen at run time); a portable version of the
//! same loop backs it in tests and on other CPUs.

use super::direct::{avx512, pad_into, Post};
use super::im2col::ConvGeom;
use rayon::prelude::*;
use std::ops::Range;

/// Output channels per register tile (four vectors).
pub(crate) const OB: usize = 64;
/// Vectors of output channels per register tile.
const VO: usize = OB / 16;
/// Most outputs of one row per register tile (with [`VO`] vectors each, 24
/// of the 32 vector registers; the weights take 4 more and the broadcast one;
/// 7 made the compiler spill sums to the stack).
const P: usize = 6;
/// Values of weights per input-channel chunk: 16 KB, half of L1, so a
/// chunk's weights stay there while it goes through a group of tiles.
/// Against 256 KB chunks (in L2), min of 30 interleaved runs, one image at
/// 224 px, 1 / 2 threads: stem 7x7/2 3.61 / 2.64 vs 3.92 / 2.57 ms, 3x3/2
/// at 56, 28 and 14 px 2 to 10 % faster, 3x3/1 at 14 px 5 / 7 % faster.
const L1_WEIGHTS: usize = 4096;
/// Register tiles whose sums are kept (on the stack, 12 KB) while a chunk's
/// weights go through them.
const GROUP: usize = 8;

/// Whether this kernel computes `g` at all: 1x1 or 3x3, stride 1 or 2, or
/// ResNet's 7x7 stride-2 stem.
pub(super) fn computes(g: &ConvGeom) -> bool {
    match (g.kh, g.kw) {
        (1, 1) | (3, 3) => g.stride == 1 || g.stride == 2,
        (7, 7) => g.stride == 2,
        _ => false,
    }
}

/// One convolution's weights in the kernel's order.
pub struct Packed {
    o: usize,
    g: ConvGeom,
    /// `[o / OB][c][kh][kw][OB]`, zero lanes past `o`.
    w: Vec<f32>,
    fast: bool,
}

impl Packed {
    /// `w` is `o x c x kh x kw` (PyTorch's layout) for the convolution `g`.
    pub fn new(w: &[f32], o: usize, g: &ConvGeom) -> Self {
        Self::with(w, o, g, avx512())
    }

    fn with(w: &[f32], o: usize, g: &ConvGeom, fast: bool) -> Self {
        assert!(computes(g), "lanes conv: geometry");
        let k = g.c * g.kh * g.kw;
        let mut wp = vec![0.0f32; o.div_ceil(OB) * k * OB];
        for oc in 0..o {
            let (b, l) = (oc / OB, oc % OB);
            for (kk, v) in w[oc * k..(oc + 1) * k].iter().enumerate() {
                wp[(b * k + kk) * OB + l] = *v;
            }
        }
        Self {
            o,
            g: *g,
            w: wp,
            fast,
        }
    }

    /// Whether these are the packed weights of an `o`-channel convolution `g`.
    pub(crate) fn fits(&self, o: usize, g: &ConvGeom) -> bool {
        self.o == o && self.g == *g
    }

    fn padded(&self) -> (usize, usize) {
        (self.g.h + 2 * self.g.pad, self.g.w + 2 * self.g.pad)
    }

    /// Scratch values one image needs (its zero-padded copy).
    pub fn scratch_len(&self) -> usize {
        let (hp, wp) = self.padded();
        if self.g.pad == 0 {
            0
        } else {
            self.g.c * hp * wp
        }
    }

    /// One image: `y (o x oh*ow) = post(conv(x, w))`, over `t` threads
    /// (split by output-channel blocks and runs of register tiles).
    pub fn forward(&self, x: &[f32], y: &mut [f32], scratch: &mut [f32], t: usize, post: &Post) {
        let g = &self.g;
        let plane = g.oh * g.ow;
        assert_eq!(x.len(), g.c * g.h * g.w, "lanes conv: input size");
        assert_eq!(y.len(), self.o * plane, "lanes conv: output size");
        if let Some((a, b)) = post.affine {
            assert!(a.len() == self.o && b.len() == self.o, "lanes conv: affine");
        }
        if let Some(r) = post.residual {
            assert_eq!(r.len(), y.len(), "lanes conv: residual size");
        }
        let xp = self.pad(x, scratch);
        let all = View { first: 0, plane };
        // Work items: a channel block's tiles in `groups` runs, so that
        // there are at least two items per thread.
        let (blocks, tiles) = (self.o.div_ceil(OB), plane.div_ceil(P));
        let groups = (2 * t).div_ceil(blocks).min(tiles).max(1);
        let per = tiles.div_ceil(groups);
        let out = Out(y.as_mut_ptr());
        let run = |item: usize| {
            let (ob, gi) = (item / groups, item % groups);
            let range = gi * per..((gi + 1) * per).min(tiles);
            // SAFETY: item (block, tiles) writes only its block's channels at
            // its tiles' positions; the reads stay in the padded image.
            unsafe { self.tiles(xp, ob, range, &all, &out, post) }
        };
        if t > 1 && blocks * groups > 1 {
            (0..blocks * groups).into_par_iter().for_each(run);
        } else {
            (0..blocks * groups).for_each(run);
        }
    }

    /// One image's output rows `rows` only: `y (o x rows x ow) =
    /// post(conv(xp, w))` on this thread, `xp` the image as [`Self::pad`]
    /// returns it (`post.residual`, when given, is laid out like `y`).
    pub(crate) fn forward_rows(&self, xp: &[f32], rows: Range<usize>, y: &mut [f32], post: &Post) {
        let g = &self.g;
        let (hp, wp) = self.padded();
        assert!(rows.end <= g.oh, "lanes conv: output rows");
        assert_eq!(xp.len(), g.c * hp * wp, "lanes conv: padded input size");
        let plane = rows.len() * g.ow;
        assert_eq!(y.len(), self.o * plane, "lanes conv: output size");
        if let Some(r) = post.residual {
            assert_eq!(r.len(), y.len(), "lanes conv: residual size");
        }
        let view = View {
            first: rows.start * g.ow,
            plane,
        };
        let out = Out(y.as_mut_ptr());
        for ob in 0..self.o.div_ceil(OB) {
            // SAFETY: the tiles cover this view's positions, written only here;
            // their reads stay in the padded image.
            unsafe { self.tiles(xp, ob, 0..plane.div_ceil(P), &view, &out, post) };
        }
    }

    /// `x` zero-padded into `scratch` ([`Self::scratch_len`] values), or `x`
    /// itself when the convolution has no padding.
    pub(crate) fn pad<'a>(&self, x: &'a [f32], scratch: &'a mut [f32]) -> &'a [f32] {
        if self.g.pad == 0 {
            return x;
        }
        let buf = &mut scratch[..self.scratch_len()];
        pad_into(x, &self.g, buf);
        buf
    }

    /// Register tiles `range` (outputs `P` apart in the flattened rows of
    /// `view`) of channel block `ob`, [`GROUP`] at a time: the input channels
    /// in chunks whose weights stay in L1, each chunk through the group's
    /// tiles, the sums kept per tile between chunks; then the group's stores
    /// (`out` holds the view's planes).
    ///
    /// # Safety
    /// `xp` is the padded image; no other thread writes these outputs.
    unsafe fn tiles(
        &self,
        xp: &[f32],
        ob: usize,
        range: Range<usize>,
        view: &View,
        out: &Out,
        post: &Post,
    ) {
        let g = &self.g;
        let (hp, wp) = self.padded();
        let taps = g.kh * g.kw;
        let w = self.w[ob * g.c * taps * OB..].as_ptr();
        let (plane, q0) = (view.plane, view.first);
        let chunk = (L1_WEIGHTS / (taps * OB)).max(1);
        let mut sums = [[[0.0f32; OB]; P]; GROUP];
        for first in range.clone().step_by(GROUP) {
            let tiles = first..(first + GROUP).min(range.end);
            // Per tile: its first output, its outputs, where each one's
            // receptive field starts in the padded image.
            let mut layout = [(0usize, 0usize, [0usize; P]); GROUP];
            for (slot, ti) in layout.iter_mut().zip(tiles.clone()) {
                let q = ti * P;
                let np = (plane - q).min(P);
                let mut offs = [0usize; P];
                for (j, off) in offs.iter_mut().enumerate().take(np) {
                    let (oy, ox) = ((q0 + q + j) / g.ow, (q0 + q + j) % g.ow);
                    *off = (oy * wp + ox) * g.stride;
                }
                *slot = (q, np, offs);
            }
            let layout = &layout[..tiles.len()];
            for c0 in (0..g.c).step_by(chunk) {
                let w = w.add(c0 * taps * OB);
                for (tile_sums, (_, np, offs)) in sums.iter_mut().zip(layout) {
                    let reads = Reads {
                        x: xp.as_ptr().add(c0 * hp * wp),
                        c: chunk.min(g.c - c0),
                        k: g.kh,
                        plane: hp * wp,
                        wp,
                        offs,
                        np: *np,
                    };
                    tile(self.fast, &reads, w, c0 > 0, tile_sums);
                }
            }
            for (tile_sums, (q, np, _)) in sums.iter().zip(layout) {
                self.store(tile_sums, ob, *q, *np, plane, out, post);
            }
        }
    }

    /// One tile's sums through `post` into the output (`plane` values per
    /// channel).
    ///
    /// # Safety
    /// No other thread writes these outputs.
    #[allow(clippy::too_many_arguments)]
    unsafe fn store(
        &self,
        sums: &[[f32; OB]; P],
        ob: usize,
        q: usize,
        np: usize,
        plane: usize,
        out: &Out,
        post: &Post,
    ) {
        for ch in 0..(self.o - ob * OB).min(OB) {
            let oc = ob * OB + ch;
            let (a, b) = post.affine.map_or((1.0, 0.0), |(a, b)| (a[oc], b[oc]));
            let at = oc * plane + q;
            for (j, s) in sums[..np].iter().enumerate() {
                let mut v = s[ch] * a + b;
                if let Some(r) = post.residual {
                    v += r[at + j];
                }
                if post.relu {
                    v = v.max(0.0);
                }
                *out.0.add(at + j) = v;
            }
        }
    }
}

/// Where a call's outputs start in the flattened output plane (`first`),
/// and the values per channel of the buffer they go to (`plane`).
struct View {
    first: usize,
    plane: usize,
}

/// A raw output pointer shared by threads that write disjoint parts.
struct Out(*mut f32);
// SAFETY: the writers through it are given disjoint index sets (see
// `Packed::forward`); the pointer outlives the parallel section.
unsafe impl Sync for Out {}
unsafe impl Send for Out {}

/// What one register tile reads: `c` channels of the padded image from `x`
/// (`plane` values per channel, `wp` per row), a `k x k` kernel, and its `np`
/// outputs, output `j`'s receptive field starting at `x + offs[j]`.
struct Reads<'a> {
    x: *const f32,
    c: usize,
    k: usize,
    plane: usize,
    wp: usize,
    offs: &'a [usize; P],
    np: usize,
}

/// `sums[j][l] (+)= Σ w[tap][l] * x[offs[j] + tap's offset]` over the read
/// channels and every tap, for the tile's outputs; `add` starts from `sums`
/// instead of zero.
///
/// # Safety
/// The padded image holds every value the outputs read; `w` holds
/// `c * k * k * OB` values.
unsafe fn tile(fast: bool, r: &Reads, w: *const f32, add: bool, sums: &mut [[f32; OB]; P]) {
    #[cfg(target_arch = "x86_64")]
    if fast {
        macro_rules! by_np {
            ($k:literal) => {
                match r.np {
                    1 => avx512_tile::<$k, 1>(r, w, add, sums),
                    2 => avx512_tile::<$k, 2>(r, w, add, sums),
                    3 => avx512_tile::<$k, 3>(r, w, add, sums),
                    4 => avx512_tile::<$k, 4>(r, w, add, sums),
                    5 => avx512_tile::<$k, 5>(r, w, add, sums),
                    _ => avx512_tile::<$k, 6>(r, w, add, sums),
                }
            };
        }
        return match r.k {
            1 => by_np!(1),
            3 => by_np!(3),
            _ => by_np!(7),
        };
    }
    let _ = fast;
    portable_tile(r, w, add, sums)
}

/// The reference kernel (and the fallback): the same sums, scalar.
///
/// # Safety
/// As [`tile`].
unsafe fn portable_tile(r: &Reads, w: *const f32, add: bool, sums: &mut [[f32; OB]; P]) {
    if !add {
        for row in sums[..r.np].iter_mut() {
            row.fill(0.0);
        }
    }
    let mut wt = w;
    for ci in 0..r.c {
        for dy in 0..r.k {
            for dx in 0..r.k {
                let xt = r.x.add(ci * r.plane + dy * r.wp + dx);
                let ws = std::slice::from_raw_parts(wt, OB);
                for (row, off) in sums[..r.np].iter_mut().zip(r.offs) {
                    let xv = *xt.add(*off);
                    for (acc, wv) in row.iter_mut().zip(ws) {
                        *acc += wv * xv;
                    }
                }
                wt = wt.add(OB);
            }
        }
    }
}

/// # Safety
/// As [`tile`], and the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_tile<const K: usize, const NP: usize>(
    r: &Reads,
    w: *const f32,
    add: bool,
    sums: &mut [[f32; OB]; P],
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); VO]; NP];
    if add {
        for (a, row) in acc.iter_mut().zip(sums.iter()) {
            for (v, av) in a.iter_mut().enumerate() {
                *av = _mm512_loadu_ps(row.as_ptr().add(16 * v));
            }
        }
    }
    let offs: [usize; NP] = std::array::from_fn(|j| r.offs[j]);
    let mut wt = w;
    for ci in 0..r.c {
        let xc = r.x.add(ci * r.plane);
        for dy in 0..K {
            let xr = xc.add(dy * r.wp);
            for dx in 0..K {
                let xt = xr.add(dx);
                let wv = [
                    _mm512_loadu_ps(wt),
                    _mm512_loadu_ps(wt.add(16)),
                    _mm512_loadu_ps(wt.add(32)),
                    _mm512_loadu_ps(wt.add(48)),
                ];
                for (a, off) in acc.iter_mut().zip(&offs) {
                    let b = _mm512_set1_ps(*xt.add(*off));
                    for (av, w) in a.iter_mut().zip(&wv) {
                        *av = _mm512_fmadd_ps(*w, b, *av);
                    }
                }
                wt = wt.add(OB);
            }
        }
    }
    for (row, a) in sums.iter_mut().zip(&acc) {
        for (v, av) in a.iter().enumerate() {
            _mm512_storeu_ps(row.as_mut_ptr().add(16 * v), *av);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::direct::tests::{reference, values};

    /// Against the patch-matrix product: 1x1 and 3x3, stride 1 and 2, output
    /// channels not a multiple of the block, planes not a multiple of the
    /// tile, input channels in several chunks, with and without the post
    /// map, one and several threads.
    #[test]
    fn matches_the_patch_matrix_product() {
        // (c, h, w, o, k, stride)
        let cases = [
            (3, 7, 7, 70, 3, 1),
            (5, 9, 13, 16, 3, 2),
            (16, 14, 14, 64, 3, 1),
            (8, 8, 11, 130, 1, 2),
            (4, 6, 5, 9, 1, 1),
            (17, 15, 9, 64, 3, 2),
            // More input channels than one chunk of weights holds.
            (130, 5, 5, 20, 3, 1),
            // ... and more register tiles per work item than one group.
            (130, 10, 10, 20, 3, 1),
            (1100, 3, 4, 65, 1, 2),
            // The stem: 7x7 stride 2 over 3 channels.
            (3, 23, 17, 64, 7, 2),
        ];
        for fast in [false, avx512()] {
            for &(c, h, w, o, k, s) in &cases {
                let g = ConvGeom::new(c, h, w, k, k, s, k / 2).expect("geometry");
                let x = values(c * h * w, 0.3);
                let wt = values(o * c * k * k, 1.7);
                let want = reference(&x, &wt, o, &g);
                let plane = g.oh * g.ow;
                let (scale, shift) = (values(o, 2.1), values(o, 4.2));
                let res = values(o * plane, 5.5);
                let want_post: Vec<f32> = want
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v * scale[i / plane] + shift[i / plane] + res[i]).max(0.0))
                    .collect();
                let p = Packed::with(&wt, o, &g, fast);
                let mut scratch = vec![f32::NAN; p.scratch_len()];
                for t in [1, 3] {
                    for (post, want) in [
                        (Post::default(), &want),
                        (
                            Post {
                                affine: Some((scale.as_slice(), shift.as_slice())),
                                residual: Some(&res),
                                relu: true,
                            },
                            &want_post,
                        ),
                    ] {
                        let mut y = vec![f32::NAN; o * plane];
                        p.forward(&x, &mut y, &mut scratch, t, &post);
                        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                        let err = y
                            .iter()
                            .zip(want.iter())
                            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                        assert!(
                            err <= 1e-5 * scale.max(1.0),
                            "fast {fast}, case {:?}, {t} threads: max error {err}",
                            (c, h, w, o, k, s)
                        );
                    }
                }
            }
        }
    }
}
