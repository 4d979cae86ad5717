//! The training augmentation of [`super::augment`] for a whole batch on the
//! model's device (issue 6): the loader only copies the presized u8 pixels and
//! draws the random parameters (the same draws, from the same RNG streams, as
//! the CPU path), and the crop + rotation + zoom resampling runs as candle
//! tensor ops where the model is. On CUDA the CPU then only decodes.
//!
//! The math is [`super::augment::warp_into`]'s, written with tensor ops:
//! output pixel centres in -1..1, the 2x3 affine, reflection about -1..1,
//! crop window, clamp, bilinear interpolation by four gathers.

use super::augment::WarpParams;
use candle_core::{DType, Device, Result, Tensor};
use cxr_models::preprocess::Normalize;

/// Presized u8 images and the draws to apply: what the loader hands over
/// instead of augmented floats when augmentation runs on the device.
#[derive(Debug, Clone, PartialEq)]
pub struct RawImages {
    /// `n * side * side` u8, row-major per image.
    pub pixels: Vec<u8>,
    pub side: usize,
    pub params: Vec<WarpParams>,
    /// Per-channel (mean, std) of the model input, applied after the warp.
    pub norm: Normalize,
}

/// `2 - |t - 2|` of `t = (u + 1) mod 4`, minus 1: reflection into -1..1, as
/// `augment::reflect`.
fn reflect(u: &Tensor) -> Result<Tensor> {
    let t = (u + 1.0)?;
    let t = (&t - ((&t / 4.0)?.floor()? * 4.0)?)?;
    (t - 2.0)?.abs()?.affine(-1.0, 1.0)
}

/// Warps `raw` on `device`: `[n, size, size]` f32 in 0..1.
pub fn warp_batch(raw: &RawImages, size: usize, device: &Device) -> Result<Tensor> {
    let (n, side) = (raw.params.len(), raw.side);
    if raw.pixels.len() != n * side * side || n == 0 || side == 0 || size == 0 {
        candle_core::bail!(
            "device augmentation: {n} draws for {} pixels of side {side}",
            raw.pixels.len()
        )
    }
    // Per image: the affine (6) and the crop window (4), as [n, 1, 1] columns.
    let mut p = Vec::with_capacity(n * 10);
    for w in &raw.params {
        p.extend_from_slice(&w.matrix());
        p.extend(w.crop.map(|v| v as f32));
    }
    let p = Tensor::from_vec(p, (n, 10), device)?;
    let col = |i: usize| -> Result<Tensor> { p.narrow(1, i, 1)?.reshape((n, 1, 1)) };
    // Output pixel centres in -1..1: u along columns, v along rows.
    let grid: Vec<f32> = (0..size)
        .map(|i| (2 * i + 1) as f32 / size as f32 - 1.0)
        .collect();
    let u = Tensor::from_slice(&grid, (1, 1, size), device)?;
    let v = Tensor::from_slice(&grid, (1, size, 1), device)?;
    let lin = |a: usize, b: usize, c: usize| -> Result<Tensor> {
        col(a)?
            .broadcast_mul(&u)?
            .broadcast_add(&col(b)?.broadcast_mul(&v)?)?
            .broadcast_add(&col(c)?)
    };
    let su = reflect(&lin(0, 1, 2)?)?;
    let sv = reflect(&lin(3, 4, 5)?)?;
    let max = (side - 1) as f64;
    // Source pixel coordinates in the crop window, clamped to the image.
    let x = col(6)?
        .broadcast_add(&((su + 1.0)? * 0.5)?.broadcast_mul(&col(8)?)?)?
        .affine(1.0, -0.5)?
        .clamp(0.0, max)?;
    let y = col(7)?
        .broadcast_add(&((sv + 1.0)? * 0.5)?.broadcast_mul(&col(9)?)?)?
        .affine(1.0, -0.5)?
        .clamp(0.0, max)?;
    let (x0, y0) = (x.floor()?, y.floor()?);
    let (fx, fy) = ((&x - &x0)?, (&y - &y0)?);
    let x1 = (&x0 + 1.0)?.clamp(0.0, max)?;
    let y1 = (&y0 + 1.0)?.clamp(0.0, max)?;
    // Flat indices into all images: image * side^2 + row * side + col.
    let base: Vec<f32> = (0..n).map(|i| (i * side * side) as f32).collect();
    let base = Tensor::from_vec(base, (n, 1, 1), device)?;
    let img = Tensor::from_slice(&raw.pixels, n * side * side, device)?.to_dtype(DType::F32)?;
    let at = |yy: &Tensor, xx: &Tensor| -> Result<Tensor> {
        // Exact in f32: indices stay far below 2^24 for any batch that fits.
        let idx = (yy * side as f64)?.add(xx)?.broadcast_add(&base)?;
        img.index_select(&idx.flatten_all()?.to_dtype(DType::U32)?, 0)?
            .reshape((n, size, size))
    };
    let (a, b) = (at(&y0, &x0)?, at(&y0, &x1)?);
    let (c, d) = (at(&y1, &x0)?, at(&y1, &x1)?);
    let top = (&a + ((b - &a)? * &fx)?)?;
    let bot = (&c + ((d - &c)? * &fx)?)?;
    (&top + ((bot - &top)? * fy)?)? / 255.0
}

/// The model input from a warped batch: the gray plane replicated to three
/// channels, each normalised with `norm` -> `[n, 3, size, size]`.
pub fn to_model_input(gray: &Tensor, norm: Normalize) -> Result<Tensor> {
    let x = gray.unsqueeze(1)?.repeat((1, 3, 1, 1))?;
    let dev = gray.device();
    let mean = Tensor::from_slice(&norm.mean, (1, 3, 1, 1), dev)?;
    let std = Tensor::from_slice(&norm.std, (1, 3, 1, 1), dev)?;
    x.broadcast_sub(&mean)?.broadcast_div(&std)
}

/// Both steps: the batch's model input on `device`.
pub fn device_input(raw: &RawImages, size: usize, device: &Device) -> Result<Tensor> {
    let gray = warp_batch(raw, size, device)?;
    to_model_input(&gray, raw.norm)?.contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::augment::{draw_transform, warp_into, AugmentConfig};
    use crate::data::testutil::synthetic;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn equals_the_cpu_warp_for_random_draws() -> Result<()> {
        let side = 40u32;
        let size = 24usize;
        let mut rng = StdRng::seed_from_u64(3);
        let mut cfg = AugmentConfig::fastai();
        cfg.max_rotate = 40.0; // large angles reach the reflection padding
        cfg.max_zoom = 1.6;
        let mut pixels = Vec::new();
        let mut params = Vec::new();
        let mut want = Vec::new();
        for i in 0..6 {
            let img = synthetic(side, side, i).into_raw();
            let p = if i == 0 {
                WarpParams::identity(side, side)
            } else {
                draw_transform(side, side, &cfg, &mut rng)
            };
            let mut out = vec![0f32; size * size];
            warp_into(&img, side, side, size as u32, &p, &mut out);
            want.extend(out);
            pixels.extend(img);
            params.push(p);
        }
        let raw = RawImages {
            pixels,
            side: side as usize,
            params,
            norm: Normalize::IDENTITY,
        };
        let got = warp_batch(&raw, size, &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 2e-4,
            "device warp differs from the CPU warp by {worst}"
        );
        let input = device_input(
            &RawImages {
                norm: Normalize::new([0.5, 0.4, 0.3], [0.2, 0.25, 0.5]),
                ..raw
            },
            size,
            &Device::Cpu,
        )?;
        assert_eq!(input.dims(), &[6, 3, size, size]);
        let ch2 = input.narrow(1, 2, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let worst = ch2
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - (b - 0.3) / 0.5).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "normalised channel differs by {worst}");
        Ok(())
    }

    #[test]
    fn a_mismatched_batch_is_an_error() {
        let raw = RawImages {
            pixels: vec![0; 10],
            side: 4,
            params: vec![WarpParams::identity(4, 4)],
            norm: Normalize::IDENTITY,
        };
        assert!(warp_batch(&raw, 8, &Device::Cpu).is_err());
    }
}
