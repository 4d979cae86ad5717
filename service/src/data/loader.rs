//! Batched loaders: presized training images augmented on a background thread
//! pool (bounded channel, so augmentation overlaps training), validation images
//! at the model's input size with the eval-time rule, both normalised to CHW f32.

use super::augment::{augment_into, draw_transform, AugmentConfig};
use super::cache::ImageCache;
use super::dataset::{Dataset, Item};
use super::device_augment::RawImages;
use super::sampling::{minority_class, oversample_indices, validation_items};
use super::stats::batch_stats;
use super::{mix_seed, DataError};
use crossbeam_channel::{bounded, Receiver};
use cxr_models::preprocess::{DecodeLimits, Normalize};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Batches produced ahead of the consumer.
const PREFETCH: usize = 4;
/// Stream tag of the per-epoch shuffle (distinct from the per-image streams).
const SHUFFLE_STREAM: u64 = u64::MAX;
/// Images in the statistics probe, as the recipe's `bs=128`.
pub const STATS_BATCH: usize = 128;

/// How the data is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataOptions {
    /// Side of the square images kept in memory for training (fastai item_tfms Resize).
    pub presize: u32,
    /// Side of the model input (fastai batch tfms size); see [`DataLoaders::set_size`].
    pub size: u32,
    /// Batch size.
    pub bs: usize,
    /// Repeat the minority class of train so it appears this many times in total.
    pub oversample: Option<usize>,
    /// Validate on val + test instead of val.
    pub merge_val_test: bool,
    pub seed: u64,
    /// Threads for decoding and augmentation; 0 = one per core.
    pub workers: usize,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            presize: 256,
            size: 128,
            bs: 32,
            oversample: None,
            merge_val_test: false,
            seed: 42,
            workers: 0,
        }
    }
}

/// A batch of normalised images.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `n * 3 * size * size` f32, CHW per image, the gray channel replicated
    /// three times and normalised with [`DataLoaders::norm`].
    pub images: Vec<f32>,
    /// Class index of each image.
    pub labels: Vec<u32>,
    pub n: usize,
    pub size: usize,
    /// Position of each image in the (oversampled) training list, or in the
    /// validation list ([`DataLoaders::valid_paths`]).
    pub indices: Vec<usize>,
    /// With [`DataLoaders::device_augment`]: the presized pixels and the
    /// augmentation draws, to be warped on the model's device
    /// ([`super::device_augment::device_input`]); `images` is then empty.
    pub raw: Option<RawImages>,
}

/// Training and validation loaders over an in-memory cache.
pub struct DataLoaders {
    /// Per-channel (mean, std) applied to pixels in 0..1; identity (0, 1) until
    /// set, e.g. from [`DataLoaders::compute_stats`] or a model card.
    pub norm: Normalize,
    /// The training augmentation (default: the fastai recipe).
    pub augment: AugmentConfig,
    /// Leave the training augmentation to the model's device: batches carry
    /// the u8 pixels and the draws ([`Batch::raw`]) instead of floats. The
    /// draws are the same as on the CPU path. Set for CUDA training.
    pub device_augment: bool,
    opts: DataOptions,
    classes: Vec<String>,
    limits: DecodeLimits,
    pool: Arc<rayon::ThreadPool>,
    train_cache: Arc<ImageCache>,
    /// Cache index of each entry of the training list (oversampled repeats included).
    train_order: Arc<Vec<usize>>,
    valid_cache: Arc<ImageCache>,
    valid_labels: Vec<u32>,
    skipped: Vec<(PathBuf, String)>,
}

impl std::fmt::Debug for DataLoaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoaders")
            .field("opts", &self.opts)
            .field("classes", &self.classes)
            .field("n_train", &self.n_train())
            .field("n_valid", &self.n_valid())
            .field("norm", &self.norm)
            .finish_non_exhaustive()
    }
}

fn check_size(what: &str, v: u32) -> Result<(), DataError> {
    if v == 0 || v > 4096 {
        return Err(DataError::Options(format!(
            "{what} {v} is out of range (1..=4096)"
        )));
    }
    Ok(())
}

impl DataLoaders {
    /// Decodes every training image once at `presize` and every validation image
    /// at `size` (in parallel), skipping unreadable files with a warning, and
    /// applies oversampling of the minority class.
    pub fn new(ds: &Dataset, opts: DataOptions) -> Result<DataLoaders, DataError> {
        check_size("presize", opts.presize)?;
        check_size("size", opts.size)?;
        if opts.bs == 0 {
            return Err(DataError::Options("batch size must be at least 1".into()));
        }
        if opts.oversample == Some(0) {
            return Err(DataError::Options(
                "oversample factor must be at least 1 (3 = the minority class appears 3 times)"
                    .into(),
            ));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.workers)
            .thread_name(|i| format!("cxr-data-{i}"))
            .build()
            .map_err(|e| DataError::ThreadPool(e.to_string()))?;
        let limits = DecodeLimits::default();
        let train_cache = pool.install(|| ImageCache::build(&ds.train, opts.presize, limits));
        if train_cache.is_empty() {
            return Err(DataError::NoTrainImages(ds.train.len()));
        }
        let labels: Vec<usize> = train_cache.items().iter().map(|i| i.label).collect();
        let train_order = match opts.oversample {
            Some(factor) => {
                let class = minority_class(train_cache.items());
                let order = oversample_indices(&labels, class, factor);
                tracing::info!(
                    "oversampling {} x{factor}: {} -> {} training images",
                    ds.classes.get(class).map_or("?", String::as_str),
                    labels.len(),
                    order.len()
                );
                order
            }
            None => (0..labels.len()).collect(),
        };
        if train_order.len() < opts.bs {
            return Err(DataError::BatchTooLarge {
                bs: opts.bs,
                n: train_order.len(),
            });
        }
        let valid = validation_items(ds, opts.merge_val_test);
        if valid.is_empty() {
            tracing::warn!(root = %ds.root.display(), "no validation images (no val/ or test/)");
        }
        let valid_cache = pool.install(|| ImageCache::build(&valid, opts.size, limits));
        let skipped: Vec<(PathBuf, String)> = train_cache
            .skipped()
            .iter()
            .chain(valid_cache.skipped())
            .cloned()
            .collect();
        let valid_labels = valid_cache.items().iter().map(|i| i.label as u32).collect();
        Ok(DataLoaders {
            norm: Normalize::IDENTITY,
            device_augment: false,
            augment: AugmentConfig::fastai(),
            opts,
            classes: ds.classes.clone(),
            limits,
            pool: Arc::new(pool),
            train_cache: Arc::new(train_cache),
            train_order: Arc::new(train_order),
            valid_cache: Arc::new(valid_cache),
            valid_labels,
            skipped,
        })
    }

    /// The options, with the current `size`.
    pub fn options(&self) -> &DataOptions {
        &self.opts
    }

    /// Current model input side.
    pub fn size(&self) -> u32 {
        self.opts.size
    }

    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Training list length (oversampled repeats included).
    pub fn n_train(&self) -> usize {
        self.train_order.len()
    }

    pub fn n_valid(&self) -> usize {
        self.valid_cache.len()
    }

    /// Training batches per epoch (the last incomplete batch is dropped).
    pub fn n_train_batches(&self) -> usize {
        self.n_train() / self.opts.bs
    }

    /// Validation batches (the last one may be partial).
    pub fn n_valid_batches(&self) -> usize {
        self.n_valid().div_ceil(self.opts.bs)
    }

    /// Labels of the validation images, in [`Self::valid_batches`] order.
    pub fn valid_labels(&self) -> &[u32] {
        &self.valid_labels
    }

    /// Paths of the validation images, in [`Self::valid_batches`] order.
    pub fn valid_paths(&self) -> Vec<&Path> {
        self.valid_cache
            .items()
            .iter()
            .map(|i| i.path.as_path())
            .collect()
    }

    /// The validation items (skipped files removed).
    pub fn valid_items(&self) -> &[Item] {
        self.valid_cache.items()
    }

    /// The training item at a position of the training list (a `Batch::indices` value).
    pub fn train_item(&self, index: usize) -> Option<&Item> {
        let ci = *self.train_order.get(index)?;
        self.train_cache.items().get(ci)
    }

    /// Files that could not be loaded (training and validation), with the reason.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    /// The presized training images.
    pub fn train_cache(&self) -> &ImageCache {
        &self.train_cache
    }

    /// Changes the model input size (progressive resizing): training batches are
    /// augmented to the new size and validation images are re-decoded from the
    /// originals at that size with the eval-time rule.
    pub fn set_size(&mut self, size: u32) -> Result<(), DataError> {
        check_size("size", size)?;
        if size == self.opts.size {
            return Ok(());
        }
        let items = self.valid_cache.items().to_vec();
        let limits = self.limits;
        let cache = self
            .pool
            .install(|| ImageCache::build(&items, size, limits));
        if cache.len() != items.len() {
            // A file changed on disk since the first pass: keep lists consistent.
            self.valid_labels = cache.items().iter().map(|i| i.label as u32).collect();
            self.skipped.extend(cache.skipped().iter().cloned());
        }
        self.valid_cache = Arc::new(cache);
        self.opts.size = size;
        Ok(())
    }

    /// Normalisation statistics as the fastai recipe: one shuffled batch of 128
    /// training images, RandomResizedCrop to the current size, mean/std over all
    /// pixels (values 0..1). Deterministic for a given seed. Does not set `norm`.
    pub fn compute_stats(&self) -> Normalize {
        self.pool.install(|| {
            batch_stats(
                &self.train_cache,
                &self.train_order,
                self.opts.size,
                STATS_BATCH,
                self.opts.seed,
            )
        })
    }

    /// The training batches of `epoch`: the list is shuffled with (seed, epoch),
    /// the last incomplete batch is dropped, and each image is augmented with an
    /// RNG derived from (seed, epoch, list position), on the loader's thread
    /// pool, up to 4 batches ahead. The output does not depend on scheduling.
    pub fn train_batches(&self, epoch: usize) -> TrainBatches {
        let seed = self.opts.seed;
        let mut perm: Vec<usize> = (0..self.n_train()).collect();
        perm.shuffle(&mut StdRng::seed_from_u64(mix_seed(&[
            seed,
            epoch as u64,
            SHUFFLE_STREAM,
        ])));
        let producer = TrainProducer {
            cache: Arc::clone(&self.train_cache),
            order: Arc::clone(&self.train_order),
            perm,
            bs: self.opts.bs,
            size: self.opts.size,
            seed,
            epoch: epoch as u64,
            norm: self.norm,
            cfg: self.augment,
            pool: Arc::clone(&self.pool),
            on_device: self.device_augment,
        };
        TrainBatches::start(producer, self.n_train_batches())
    }

    /// The validation batches: in order, not augmented, last batch partial.
    pub fn valid_batches(&self) -> impl Iterator<Item = Batch> + Send + 'static {
        let cache = Arc::clone(&self.valid_cache);
        let labels = self.valid_labels.clone();
        let (bs, norm) = (self.opts.bs, self.norm);
        let n = cache.len();
        (0..n.div_ceil(bs)).map(move |b| {
            let idx: Vec<usize> = (b * bs..((b + 1) * bs).min(n)).collect();
            let s = cache.side() as usize;
            let plane = s * s;
            let mut images = vec![0.0f32; idx.len() * 3 * plane];
            for (out, &i) in images.chunks_exact_mut(3 * plane).zip(&idx) {
                for (c, ch) in out.chunks_exact_mut(plane).enumerate() {
                    norm.u8_plane(c, cache.image(i), ch);
                }
            }
            Batch {
                images,
                labels: idx.iter().map(|&i| labels[i]).collect(),
                n: idx.len(),
                size: s,
                indices: idx,
                raw: None,
            }
        })
    }
}

/// Everything needed to build the training batches of one epoch.
struct TrainProducer {
    cache: Arc<ImageCache>,
    order: Arc<Vec<usize>>,
    perm: Vec<usize>,
    bs: usize,
    size: u32,
    seed: u64,
    epoch: u64,
    norm: Normalize,
    cfg: AugmentConfig,
    pool: Arc<rayon::ThreadPool>,
    on_device: bool,
}

impl TrainProducer {
    fn rng(&self, li: usize) -> StdRng {
        StdRng::seed_from_u64(mix_seed(&[self.seed, self.epoch, li as u64]))
    }

    fn labels(&self, idx: &[usize]) -> Vec<u32> {
        idx.iter()
            .map(|&li| self.cache.items()[self.order[li]].label as u32)
            .collect()
    }

    /// The pixels and draws only, for augmentation on the device.
    fn raw_batch(&self, idx: &[usize]) -> Batch {
        let side = self.cache.side();
        let mut pixels = Vec::with_capacity(idx.len() * (side as usize).pow(2));
        let mut params = Vec::with_capacity(idx.len());
        for &li in idx {
            let img = self.cache.image(self.order[li]);
            pixels.extend_from_slice(img);
            params.push(draw_transform(side, side, &self.cfg, &mut self.rng(li)));
        }
        Batch {
            images: Vec::new(),
            labels: self.labels(idx),
            n: idx.len(),
            size: self.size as usize,
            indices: idx.to_vec(),
            raw: Some(RawImages {
                pixels,
                side: side as usize,
                params,
                norm: self.norm,
            }),
        }
    }

    fn batch(&self, b: usize) -> Batch {
        let idx = &self.perm[b * self.bs..(b + 1) * self.bs];
        if self.on_device {
            return self.raw_batch(idx);
        }
        let s = self.size as usize;
        let plane = s * s;
        let side = self.cache.side();
        let norm = self.norm;
        let mut images = vec![0.0f32; idx.len() * 3 * plane];
        self.pool.install(|| {
            images
                .par_chunks_mut(3 * plane)
                .zip(idx.par_iter())
                .for_each(|(out, &li)| {
                    let ci = self.order[li];
                    let mut rng = self.rng(li);
                    augment_into(
                        self.cache.image(ci),
                        side,
                        side,
                        self.size,
                        &self.cfg,
                        &mut rng,
                        &mut out[..plane],
                    );
                    norm.unit_to_chw_in_place(out, plane);
                });
        });
        Batch {
            images,
            labels: self.labels(idx),
            n: idx.len(),
            size: s,
            indices: idx.to_vec(),
            raw: None,
        }
    }
}

/// Iterator over one epoch's training batches, produced ahead on a background
/// thread. Dropping it early stops the producer.
pub struct TrainBatches {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
    /// Used when no thread could be started: batches are built on demand.
    inline: Option<(TrainProducer, usize)>,
    remaining: usize,
}

impl TrainBatches {
    fn start(producer: TrainProducer, n_batches: usize) -> TrainBatches {
        let (tx, rx) = bounded::<Batch>(PREFETCH);
        let shared = Arc::new(producer);
        let worker = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("cxr-batches".into())
            .spawn(move || {
                for b in 0..n_batches {
                    if tx.send(worker.batch(b)).is_err() {
                        return;
                    }
                }
            });
        match spawned {
            Ok(handle) => TrainBatches {
                rx: Some(rx),
                handle: Some(handle),
                inline: None,
                remaining: n_batches,
            },
            Err(e) => {
                tracing::warn!("could not start the batch thread ({e}): augmenting inline");
                // The closure (and its Arc clone) was dropped with the error.
                let producer = Arc::try_unwrap(shared).ok();
                TrainBatches {
                    rx: None,
                    handle: None,
                    inline: producer.map(|p| (p, 0)),
                    remaining: n_batches,
                }
            }
        }
    }
}

impl Iterator for TrainBatches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.remaining == 0 {
            return None;
        }
        if let Some((producer, next)) = self.inline.as_mut() {
            let b = producer.batch(*next);
            *next += 1;
            self.remaining -= 1;
            return Some(b);
        }
        match self.rx.as_ref().map(|rx| rx.recv()) {
            Some(Ok(b)) => {
                self.remaining -= 1;
                Some(b)
            }
            _ => {
                // The producer ended early: it panicked. Surface its panic.
                self.remaining = 0;
                self.rx = None;
                if let Some(Err(payload)) = self.handle.take().map(JoinHandle::join) {
                    std::panic::resume_unwind(payload);
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for TrainBatches {}

impl Drop for TrainBatches {
    fn drop(&mut self) {
        // Disconnect first so a producer blocked on a full channel returns.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::make_tree;
    use cxr_models::preprocess::{normalize, preprocess_u8, PreprocessSpec};

    fn tree() -> (tempfile::TempDir, Dataset) {
        let tmp = tempfile::tempdir().expect("tempdir");
        make_tree(
            tmp.path(),
            &[
                ("train", &[("NORMAL", 5), ("PNEUMONIA", 12)]),
                ("val", &[("NORMAL", 2), ("PNEUMONIA", 3)]),
                ("test", &[("NORMAL", 2), ("PNEUMONIA", 4)]),
            ],
        );
        let ds = Dataset::scan(tmp.path()).expect("scan");
        (tmp, ds)
    }

    fn opts() -> DataOptions {
        crate::data::testutil::tiny_options()
    }

    #[test]
    fn batch_shapes_and_counts() {
        let (_tmp, ds) = tree();
        let dl = DataLoaders::new(&ds, opts()).expect("loaders");
        assert_eq!((dl.n_train(), dl.n_valid()), (17, 5));
        let train: Vec<Batch> = dl.train_batches(0).collect();
        assert_eq!(train.len(), 17 / 4);
        assert_eq!(dl.n_train_batches(), 4);
        for b in &train {
            assert_eq!((b.n, b.size, b.labels.len()), (4, 24, 4));
            assert_eq!(b.images.len(), 4 * 3 * 24 * 24);
            assert!(b.images.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        let mut seen: Vec<usize> = train.iter().flat_map(|b| b.indices.clone()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 16, "each image at most once per epoch");
        let valid: Vec<Batch> = dl.valid_batches().collect();
        assert_eq!(valid.len(), 2);
        assert_eq!(dl.n_valid_batches(), 2);
        assert_eq!((valid[0].n, valid[1].n), (4, 1));
        assert_eq!(valid[1].images.len(), 3 * 24 * 24);
        let labels: Vec<u32> = valid.iter().flat_map(|b| b.labels.clone()).collect();
        assert_eq!(labels, dl.valid_labels());
        assert_eq!(labels, vec![0, 0, 1, 1, 1]);
        assert_eq!(dl.valid_paths().len(), 5);
    }

    #[test]
    fn oversample_and_merge_counts() {
        let (_tmp, ds) = tree();
        let o = DataOptions {
            oversample: Some(3),
            merge_val_test: true,
            ..opts()
        };
        let dl = DataLoaders::new(&ds, o).expect("loaders");
        assert_eq!(dl.n_train(), 12 + 5 * 3);
        assert_eq!(dl.n_valid(), 5 + 6);
        assert_eq!(dl.n_train_batches(), 27 / 4);
        assert_eq!(dl.n_valid_batches(), 3);
        let normals = (0..dl.n_train())
            .filter(|&i| dl.train_item(i).is_some_and(|it| it.label == 0))
            .count();
        assert_eq!(normals, 15);
    }

    #[test]
    fn deterministic_per_seed_and_epoch() {
        let (_tmp, ds) = tree();
        let a = DataLoaders::new(&ds, opts()).expect("a");
        let b = DataLoaders::new(
            &ds,
            DataOptions {
                workers: 1,
                ..opts()
            },
        )
        .expect("b");
        let a0: Vec<Batch> = a.train_batches(0).collect();
        let b0: Vec<Batch> = b.train_batches(0).collect();
        assert_eq!(a0, b0, "same seed, different thread counts");
        let a1 = a.train_batches(1).next().expect("batch");
        assert_ne!(a0[0].images, a1.images);
        let c = DataLoaders::new(&ds, DataOptions { seed: 8, ..opts() }).expect("c");
        assert_ne!(
            c.train_batches(0).next().expect("batch").images,
            a0[0].images
        );
        // Dropping an iterator early does not hang.
        let mut it = a.train_batches(2);
        assert!(it.next().is_some());
        drop(it);
    }

    #[test]
    fn validation_is_the_eval_time_rule_and_follows_set_size() {
        let (_tmp, ds) = tree();
        let mut dl = DataLoaders::new(&ds, opts()).expect("loaders");
        dl.norm = Normalize::new([0.4, 0.5, 0.6], [0.2, 0.25, 0.3]);
        dl.set_size(20).expect("set_size");
        let spec = PreprocessSpec::new(20, dl.norm);
        let first = dl.valid_batches().next().expect("batch");
        assert_eq!(first.size, 20);
        let bytes = std::fs::read(dl.valid_paths()[1]).expect("read");
        let u8s = preprocess_u8(&bytes, &spec, DecodeLimits::default()).expect("prep");
        let want = normalize(&u8s, &spec).expect("norm");
        let n = 3 * 20 * 20;
        assert_eq!(&first.images[n..2 * n], &want[..]);
        // Training batches follow the size and the normalisation.
        let t = dl.train_batches(0).next().expect("batch");
        assert_eq!(t.images.len(), 4 * 3 * 20 * 20);
        let plane = 20 * 20;
        let (c0, c1) = (&t.images[..plane], &t.images[plane..2 * plane]);
        for (x0, x1) in c0.iter().zip(c1) {
            let raw = x0 * 0.2 + 0.4;
            assert!(((raw - 0.5) / 0.25 - x1).abs() < 1e-4);
        }
        assert!(dl.set_size(0).is_err());
    }

    #[test]
    fn device_augmentation_makes_the_same_batches() {
        let (_tmp, ds) = tree();
        let mut dl = DataLoaders::new(&ds, opts()).expect("loaders");
        dl.norm = Normalize::new([0.4, 0.5, 0.6], [0.2, 0.25, 0.3]);
        let cpu: Vec<Batch> = dl.train_batches(1).collect();
        dl.device_augment = true;
        let dev: Vec<Batch> = dl.train_batches(1).collect();
        assert_eq!(cpu.len(), dev.len());
        for (a, b) in cpu.iter().zip(&dev) {
            assert_eq!(
                (&a.labels, &a.indices, a.size),
                (&b.labels, &b.indices, b.size)
            );
            assert!(b.images.is_empty() && a.raw.is_none());
            let raw = b.raw.as_ref().expect("raw pixels and draws");
            let x =
                crate::data::device_augment::device_input(raw, b.size, &candle_core::Device::Cpu)
                    .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
                    .expect("warp");
            let worst = x
                .iter()
                .zip(&a.images)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(worst < 2e-3, "device batch differs by {worst}");
        }
    }

    #[test]
    fn stats_and_option_errors() {
        let (_tmp, ds) = tree();
        let dl = DataLoaders::new(&ds, opts()).expect("loaders");
        let n = dl.compute_stats();
        let (m, s) = (n.mean, n.std);
        assert_eq!(n, dl.compute_stats());
        assert!(m[0] > 0.1 && m[0] < 0.9 && s[0] > 0.0);
        let err = DataLoaders::new(&ds, DataOptions { bs: 18, ..opts() }).unwrap_err();
        assert!(
            matches!(err, DataError::BatchTooLarge { bs: 18, n: 17 }),
            "{err}"
        );
        assert!(DataLoaders::new(&ds, DataOptions { bs: 0, ..opts() }).is_err());
        assert!(DataLoaders::new(&ds, DataOptions { size: 0, ..opts() }).is_err());
    }
}
