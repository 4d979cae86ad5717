//! A run folder: every file a training run, a job or a registered model
//! writes, named in one place.

use crate::learner::EpochMetrics;
use cxr_models::weights::{CARD_FILE, WEIGHTS_FILE};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A file of a run folder that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct FileError {
    pub path: PathBuf,
    pub msg: String,
}

impl FileError {
    pub fn new(path: &Path, e: impl std::fmt::Display) -> Self {
        Self {
            path: path.to_path_buf(),
            msg: e.to_string(),
        }
    }
}

/// One line of `metrics.jsonl`: an epoch of a stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsLine {
    pub stage: usize,
    pub stage_name: String,
    pub size: u32,
    #[serde(flatten)]
    pub metrics: EpochMetrics,
}

/// Writes `value` as pretty JSON to a temporary name, then renames it into place.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), FileError> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value).map_err(|e| FileError::new(path, e))?;
    std::fs::write(&tmp, text).map_err(|e| FileError::new(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| FileError::new(path, e))
}

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

    /// Creates the folder (and its parents).
    pub fn create(&self) -> Result<(), FileError> {
        std::fs::create_dir_all(&self.root).map_err(|e| FileError::new(&self.root, e))
    }

    /// The lines of `metrics.jsonl` (none when it is missing; unreadable lines skipped).
    pub fn read_metrics(&self) -> Vec<MetricsLine> {
        std::fs::read_to_string(self.metrics())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Appends one line to `metrics.jsonl`.
    pub fn append_metrics(&self, line: &MetricsLine) -> Result<(), FileError> {
        let path = self.metrics();
        let text = serde_json::to_string(line).map_err(|e| FileError::new(&path, e))?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{text}"))
            .map_err(|e| FileError::new(&path, e))
    }

    /// Starts a fresh run: removes `metrics.jsonl` of an earlier one.
    pub fn clear_metrics(&self) {
        let _ = std::fs::remove_file(self.metrics());
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
