//! The model card: what a saved model is and how to feed it.

use crate::network::NetConfig;
use crate::preprocess::PreprocessSpec;
use serde::{Deserialize, Serialize};

/// Version of the card's JSON layout.
pub const CARD_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: u32,
    /// Architecture name (`resnet18` / `xresnet18`), repeated from `net` for readers.
    pub arch: String,
    pub classes: Vec<String>,
    pub input_size: u32,
    pub net: NetConfig,
    pub preprocess: PreprocessSpec,
    /// Final validation metrics and anything else the trainer records.
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// Training options (recipe stages), free-form.
    #[serde(default)]
    pub training: serde_json::Value,
    #[serde(default)]
    pub created_at: String,
}

impl ModelCard {
    pub fn new(net: NetConfig, classes: Vec<String>, preprocess: PreprocessSpec) -> Self {
        Self {
            format: CARD_FORMAT,
            arch: net.arch.as_str().to_string(),
            input_size: preprocess.size,
            classes,
            net,
            preprocess,
            metrics: serde_json::Value::Null,
            training: serde_json::Value::Null,
            created_at: String::new(),
        }
    }
}
