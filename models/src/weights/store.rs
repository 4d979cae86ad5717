//! cxr's own model files: `model.safetensors` + `model.json` in a directory,
//! each written to a temporary name and renamed, so a crash never leaves a
//! half-written model.

use super::card::{ModelCard, CARD_FORMAT};
use super::error::WeightsError;
use super::import::read_tensors;
use crate::network::Network;
use candle_core::Device;
use std::path::Path;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CARD_FILE: &str = "model.json";

/// Writes `dir/model.safetensors` and `dir/model.json` atomically (per file).
pub fn save_model(net: &Network, card: &ModelCard, dir: &Path) -> Result<(), WeightsError> {
    std::fs::create_dir_all(dir).map_err(|e| WeightsError::Io(dir.to_path_buf(), e.to_string()))?;
    net.params().save_safetensors(&dir.join(WEIGHTS_FILE))?;
    let json = serde_json::to_vec_pretty(card).map_err(|e| WeightsError::Format(e.to_string()))?;
    let tmp = dir.join("model.json.tmp");
    std::fs::write(&tmp, json).map_err(|e| WeightsError::Io(tmp.clone(), e.to_string()))?;
    std::fs::rename(&tmp, dir.join(CARD_FILE))
        .map_err(|e| WeightsError::Io(dir.join(CARD_FILE), e.to_string()))?;
    Ok(())
}

/// Loads a model directory written by [`save_model`].
pub fn load_model(dir: &Path, device: &Device) -> Result<(Network, ModelCard), WeightsError> {
    let card_path = dir.join(CARD_FILE);
    let text = std::fs::read_to_string(&card_path)
        .map_err(|e| WeightsError::Io(card_path.clone(), e.to_string()))?;
    let card: ModelCard = serde_json::from_str(&text)
        .map_err(|e| WeightsError::Format(format!("{}: {e}", card_path.display())))?;
    if card.format != CARD_FORMAT {
        return Err(WeightsError::Format(format!(
            "{}: model card format {} is not supported (expected {CARD_FORMAT})",
            card_path.display(),
            card.format
        )));
    }
    if card.classes.len() != card.net.n_classes {
        return Err(WeightsError::Format(format!(
            "{}: {} class names for a {}-class network",
            card_path.display(),
            card.classes.len(),
            card.net.n_classes
        )));
    }
    let net = Network::new(card.net.clone(), device, 0)?;
    let tensors = read_tensors(&dir.join(WEIGHTS_FILE))?;
    let mut missing = Vec::new();
    for name in net.params().names() {
        match tensors.iter().find(|(n, _)| n == name) {
            Some((_, t)) => net.params().set(name, t)?,
            None => missing.push(name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(WeightsError::Format(format!(
            "{}: {} tensors missing (first: {})",
            dir.join(WEIGHTS_FILE).display(),
            missing.len(),
            missing[0]
        )));
    }
    Ok((net, card))
}
