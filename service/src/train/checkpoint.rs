//! `checkpoint/` of a run folder: the network, the optimizer and where the
//! run was after its last completed epoch, for `--resume`.

use super::run_dir::{write_json, Checkpoint, FileError};
use super::TrainError;
use crate::learner::optim::AdamW;
use crate::learner::Learner;
use crate::learner::OptState;
use crate::recipe::Recipe;
use candle_core::{Device, Tensor};
use cxr_models::preprocess::Normalize;
use cxr_models::weights::read_tensors;
use cxr_models::{NetConfig, Network};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What `checkpoint/state.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Index into the recipe's stages of the stage in progress.
    pub stage: usize,
    /// Epochs of that stage completed.
    pub epochs_done: usize,
    pub net: NetConfig,
    /// The run's normalisation (JSON keys `mean` and `std`).
    #[serde(flatten)]
    pub norm: Normalize,
    pub opt_step: u64,
    pub recipe: Recipe,
}

/// A checkpoint read back: the state, the network with its weights and the
/// optimizer's state.
pub struct Restored {
    pub state: CheckpointState,
    pub net: Network,
    pub opt: OptState,
}

impl Checkpoint {
    /// Writes the learner's weights, the optimizer's state and, last (it marks
    /// the checkpoint complete), `state.json`.
    pub fn save(
        &self,
        l: &Learner,
        opt: &AdamW,
        mut state: CheckpointState,
    ) -> Result<(), TrainError> {
        let dir = self.dir();
        std::fs::create_dir_all(dir).map_err(|e| FileError::new(dir, e))?;
        l.net.params().save_safetensors(&self.weights())?;
        let (tensors, step) = opt.state()?;
        state.opt_step = step;
        let tmp = dir.join("optimizer.safetensors.tmp");
        let tensors: HashMap<String, Tensor> = tensors;
        candle_core::safetensors::save(&tensors, &tmp)?;
        std::fs::rename(&tmp, self.optimizer()).map_err(|e| FileError::new(dir, e))?;
        Ok(write_json(&self.state(), &state)?)
    }

    /// Reads the checkpoint back onto `device`.
    pub fn restore(&self, device: &Device) -> Result<Restored, TrainError> {
        let p = self.state();
        let text = std::fs::read_to_string(&p)
            .map_err(|e| FileError::new(&p, format!("no checkpoint to resume from ({e})")))?;
        let state: CheckpointState =
            serde_json::from_str(&text).map_err(|e| FileError::new(&p, e))?;
        let net = Network::new(state.net.clone(), device, 0)?;
        for (n, t) in &read_tensors(&self.weights())? {
            net.params().set(n, t)?;
        }
        let tensors = candle_core::safetensors::load(self.optimizer(), device)?;
        let opt = OptState {
            tensors,
            step: state.opt_step,
        };
        Ok(Restored { state, net, opt })
    }
}
