//! Inference only: ResNet's stem in one pass, the 7x7 stride-2 convolution
//! with its eval-mode batch norm folded in, the ReLU and the 3x3 stride-2
//! max pool.
//!
//! Run apart, the convolution writes a 64 x 112 x 112 map per 224 px image
//! (3.2 MB, more than L2 holds, so out to memory) that the pool then reads
//! back. Here the pooled rows go in bands of [`BAND`]: the channels-on-lanes
//! kernel ([`super::lanes`]) computes the convolution rows a band reads
//! into a buffer that stays in L2, with the BN and ReLU at its store, and
//! the pool ([`super::max_pool::pool_rows`]) writes only the band's pooled
//! rows. Each band recomputes the one convolution row it shares with the
//! band before it (1 in 15). Bands are spread over the threads at batch 1,
//! images otherwise.
//!
//! It has no backward: the layers use it only inside [`super::inference`].

use super::conv::{conv_of, f32s, geom};
use super::conv_affine::check_affine;
use super::direct::Post;
use super::im2col::ConvGeom;
use super::lanes;
use super::max_pool::{out_len, pool_rows};
use super::par::{per_image, with_scratch};
use super::plan::{plan_now, Algorithm, Conv, Pass};
use super::prepared::Prepared;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

/// Pooled rows per band: 8 bands for a 56-row map (an even split over two
/// threads), 15 convolution rows of 112 x 64 channels (430 KB) per band.
const BAND: usize = 7;

/// Whether the fused stem takes the convolution of `x` by `w`: f32 on the
/// CPU and the plan says [`Algorithm::FusedStem`].
pub fn applies(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> bool {
    if !super::takes(&[x, w]) {
        return false;
    }
    match (x.dims4(), w.dims4()) {
        (Ok((n, c, h, wd)), Ok((o, _, kh, kw))) => geom((c, h, wd), (kh, kw), stride, pad)
            .is_ok_and(|g| {
                let conv = Conv { n, o, g };
                plan_now(&conv, Pass::Stem { kept: false }) == Algorithm::FusedStem
            }),
        _ => false,
    }
}

/// `max_pool_3x3_s2_p1(relu?(conv(x, w) * scale + shift))`, per output
/// channel, for a convolution [`applies`] takes.
pub fn conv2d_affine_max_pool(
    x: &Tensor,
    w: &Tensor,
    (stride, pad): (usize, usize),
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
) -> Result<Tensor> {
    check_affine(w.dim(0)?, &scale, &shift, "stem")?;
    let prepared = super::frozen::prepared_for(x, w, stride, pad, |_| Algorithm::Lanes)?;
    let op = Stem {
        stride,
        pad,
        scale,
        shift,
        relu,
        prepared,
    };
    x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &op)
}

struct Stem {
    stride: usize,
    pad: usize,
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
    /// The lanes kernel's weights, from a frozen model's cache.
    prepared: Option<Arc<Prepared>>,
}

impl CustomOp2 for Stem {
    fn name(&self) -> &'static str {
        "cxr-stem-conv-bn-relu-max-pool"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, o, g) = conv_of(l1, l2, self.stride, self.pad, "stem")?;
        let (x, w) = (f32s(s1, l1, "input")?, f32s(s2, l2, "weight")?);
        let owned;
        let packed = match self.prepared.as_deref() {
            Some(Prepared::Lanes(p)) if p.fits(o, &g) => p,
            _ => {
                owned = lanes::Packed::new(w, o, &g);
                &owned
            }
        };
        let post = Post {
            affine: Some((&self.scale, &self.shift)),
            residual: None,
            relu: self.relu,
        };
        let (ph, pw) = (out_len(g.oh), out_len(g.ow));
        let mut y = vec![0.0f32; n * o * ph * pw];
        let per_in = g.c * g.h * g.w;
        per_image(&mut y, n, |i, yi, t| {
            let xi = &x[i * per_in..(i + 1) * per_in];
            with_scratch(packed.scratch_len(), |s| {
                image(packed, packed.pad(xi, s), &g, o, &post, yi, t)
            });
        });
        Ok((CpuStorage::F32(y), Shape::from((n, o, ph, pw))))
    }
}

/// One image's pooled output `y` (`o x ph x pw`) from its padded input
/// `xp`, band by band, the bands over `t` threads.
fn image(
    p: &lanes::Packed,
    xp: &[f32],
    g: &ConvGeom,
    o: usize,
    post: &Post,
    y: &mut [f32],
    t: usize,
) {
    let (ph, pw) = (out_len(g.oh), out_len(g.ow));
    let bands: Vec<Range<usize>> = (0..ph)
        .step_by(BAND)
        .map(|a| a..(a + BAND).min(ph))
        .collect();
    // Each band's pooled rows, channel by channel, then into their places.
    let place = |rows: &Range<usize>, pooled: &[f32], y: &mut [f32]| {
        let len = rows.len() * pw;
        for (src, dst) in pooled.chunks_exact(len).zip(y.chunks_exact_mut(ph * pw)) {
            dst[rows.start * pw..rows.end * pw].copy_from_slice(src);
        }
    };
    if t > 1 && bands.len() > 1 {
        let parts: Vec<Vec<f32>> = bands
            .par_iter()
            .map_init(Vec::new, |conv, rows| {
                let mut pooled = vec![0.0f32; o * rows.len() * pw];
                band(p, xp, g, o, post, rows.clone(), conv, &mut pooled);
                pooled
            })
            .collect();
        for (rows, pooled) in bands.iter().zip(&parts) {
            place(rows, pooled, y);
        }
    } else {
        let (mut conv, mut pooled) = (Vec::new(), vec![0.0f32; o * BAND * pw]);
        for rows in &bands {
            let pooled = &mut pooled[..o * rows.len() * pw];
            band(p, xp, g, o, post, rows.clone(), &mut conv, pooled);
            place(rows, pooled, y);
        }
    }
}

/// Pooled rows `prs` of every channel into `pooled` (`o x prs x pw`): the
/// convolution rows they read into `conv`, then the pool.
#[allow(clippy::too_many_arguments)]
fn band(
    p: &lanes::Packed,
    xp: &[f32],
    g: &ConvGeom,
    o: usize,
    post: &Post,
    prs: Range<usize>,
    conv: &mut Vec<f32>,
    pooled: &mut [f32],
) {
    let rows = (2 * prs.start).saturating_sub(1)..(2 * prs.end).min(g.oh);
    let per = rows.len() * g.ow;
    conv.resize(o * per, 0.0);
    p.forward_rows(xp, rows.clone(), &mut conv[..o * per], post);
    let pw = out_len(g.ow);
    let mut cm = vec![f32::NEG_INFINITY; 2 * pw + 1];
    for (src, dst) in conv[..o * per]
        .chunks_exact(per)
        .zip(pooled.chunks_exact_mut(prs.len() * pw))
    {
        pool_rows(src, rows.start, g.oh, g.ow, prs.clone(), dst, &mut cm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{conv2d_affine, inference_frozen, max_pool_3x3_s2_p1, FrozenWeights};
    use candle_core::Device;

    /// Against the separate conv+BN+ReLU and max pool: odd and even map
    /// sides, more than one band, a second channel block, negative scales
    /// (the pool does not commute with them), batch 1 (bands over threads)
    /// and 3, weights prepared per call and kept.
    #[test]
    fn equals_the_conv_then_the_pool() -> Result<()> {
        let dev = Device::Cpu;
        // (n, o, h, w)
        for &(n, o, h, w) in &[(1, 64, 61, 47), (3, 70, 30, 33), (2, 8, 9, 12)] {
            let x = Tensor::randn(0f32, 1.0, (n, 3, h, w), &dev)?;
            let wt = Tensor::randn(0f32, 0.2, (o, 3, 7, 7), &dev)?;
            if !applies(&x, &wt, 2, 3) {
                eprintln!("fused stem: not on this machine (no AVX-512), nothing to compare");
                return Ok(());
            }
            let scale: Vec<f32> = (0..o).map(|i| 0.7 - 0.05 * i as f32).collect();
            let shift: Vec<f32> = (0..o).map(|i| 0.1 * (i % 5) as f32 - 0.2).collect();
            for relu in [true, false] {
                let conv = conv2d_affine(&x, &wt, 2, 3, scale.clone(), shift.clone(), None, relu)?;
                let want = max_pool_3x3_s2_p1(&conv)?;
                let run =
                    || conv2d_affine_max_pool(&x, &wt, (2, 3), scale.clone(), shift.clone(), relu);
                let cache = Arc::new(FrozenWeights::new());
                for got in [run()?, inference_frozen(&cache, run)?] {
                    assert_eq!(got.dims(), want.dims());
                    let d = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(d < 1e-4, "n{n} o{o} {h}x{w} relu {relu}: differs by {d}");
                }
                assert_eq!(cache.len(), 1, "the kept lanes weights");
            }
        }
        Ok(())
    }
}
