//! A trained model ready to predict: the network, its card, and the
//! preprocessing contract applied to incoming bytes.

use crate::report::gradcam::{gradcam, GradCam};
use candle_core::{Device, Tensor};
use cxr_models::preprocess::{
    normalize, preprocess_u8, DecodeLimits, PreprocessError, PreprocessSpec,
};
use cxr_models::weights::{load_model, ModelCard, WeightsError};
use cxr_models::Network;
use std::path::{Path, PathBuf};

pub struct Predictor {
    pub net: Network,
    pub card: ModelCard,
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error(transparent)]
    Model(#[from] candle_core::Error),
}

impl Predictor {
    pub fn load(dir: &Path, device: &Device) -> Result<Self, WeightsError> {
        let (net, card) = load_model(dir, device)?;
        card.preprocess
            .validate()
            .map_err(|e| WeightsError::Format(e.to_string()))?;
        Ok(Self {
            // Its weights never change: pack them for the CPU kernels once.
            net: net.freeze(),
            card,
            dir: dir.to_path_buf(),
        })
    }

    pub fn spec(&self) -> &PreprocessSpec {
        &self.card.preprocess
    }

    pub fn classes(&self) -> &[String] {
        &self.card.classes
    }

    /// Encoded image -> the model's u8 grayscale input (the shared contract).
    pub fn gray(&self, bytes: &[u8], limits: DecodeLimits) -> Result<Vec<u8>, PreprocessError> {
        preprocess_u8(bytes, self.spec(), limits)
    }

    fn batch_tensor(&self, grays: &[&[u8]]) -> Result<Tensor, PredictError> {
        let s = self.spec().size as usize;
        let mut data = Vec::with_capacity(grays.len() * 3 * s * s);
        for g in grays {
            data.extend(normalize(g, self.spec())?);
        }
        Ok(Tensor::from_vec(
            data,
            (grays.len(), 3, s, s),
            self.net.device(),
        )?)
    }

    /// Class probabilities for a batch of preprocessed grayscale inputs, in one forward pass.
    pub fn predict_gray(&self, grays: &[&[u8]]) -> Result<Vec<Vec<f32>>, PredictError> {
        if grays.is_empty() {
            return Ok(Vec::new());
        }
        let x = self.batch_tensor(grays)?;
        Ok(self.net.predict_proba(&x)?.to_vec2::<f32>()?)
    }

    /// Probabilities plus a Grad-CAM overlay (PNG) for the predicted class.
    pub fn explain(&self, gray: &[u8]) -> Result<(GradCam, Vec<u8>), PredictError> {
        let x = self.batch_tensor(&[gray])?;
        let g = gradcam(&self.net, &x, None)?;
        let png = g
            .overlay_png(gray, self.spec().size)
            .map_err(|e| PredictError::Model(candle_core::Error::Msg(e)))?;
        Ok((g, png))
    }
}
