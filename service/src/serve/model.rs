//! A trained model ready to serve: its card, its network with the weights
//! prepared once for the CPU kernels, and the preprocessing contract applied
//! to incoming bytes. The server, `cxr predict`, `evaluate` and `interpret`
//! all predict through this one type.

use super::prediction::Prediction;
use crate::report::gradcam::{gradcam_from_features, GradCam, OverlayError};
use candle_core::{DType, Device, Tensor};
use cxr_models::kernels::{hot_pool, inference_frozen, FrozenWeights};
use cxr_models::preprocess::{
    normalize, preprocess_u8, DecodeLimits, PreprocessError, PreprocessSpec,
};
use cxr_models::weights::{load_model, ModelCard, WeightsError};
use cxr_models::Network;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Model {
    /// The registry's id of the model (its folder's name outside the server).
    pub id: String,
    pub card: ModelCard,
    pub dir: PathBuf,
    net: Network,
    /// The convolution weights prepared for the inference kernels, once:
    /// they never change while the model is loaded.
    frozen: Arc<FrozenWeights>,
}

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error(transparent)]
    Model(#[from] candle_core::Error),
    #[error(transparent)]
    Overlay(#[from] OverlayError),
}

/// One input's result of a forward pass: class probabilities and, when asked
/// for, the Grad-CAM of the predicted class from the same pass (its failure
/// is this input's alone).
#[derive(Debug)]
pub struct Scores {
    pub probs: Vec<f32>,
    pub cam: Option<candle_core::Result<GradCam>>,
}

impl Model {
    pub fn load(dir: &Path, device: &Device) -> Result<Self, WeightsError> {
        let (net, card) = load_model(dir, device)?;
        card.preprocess
            .validate()
            .map_err(|e| WeightsError::Format(e.to_string()))?;
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            id,
            card,
            dir: dir.to_path_buf(),
            net,
            frozen: Arc::new(FrozenWeights::new()),
        })
    }

    /// The same model under the registry's id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    pub fn network(&self) -> &Network {
        &self.net
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

    /// The answer for one input's probabilities.
    pub fn prediction(&self, probs: &[f32]) -> Prediction {
        Prediction::new(self.classes(), probs)
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

    /// The forward pass in inference mode: the last feature map and the
    /// class probabilities (what `Network::predict_proba` computes, with the
    /// feature map kept for Grad-CAM).
    fn forward(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        hot_pool(self.net.device(), || {
            inference_frozen(&self.frozen, || {
                let feats = self.net.features_t(x, false)?;
                let logits = self.net.head_t(&feats, false)?.to_dtype(DType::F32)?;
                Ok((feats, candle_nn::ops::softmax_last_dim(&logits)?))
            })
        })
    }

    /// Class probabilities for a batch of preprocessed grayscale inputs, in one forward pass.
    pub fn predict_gray(&self, grays: &[&[u8]]) -> Result<Vec<Vec<f32>>, PredictError> {
        let all = vec![false; grays.len()];
        Ok(self
            .score(grays, &all)?
            .into_iter()
            .map(|s| s.probs)
            .collect())
    }

    /// One forward pass over a batch; the inputs flagged in `explain` also
    /// get the Grad-CAM of their predicted class, from that pass's feature
    /// map (only the head runs again, for the gradient).
    pub fn score(&self, grays: &[&[u8]], explain: &[bool]) -> Result<Vec<Scores>, PredictError> {
        if grays.is_empty() {
            return Ok(Vec::new());
        }
        let x = self.batch_tensor(grays)?;
        let (feats, probs) = self.forward(&x)?;
        let probs = probs.to_vec2::<f32>()?;
        let mut out = Vec::with_capacity(probs.len());
        for (i, p) in probs.into_iter().enumerate() {
            let cam = explain.get(i).copied().unwrap_or(false).then(|| {
                let class = crate::learner::metrics::argmax(&p);
                gradcam_from_features(&self.net, &feats.narrow(0, i, 1)?, class, p.clone())
            });
            out.push(Scores { probs: p, cam });
        }
        Ok(out)
    }

    /// Probabilities plus a Grad-CAM overlay (PNG) for the predicted class.
    pub fn explain(&self, gray: &[u8]) -> Result<(GradCam, Vec<u8>), PredictError> {
        let scores = self.score(&[gray], &[true])?;
        let cam = scores
            .into_iter()
            .next()
            .and_then(|s| s.cam)
            .ok_or_else(|| candle_core::Error::Msg("no Grad-CAM came back".into()))??;
        let png = self.overlay(&cam, gray)?;
        Ok((cam, png))
    }

    /// A Grad-CAM blended over the input it explains, as PNG.
    pub fn overlay(&self, cam: &GradCam, gray: &[u8]) -> Result<Vec<u8>, PredictError> {
        Ok(cam.overlay_png(gray, self.spec().size)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::gradcam::gradcam;
    use cxr_models::head::HeadKind;
    use cxr_models::weights::save_model;
    use cxr_models::{Arch, NetConfig};

    fn saved_model(dir: &Path) -> Model {
        let cfg = NetConfig {
            arch: Arch::Resnet18,
            widths: [8, 16, 32, 32],
            n_classes: 2,
            head: HeadKind::Fastai,
            head_hidden: 16,
        };
        let net = Network::new(cfg.clone(), &Device::Cpu, 7).unwrap();
        let spec = PreprocessSpec::new(32, cxr_models::preprocess::Normalize::gray(0.5, 0.25));
        let card = ModelCard::new(cfg, vec!["NORMAL".into(), "PNEUMONIA".into()], spec);
        save_model(&net, &card, dir).unwrap();
        Model::load(dir, &Device::Cpu).unwrap()
    }

    fn images() -> Vec<Vec<u8>> {
        (0..3usize)
            .map(|i| {
                (0..32 * 32)
                    .map(|k| ((k * (i + 3) * 7 + k / 32 * 13) % 251) as u8)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn explaining_reuses_the_forward_pass_and_changes_no_probability() {
        let dir = tempfile::tempdir().unwrap();
        let m = saved_model(&dir.path().join("m1"));
        assert_eq!(m.id, "m1");
        let grays = images();
        let refs: Vec<&[u8]> = grays.iter().map(Vec::as_slice).collect();
        let plain = m.predict_gray(&refs).unwrap();
        // The network's own frozen prediction gives the same numbers.
        let (net, _) = load_model(dir.path().join("m1").as_path(), &Device::Cpu).unwrap();
        let x = m.batch_tensor(&refs).unwrap();
        let want = net
            .freeze()
            .predict_proba(&x)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(want, plain);
        // Grad-CAM for the middle input, from the same batch's pass.
        let scored = m.score(&refs, &[false, true, false]).unwrap();
        for (p, s) in plain.iter().zip(&scored) {
            assert_eq!(p, &s.probs);
        }
        assert!(scored[0].cam.is_none() && scored[2].cam.is_none());
        let cam = scored[1].cam.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(cam.probs, plain[1]);
        assert_eq!(cam.class, crate::learner::metrics::argmax(&plain[1]));
        // The same heatmap as Grad-CAM running the network itself.
        let x1 = m.batch_tensor(&refs[1..2]).unwrap();
        let reference = gradcam(m.network(), &x1, None).unwrap();
        assert_eq!(reference.class, cam.class);
        assert_eq!((reference.h, reference.w), (cam.h, cam.w));
        for (a, b) in reference.cam.iter().zip(&cam.cam) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
        // A lone explained image: a lone plain prediction's probabilities, and a PNG.
        let (lone_cam, png) = m.explain(refs[1]).unwrap();
        assert_eq!(lone_cam.probs, m.predict_gray(&refs[1..2]).unwrap()[0]);
        assert!(png.starts_with(b"\x89PNG"));
    }
}
