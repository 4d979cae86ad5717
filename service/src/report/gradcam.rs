//! Grad-CAM: which regions of the last feature map drive a class score.
//!
//! The class score's gradient with respect to the last convolutional feature
//! map, averaged over space, weights the channels; the ReLU of the weighted sum
//! is the heatmap (Selvaraju et al., 2017), then upsampled and overlaid.

use candle_core::{DType, Result, Tensor, Var, D};
use cxr_models::Network;

#[derive(Debug, Clone)]
pub struct GradCam {
    pub class: usize,
    pub probs: Vec<f32>,
    /// Heatmap at feature-map resolution, scaled to 0..1, row-major.
    pub cam: Vec<f32>,
    pub h: usize,
    pub w: usize,
}

/// Why a heatmap cannot be drawn over an image.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("expected {expected} gray pixels, got {got}")]
    Size { expected: usize, got: usize },
    #[error(transparent)]
    Png(#[from] super::plots::PlotError),
}

/// Grad-CAM for one image `[1, 3, S, S]`, for `class` or the predicted class
/// (runs the network; a server that already ran it uses [`gradcam_from_features`]).
pub fn gradcam(net: &Network, x: &Tensor, class: Option<usize>) -> Result<GradCam> {
    let feats = net.features_t(x, false)?;
    let logits = net.head_t(&feats, false)?.to_dtype(DType::F32)?;
    let probs = candle_nn::ops::softmax_last_dim(&logits)?
        .squeeze(0)?
        .to_vec1::<f32>()?;
    let class = class.unwrap_or_else(|| crate::learner::metrics::argmax(&probs));
    gradcam_from_features(net, &feats, class, probs)
}

/// Grad-CAM of `class` from the last feature map `[1, C, h, w]` of a forward
/// pass that already ran (and gave `probs`): only the head runs again, for
/// the class score's gradient.
pub fn gradcam_from_features(
    net: &Network,
    feats: &Tensor,
    class: usize,
    probs: Vec<f32>,
) -> Result<GradCam> {
    let fv = Var::from_tensor(&feats.detach().to_dtype(DType::F32)?)?;
    let logits = net.head_t(fv.as_tensor(), false)?;
    let score = logits.narrow(1, class, 1)?.sum_all()?;
    let grads = score.backward()?;
    let g = grads
        .get(fv.as_tensor())
        .ok_or_else(|| candle_core::Error::Msg("no gradient reached the feature map".into()))?;
    let (_, _, h, w) = fv.as_tensor().dims4()?;
    let weights = g.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?; // [1, C, 1, 1]
    let cam = fv
        .as_tensor()
        .broadcast_mul(&weights)?
        .sum(1)?
        .relu()?
        .reshape(h * w)?;
    let mut cam = cam.to_vec1::<f32>()?;
    let max = cam.iter().copied().fold(0.0f32, f32::max);
    if max > 0.0 {
        for v in &mut cam {
            *v /= max;
        }
    }
    Ok(GradCam {
        class,
        probs,
        cam,
        h,
        w,
    })
}

impl GradCam {
    /// The heatmap upsampled (bilinear) to `size x size`.
    pub fn upsampled(&self, size: u32) -> Vec<f32> {
        let s = size as usize;
        let mut out = vec![0.0; s * s];
        for y in 0..s {
            let fy =
                ((y as f32 + 0.5) * self.h as f32 / s as f32 - 0.5).clamp(0.0, (self.h - 1) as f32);
            let (y0, ty) = (fy.floor() as usize, fy - fy.floor());
            let y1 = (y0 + 1).min(self.h - 1);
            for x in 0..s {
                let fx = ((x as f32 + 0.5) * self.w as f32 / s as f32 - 0.5)
                    .clamp(0.0, (self.w - 1) as f32);
                let (x0, tx) = (fx.floor() as usize, fx - fx.floor());
                let x1 = (x0 + 1).min(self.w - 1);
                let v = |yy: usize, xx: usize| self.cam[yy * self.w + xx];
                out[y * s + x] = (v(y0, x0) * (1.0 - tx) + v(y0, x1) * tx) * (1.0 - ty)
                    + (v(y1, x0) * (1.0 - tx) + v(y1, x1) * tx) * ty;
            }
        }
        out
    }

    /// The heatmap (jet colours) blended over the grayscale model input, as PNG.
    pub fn overlay_png(
        &self,
        gray: &[u8],
        size: u32,
    ) -> std::result::Result<Vec<u8>, OverlayError> {
        let s = size as usize;
        if gray.len() != s * s {
            return Err(OverlayError::Size {
                expected: s * s,
                got: gray.len(),
            });
        }
        let heat = self.upsampled(size);
        let mut rgb = Vec::with_capacity(s * s * 3);
        for (g, h) in gray.iter().zip(&heat) {
            let (r, gg, b) = jet(*h);
            let a = 0.45 * h.sqrt();
            let base = f32::from(*g);
            rgb.push((base * (1.0 - a) + r * a) as u8);
            rgb.push((base * (1.0 - a) + gg * a) as u8);
            rgb.push((base * (1.0 - a) + b * a) as u8);
        }
        super::plots::encode_png_rgb(&rgb, size, size).map_err(OverlayError::Png)
    }
}

fn jet(t: f32) -> (f32, f32, f32) {
    let c = |x: f32| (1.5 - (4.0 * t - x).abs()).clamp(0.0, 1.0) * 255.0;
    (c(3.0), c(2.0), c(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};
    use cxr_models::head::HeadKind;
    use cxr_models::{Arch, NetConfig};

    /// Class 1 has a bright blob somewhere in the right half of the image,
    /// class 0 has none; the left half is noise in both. After a short
    /// training, the class-1 heatmap must weigh the right half more.
    #[test]
    fn gradcam_highlights_the_region_that_carries_the_class() {
        let s = 64usize;
        let n = 16;
        let mut data = vec![0f32; n * 3 * s * s];
        let mut labels = Vec::new();
        let mut seed = 3u32;
        for i in 0..n {
            let label = (i % 2) as u32;
            labels.push(label);
            let cx = 40.0 + ((i * 7) % 16) as f32;
            let cy = 12.0 + ((i * 11) % 40) as f32;
            for y in 0..s {
                for x in 0..s {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                    let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
                    let blob = if label == 1 {
                        3.0 * (-d2 / 30.0).exp()
                    } else {
                        0.0
                    };
                    for c in 0..3 {
                        data[((i * 3 + c) * s + y) * s + x] = blob + noise;
                    }
                }
            }
        }
        let x = Tensor::from_vec(data, (n, 3, s, s), &Device::Cpu).unwrap();
        let y = Tensor::from_vec(labels, n, &Device::Cpu).unwrap();
        let cfg = NetConfig {
            arch: Arch::Xresnet18,
            widths: [8, 16, 32, 32],
            n_classes: 2,
            head: HeadKind::Linear,
            head_hidden: 32,
        };
        let net = Network::new(cfg, &Device::Cpu, 5).unwrap();
        let vars: Vec<_> = net
            .param_groups()
            .into_iter()
            .flatten()
            .map(|p| p.var)
            .collect();
        let mut opt = AdamW::new(
            vars,
            ParamsAdamW {
                lr: 3e-3,
                weight_decay: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        for _ in 0..25 {
            let l = candle_nn::loss::cross_entropy(&net.forward_t(&x, true).unwrap(), &y).unwrap();
            opt.backward_step(&l).unwrap();
        }
        // Let the BN running statistics catch up with the trained weights.
        for _ in 0..30 {
            net.forward_t(&x, true).unwrap();
        }
        let acc = net
            .forward_t(&x, false)
            .unwrap()
            .argmax(D::Minus1)
            .unwrap()
            .eq(&y)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            acc >= 0.9,
            "the network did not learn the blob (eval accuracy {acc})"
        );
        let (mut right_wins, mut total) = (0, 0);
        for i in (1..n).step_by(2) {
            let g = gradcam(&net, &x.narrow(0, i, 1).unwrap(), Some(1)).unwrap();
            assert_eq!(g.probs.len(), 2);
            assert!(g.cam.iter().all(|v| (0.0..=1.0).contains(v)));
            let up = g.upsampled(s as u32);
            let (mut left, mut right) = (0.0f32, 0.0f32);
            for (k, v) in up.iter().enumerate() {
                if k % s < s / 2 {
                    left += v;
                } else {
                    right += v;
                }
            }
            total += 1;
            if right > left {
                right_wins += 1;
            }
        }
        assert!(
            right_wins * 4 >= total * 3,
            "Grad-CAM favours the blob's half in only {right_wins}/{total} images"
        );
        let _ = DType::F32;
    }
}
