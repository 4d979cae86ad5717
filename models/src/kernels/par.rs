//! How the kernels spread work: per-thread scratch buffers and the images
//! of a batch over the rayon pool.

use rayon::prelude::*;
use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer of at least `len` values (not
/// zeroed). The buffer is taken out while in use, so a re-entrant call (rayon
/// work stealing) gets a fresh one instead of a borrow panic.
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    SCRATCH.with(|s| *s.borrow_mut() = buf);
    r
}

/// rayon's threads (at least 1).
pub(super) fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Runs `f(image index, output chunk)` over `n` images: in parallel over
/// images (one-thread GEMMs) when there are several, else one image with a
/// parallel GEMM.
pub(super) fn per_image(out: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32], usize) + Sync) {
    if n == 0 {
        return;
    }
    let per = out.len() / n;
    let t = threads();
    if n == 1 || t == 1 {
        for (i, o) in out.chunks_mut(per).enumerate() {
            f(i, o, t);
        }
    } else {
        out.par_chunks_mut(per)
            .enumerate()
            .for_each(|(i, o)| f(i, o, 1));
    }
}
