//! Training augmentation, as the fastai recipe's batch transforms
//! `RandomResizedCropGPU(size)` + `aug_transforms(do_flip=False, max_rotate=10,
//! max_zoom=1.1, max_lighting=0, max_warp=0)`, applied per image.
//!
//! The random crop, the rotation and the zoom are composed into ONE map from
//! output pixels to source pixels, and the presized image is resampled once
//! with bilinear interpolation and reflection padding (fastai resamples twice:
//! once for the crop, once for the affine). Coordinates follow the pixel-centre
//! convention (`align_corners=False`), the same geometry as the eval-time
//! squish resize, so an identity draw is a plain bilinear resize. No flips, no
//! lighting changes.
//!
//! Output: `size * size` f32 values in `0..=1` (pixel / 255), row-major.

use rand::Rng;

/// Parameters of the random draw (defaults: the fastai recipe).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentConfig {
    /// Range of the crop's share of the image area (fastai: 0.08..1).
    pub min_scale: f64,
    pub max_scale: f64,
    /// Range of the crop's aspect ratio w/h, drawn log-uniformly (3/4..4/3).
    pub ratio: (f64, f64),
    /// Maximum rotation in degrees, drawn uniformly in `-max..max`.
    pub max_rotate: f32,
    /// Probability of rotating.
    pub p_rotate: f32,
    /// Zoom factor range, drawn uniformly (1..1.1); >1 zooms in.
    pub min_zoom: f32,
    pub max_zoom: f32,
    /// Probability of zooming.
    pub p_zoom: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self::fastai()
    }
}

impl AugmentConfig {
    /// The fastai recipe: RandomResizedCrop(0.08..1, 3/4..4/3), rotate ±10° and
    /// zoom 1..1.1, each with p = 0.75.
    pub fn fastai() -> Self {
        Self {
            min_scale: 0.08,
            max_scale: 1.0,
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            max_rotate: 10.0,
            p_rotate: 0.75,
            min_zoom: 1.0,
            max_zoom: 1.1,
            p_zoom: 0.75,
        }
    }

    /// RandomResizedCrop only (the statistics probe of the recipe).
    pub fn crop_only() -> Self {
        Self {
            p_rotate: 0.0,
            p_zoom: 0.0,
            ..Self::fastai()
        }
    }

    /// No augmentation: the full image, squished to the output size.
    pub fn identity() -> Self {
        Self {
            min_scale: 1.0,
            max_scale: 1.0,
            ratio: (1.0, 1.0),
            p_rotate: 0.0,
            p_zoom: 0.0,
            ..Self::fastai()
        }
    }
}

/// One random draw: what [`warp_into`] applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarpParams {
    /// Crop window in source pixels: `[left, top, width, height]`.
    pub crop: [u32; 4],
    /// Rotation in degrees (0 when not drawn).
    pub rotate_deg: f32,
    /// Zoom factor (1 when not drawn).
    pub zoom: f32,
    /// Zoom centre as fractions of the output (`col_pct`, `row_pct` in 0..1).
    pub zoom_center: (f32, f32),
}

impl WarpParams {
    /// No crop, rotation or zoom on a `w x h` image.
    pub fn identity(w: u32, h: u32) -> Self {
        Self {
            crop: [0, 0, w, h],
            rotate_deg: 0.0,
            zoom: 1.0,
            zoom_center: (0.5, 0.5),
        }
    }

    /// The fastai affine matrix `rotate @ zoom` (2x3, row-major), mapping output
    /// coordinates in -1..1 to coordinates in -1..1 of the crop.
    pub fn matrix(&self) -> [f32; 6] {
        let t = self.rotate_deg.to_radians();
        let (sin, cos) = t.sin_cos();
        let s = 1.0 / self.zoom;
        let col_c = (1.0 - s) * (2.0 * self.zoom_center.0 - 1.0);
        let row_c = (1.0 - s) * (2.0 * self.zoom_center.1 - 1.0);
        [
            cos * s,
            sin * s,
            cos * col_c + sin * row_c,
            -sin * s,
            cos * s,
            -sin * col_c + cos * row_c,
        ]
    }
}

fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Draws a crop window (torchvision/fastai RandomResizedCrop: up to 10 tries,
/// then a centre crop clamped to the ratio range), then the rotation and zoom.
pub fn draw_transform<R: Rng + ?Sized>(
    w: u32,
    h: u32,
    cfg: &AugmentConfig,
    rng: &mut R,
) -> WarpParams {
    let (wf, hf) = (f64::from(w), f64::from(h));
    let (r0, r1) = cfg.ratio;
    let mut crop = None;
    for _ in 0..10 {
        let area = uniform(rng, cfg.min_scale, cfg.max_scale) * wf * hf;
        let ratio = uniform(rng, r0.ln(), r1.ln()).exp();
        let nw = (area * ratio).sqrt().round();
        let nh = (area / ratio).sqrt().round();
        if nw >= 1.0 && nh >= 1.0 && nw <= wf && nh <= hf {
            let (nw, nh) = (nw as u32, nh as u32);
            let top = rng.random_range(0..=h - nh);
            let left = rng.random_range(0..=w - nw);
            crop = Some([left, top, nw, nh]);
            break;
        }
    }
    let crop = crop.unwrap_or_else(|| {
        let (cw, ch) = if wf / hf < r0 {
            (w, ((wf / r0) as u32).clamp(1, h))
        } else if wf / hf > r1 {
            (((hf * r1) as u32).clamp(1, w), h)
        } else {
            (w, h)
        };
        [(w - cw) / 2, (h - ch) / 2, cw, ch]
    });
    let deg = uniform(rng, -f64::from(cfg.max_rotate), f64::from(cfg.max_rotate)) as f32;
    let rotate_deg = if rng.random::<f32>() < cfg.p_rotate {
        deg
    } else {
        0.0
    };
    let z = uniform(rng, f64::from(cfg.min_zoom), f64::from(cfg.max_zoom)) as f32;
    let zoom = if rng.random::<f32>() < cfg.p_zoom {
        z
    } else {
        1.0
    };
    let zoom_center = (rng.random::<f32>(), rng.random::<f32>());
    WarpParams {
        crop,
        rotate_deg,
        zoom,
        zoom_center,
    }
}

/// Reflects a normalised coordinate into -1..1 (PyTorch's reflection padding
/// with `align_corners=False`: mirrors about the outer pixel edges).
#[inline]
fn reflect(u: f32) -> f32 {
    let t = (u + 1.0).rem_euclid(4.0);
    (if t > 2.0 { 4.0 - t } else { t }) - 1.0
}

/// Resamples the `w x h` u8 image `img` into `out` (`size * size`, values 0..1)
/// through the crop + affine of `p`, bilinear, reflection padding.
///
/// Panics if `img.len() != w*h` or `out.len() != size*size`.
pub fn warp_into(img: &[u8], w: u32, h: u32, size: u32, p: &WarpParams, out: &mut [f32]) {
    let (wu, hu, s) = (w as usize, h as usize, size as usize);
    assert_eq!(img.len(), wu * hu, "image buffer is not {w}x{h}");
    assert_eq!(out.len(), s * s, "output buffer is not {size}x{size}");
    let m = p.matrix();
    let [left, top, cw, ch] = p.crop.map(|v| v as f32);
    let (xmax, ymax) = ((w - 1) as f32, (h - 1) as f32);
    let inv = 1.0 / 255.0;
    for i in 0..s {
        let v = (2 * i + 1) as f32 / size as f32 - 1.0;
        let row = &mut out[i * s..(i + 1) * s];
        for (j, o) in row.iter_mut().enumerate() {
            let u = (2 * j + 1) as f32 / size as f32 - 1.0;
            let su = reflect(m[0] * u + m[1] * v + m[2]);
            let sv = reflect(m[3] * u + m[4] * v + m[5]);
            let x = (left + (su + 1.0) * 0.5 * cw - 0.5).clamp(0.0, xmax);
            let y = (top + (sv + 1.0) * 0.5 * ch - 0.5).clamp(0.0, ymax);
            let (x0, y0) = (x.floor(), y.floor());
            let (fx, fy) = (x - x0, y - y0);
            let (x0, y0) = (x0 as usize, y0 as usize);
            let x1 = (x0 + 1).min(wu - 1);
            let y1 = (y0 + 1).min(hu - 1);
            let at = |yy: usize, xx: usize| f32::from(img[yy * wu + xx]);
            let top_row = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx;
            let bot_row = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx;
            *o = (top_row + (bot_row - top_row) * fy) * inv;
        }
    }
}

/// Draws a transform with `rng` and applies it: `img` (`w x h` u8) -> `out`
/// (`size * size` f32 in 0..1). A pure function of (image, rng state).
pub fn augment_into<R: Rng + ?Sized>(
    img: &[u8],
    w: u32,
    h: u32,
    size: u32,
    cfg: &AugmentConfig,
    rng: &mut R,
    out: &mut [f32],
) {
    let p = draw_transform(w, h, cfg, rng);
    warp_into(img, w, h, size, &p, out);
}

/// As [`augment_into`], allocating the output.
pub fn augment<R: Rng + ?Sized>(
    img: &[u8],
    w: u32,
    h: u32,
    size: u32,
    cfg: &AugmentConfig,
    rng: &mut R,
) -> Vec<f32> {
    let mut out = vec![0.0; size as usize * size as usize];
    augment_into(img, w, h, size, cfg, rng, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::synthetic;
    use cxr_models::preprocess::squish_resize;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn img(side: u32) -> Vec<u8> {
        synthetic(side, side, 7).into_raw()
    }

    #[test]
    fn shape_range_and_determinism() {
        let src = img(64);
        let cfg = AugmentConfig::fastai();
        let a = augment(&src, 64, 64, 40, &cfg, &mut StdRng::seed_from_u64(1));
        let b = augment(&src, 64, 64, 40, &cfg, &mut StdRng::seed_from_u64(1));
        let c = augment(&src, 64, 64, 40, &cfg, &mut StdRng::seed_from_u64(2));
        assert_eq!(a.len(), 40 * 40);
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn identity_is_a_plain_bilinear_resize() {
        let cfg = AugmentConfig::identity();
        let mut rng = StdRng::seed_from_u64(3);
        // Same size: exactly the source pixels.
        let src = img(32);
        let same = augment(&src, 32, 32, 32, &cfg, &mut rng);
        assert!(same
            .iter()
            .zip(&src)
            .all(|(a, &b)| (a * 255.0 - f32::from(b)).abs() < 1e-3));
        // Up- and down-scaling: close to the eval-time bilinear squish resize.
        for (from, to) in [(32u32, 48u32), (64, 48), (64, 56)] {
            let g = synthetic(from, from, 5);
            let want = squish_resize(&g, to, to).expect("resize").into_raw();
            let got = augment(g.as_raw(), from, from, to, &cfg, &mut rng);
            let diffs: Vec<f32> = got
                .iter()
                .zip(&want)
                .map(|(a, &b)| (a * 255.0 - f32::from(b)).abs())
                .collect();
            let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
            let max = diffs.iter().cloned().fold(0.0, f32::max);
            assert!(
                mean < 1.0 && max < 4.0,
                "{from}->{to}: mean {mean} max {max}"
            );
        }
    }

    #[test]
    fn crop_draws_follow_the_recipe() {
        let cfg = AugmentConfig::fastai();
        let mut rng = StdRng::seed_from_u64(9);
        let (mut rotated, mut zoomed, mut small) = (0, 0, 0);
        let n = 2000;
        for _ in 0..n {
            let p = draw_transform(100, 80, &cfg, &mut rng);
            let [l, t, w, h] = p.crop;
            assert!(w >= 1 && h >= 1 && l + w <= 100 && t + h <= 80, "{p:?}");
            let area = f64::from(w * h) / 8000.0;
            assert!((0.07..=1.0).contains(&area), "{p:?}");
            assert!(p.rotate_deg.abs() <= 10.0 && (1.0..=1.1).contains(&p.zoom));
            rotated += usize::from(p.rotate_deg != 0.0);
            zoomed += usize::from(p.zoom != 1.0);
            small += usize::from(area < 0.5);
        }
        let frac = |k: usize| k as f64 / n as f64;
        assert!((frac(rotated) - 0.75).abs() < 0.05, "rotated {rotated}");
        assert!((frac(zoomed) - 0.75).abs() < 0.05, "zoomed {zoomed}");
        assert!(frac(small) > 0.3, "crops are rarely small: {small}");
        // A very wide image falls back to a centre crop of ratio 4/3 when no
        // draw fits: force it with a full-area scale.
        let full = AugmentConfig {
            min_scale: 1.0,
            ..AugmentConfig::crop_only()
        };
        let p = draw_transform(300, 100, &full, &mut rng);
        assert_eq!(p.crop, [83, 0, 133, 100]);
    }

    #[test]
    fn rotation_moves_pixels_and_reflects() {
        let src = img(48);
        let mut out0 = vec![0.0; 48 * 48];
        let mut out1 = vec![0.0; 48 * 48];
        warp_into(&src, 48, 48, 48, &WarpParams::identity(48, 48), &mut out0);
        let rot = WarpParams {
            rotate_deg: 10.0,
            ..WarpParams::identity(48, 48)
        };
        warp_into(&src, 48, 48, 48, &rot, &mut out1);
        // The centre stays, the corners move, nothing is left black.
        let c = 24 * 48 + 24;
        assert!((out0[c] - out1[c]).abs() < 0.03);
        assert!((out0[0] - out1[0]).abs() > 0.01);
        assert!(out1.iter().all(|&v| v > 0.1));
        for (u, want) in [
            (1.2, 0.8),
            (-1.5, -0.5),
            (0.3, 0.3),
            (3.5, -0.5),
            (-3.2, 0.8),
        ] {
            assert!(
                (reflect(u) - want).abs() < 1e-5,
                "reflect({u}) = {}",
                reflect(u)
            );
        }
    }
}
