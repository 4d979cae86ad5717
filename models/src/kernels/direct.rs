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

/// Output channels per register tile.
pub(crate) const R: usize = 8;
/// 16-wide vectors of grid positions per register tile.
const V: usize = 3;
/// Grid positions per register tile.
pub(crate) const TILE: usize = 16 * V;
/// Input channels whose taps one register tile takes through every
/// output-channel block before the next ones (their stretch of the image
/// then stays in L1; the tile's sums are stored and reloaded between chunks).
/// Measured single-threaded on layer1 to layer3 shapes: 10 to 15 % faster
/// than all taps at once per block.
const CHANNELS_PER_PASS: usize = 16;

/// Whether [`TapLayout`] covers `g`: stride 1 or 2, a kernel larger than 1x1.
pub(crate) fn lays_out(g: &ConvGeom) -> bool {
    (g.stride == 1 || g.stride == 2) && g.kh > 1 && g.kw > 1
}

/// Whether this CPU has AVX-512F (the direct kernels' fast tiles).
pub(crate) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A register-tile kernel: `acc[r * TILE + j] (+)= sum_k w[k * R + r] * x[offs[k] + j]`,
/// starting from `acc` when the flag says so (`acc` holds `R * TILE` values);
/// with a [`Store`], the sums go to the output instead of back to `acc`.
pub(crate) type TileFn = unsafe fn(*const f32, &[u32], *const f32, *mut f32, bool, Option<&Store>);

/// What follows the convolution on each output value, fused into the
/// kernel's store: `relu?(y * scale + shift + residual?)` per channel.
#[derive(Default, Clone, Copy)]
pub struct Post<'a> {
    /// Per-channel scale and shift (eval-mode batch norm folded in).
    pub affine: Option<(&'a [f32], &'a [f32])>,
    /// This image's residual, same layout as the output.
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

/// Where one register tile's sums go: `rows` output planes of `plane` values
/// from `y`, the tile starting at grid position `q` (grid row width `wq`;
/// position `yy * wq + xx` is output `yy * ow + xx` when `xx < ow` and
/// `yy < oh`), with the [`Post`] map applied.
pub(crate) struct Store {
    y: *mut f32,
    rows: usize,
    plane: usize,
    oh: usize,
    ow: usize,
    wq: usize,
    q: usize,
    affine: Option<(*const f32, *const f32)>,
    residual: Option<*const f32>,
    relu: bool,
}

impl Store {
    /// The runs of lanes `[j, j + len)` of the 16 from grid position `q` that
    /// are valid outputs, with their output index: `f(j, len, index)`.
    #[inline(always)]
    fn runs(&self, q: usize, mut f: impl FnMut(usize, usize, usize)) {
        let (mut yy, mut xx) = (q / self.wq, q % self.wq);
        let mut j = 0;
        while j < 16 && yy < self.oh {
            let seg = (16 - j).min(self.wq - xx);
            if xx < self.ow {
                f(j, seg.min(self.ow - xx), yy * self.ow + xx);
            }
            j += seg;
            yy += 1;
            xx = 0;
        }
    }
}

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

/// Where every kernel tap of every input channel reads in the padded (for
/// stride 2, phase-split) image: the part of the direct path that the
/// forward and the weight gradient ([`super::direct_weight_grad`]) share.
pub(crate) struct TapLayout {
    pub(crate) g: ConvGeom,
    grid: Grid,
    /// `k = (c * kh + dy) * kw + dx` -> offset into the padded image.
    pub(crate) offs: Vec<u32>,
    /// Values in the padded image buffer, reads past the last plane included.
    pub(crate) buf_len: usize,
}

impl TapLayout {
    pub(crate) fn new(g: &ConvGeom) -> Self {
        let grid = Grid::of(g);
        let (s, c, kh, kw) = (grid.s, g.c, g.kh, g.kw);
        let plane = grid.plane();
        let mut offs = Vec::with_capacity(c * kh * kw);
        for ch in 0..c {
            for dy in 0..kh {
                for dx in 0..kw {
                    let phase = (dy % s) * s + dx % s;
                    let off = (phase * c + ch) * plane + (dy / s) * grid.wq + dx / s;
                    offs.push(off as u32);
                }
            }
        }
        let max_off = offs.iter().copied().max().unwrap_or(0) as usize;
        let buf_len = (s * s * c * plane).max(max_off + grid.tiles * TILE);
        Self {
            g: *g,
            grid,
            offs,
            buf_len,
        }
    }

    /// The grid's row width: output `(yy, xx)` is grid position `yy * wq + xx`.
    pub(crate) fn wq(&self) -> usize {
        self.grid.wq
    }

    /// The zero-padded image, split into `s * s` phase images for stride `s`.
    pub(crate) fn fill(&self, x: &[f32], buf: &mut [f32]) {
        let (g, grid) = (&self.g, &self.grid);
        let (s, plane, wq) = (grid.s, grid.plane(), grid.wq);
        if s == 1 {
            return self.fill_stride_1(x, buf);
        }
        buf.fill(0.0);
        for ch in 0..g.c {
            let src = &x[ch * g.h * g.w..(ch + 1) * g.h * g.w];
            for (r, row) in src.chunks_exact(g.w).enumerate() {
                let rr = r + g.pad;
                // Padded column `cc = col + pad` goes to phase column
                // `cc % s` at `cc / s`: a de-interleave of the row.
                let at = (rr / s) * wq;
                for ph in 0..s {
                    // The first column of the row that lands in phase `ph`.
                    let first = (ph + s - g.pad % s) % s;
                    let phase = (rr % s) * s + ph;
                    let dst = &mut buf[(phase * g.c + ch) * plane + at..];
                    let start = (first + g.pad) / s;
                    for (d, v) in dst[start..]
                        .iter_mut()
                        .zip(row.iter().skip(first).step_by(s))
                    {
                        *d = *v;
                    }
                }
            }
        }
    }

    /// [`TapLayout::fill`] for stride 1, writing each value once: the image
    /// rows, the padding around them and the tail past the last plane (read
    /// by the grid's dropped positions, so it must hold zeros, not garbage).
    fn fill_stride_1(&self, x: &[f32], buf: &mut [f32]) {
        let (planes, tail) = buf.split_at_mut(self.g.c * self.grid.plane());
        tail.fill(0.0);
        pad_into(x, &self.g, planes);
    }
}

/// Copies `x` (`c x h x w`, the input of `g`) into `planes` with `g.pad`
/// zeros around each channel's plane (`(h + 2 pad) x (w + 2 pad)`), writing
/// each value once.
pub(crate) fn pad_into(x: &[f32], g: &ConvGeom, planes: &mut [f32]) {
    let (p, wq) = (g.pad, g.w + 2 * g.pad);
    let plane = (g.h + 2 * p) * wq;
    for (dst, src) in planes
        .chunks_exact_mut(plane)
        .zip(x.chunks_exact(g.h * g.w))
    {
        let (top, rest) = dst.split_at_mut(p * wq);
        top.fill(0.0);
        let (body, bottom) = rest.split_at_mut(g.h * wq);
        bottom.fill(0.0);
        for (row, xs) in body.chunks_exact_mut(wq).zip(src.chunks_exact(g.w)) {
            row[..p].fill(0.0);
            row[p..p + g.w].copy_from_slice(xs);
            row[p + g.w..].fill(0.0);
        }
    }
}

/// The weights of one convolution in the kernel's order, with the input
/// offset of every tap: build once per call, use for every image.
pub struct Packed {
    o: usize,
    taps: TapLayout,
    /// `[o / R blocks][k][R]`, zero rows past `o`.
    w: Vec<f32>,
    kernel: TileFn,
}

impl Packed {
    /// `w` is `o x c x kh x kw` (PyTorch's layout) for the convolution `g`.
    pub fn new(w: &[f32], o: usize, g: &ConvGeom) -> Self {
        Self::with_kernel(w, o, g, best_kernel())
    }

    fn with_kernel(w: &[f32], o: usize, g: &ConvGeom, kernel: TileFn) -> Self {
        let taps = TapLayout::new(g);
        let k = taps.offs.len();
        let blocks = o.div_ceil(R);
        let mut wp = vec![0.0f32; blocks * k * R];
        for oc in 0..o {
            let (b, r) = (oc / R, oc % R);
            for (kk, v) in w[oc * k..(oc + 1) * k].iter().enumerate() {
                wp[(b * k + kk) * R + r] = *v;
            }
        }
        Self {
            o,
            taps,
            w: wp,
            kernel,
        }
    }

    /// Whether these are the packed weights of an `o`-channel convolution `g`.
    pub(crate) fn fits(&self, o: usize, g: &ConvGeom) -> bool {
        self.o == o && self.taps.g == *g
    }

    /// Scratch values one image needs.
    pub fn scratch_len(&self) -> usize {
        self.taps.buf_len
    }

    /// One image: `y (o x oh*ow) = post(conv(x, w))`, over `t` threads
    /// (split by output-channel blocks).
    pub fn forward(&self, x: &[f32], y: &mut [f32], scratch: &mut [f32], t: usize, post: &Post) {
        let plane = self.taps.g.oh * self.taps.g.ow;
        assert_eq!(y.len(), self.o * plane, "direct conv: output size");
        if let Some((a, b)) = post.affine {
            assert!(
                a.len() == self.o && b.len() == self.o,
                "direct conv: affine size"
            );
        }
        if let Some(r) = post.residual {
            assert_eq!(r.len(), y.len(), "direct conv: residual size");
        }
        let buf = &mut scratch[..self.taps.buf_len];
        self.taps.fill(x, buf);
        let buf: &[f32] = buf;
        let blocks = self.o.div_ceil(R);
        if t > 1 && blocks > 1 {
            let group = blocks.div_ceil(t);
            y.par_chunks_mut(group * R * plane)
                .enumerate()
                .for_each(|(i, yg)| self.blocks(buf, i * group, yg, post));
        } else {
            self.blocks(buf, 0, y, post);
        }
    }

    /// The output-channel blocks from `first` on that `y` (their output
    /// planes) holds. Per register tile, the taps go in chunks of
    /// [`CHANNELS_PER_PASS`] input channels, each chunk through every block
    /// while that stretch of the image is in L1; the last chunk stores
    /// straight into `y`.
    fn blocks(&self, buf: &[f32], first: usize, y: &mut [f32], post: &Post) {
        let k = self.taps.offs.len();
        let plane = self.taps.g.oh * self.taps.g.ow;
        let channels = y.len() / plane;
        let blocks = channels.div_ceil(R);
        let chunk = CHANNELS_PER_PASS * self.taps.g.kh * self.taps.g.kw;
        let mut acc = vec![0.0f32; if k > chunk { blocks * R * TILE } else { 0 }];
        for t in 0..self.taps.grid.tiles {
            let start = t * TILE;
            for k0 in (0..k).step_by(chunk) {
                let offs = &self.taps.offs[k0..(k0 + chunk).min(k)];
                let last = k0 + chunk >= k;
                for b in 0..blocks {
                    let w = &self.w[((first + b) * k + k0) * R..];
                    let oc = (first + b) * R;
                    let store = last.then(|| Store {
                        y: y[b * R * plane..].as_mut_ptr(),
                        rows: (channels - b * R).min(R),
                        plane,
                        oh: self.taps.g.oh,
                        ow: self.taps.g.ow,
                        wq: self.taps.grid.wq,
                        q: start,
                        affine: post
                            .affine
                            .map(|(a, s)| (a[oc..].as_ptr(), s[oc..].as_ptr())),
                        residual: post.residual.map(|r| r[oc * plane..].as_ptr()),
                        relu: post.relu,
                    });
                    let a = if acc.is_empty() {
                        std::ptr::null_mut()
                    } else {
                        acc[b * R * TILE..].as_mut_ptr()
                    };
                    // SAFETY: every read is `buf[start + off + j]` for an
                    // offset in `offs` and `j < TILE`, below `buf_len` by
                    // construction; `w` holds `offs.len() * R` values from
                    // here; `a` is one `R x TILE` tile whenever there is more
                    // than one chunk; the store writes (and reads the
                    // residual at) valid output positions of its `rows`
                    // planes only, all inside `y` (sizes asserted in forward).
                    unsafe {
                        (self.kernel)(
                            buf.as_ptr().add(start),
                            offs,
                            w.as_ptr(),
                            a,
                            k0 > 0,
                            store.as_ref(),
                        )
                    };
                }
            }
        }
    }
}

/// Plain sums over only the first `16 * NV` of a tile's positions:
/// `acc[r * TILE + j] = sum_k w[k * R + r] * x[offs[k] + j]` for `j < 16 * NV`
/// (the rest of `acc` untouched).
pub(crate) type SumsFn = unsafe fn(*const f32, &[u32], *const f32, *mut f32);

/// A narrower register tile for the first `positions` (fewer than [`TILE`])
/// of a tile, when AVX-512 has one that covers them: a Winograd band's last
/// tile often holds a few tile positions only (one of 49 at 28x28, batch 1),
/// and the full tile would compute all [`TILE`] for them.
pub(crate) fn narrow_sums(positions: usize) -> Option<SumsFn> {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        return match positions.div_ceil(16) {
            1 => Some(avx512_sums::<1>),
            2 => Some(avx512_sums::<2>),
            _ => None,
        };
    }
    let _ = positions;
    None
}

/// # Safety
/// As [`portable_tile`] for `16 * NV` positions, without a store; the CPU
/// has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_sums<const NV: usize>(x: *const f32, offs: &[u32], w: *const f32, acc: *mut f32) {
    use std::arch::x86_64::*;
    let mut sums = [[_mm512_setzero_ps(); NV]; R];
    avx512_accumulate::<NV, false>(x, offs, w, &mut sums);
    for (r, row) in sums.iter().enumerate() {
        for (v, a) in row.iter().enumerate() {
            _mm512_storeu_ps(acc.add(r * TILE + 16 * v), *a);
        }
    }
}

/// `sums[r][v] += sum_k w[k * R + r] * x[offs[k] + 16 v ..][..16]`: the
/// register tile's inner loop, for the full tile and the narrow ones;
/// `PREFETCH` asks for the next tile's inputs (the full tile's sweep).
///
/// # Safety
/// `x + offs[k] + j` readable for every `k` and `j < 16 * NV` (and the
/// prefetched addresses are hints only); `w` holds `offs.len() * R` values;
/// the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn avx512_accumulate<const NV: usize, const PREFETCH: bool>(
    x: *const f32,
    offs: &[u32],
    w: *const f32,
    sums: &mut [[std::arch::x86_64::__m512; NV]; R],
) {
    use std::arch::x86_64::*;
    let mut wp = w;
    for &off in offs {
        let xp = x.add(off as usize);
        if PREFETCH {
            for v in 0..NV {
                _mm_prefetch::<_MM_HINT_T1>(xp.wrapping_add(2 * TILE + 16 * v) as *const i8);
            }
        }
        let mut xv = [_mm512_setzero_ps(); NV];
        for (v, xr) in xv.iter_mut().enumerate() {
            *xr = _mm512_loadu_ps(xp.add(16 * v));
        }
        for (r, row) in sums.iter_mut().enumerate() {
            let wr = _mm512_set1_ps(*wp.add(r));
            for (a, xr) in row.iter_mut().zip(&xv) {
                *a = _mm512_fmadd_ps(wr, *xr, *a);
            }
        }
        wp = wp.add(R);
    }
}

pub(crate) fn best_kernel() -> TileFn {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        return avx512_tile;
    }
    portable_tile
}

/// The reference kernel (and the fallback): the same sums, scalar.
///
/// # Safety
/// `x + offs[k] + j` must be readable for every `k` and `j < TILE`, `w` must
/// hold `offs.len() * R` values, `acc` must be an `R * TILE` tile unless this
/// is a lone chunk (no start from `acc`, a store), and the store must
/// describe valid output planes.
unsafe fn portable_tile(
    x: *const f32,
    offs: &[u32],
    w: *const f32,
    acc: *mut f32,
    add: bool,
    store: Option<&Store>,
) {
    let mut sums = [0.0f32; R * TILE];
    if add {
        sums.copy_from_slice(std::slice::from_raw_parts(acc, R * TILE));
    }
    for (k, &off) in offs.iter().enumerate() {
        let xs = std::slice::from_raw_parts(x.add(off as usize), TILE);
        let ws = std::slice::from_raw_parts(w.add(k * R), R);
        for (r, wv) in ws.iter().enumerate() {
            for (o, xv) in sums[r * TILE..(r + 1) * TILE].iter_mut().zip(xs) {
                *o += wv * xv;
            }
        }
    }
    let Some(st) = store else {
        std::slice::from_raw_parts_mut(acc, R * TILE).copy_from_slice(&sums);
        return;
    };
    for r in 0..st.rows {
        let (a, b) = match st.affine {
            Some((a, b)) => (*a.add(r), *b.add(r)),
            None => (1.0, 0.0),
        };
        for v in 0..V {
            st.runs(st.q + 16 * v, |j, len, at| {
                for l in 0..len {
                    let i = r * st.plane + at + l;
                    let mut val = sums[r * TILE + 16 * v + j + l] * a + b;
                    if let Some(res) = st.residual {
                        val += *res.add(i);
                    }
                    if st.relu {
                        val = val.max(0.0);
                    }
                    *st.y.add(i) = val;
                }
            });
        }
    }
}

/// # Safety
/// As [`portable_tile`], and the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_tile(
    x: *const f32,
    offs: &[u32],
    w: *const f32,
    acc: *mut f32,
    add: bool,
    store: Option<&Store>,
) {
    use std::arch::x86_64::*;
    let mut sums = [[_mm512_setzero_ps(); V]; R];
    if add {
        for (r, row) in sums.iter_mut().enumerate() {
            for (v, a) in row.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(acc.add(r * TILE + 16 * v));
            }
        }
    }
    avx512_accumulate::<V, true>(x, offs, w, &mut sums);
    let Some(st) = store else {
        for (r, row) in sums.iter().enumerate() {
            for (v, a) in row.iter().enumerate() {
                _mm512_storeu_ps(acc.add(r * TILE + 16 * v), *a);
            }
        }
        return;
    };
    // Each vector's runs of valid lanes, found once for all rows: (mask,
    // offset of the vector's base from the plane start, wrapping).
    let mut runs = [[(0 as __mmask16, 0usize); 16]; V];
    let mut count = [0usize; V];
    for (v, (rv, n)) in runs.iter_mut().zip(count.iter_mut()).enumerate() {
        st.runs(st.q + 16 * v, |j, len, at| {
            rv[*n] = ((((1u32 << len) - 1) << j) as __mmask16, at.wrapping_sub(j));
            *n += 1;
        });
    }
    let zero = _mm512_setzero_ps();
    for (r, row) in sums.iter().enumerate().take(st.rows) {
        let (a, b) = match st.affine {
            Some((a, b)) => (_mm512_set1_ps(*a.add(r)), _mm512_set1_ps(*b.add(r))),
            None => (_mm512_set1_ps(1.0), zero),
        };
        let y = st.y.add(r * st.plane);
        let res = st.residual.map(|p| p.add(r * st.plane));
        for (v, sum) in row.iter().enumerate() {
            let val = match st.affine {
                Some(_) => _mm512_fmadd_ps(*sum, a, b),
                None => *sum,
            };
            // Lane j goes to output index base + j: the base may lie before
            // the plane; masked-off lanes touch no memory.
            for &(mask, base) in &runs[v][..count[v]] {
                let mut out = val;
                if let Some(res) = res {
                    out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(mask, res.wrapping_add(base)));
                }
                if st.relu {
                    out = _mm512_max_ps(out, zero);
                }
                _mm512_mask_storeu_ps(y.wrapping_add(base), mask, out);
            }
        }
    }
}

/// The geometry of the forward convolution that computes the input gradient
/// of `g` with `o` output channels (see [`input_grad_as_forward`]); `None`
/// when there is none.
pub(crate) fn input_grad_geom(o: usize, g: &ConvGeom) -> Option<ConvGeom> {
    if g.stride != 1 || g.pad >= g.kh || g.pad >= g.kw || g.kh != g.kw {
        return None;
    }
    let gt = ConvGeom::new(o, g.oh, g.ow, g.kh, g.kw, 1, g.kh - 1 - g.pad)?;
    ((gt.oh, gt.ow) == (g.h, g.w)).then_some(gt)
}

/// The input gradient of a stride-1 convolution is itself a stride-1
/// convolution of the output gradient: padding `k - 1 - pad`, kernel flipped
/// and with input and output channels swapped. Returns its weights
/// (`c x o x kh x kw`) and geometry; `None` when that does not hold.
pub fn input_grad_as_forward(w: &[f32], o: usize, g: &ConvGeom) -> Option<(Vec<f32>, ConvGeom)> {
    let gt = input_grad_geom(o, g)?;
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::im2col::im2col;

    pub(crate) fn reference(x: &[f32], w: &[f32], o: usize, g: &ConvGeom) -> Vec<f32> {
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

    /// Deterministic test values in [-1, 1].
    pub(crate) fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.618).sin()).collect()
    }

    pub(crate) fn kernels() -> Vec<(&'static str, TileFn)> {
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
                    packed.forward(&x, &mut y, &mut scratch, t, &Post::default());
                    for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() < 1e-4,
                            "{name} kernel, case {:?}, {t} threads, value {i}: {a} vs {b}",
                            (c, h, wd, o, k, s, p)
                        );
                    }
                    // The fused map: relu(y * scale + shift + residual).
                    let scale = values(o, 6.0);
                    let shift = values(o, 7.0);
                    let res = values(y.len(), 8.0);
                    let post = Post {
                        affine: Some((&scale, &shift)),
                        residual: Some(&res),
                        relu: true,
                    };
                    let mut z = vec![f32::NAN; y.len()];
                    packed.forward(&x, &mut z, &mut scratch, t, &post);
                    for (i, (zv, yv)) in z.iter().zip(&want).enumerate() {
                        let oc = i / g.cols();
                        let e = (yv * scale[oc] + shift[oc] + res[i]).max(0.0);
                        assert!(
                            (zv - e).abs() < 1e-4,
                            "{name} kernel with post, case {:?}, {t} threads, value {i}: {zv} vs {e}",
                            (c, h, wd, o, k, s, p)
                        );
                    }
                }
            }
        }
    }

    /// The stride-1 fill writes every value of the buffer: the image where it
    /// belongs and zeros everywhere else (padding and tail), over garbage.
    #[test]
    fn stride_1_fill_overwrites_the_whole_buffer() {
        for &(c, h, wd, k, p) in &[(3, 7, 9, 3, 1), (2, 5, 5, 5, 2), (4, 6, 3, 3, 0)] {
            let g = ConvGeom::new(c, h, wd, k, k, 1, p).unwrap();
            let taps = TapLayout::new(&g);
            let x = values(c * h * wd, 9.0);
            let mut buf = vec![f32::NAN; taps.buf_len];
            taps.fill(&x, &mut buf);
            let (hq, wq) = (h + 2 * p, wd + 2 * p);
            let mut want = vec![0.0f32; taps.buf_len];
            for ch in 0..c {
                for r in 0..h {
                    for col in 0..wd {
                        want[(ch * hq + r + p) * wq + col + p] = x[(ch * h + r) * wd + col];
                    }
                }
            }
            assert_eq!(buf, want, "{:?}", (c, h, wd, k, p));
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
        packed.forward(&dy, &mut dx, &mut scratch, 1, &Post::default());
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
