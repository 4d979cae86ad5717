//! Winograd F(4x4, 3x3): a 3x3 stride-1 convolution with 2.25 multiplies
//! per output and input channel instead of 9.
//!
//! The output is cut into 4x4 tiles; tile `(ty, tx)` reads the 6x6 patch of
//! the padded input at `(4 ty, 4 tx)`. Per tile and channel the patch `d` is
//! transformed to `Bᵀ d B` (36 values, one per "frequency" ξ), the 3x3 kernel
//! `g` of each (output, input) channel pair once to `U = G g Gᵀ`, and then,
//! for each ξ apart, `M[ξ] (o x tiles) = U[ξ] (o x c) * V[ξ] (c x tiles)`: 36
//! independent matrix products over the input channels, which take almost all
//! of the time. The tile's outputs are `Aᵀ M A` (Lavin & Gray, 2015).
//!
//! The tiles of all images are numbered one after another (`positions`) and
//! taken in bands of [`BAND`] positions, so a band's transformed input `V`
//! and products `M` stay in this core's L2 while the band goes through the
//! three steps: input transform, the 36 products (the direct convolution's
//! register-tile kernel, [`super::direct`], with the input channels as its
//! taps), output transform with the [`Post`] map. Bands are spread over the
//! threads when there are enough of them; otherwise each step of each band is
//! split (input channels, ξ, output channels).
//!
//! The input is first copied once into a zero-padded, column-phase-split
//! layout (padded column `4k + q` at phase `q`, index `k`), so the 6x6 patches
//! of 16 consecutive tiles in a tile row are 36 contiguous 16-value reads,
//! which the transforms then work on lane by lane (plain arrays that the
//! compiler vectorises; the AVX-512 build compiles them with that feature).

use super::direct::{self, Post, TileFn, R, TILE};
use super::im2col::ConvGeom;
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

/// Output tile side.
pub(super) const M: usize = 4;
/// Input patch side.
const A: usize = M + 2;
/// Transformed values per tile ("frequencies").
const XI: usize = A * A;
/// Tiles a transform handles at once (one vector).
const L: usize = 16;
/// Tile positions per band (a multiple of the kernel's [`TILE`]).
pub(super) const BAND: usize = TILE;

/// Whether the kernel computes `g` at all: 3x3, stride 1, padded by 1.
pub(super) fn computes(g: &ConvGeom) -> bool {
    (g.kh, g.kw, g.stride, g.pad) == (3, 3, 1, 1)
}

/// The transformed weights of one convolution: `[o / R][ξ][c][R]`, the
/// direct kernel's packed order for each block and ξ, zero rows past `o`.
pub struct Weights {
    o: usize,
    c: usize,
    u: Vec<f32>,
    kernel: TileFn,
    fast: bool,
}

impl Weights {
    /// `w` is `o x c x 3 x 3` (PyTorch's layout).
    pub fn new(w: &[f32], o: usize, c: usize) -> Self {
        let fast = direct::avx512();
        Self::with_kernel(w, o, c, direct::best_kernel(), fast)
    }

    fn with_kernel(w: &[f32], o: usize, c: usize, kernel: TileFn, fast: bool) -> Self {
        let mut u = vec![0.0f32; o.div_ceil(R) * XI * c * R];
        u.par_chunks_mut(XI * c * R)
            .enumerate()
            .for_each(|(ob, ub)| {
                for ch in 0..c {
                    let mut tile = [[0.0f32; R]; XI];
                    for (r, oc) in (ob * R..o.min((ob + 1) * R)).enumerate() {
                        let g = &w[(oc * c + ch) * 9..][..9];
                        // (G g)[a][k] is column k's transform; then each row's.
                        let cols: [[f32; A]; 3] =
                            std::array::from_fn(|k| gt([g[k], g[3 + k], g[6 + k]]));
                        for a in 0..A {
                            for (b, v) in
                                gt([cols[0][a], cols[1][a], cols[2][a]]).iter().enumerate()
                            {
                                tile[a * A + b][r] = *v;
                            }
                        }
                    }
                    for (xi, t) in tile.iter().enumerate() {
                        ub[(xi * c + ch) * R..][..R].copy_from_slice(t);
                    }
                }
            });
        Self {
            o,
            c,
            u,
            kernel,
            fast,
        }
    }

    /// Whether these are the weights of an `o` by `c` channel convolution.
    pub(crate) fn fits(&self, o: usize, c: usize) -> bool {
        self.o == o && self.c == c
    }

    /// `y (n x o x h x w) = post(conv(x (n x c x h x w)))` for the 3x3, stride
    /// 1, pad 1 convolution `g` (`post.residual`, when given, covers the whole
    /// batch like `y`).
    pub fn forward(&self, x: &[f32], n: usize, g: &ConvGeom, y: &mut [f32], post: &Post) {
        assert!(computes(g) && g.c == self.c, "winograd: geometry");
        let t = Tiles::of(n, self.o, g);
        assert_eq!(x.len(), n * g.c * g.h * g.w, "winograd: input size");
        assert_eq!(y.len(), n * self.o * g.h * g.w, "winograd: output size");
        if let Some((a, b)) = post.affine {
            assert!(a.len() == self.o && b.len() == self.o, "winograd: affine");
        }
        if let Some(r) = post.residual {
            assert_eq!(r.len(), y.len(), "winograd: residual size");
        }
        let threads = rayon::current_num_threads().max(1);
        let out = Out(y.as_mut_ptr());
        let offs: Vec<u32> = (0..t.c).map(|ch| (ch * PS) as u32).collect();
        with_buffer(&X4, t.x4_len(), |x4| {
            x4[t.x4_len() - L..].fill(0.0);
            x4[..t.n * t.c * t.x4_plane()]
                .par_chunks_mut(t.x4_plane())
                .enumerate()
                .for_each(|(i, dst)| {
                    let src = &x[i * t.h * t.w..(i + 1) * t.h * t.w];
                    t.fill(self.fast, src, dst);
                });
            let x4: &[f32] = x4;
            let bands = t.positions().div_ceil(BAND);
            if threads > 1 && bands >= 2 * threads {
                (0..bands).into_par_iter().for_each(|b| {
                    with_buffer(&BANDS, t.band_len(), |s| {
                        self.band(&t, &offs, b, x4, s, &out, post, 1)
                    })
                });
            } else {
                with_buffer(&BANDS, t.band_len(), |s| {
                    for b in 0..bands {
                        self.band(&t, &offs, b, x4, s, &out, post, threads);
                    }
                });
            }
        });
    }

    /// One band: input transform, the products, output transform, each
    /// split over `threads`.
    #[allow(clippy::too_many_arguments)]
    fn band(
        &self,
        t: &Tiles,
        offs: &[u32],
        b: usize,
        x4: &[f32],
        scratch: &mut [f32],
        out: &Out,
        post: &Post,
        threads: usize,
    ) {
        let start = b * BAND;
        let runs = t.runs(start..(start + BAND).min(t.positions()));
        let (v, m) = scratch.split_at_mut(t.v_len());
        let (vp, mp) = (Out(v.as_mut_ptr()), Out(m.as_mut_ptr()));
        let fast = self.fast;
        split(t.c, threads, |cs| {
            // SAFETY: each split writes V rows of its own channels only.
            unsafe { input_transform(fast, t, &runs, x4, cs, &vp) }
        });
        let valid = (t.positions() - start).min(BAND);
        split(XI, threads, |xis| {
            for xi in xis {
                // SAFETY: each split writes M rows of its own ξ only.
                unsafe { self.products(t, offs, xi, &vp, &mp, valid) }
            }
        });
        split(self.o, threads, |os| {
            // SAFETY: each split writes outputs of its own channels, at
            // this band's positions only.
            unsafe { output_transform(fast, t, &runs, &mp, os, out, post) }
        });
    }

    /// `M[ξ] = U[ξ] V[ξ]` for the band in `v`, whose first `valid`
    /// positions hold tiles (the products of the rest are not computed; a
    /// chunk with fewer than [`TILE`] of them takes a narrower kernel when
    /// there is one, [`direct::narrow_sums`]).
    ///
    /// # Safety
    /// `v` and `m` are one band's buffers ([`Tiles::band_len`]); no other
    /// thread writes `m`'s rows of this ξ meanwhile.
    /// `offs` are the input channels' rows (`c * PS`).
    unsafe fn products(&self, t: &Tiles, offs: &[u32], xi: usize, v: &Out, m: &Out, valid: usize) {
        let blocks = self.o.div_ceil(R);
        for chunk in 0..valid.div_ceil(TILE) {
            let left = valid - chunk * TILE;
            let narrow = if left < TILE {
                direct::narrow_sums(left)
            } else {
                None
            };
            for ob in 0..blocks {
                let w = self.u[((ob * XI + xi) * t.c) * R..].as_ptr();
                let x = v.0.add(xi * t.c * PS + chunk * TILE);
                let acc = m.0.add(t.m_at(xi, ob * R, chunk * TILE));
                match narrow {
                    Some(sums) => sums(x, offs, w, acc),
                    None => (self.kernel)(x, offs, w, acc, false, None),
                }
            }
        }
    }
}

/// Values per transformed-input row: a band and the slack that a run's
/// 16-lane store may write past it.
const PS: usize = BAND + L;

/// A raw output pointer shared by threads that write disjoint parts.
struct Out(*mut f32);
// SAFETY: the writers through it are given disjoint index sets (see their
// callers); the pointer outlives the parallel section it is used in.
unsafe impl Sync for Out {}
unsafe impl Send for Out {}

thread_local! {
    static X4: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BANDS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's buffer from `slot`, at least `len` values
/// long (not zeroed); taken out while in use, so a re-entrant call gets a
/// fresh one.
fn with_buffer<T>(
    slot: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> T,
) -> T {
    let mut buf = slot.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    slot.with(|s| *s.borrow_mut() = buf);
    r
}

/// Runs `f` over `0..n` cut into `threads` ranges, in parallel when more
/// than one.
fn split(n: usize, threads: usize, f: impl Fn(Range<usize>) + Sync) {
    if threads <= 1 || n <= 1 {
        return f(0..n);
    }
    let per = n.div_ceil(threads);
    (0..n.div_ceil(per))
        .into_par_iter()
        .for_each(|i| f(i * per..((i + 1) * per).min(n)));
}

/// The tiling of one call.
#[derive(Clone, Copy)]
struct Tiles {
    n: usize,
    c: usize,
    o: usize,
    h: usize,
    w: usize,
    /// Tile rows and columns per image.
    th: usize,
    tw: usize,
    /// Padded rows, and values per column phase of a padded row.
    hp: usize,
    wq: usize,
}

/// A stretch of tiles in one tile row: band position `p` on, `len` tiles
/// from `(ty, tx)` of image `img`; never crossing a [`TILE`] boundary of the
/// band and at most [`L`] long.
#[derive(Clone, Copy)]
struct Run {
    p: usize,
    img: usize,
    ty: usize,
    tx: usize,
    len: usize,
}

impl Tiles {
    fn of(n: usize, o: usize, g: &ConvGeom) -> Self {
        let (th, tw) = (g.h.div_ceil(M), g.w.div_ceil(M));
        Self {
            n,
            c: g.c,
            o,
            h: g.h,
            w: g.w,
            th,
            tw,
            hp: M * th + 2,
            wq: tw + 1,
        }
    }

    fn positions(&self) -> usize {
        self.n * self.th * self.tw
    }

    /// Values per padded, phase-split channel image.
    fn x4_plane(&self) -> usize {
        self.hp * M * self.wq
    }

    /// All of them, plus a vector of slack for the last run's reads.
    fn x4_len(&self) -> usize {
        self.n * self.c * self.x4_plane() + L
    }

    /// Transformed input `[ξ][c][PS]`.
    fn v_len(&self) -> usize {
        XI * self.c * PS
    }

    /// Products `[ξ][o / R][BAND / TILE][R][TILE]`, then slack for a run's
    /// 16-lane read.
    fn band_len(&self) -> usize {
        self.v_len() + XI * self.o.div_ceil(R) * R * BAND + L
    }

    /// Where product `(ξ, o, band position p)` lies in the products buffer.
    fn m_at(&self, xi: usize, o: usize, p: usize) -> usize {
        let blocks = self.o.div_ceil(R);
        (((xi * blocks + o / R) * (BAND / TILE) + p / TILE) * R + o % R) * TILE + p % TILE
    }

    /// Copies one channel image into its padded, phase-split plane.
    fn fill(&self, fast: bool, src: &[f32], dst: &mut [f32]) {
        for (pr, row) in dst.chunks_exact_mut(M * self.wq).enumerate() {
            let Some(line) = pr
                .checked_sub(1)
                .filter(|&y| y < self.h)
                .map(|y| &src[y * self.w..(y + 1) * self.w])
            else {
                row.fill(0.0);
                continue;
            };
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: AVX-512F is present when `fast` is set.
                unsafe { split_row_avx512(line, row, self.wq) };
                continue;
            }
            let _ = fast;
            for (q, phase) in row.chunks_exact_mut(self.wq).enumerate() {
                // Padded column M k + q is input column M k + q - 1: k from
                // `first` on reads the line from `start`, every M-th value.
                let (first, start) = if q == 0 { (1, M - 1) } else { (0, q - 1) };
                let count = (self.w.saturating_sub(start)).div_ceil(M);
                phase[..first].fill(0.0);
                for (d, v) in phase[first..first + count]
                    .iter_mut()
                    .zip(line[start..].iter().step_by(M))
                {
                    *d = *v;
                }
                phase[first + count..].fill(0.0);
            }
        }
    }

    /// The runs of tiles at positions `range` (band positions from 0).
    fn runs(&self, range: Range<usize>) -> Vec<Run> {
        let per_image = self.th * self.tw;
        let mut runs = Vec::new();
        let mut p = range.start;
        while p < range.end {
            let (img, r) = (p / per_image, p % per_image);
            let (ty, tx) = (r / self.tw, r % self.tw);
            let at = p - range.start;
            let len = (self.tw - tx)
                .min(L)
                .min(range.end - p)
                .min(TILE - at % TILE);
            runs.push(Run {
                p: at,
                img,
                ty,
                tx,
                len,
            });
            p += len;
        }
        runs
    }
}

/// One input row into the [`M`] phases of its padded row (`row`, `wq`
/// values each: phase `q` index `k` is padded column `M k + q`, input column
/// `M k + q - 1`, zero outside the input), 64 padded columns at a time: four
/// masked loads, then per phase two two-source permutes and a blend. The
/// portable loop in [`Tiles::fill`] (a stride-4 copy value by value) was
/// about 3 % of a batch-16 inference step.
///
/// # Safety
/// The CPU has AVX-512F; `row` holds `M * wq` values and `wq >= line.len() / M + 1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn split_row_avx512(line: &[f32], row: &mut [f32], wq: usize) {
    use std::arch::x86_64::*;
    assert!(row.len() >= M * wq, "winograd: phase row");
    let w = line.len();
    // Lanes 0-7 pick from the first 32 values, 8-15 from the next 32.
    let idx: [__m512i; M] = std::array::from_fn(|q| {
        let lanes: [i32; L] = std::array::from_fn(|k| (M * (k % 8) + q) as i32);
        _mm512_loadu_si512(lanes.as_ptr().cast())
    });
    for k0 in (0..wq).step_by(L) {
        // Padded columns M k0 + 16 v + j, that is input columns one less.
        let a: [__m512; M] = std::array::from_fn(|v| {
            let start = M * k0 + L * v;
            let (lo, hi) = (
                1usize.saturating_sub(start),
                (w + 1).saturating_sub(start).min(L),
            );
            if lo >= hi {
                return _mm512_setzero_ps();
            }
            let mask = (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16;
            // Only the masked lanes, all inside `line`, are read.
            _mm512_maskz_loadu_ps(mask, line.as_ptr().wrapping_add(start).wrapping_sub(1))
        });
        let count = (wq - k0).min(L);
        let keep = ((1u32 << count) - 1) as __mmask16;
        for (q, ix) in idx.iter().enumerate() {
            let low = _mm512_permutex2var_ps(a[0], *ix, a[1]);
            let high = _mm512_permutex2var_ps(a[2], *ix, a[3]);
            let v = _mm512_mask_blend_ps(0xff00, low, high);
            _mm512_mask_storeu_ps(row.as_mut_ptr().add(q * wq + k0), keep, v);
        }
    }
}

/// `Bᵀ d B` of the runs' patches for channels `cs`, into `v` (`[ξ][c][PS]`).
///
/// # Safety
/// `x4` is filled for this call's tiling; `v` is a band buffer; no other
/// thread writes these channels' rows meanwhile.
unsafe fn input_transform(
    fast: bool,
    t: &Tiles,
    runs: &[Run],
    x4: &[f32],
    cs: Range<usize>,
    v: &Out,
) {
    #[cfg(target_arch = "x86_64")]
    if fast {
        return input_transform_avx512(t, runs, x4, cs, v);
    }
    let _ = fast;
    input_transform_body(t, runs, x4, cs, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_transform_avx512(t: &Tiles, runs: &[Run], x4: &[f32], cs: Range<usize>, v: &Out) {
    input_transform_body(t, runs, x4, cs, v)
}

// The loop index also picks a column inside `six!`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn input_transform_body(t: &Tiles, runs: &[Run], x4: &[f32], cs: Range<usize>, v: &Out) {
    let plane = t.x4_plane();
    let x4 = x4.as_ptr();
    for ch in cs {
        for run in runs {
            let base = x4.add((run.img * t.c + ch) * plane + run.tx);
            // t[a][j] = (d Bᵀ... row a of d times B), then B columnwise.
            let rows: [[F16; A]; A] = six!(a => {
                let row = base.add((run.ty * M + a) * M * t.wq);
                bt(six!(b => F16::load(row.add((b % M) * t.wq + b / M))))
            });
            for j in 0..A {
                let col = bt(six!(a => rows[a][j]));
                for (i, val) in col.iter().enumerate() {
                    val.store(v.0.add(((i * A + j) * t.c + ch) * PS + run.p));
                }
            }
        }
    }
}

/// `Aᵀ M A` of the runs for output channels `os`, through `post`, into the
/// output.
///
/// # Safety
/// `m` holds this band's products; `out` is the whole output; no other
/// thread writes these channels at these positions meanwhile.
unsafe fn output_transform(
    fast: bool,
    t: &Tiles,
    runs: &[Run],
    m: &Out,
    os: Range<usize>,
    out: &Out,
    post: &Post,
) {
    #[cfg(target_arch = "x86_64")]
    if fast {
        return output_transform_avx512(t, runs, m, os, out, post);
    }
    let _ = fast;
    output_transform_body::<false>(t, runs, m, os, out, post)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn output_transform_avx512(
    t: &Tiles,
    runs: &[Run],
    m: &Out,
    os: Range<usize>,
    out: &Out,
    post: &Post,
) {
    output_transform_body::<true>(t, runs, m, os, out, post)
}

// The loop index also picks a row inside `six!`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn output_transform_body<const FAST: bool>(
    t: &Tiles,
    runs: &[Run],
    m: &Out,
    os: Range<usize>,
    out: &Out,
    post: &Post,
) {
    let plane = t.h * t.w;
    for oc in os {
        let (scale, shift) = post.affine.map_or((1.0, 0.0), |(a, b)| (a[oc], b[oc]));
        for run in runs {
            // cols[b][i] = (Aᵀ M)[i][b], then each row i times A.
            let cols: [[F16; M]; A] =
                six!(b => at(six!(a => F16::load(m.0.add(t.m_at(a * A + b, oc, run.p))))));
            let at_img = (run.img * t.o + oc) * plane;
            let (x0, x1) = (run.tx * M, ((run.tx + run.len) * M).min(t.w));
            for i in 0..M {
                let yy = run.ty * M + i;
                if yy >= t.h {
                    break;
                }
                let ys = at(six!(b => cols[b][i]));
                let first = at_img + yy * t.w + x0;
                #[cfg(target_arch = "x86_64")]
                if FAST {
                    store_row_avx512(ys, (scale, shift), post, out.0.add(first), first, x1 - x0);
                    continue;
                }
                // The row's outputs tile by tile: lane l, column j.
                let mut row = [0.0f32; L * M];
                for (j, yj) in ys.iter().enumerate() {
                    for (l, val) in yj.0.iter().enumerate() {
                        row[l * M + j] = *val;
                    }
                }
                let dst = std::slice::from_raw_parts_mut(out.0.add(first), x1 - x0);
                for (d, val) in dst.iter_mut().zip(&row) {
                    *d = val * scale + shift;
                }
                if let Some(r) = post.residual {
                    for (d, r) in dst.iter_mut().zip(&r[first..]) {
                        *d += r;
                    }
                }
                if post.relu {
                    for d in dst.iter_mut() {
                        *d = d.max(0.0);
                    }
                }
            }
        }
    }
}

/// One output row of a run, `ys[j]` lane `l` its column `M l + j`, through
/// `post` into the `len` values at `dst` (output index `at`): the four
/// vectors interleaved by two rounds of two-source permutes (pairs, then
/// fours), then scale, shift, residual and ReLU per sixteen columns in
/// registers. Value by value through a stack row, then a pass over the
/// output per step, had made the output transform a tenth of an inference
/// step.
///
/// # Safety
/// The CPU has AVX-512F; `dst` is writable for `len <= L * M` values, and
/// `post.residual`, when given, readable at `at..at + len`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store_row_avx512(
    ys: [F16; M],
    (scale, shift): (f32, f32),
    post: &Post,
    dst: *mut f32,
    at: usize,
    len: usize,
) {
    use std::arch::x86_64::*;
    let index = |f: fn(usize) -> usize| {
        let lanes: [i32; L] = std::array::from_fn(|k| f(k) as i32);
        _mm512_loadu_si512(lanes.as_ptr().cast())
    };
    let v: [__m512; M] = std::array::from_fn(|j| _mm512_loadu_ps(ys[j].0.as_ptr()));
    // Pairs (ys[0][l], ys[1][l]) and (ys[2][l], ys[3][l]), l < 8 and l >= 8.
    let (pair_lo, pair_hi) = (
        index(|k| k / 2 + 16 * (k % 2)),
        index(|k| 8 + k / 2 + 16 * (k % 2)),
    );
    let p01 = [
        _mm512_permutex2var_ps(v[0], pair_lo, v[1]),
        _mm512_permutex2var_ps(v[0], pair_hi, v[1]),
    ];
    let p23 = [
        _mm512_permutex2var_ps(v[2], pair_lo, v[3]),
        _mm512_permutex2var_ps(v[2], pair_hi, v[3]),
    ];
    // Fours: tile m's pair from p01, then its pair from p23.
    let (four_lo, four_hi) = (
        index(|k| 2 * (k / 4) + k % 2 + 16 * (k % 4 / 2)),
        index(|k| 8 + 2 * (k / 4) + k % 2 + 16 * (k % 4 / 2)),
    );
    let rows = [
        _mm512_permutex2var_ps(p01[0], four_lo, p23[0]),
        _mm512_permutex2var_ps(p01[0], four_hi, p23[0]),
        _mm512_permutex2var_ps(p01[1], four_lo, p23[1]),
        _mm512_permutex2var_ps(p01[1], four_hi, p23[1]),
    ];
    let (a, b, zero) = (
        _mm512_set1_ps(scale),
        _mm512_set1_ps(shift),
        _mm512_setzero_ps(),
    );
    for (k, row) in rows.iter().enumerate() {
        let start = L * k;
        if start >= len {
            break;
        }
        let mask = ((1u32 << (len - start).min(L)) - 1) as __mmask16;
        let mut y = _mm512_fmadd_ps(*row, a, b);
        if let Some(r) = post.residual {
            y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, r.as_ptr().add(at + start)));
        }
        if post.relu {
            y = _mm512_max_ps(y, zero);
        }
        _mm512_mask_storeu_ps(dst.add(start), mask, y);
    }
}

/// Sixteen lanes (tiles) of one transform value; the transforms below are
/// written on it so that each line is one vector operation.
#[derive(Clone, Copy)]
struct F16([f32; L]);

impl F16 {
    /// # Safety
    /// `p` is readable for [`L`] values.
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Self(std::ptr::read_unaligned(p as *const [f32; L]))
    }

    /// # Safety
    /// `p` is writable for [`L`] values.
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p as *mut [f32; L], self.0)
    }
}

/// `impl $tr for F16`, lane by lane with the assignment `$op`.
macro_rules! lanewise {
    ($tr:ident, $f:ident, $op:tt) => {
        impl std::ops::$tr for F16 {
            type Output = Self;
            #[inline(always)]
            fn $f(self, o: Self) -> Self {
                let mut r = self.0;
                for (a, b) in r.iter_mut().zip(&o.0) {
                    *a $op b;
                }
                Self(r)
            }
        }
    };
}
lanewise!(Add, add, +=);
lanewise!(Sub, sub, -=);

impl std::ops::Mul<f32> for F16 {
    type Output = Self;
    #[inline(always)]
    fn mul(self, c: f32) -> Self {
        let mut r = self.0;
        for a in r.iter_mut() {
            *a *= c;
        }
        Self(r)
    }
}

/// `[e(0), .., e(5)]` for an expression `e` of `$i`, written out (a closure
/// passed to a helper is not always inlined, and then runs without the
/// caller's AVX-512).
macro_rules! six {
    ($i:ident => $e:expr) => {
        [
            {
                let $i = 0;
                $e
            },
            {
                let $i = 1;
                $e
            },
            {
                let $i = 2;
                $e
            },
            {
                let $i = 3;
                $e
            },
            {
                let $i = 4;
                $e
            },
            {
                let $i = 5;
                $e
            },
        ]
    };
}
use six;

/// `G g` for one column `g` of a 3x3 kernel (Lavin & Gray's F(4, 3) `G`).
#[inline(always)]
fn gt(g: [f32; 3]) -> [f32; A] {
    let [g0, g1, g2] = g;
    [
        g0 * 0.25,
        (g0 + g1 + g2) * (-1.0 / 6.0),
        (g0 - g1 + g2) * (-1.0 / 6.0),
        g0 * (1.0 / 24.0) + g1 * (1.0 / 12.0) + g2 * (1.0 / 6.0),
        g0 * (1.0 / 24.0) - g1 * (1.0 / 12.0) + g2 * (1.0 / 6.0),
        g2,
    ]
}

/// `Bᵀ d` for one column `d` of a patch (Lavin & Gray's F(4, 3) `Bᵀ`).
#[inline(always)]
fn bt(d: [F16; A]) -> [F16; A] {
    let [d0, d1, d2, d3, d4, d5] = d;
    [
        d0 * 4.0 - d2 * 5.0 + d4,
        d4 + d3 - (d1 + d2) * 4.0,
        d4 - d3 + (d1 - d2) * 4.0,
        d4 - d2 + (d3 - d1) * 2.0,
        d4 - d2 - (d3 - d1) * 2.0,
        d1 * 4.0 - d3 * 5.0 + d5,
    ]
}

/// `Aᵀ m` for one column `m` of transformed products.
#[inline(always)]
fn at(m: [F16; A]) -> [F16; M] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let (p12, d12, p34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
    [
        m0 + p12 + p34,
        d12 + d34 * 2.0,
        p12 + p34 * 4.0,
        d12 + d34 * 8.0 + m5,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::direct::tests::{kernels, reference, values};

    fn rel_err(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
        a.iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// Against the patch-matrix product: sides not a multiple of the tile,
    /// rows split into phases in more than one step, bands ending in a
    /// partly filled register tile,
    /// channel counts not a multiple of the register tile, several images
    /// (bands crossing images), with and without the post map, one and
    /// several threads (band-parallel and step-parallel).
    #[test]
    fn matches_the_patch_matrix_product() {
        // (n, c, h, w, o)
        let cases = [
            (1, 3, 8, 8, 8),
            (2, 5, 9, 13, 12),
            (3, 16, 14, 14, 24),
            (1, 17, 30, 22, 9),
            (4, 8, 8, 11, 16),
            // Rows wider than one 64-column step of the phase split.
            (1, 2, 6, 135, 4),
            // A band's last chunk: one tile (48 + 1, layer2 at batch 1), 45
            // tiles (the full tile for part of a chunk); 4, 24 and 20 tiles
            // above take the narrower kernels.
            (1, 8, 28, 28, 16),
            (1, 3, 20, 36, 8),
        ];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        for (name, kernel) in kernels() {
            for fast in [false, direct::avx512()] {
                for &(n, c, h, w, o) in &cases {
                    let g = ConvGeom::new(c, h, w, 3, 3, 1, 1).expect("geometry");
                    let x = values(n * c * h * w, 0.3);
                    let wt = values(o * c * 9, 1.7);
                    let wg = Weights::with_kernel(&wt, o, c, kernel, fast);
                    let (scale, shift) = (values(o, 2.1), values(o, 4.2));
                    let res = values(n * o * h * w, 5.5);
                    let mut want = Vec::new();
                    let mut want_post = Vec::new();
                    for i in 0..n {
                        let yi = reference(&x[i * c * h * w..(i + 1) * c * h * w], &wt, o, &g);
                        for (k, v) in yi.iter().enumerate() {
                            let oc = k / (h * w);
                            let r = res[i * o * h * w + k];
                            want_post.push((v * scale[oc] + shift[oc] + r).max(0.0));
                        }
                        want.extend(yi);
                    }
                    for threads in [1, 3] {
                        let run = |post: &Post| {
                            let mut y = vec![f32::NAN; n * o * h * w];
                            let mut go = || wg.forward(&x, n, &g, &mut y, post);
                            if threads == 1 {
                                go()
                            } else {
                                pool.install(go)
                            }
                            y
                        };
                        let y = run(&Post::default());
                        let e = rel_err(&y, &want);
                        assert!(
                            e < 5e-5,
                            "{name} kernel, fast {fast}, case {:?}, {threads} threads: rel err {e}",
                            (n, c, h, w, o)
                        );
                        let post = Post {
                            affine: Some((scale.as_slice(), shift.as_slice())),
                            residual: Some(&res),
                            relu: true,
                        };
                        let y = run(&post);
                        let e = rel_err(&y, &want_post);
                        assert!(
                            e < 5e-5,
                            "{name} kernel with post, fast {fast}, case {:?}: rel err {e}",
                            (n, c, h, w, o)
                        );
                    }
                }
            }
        }
    }
}
