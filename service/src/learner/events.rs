//! What a fit reports (epoch metrics, events, lr_find's result) and how it fails.

use super::schedule::LrSuggestions;
use serde::{Deserialize, Serialize};

/// One row of the metrics table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub valid_loss: f64,
    pub accuracy: f64,
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    pub auc: f64,
    pub seconds: f64,
    pub images_per_s: f64,
}

/// What the learner reports while it runs. A hook returning `false` cancels.
#[derive(Debug, Clone)]
pub enum Event {
    EpochStart {
        epoch: usize,
        epochs: usize,
        iters: usize,
    },
    Batch {
        epoch: usize,
        iter: usize,
        iters: usize,
        loss: f64,
        lr: f64,
    },
    Epoch(EpochMetrics),
}

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("cancelled")]
    Cancelled,
    #[error("training diverged: the loss became {0} (try a lower learning rate)")]
    Diverged(f64),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// lr_find met an epoch without a single training batch.
    #[error("no training batches")]
    NoTrainBatches,
    /// The checkpoint callback's closure failed.
    #[error(transparent)]
    Checkpoint(Box<dyn std::error::Error + Send + Sync>),
}

#[derive(Debug, Clone, Serialize)]
pub struct LrFindResult {
    pub lrs: Vec<f64>,
    pub losses: Vec<f64>,
    pub suggestions: Option<LrSuggestions>,
}
