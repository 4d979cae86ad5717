//! The training data pipeline: the Kaggle folder layout, oversampling, presizing
//! (decode once, keep in memory), fastai-style augmentation, normalisation
//! statistics and batched loaders that augment on a background thread pool.
//!
//! Each module does one job:
//! - [`dataset`]: scan `train|val|test/<CLASS>/*.jpeg` into labelled items;
//! - [`sampling`]: oversample a class, pick the minority class, build the validation set;
//! - [`cache`]: decode + squish-resize every image once, in parallel, skipping bad files;
//! - [`augment`]: RandomResizedCrop + rotate + zoom as one affine map, resampled once;
//! - [`stats`]: per-channel mean/std from one augmented training batch, as fastai;
//! - [`loader`]: [`DataLoaders`] producing normalised CHW [`Batch`]es.

pub mod augment;
pub mod cache;
pub mod dataset;
pub mod device_augment;
pub mod loader;
pub mod sampling;
pub mod stats;

pub use augment::{augment, augment_into, draw_transform, warp_into, AugmentConfig, WarpParams};
pub use cache::ImageCache;
pub use dataset::{Dataset, Item, IMAGE_EXTENSIONS};
pub use loader::{Batch, DataLoaders, DataOptions, TrainBatches};
pub use sampling::{minority_class, oversample, oversample_indices, validation_items};
pub use stats::{batch_stats, mean_std};

use std::path::PathBuf;

/// Why the data could not be loaded, in terms a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data folder {0} does not exist")]
    RootNotFound(PathBuf),
    #[error("no train/ folder at {0}: expected the Kaggle layout train/<CLASS>/*.jpeg (e.g. train/NORMAL, train/PNEUMONIA), with optional val/ and test/")]
    MissingTrain(PathBuf),
    #[error("{path} has {found} class folder(s) {classes:?}: need at least two (e.g. NORMAL and PNEUMONIA)")]
    TooFewClasses {
        path: PathBuf,
        found: usize,
        classes: Vec<String>,
    },
    #[error("class folder {path} is missing: every split must have the same class folders as train/ ({expected})")]
    MissingClass { path: PathBuf, expected: String },
    #[error("unexpected class folder {path}: it is not in train/ (train/ has {expected})")]
    UnexpectedClass { path: PathBuf, expected: String },
    #[error("class folder {0} has no .jpeg, .jpg or .png images")]
    EmptyClass(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "none of the {0} training images could be decoded (see the warnings above for each file)"
    )]
    NoTrainImages(usize),
    #[error("batch size {bs} is larger than the {n} training images: every training batch would be dropped")]
    BatchTooLarge { bs: usize, n: usize },
    #[error("invalid data option: {0}")]
    Options(String),
    #[error("could not start the data loader threads: {0}")]
    ThreadPool(String),
}

/// Mixes a seed with stream identifiers (epoch, index, ...) into a new seed.
/// SplitMix64 steps: nearby inputs give unrelated outputs.
pub(crate) fn mix_seed(parts: &[u64]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15_u64;
    for &p in parts {
        h = splitmix64(h ^ p);
    }
    h
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Test helpers: write small generated images into a temporary Kaggle layout.
#[cfg(test)]
pub(crate) mod testutil {
    use super::DataOptions;
    use image::{GrayImage, Luma};
    use std::path::Path;

    /// Loader options for the tiny test trees: 32 px presize, 24 px input, batches of 4.
    pub fn tiny_options() -> DataOptions {
        DataOptions {
            presize: 32,
            size: 24,
            bs: 4,
            oversample: None,
            merge_val_test: false,
            seed: 7,
            workers: 2,
        }
    }

    /// A smooth synthetic "X-ray": a gradient plus a blob whose place depends on `seed`.
    pub fn synthetic(w: u32, h: u32, seed: u32) -> GrayImage {
        let cx = (seed * 37 % w.max(1)) as f32;
        let cy = (seed * 53 % h.max(1)) as f32;
        GrayImage::from_fn(w, h, |x, y| {
            let g = 40.0 + 120.0 * x as f32 / w as f32 + 60.0 * y as f32 / h as f32;
            let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
            let blob = 60.0 * (-d2 / (2.0 * (w as f32 / 6.0).powi(2))).exp();
            Luma([(g + blob).clamp(0.0, 255.0) as u8])
        })
    }

    /// Writes `n` images of `w x h` into `dir` as `img{i}.{ext}`.
    pub fn write_images(dir: &Path, n: usize, w: u32, h: u32, ext: &str) {
        std::fs::create_dir_all(dir).expect("mkdir");
        for i in 0..n {
            let img = synthetic(w, h, i as u32 + 1);
            img.save(dir.join(format!("img{i:03}.{ext}")))
                .expect("save image");
        }
    }

    /// A Kaggle-layout tree: for each (split, [(class, count)]).
    pub fn make_tree(root: &Path, spec: &[(&str, &[(&str, usize)])]) {
        for (split, classes) in spec {
            for (class, n) in *classes {
                let dir = root.join(split).join(class);
                std::fs::create_dir_all(&dir).expect("mkdir");
                write_images(&dir, *n, 48, 40, "png");
            }
        }
    }
}
