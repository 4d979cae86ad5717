//! A run folder: every file a training run, a job or a registered model
//! writes, named in one place.

use cxr_models::weights::{CARD_FILE, WEIGHTS_FILE};
use std::path::{Path, PathBuf};

/// The files of a finished run that make up a model and its reports, in the
/// order a registered model copies them (the first two are required).
pub const ARTIFACTS: [&str; 7] = [
    WEIGHTS_FILE,
    CARD_FILE,
    RunDir::REPORT,
    RunDir::METRICS,
    RunDir::LOSSES_PLOT,
    RunDir::CONFUSION_PLOT,
    RunDir::LR_FIND_PLOT,
];

/// A run folder (`cxr train --out`, a job's folder, a registered model's folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub const REPORT: &'static str = "report.json";
    pub const METRICS: &'static str = "metrics.jsonl";
    pub const LOSSES_PLOT: &'static str = "losses.png";
    pub const CONFUSION_PLOT: &'static str = "confusion_matrix.png";
    pub const LR_FIND_PLOT: &'static str = "lr_find.png";
    pub const ONNX: &'static str = "model.onnx";
    const CHECKPOINT: &'static str = "checkpoint";

    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `model.safetensors`: the trained weights.
    pub fn weights(&self) -> PathBuf {
        self.root.join(WEIGHTS_FILE)
    }

    /// `model.json`: the model card.
    pub fn card(&self) -> PathBuf {
        self.root.join(CARD_FILE)
    }

    /// `report.json`: the validation report.
    pub fn report(&self) -> PathBuf {
        self.root.join(Self::REPORT)
    }

    /// `metrics.jsonl`: one line per epoch.
    pub fn metrics(&self) -> PathBuf {
        self.root.join(Self::METRICS)
    }

    pub fn losses_plot(&self) -> PathBuf {
        self.root.join(Self::LOSSES_PLOT)
    }

    pub fn confusion_plot(&self) -> PathBuf {
        self.root.join(Self::CONFUSION_PLOT)
    }

    pub fn lr_find_plot(&self) -> PathBuf {
        self.root.join(Self::LR_FIND_PLOT)
    }

    /// `model.onnx`, exported on demand.
    pub fn onnx(&self) -> PathBuf {
        self.root.join(Self::ONNX)
    }

    /// Any file of the run by name (a report a client asked for by name).
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `checkpoint/`: the last completed epoch, for `--resume`.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            dir: self.root.join(Self::CHECKPOINT),
        }
    }

    /// Whether the run holds a checkpoint that `--resume` can continue.
    pub fn has_checkpoint(&self) -> bool {
        self.checkpoint().state().exists()
    }
}

/// `checkpoint/` of a run folder.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
}

impl Checkpoint {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn weights(&self) -> PathBuf {
        self.dir.join("weights.safetensors")
    }

    pub fn optimizer(&self) -> PathBuf {
        self.dir.join("optimizer.safetensors")
    }

    /// `state.json`, written last: it marks the checkpoint complete.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_file_of_a_run() {
        let r = RunDir::new("/runs/x");
        assert_eq!(r.weights(), Path::new("/runs/x/model.safetensors"));
        assert_eq!(r.card(), Path::new("/runs/x/model.json"));
        assert_eq!(r.report(), Path::new("/runs/x/report.json"));
        assert_eq!(r.metrics(), Path::new("/runs/x/metrics.jsonl"));
        assert_eq!(
            r.checkpoint().state(),
            Path::new("/runs/x/checkpoint/state.json")
        );
        assert_eq!(ARTIFACTS[..2], [WEIGHTS_FILE, CARD_FILE]);
    }
}
