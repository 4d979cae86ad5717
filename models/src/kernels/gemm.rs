//! A safe, row-major wrapper around the `gemm` crate's f32 kernel.

use gemm::Parallelism;

/// A row-major matrix view: element (r, c) is at `r * rs + c * cs`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `rows x cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The same data read as its transpose.
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst (m x n, contiguous row-major) = a (m x k) * b (k x n)`, or `+=` when
/// `accumulate`. Runs on one thread unless `threads > 1`.
pub fn sgemm(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, accumulate: bool, threads: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "gemm: inner dimensions differ");
    assert_eq!(dst.len(), m * n, "gemm: destination size");
    assert!(a.fits() && b.fits(), "gemm: view out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: all three views were bounds-checked above; dst is exclusively borrowed
    // and does not alias a or b (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: MatRef, b: MatRef) -> Vec<f32> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for p in 0..a.cols {
                    out[i * b.cols + j] +=
                        a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs];
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_product_with_transposes_and_accumulation() {
        let a: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..35).map(|i| (i as f32 * 0.11).cos()).collect();
        let am = MatRef::new(&a, 5, 7);
        let bm = MatRef::new(&b, 7, 5);
        let mut out = vec![0.0; 25];
        sgemm(&mut out, am, bm, false, 1);
        let want = naive(am, bm);
        for (x, y) in out.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
        // a^T (7x5) * a (5x7), accumulated twice.
        let mut out = vec![0.0; 49];
        sgemm(&mut out, am.t(), am, false, 2);
        sgemm(&mut out, am.t(), am, true, 1);
        let want = naive(am.t(), am);
        for (x, y) in out.iter().zip(&want) {
            assert!((x - 2.0 * y).abs() < 1e-4);
        }
    }
}
