//! Presizing: every image is decoded once and squish-resized to a square, in
//! parallel, and kept in memory as one contiguous u8 buffer.
//!
//! The per-file rule is exactly the eval-time rule of
//! [`cxr_models::preprocess::preprocess_u8`] (`decode_gray`, then
//! `squish_resize` from the original to `side x side`), so a validation cache
//! built at the model's input size holds the very pixels the server computes.

use super::dataset::Item;
use cxr_models::preprocess::{decode_gray, squish_resize, DecodeLimits};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Squish-resized grayscale images, `side * side` bytes each, row-major.
#[derive(Debug, Clone)]
pub struct ImageCache {
    side: u32,
    items: Vec<Item>,
    pixels: Vec<u8>,
    skipped: Vec<(PathBuf, String)>,
}

impl ImageCache {
    /// Decodes and resizes `items` to `side x side` on the current rayon pool
    /// (call inside `pool.install` to choose one). Files that cannot be read or
    /// decoded are logged with `tracing::warn`, listed in [`Self::skipped`] and
    /// left out; the kept items stay in their input order.
    pub fn build(items: &[Item], side: u32, limits: DecodeLimits) -> ImageCache {
        let results: Vec<Result<Vec<u8>, String>> = items
            .par_iter()
            .map(|it| load_resized(&it.path, side, limits))
            .collect();
        let plane = side as usize * side as usize;
        let n_ok = results.iter().filter(|r| r.is_ok()).count();
        let mut pixels = Vec::with_capacity(n_ok * plane);
        let mut kept = Vec::with_capacity(n_ok);
        let mut skipped = Vec::new();
        for (it, r) in items.iter().zip(results) {
            match r {
                Ok(px) => {
                    pixels.extend_from_slice(&px);
                    kept.push(it.clone());
                }
                Err(e) => {
                    tracing::warn!(path = %it.path.display(), "skipping image: {e}");
                    skipped.push((it.path.clone(), e));
                }
            }
        }
        ImageCache {
            side,
            items: kept,
            pixels,
            skipped,
        }
    }

    /// Side of the square images.
    pub fn side(&self) -> u32 {
        self.side
    }

    /// Number of images held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items that were loaded, in input order (skipped ones removed).
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Files that could not be loaded, with the reason.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    /// The `side * side` pixels of image `i` (panics when `i >= len()`).
    pub fn image(&self, i: usize) -> &[u8] {
        let plane = self.side as usize * self.side as usize;
        &self.pixels[i * plane..(i + 1) * plane]
    }

    /// All pixels, image after image.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }
}

/// Reads one file and applies the eval-time rule: decode to gray, squish-resize.
pub fn load_resized(path: &Path, side: u32, limits: DecodeLimits) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read file: {e}"))?;
    let gray = decode_gray(&bytes, limits).map_err(|e| e.to_string())?;
    let resized = squish_resize(&gray, side, side).map_err(|e| e.to_string())?;
    Ok(resized.into_raw())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::Dataset;
    use crate::data::testutil::{make_tree, write_images};
    use cxr_models::preprocess::{preprocess_u8, PreprocessSpec};
    use std::time::Instant;

    #[test]
    fn corrupt_file_is_skipped_by_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        make_tree(root, &[("train", &[("NORMAL", 3), ("PNEUMONIA", 4)])]);
        write_images(&root.join("train/NORMAL"), 1, 30, 20, "jpeg");
        let bad = root.join("train/PNEUMONIA/broken.jpeg");
        let good = std::fs::read(root.join("train/NORMAL/img000.jpeg")).expect("read");
        std::fs::write(&bad, &good[..good.len() / 3]).expect("write");
        let not_image = root.join("train/PNEUMONIA/text.png");
        std::fs::write(&not_image, "hello").expect("write");

        let ds = Dataset::scan(root).expect("scan");
        assert_eq!(ds.train.len(), 3 + 1 + 4 + 2);
        let cache = ImageCache::build(&ds.train, 16, DecodeLimits::default());
        assert_eq!(cache.len(), 8);
        assert_eq!(cache.pixels().len(), 8 * 16 * 16);
        let skipped: Vec<&PathBuf> = cache.skipped().iter().map(|(p, _)| p).collect();
        assert_eq!(skipped, vec![&bad, &not_image]);
        assert!(cache.skipped().iter().all(|(_, why)| !why.is_empty()));
        assert!(cache
            .items()
            .iter()
            .all(|i| i.path != bad && i.path != not_image));
    }

    #[test]
    fn cache_matches_eval_time_preprocessing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("x");
        write_images(&dir, 3, 50, 31, "jpeg");
        let items: Vec<Item> = (0..3)
            .map(|i| Item {
                path: dir.join(format!("img{i:03}.jpeg")),
                label: 0,
            })
            .collect();
        let cache = ImageCache::build(&items, 24, DecodeLimits::default());
        let spec = PreprocessSpec::new(24, cxr_models::preprocess::Normalize::IDENTITY);
        for (i, it) in items.iter().enumerate() {
            let bytes = std::fs::read(&it.path).expect("read");
            let want = preprocess_u8(&bytes, &spec, DecodeLimits::default()).expect("prep");
            assert_eq!(cache.image(i), &want[..]);
        }
    }

    /// Timing on the real data, when present (run with `--nocapture` to see it).
    #[test]
    fn time_chest_xray_mini_presize() {
        let root = Path::new("/work/shared/data/chest-xray-mini");
        if !root.join("train").is_dir() {
            eprintln!("skipped: {} is absent", root.display());
            return;
        }
        let ds = Dataset::scan(root).expect("scan");
        let t = Instant::now();
        let cache = ImageCache::build(&ds.train, 256, DecodeLimits::default());
        eprintln!(
            "cached {} train images at 256x256 in {:.2}s on {} threads ({} skipped)",
            cache.len(),
            t.elapsed().as_secs_f64(),
            rayon::current_num_threads(),
            cache.skipped().len()
        );
        assert_eq!(cache.len(), ds.train.len());
    }
}
