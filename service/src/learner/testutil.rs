//! Test helpers: a tiny network and a tiny dataset.

use super::{Learner, LearnerOptions};
use crate::data::testutil::make_tree;
use crate::data::{DataLoaders, Dataset};
use cxr_models::head::HeadKind;
use cxr_models::{Arch, NetConfig, Network};

/// An XResNet18 a few channels wide.
pub fn tiny_net() -> Network {
    let cfg = NetConfig {
        arch: Arch::Xresnet18,
        widths: [8, 16, 32, 32],
        n_classes: 2,
        head: HeadKind::Linear,
        head_hidden: 32,
    };
    Network::new(cfg, &candle_core::Device::Cpu, 5).expect("network")
}

pub fn tiny_learner(opts: LearnerOptions) -> Learner {
    Learner::new(tiny_net(), opts)
}

/// 21 training images (5 batches of 4, at 24x24), 6 validation images.
pub fn tiny_dls() -> (tempfile::TempDir, DataLoaders) {
    let tmp = tempfile::tempdir().expect("tempdir");
    make_tree(
        tmp.path(),
        &[
            ("train", &[("NORMAL", 9), ("PNEUMONIA", 12)]),
            ("val", &[("NORMAL", 3), ("PNEUMONIA", 3)]),
        ],
    );
    let ds = Dataset::scan(tmp.path()).expect("scan");
    let dls = DataLoaders::new(&ds, crate::data::testutil::tiny_options()).expect("loaders");
    (tmp, dls)
}

/// A one-image batch of zeros with this loss value, for hooks that only read
/// the loss or nothing.
pub fn dummy_batch(loss: f64) -> super::BatchState {
    let x = candle_core::Tensor::zeros(1, candle_core::DType::F32, &candle_core::Device::Cpu)
        .expect("zeros");
    let mut b = super::BatchState::new(x.clone(), x, 1);
    b.loss = loss;
    b
}
