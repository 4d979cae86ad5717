//! The error of weight I/O (import, export, cxr's model files).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{0}: no such file")]
    NotFound(PathBuf),
    #[error("{0}: {1}")]
    Io(PathBuf, String),
    #[error("{0}: unsupported weights file; expected .pth, .pt, .safetensors or .onnx")]
    UnknownExtension(PathBuf),
    #[error("{path}: not a ResNet18 checkpoint: {reason}")]
    WrongArchitecture { path: PathBuf, reason: String },
    #[error("{path}: shape mismatch for {name}: the network expects {expected:?}, the file has {found:?}")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: could not read weights: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("invalid model: {0}")]
    Format(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
