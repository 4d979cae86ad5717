//! The patch matrix of a 2D convolution for one image, and its adjoint.
//!
//! `im2col` writes row `(c * kh + i) * kw + j` (one kernel tap) as the input
//! values that tap sees at every output position, `oh * ow` of them, row by
//! row with contiguous copies (stride 1) or a tight strided gather; padding
//! becomes zeros. `col2im` adds such a matrix back into an image.

/// The shape of one convolution: input `c x h x w`, kernel `kh x kw`, square
/// stride and padding, output `oh x ow` (PyTorch's floor rule, dilation 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// `None` when the kernel does not fit the padded input or the stride is 0.
    pub fn new(
        c: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        stride: usize,
        pad: usize,
    ) -> Option<Self> {
        if stride == 0 || kh == 0 || kw == 0 || h + 2 * pad < kh || w + 2 * pad < kw {
            return None;
        }
        let oh = (h + 2 * pad - kh) / stride + 1;
        let ow = (w + 2 * pad - kw) / stride + 1;
        Some(Self {
            c,
            h,
            w,
            kh,
            kw,
            stride,
            pad,
            oh,
            ow,
        })
    }

    /// Rows of the patch matrix: one per kernel tap.
    pub fn rows(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Columns of the patch matrix: one per output position.
    pub fn cols(&self) -> usize {
        self.oh * self.ow
    }

    /// A 1x1, stride-1, unpadded convolution: the image is its own patch matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// The output positions `[lo, hi)` along one axis whose input index
    /// `o * stride + tap - pad` falls inside `[0, len)`.
    fn valid(&self, out_len: usize, len: usize, tap: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = if tap >= self.pad {
            0
        } else {
            (self.pad - tap).div_ceil(s)
        };
        // o * s + tap - pad < len  <=>  o * s < len + pad - tap
        let hi = (len + self.pad).saturating_sub(tap).div_ceil(s);
        let hi = hi.min(out_len);
        (lo.min(hi), hi)
    }
}

/// Fills `col` (`rows x cols`, row-major) with the patches of `x` (`c x h x w`).
pub fn im2col(x: &[f32], g: &ConvGeom, col: &mut [f32]) {
    im2col_at(x, g, col, g.cols(), 0)
}

/// [`im2col`] with the channels spread over the rayon pool: for a single
/// image, whose GEMM is parallel, a serial patch copy would leave the other
/// cores idle (the stem's 7x7 patches of a 224 px image are 7 MB).
pub fn im2col_par(x: &[f32], g: &ConvGeom, col: &mut [f32]) {
    use rayon::prelude::*;
    let one = ConvGeom { c: 1, ..*g };
    col[..g.rows() * g.cols()]
        .par_chunks_mut(one.rows() * g.cols())
        .zip(x.par_chunks(g.h * g.w))
        .for_each(|(block, plane)| im2col(plane, &one, block));
}

/// [`im2col`] into a wider matrix: row `r` of this image's patches lands at
/// `col[r * ld + off..][..cols]`, so several images can sit side by side.
pub fn im2col_at(x: &[f32], g: &ConvGeom, col: &mut [f32], ld: usize, off: usize) {
    debug_assert_eq!(x.len(), g.c * g.h * g.w);
    assert!(off + g.cols() <= ld && col.len() >= (g.rows() - 1) * ld + off + g.cols());
    let (ow, s) = (g.ow, g.stride);
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            let (ylo, yhi) = g.valid(g.oh, g.h, i);
            for j in 0..g.kw {
                let row = (c * g.kh + i) * g.kw + j;
                let dst_row = &mut col[row * ld + off..row * ld + off + g.cols()];
                let (xlo, xhi) = g.valid(ow, g.w, j);
                dst_row[..ylo * ow].fill(0.0);
                dst_row[yhi * ow..].fill(0.0);
                for oy in ylo..yhi {
                    let iy = oy * s + i - g.pad;
                    let src = &plane[iy * g.w..(iy + 1) * g.w];
                    let dst = &mut dst_row[oy * ow..(oy + 1) * ow];
                    dst[..xlo].fill(0.0);
                    dst[xhi..].fill(0.0);
                    if xlo == xhi {
                        continue;
                    }
                    let first = xlo * s + j - g.pad;
                    if s == 1 {
                        dst[xlo..xhi].copy_from_slice(&src[first..first + (xhi - xlo)]);
                    } else {
                        for (d, v) in dst[xlo..xhi].iter_mut().zip(src[first..].iter().step_by(s)) {
                            *d = *v;
                        }
                    }
                }
            }
        }
    }
}

/// Adds the patch matrix `col` back into the image `dx` (the adjoint of [`im2col`]).
pub fn col2im(col: &[f32], g: &ConvGeom, dx: &mut [f32]) {
    col2im_at(col, g, dx, g.cols(), 0)
}

/// [`col2im`] from a wider matrix laid out as in [`im2col_at`].
pub fn col2im_at(col: &[f32], g: &ConvGeom, dx: &mut [f32], ld: usize, off: usize) {
    debug_assert_eq!(dx.len(), g.c * g.h * g.w);
    assert!(off + g.cols() <= ld && col.len() >= (g.rows() - 1) * ld + off + g.cols());
    let (ow, s) = (g.ow, g.stride);
    for c in 0..g.c {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            let (ylo, yhi) = g.valid(g.oh, g.h, i);
            for j in 0..g.kw {
                let row = (c * g.kh + i) * g.kw + j;
                let src_row = &col[row * ld + off..row * ld + off + g.cols()];
                let (xlo, xhi) = g.valid(ow, g.w, j);
                if xlo == xhi {
                    continue;
                }
                for oy in ylo..yhi {
                    let iy = oy * s + i - g.pad;
                    let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
                    let src = &src_row[oy * ow + xlo..oy * ow + xhi];
                    let first = xlo * s + j - g.pad;
                    if s == 1 {
                        for (d, v) in dst[first..first + src.len()].iter_mut().zip(src) {
                            *d += *v;
                        }
                    } else {
                        for (d, v) in dst[first..].iter_mut().step_by(s).zip(src) {
                            *d += *v;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patch matrix by its definition, one value at a time.
    fn naive_im2col(x: &[f32], g: &ConvGeom) -> Vec<f32> {
        let mut col = vec![0.0; g.rows() * g.cols()];
        for c in 0..g.c {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let row = (c * g.kh + i) * g.kw + j;
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            let iy = (oy * g.stride + i) as isize - g.pad as isize;
                            let ix = (ox * g.stride + j) as isize - g.pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                col[row * g.cols() + oy * g.ow + ox] =
                                    x[(c * g.h + iy as usize) * g.w + ix as usize];
                            }
                        }
                    }
                }
            }
        }
        col
    }

    fn shapes() -> Vec<ConvGeom> {
        let mut v = Vec::new();
        for &(h, w) in &[(7, 7), (8, 5), (13, 11), (2, 3)] {
            for &(k, s, p) in &[
                (3, 1, 1),
                (3, 2, 1),
                (7, 2, 3),
                (1, 2, 0),
                (1, 1, 0),
                (3, 1, 0),
                (2, 2, 0),
            ] {
                if let Some(g) = ConvGeom::new(2, h, w, k, k, s, p) {
                    v.push(g);
                }
            }
        }
        v
    }

    #[test]
    fn parallel_im2col_equals_the_serial_one() {
        let g = ConvGeom::new(5, 9, 11, 3, 3, 2, 1).expect("geometry");
        let x: Vec<f32> = (0..5 * 9 * 11).map(|i| (i as f32 * 0.7).sin()).collect();
        let (mut a, mut b) = (
            vec![1.0; g.rows() * g.cols()],
            vec![2.0; g.rows() * g.cols()],
        );
        im2col(&x, &g, &mut a);
        im2col_par(&x, &g, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn im2col_equals_the_definition() {
        for g in shapes() {
            let x: Vec<f32> = (0..g.c * g.h * g.w).map(|i| i as f32 + 1.0).collect();
            let mut col = vec![f32::NAN; g.rows() * g.cols()];
            im2col(&x, &g, &mut col);
            assert_eq!(col, naive_im2col(&x, &g), "{g:?}");
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), y> == <x, col2im(y)> for all x, y.
        for g in shapes() {
            let x: Vec<f32> = (0..g.c * g.h * g.w)
                .map(|i| ((i * 7 % 13) as f32) - 6.0)
                .collect();
            let y: Vec<f32> = (0..g.rows() * g.cols())
                .map(|i| ((i * 5 % 11) as f32) - 5.0)
                .collect();
            let mut col = vec![0.0; y.len()];
            im2col(&x, &g, &mut col);
            let lhs: f32 = col.iter().zip(&y).map(|(a, b)| a * b).sum();
            let mut dx = vec![0.0; x.len()];
            col2im(&y, &g, &mut dx);
            let rhs: f32 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert_eq!(lhs, rhs, "{g:?}");
        }
    }
}
