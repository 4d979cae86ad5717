//! cxr-models: the networks cxr trains (ResNet18 with torchvision's names,
//! fastai's XResNet18 and transfer head), their weight I/O (torchvision `.pth`,
//! `.safetensors`, ONNX import and export, cxr's own model files), and the
//! preprocessing contract shared with the browser.
//!
//! Without the default `nn` feature only [`preprocess`] is built: that part has
//! no candle dependency and compiles for `wasm32-unknown-unknown`.

pub mod preprocess;

#[cfg(feature = "nn")]
pub mod head;
#[cfg(feature = "nn")]
pub mod kernels;
#[cfg(feature = "nn")]
pub mod layers;
#[cfg(feature = "nn")]
pub mod network;
#[cfg(feature = "nn")]
pub mod params;
#[cfg(feature = "nn")]
pub mod resnet;
#[cfg(feature = "nn")]
pub mod xresnet;

#[cfg(feature = "nn")]
pub use network::{Arch, NetConfig, Network};
#[cfg(feature = "nn")]
pub mod weights;
