//! Weight I/O: pretrained files users download (torchvision `.pth`,
//! timm/HF `.safetensors`, ONNX exports) and cxr's own fine-tuned model files
//! (safetensors plus a JSON model card), and export to ONNX.

mod card;
mod error;
mod import;
mod onnx_export;
mod onnx_import;
mod store;

pub use card::{ModelCard, CARD_FORMAT};
pub use error::WeightsError;
pub use import::{load_pretrained, read_tensors, LoadReport};
pub use onnx_export::export_onnx;
pub use onnx_import::read_onnx_resnet18;
pub use store::{load_model, save_model, CARD_FILE, WEIGHTS_FILE};
