//! Normalisation statistics as the fastai recipe computes them: one shuffled
//! batch of (up to) 128 training images, RandomResizedCrop to `size` only, then
//! the mean and the (unbiased) standard deviation over batch, height and width.
//! Grayscale channels are identical, so the three channels get the same values.

use super::augment::{augment_into, AugmentConfig};
use super::cache::ImageCache;
use super::mix_seed;
use cxr_models::preprocess::Normalize;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

/// Stream tag separating the statistics draw from the epochs' draws.
const STATS_STREAM: u64 = 0x5354_4154_5321;

/// Mean and unbiased standard deviation (torch's `std`), accumulated in f64.
/// Returns (0, 0) for an empty input and std 0 for one value.
pub fn mean_std(values: &[f32]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let ss = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>();
    (mean, (ss / (n - 1) as f64).sqrt())
}

/// Per-channel mean/std of one batch of `n` training images: `order` lists the
/// cache indices of the training set (with oversampled repeats), shuffled with
/// `seed`; the first `n` are RandomResizedCrop-ed to `size` (values 0..1).
/// Runs on the current rayon pool. A std below 1e-6 (constant images) is
/// replaced by 1 with a warning, so normalising never divides by zero.
pub fn batch_stats(
    cache: &ImageCache,
    order: &[usize],
    size: u32,
    n: usize,
    seed: u64,
) -> Normalize {
    let mut pick = order.to_vec();
    pick.shuffle(&mut StdRng::seed_from_u64(mix_seed(&[seed, STATS_STREAM])));
    pick.truncate(n);
    let plane = size as usize * size as usize;
    let mut buf = vec![0.0f32; pick.len() * plane];
    let side = cache.side();
    let cfg = AugmentConfig::crop_only();
    buf.par_chunks_mut(plane.max(1))
        .zip(pick.par_iter().enumerate())
        .for_each(|(out, (k, &idx))| {
            let mut rng = StdRng::seed_from_u64(mix_seed(&[seed, STATS_STREAM, k as u64]));
            augment_into(cache.image(idx), side, side, size, &cfg, &mut rng, out);
        });
    let (mean, mut std) = mean_std(&buf);
    if std < 1e-6 {
        tracing::warn!("training images have no contrast (std {std}): using std 1");
        std = 1.0;
    }
    Normalize::gray(mean as f32, std as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::Item;
    use crate::data::testutil::write_images;
    use cxr_models::preprocess::DecodeLimits;

    #[test]
    fn mean_std_matches_torch() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-12);
        assert!((s - 1.290_994_448_735_805_6).abs() < 1e-9);
        assert_eq!(mean_std(&[]), (0.0, 0.0));
    }

    #[test]
    fn stats_are_deterministic_and_plausible() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write_images(tmp.path(), 6, 40, 30, "png");
        let items: Vec<Item> = (0..6)
            .map(|i| Item {
                path: tmp.path().join(format!("img{i:03}.png")),
                label: 0,
            })
            .collect();
        let cache = ImageCache::build(&items, 32, DecodeLimits::default());
        let order: Vec<usize> = (0..6).collect();
        let n1 = batch_stats(&cache, &order, 16, 128, 42);
        let n2 = batch_stats(&cache, &order, 16, 128, 42);
        let (m1, s1) = (n1.mean, n1.std);
        let (m2, s2) = (n2.mean, n2.std);
        let m3 = batch_stats(&cache, &order, 16, 4, 43).mean;
        assert_eq!((m1, s1), (m2, s2));
        assert_ne!(m1, m3);
        assert!(m1[0] == m1[1] && m1[1] == m1[2] && s1[0] == s1[2]);
        // Pixel mean of the whole cache, for comparison.
        let all: Vec<f32> = cache
            .pixels()
            .iter()
            .map(|&p| f32::from(p) / 255.0)
            .collect();
        let (m_all, _) = mean_std(&all);
        assert!((f64::from(m1[0]) - m_all).abs() < 0.1, "{m1:?} vs {m_all}");
        assert!(s1[0] > 0.02 && s1[0] < 0.5, "{s1:?}");
    }
}
