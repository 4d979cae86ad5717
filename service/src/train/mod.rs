//! The training wing: a recipe becomes a run folder.
//!
//! - [`run`]: the orchestration (check, resume, the stages in order, the model and reports);
//! - [`stage`]: what one stage does (data, normalisation, network, lr_find, fit);
//! - [`checkpoint`]: `checkpoint/` for `--resume`;
//! - [`run_dir`]: [`RunDir`], every file name of a run folder.
//!
//! A run folder holds `metrics.jsonl`, `report.json`, `model.safetensors`,
//! `model.json`, `losses.png`, `confusion_matrix.png`, `lr_find.png` (when
//! asked) and `checkpoint/` (the last completed epoch).

pub mod checkpoint;
pub mod run;
pub mod run_dir;
pub mod stage;

pub use run::run_recipe;
pub use run_dir::{write_json, Checkpoint, FileError, MetricsLine, RunDir, ARTIFACTS};

use crate::learner::FitError;
use crate::learner::{Event, Report};
use candle_core::Device;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("invalid recipe: {0}")]
    Recipe(#[from] crate::recipe::RecipeError),
    #[error(transparent)]
    Device(#[from] crate::learner::PrecisionError),
    #[error("pretrained weights {path} not found. Fetch them on a machine with internet access with `scripts/fetch-weights.sh` (torchvision ResNet18 IMAGENET1K_V1), then copy the file to {path} or pass --pretrained FILE")]
    MissingWeights { path: PathBuf },
    #[error(transparent)]
    Weights(#[from] cxr_models::weights::WeightsError),
    #[error("training was cancelled")]
    Cancelled,
    #[error(transparent)]
    Fit(FitError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Plot(#[from] crate::report::plots::PlotError),
    #[error("the checkpoint is at stage {0}, which the recipe does not have")]
    CheckpointStage(usize),
    #[error("no stage ran")]
    NoStageRan,
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<FitError> for TrainError {
    fn from(e: FitError) -> Self {
        match e {
            FitError::Cancelled => TrainError::Cancelled,
            FitError::Candle(c) => TrainError::Candle(c),
            other => TrainError::Fit(other),
        }
    }
}

/// Progress of a whole run, as the CLI and the job runner see it.
#[derive(Debug, Clone)]
pub enum RunEvent {
    Message(String),
    StageStart {
        stage: usize,
        stages: usize,
        name: String,
        epochs: usize,
    },
    Learner {
        stage: usize,
        event: Event,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub report: Report,
    pub metrics: Vec<MetricsLine>,
    pub seconds: f64,
}

pub struct RunOptions<'a> {
    pub device: Device,
    pub resume: bool,
    pub workers: usize,
    pub hook: &'a mut dyn FnMut(&RunEvent) -> bool,
}

/// Whether `run_dir` holds a checkpoint that `--resume` can continue.
pub fn has_checkpoint(run_dir: &Path) -> bool {
    RunDir::new(run_dir).has_checkpoint()
}
