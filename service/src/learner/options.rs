//! The learner's options and its activation precision.

use candle_core::DType;
use serde::{Deserialize, Serialize};

/// Activation dtype of the forward/backward pass; master weights stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrecisionError {
    #[error("precision {0:?} needs a GPU (--device cuda): candle's CPU convolutions have no half-precision kernels; use f32 on the CPU")]
    NeedsGpu(Precision),
    #[error("unknown precision {0:?} (expected f32, bf16 or f16)")]
    Unknown(String),
}

impl Precision {
    /// Half precision needs a GPU: candle's CPU convolutions have no bf16/f16 kernels.
    pub fn check_device(&self, device: &candle_core::Device) -> Result<(), PrecisionError> {
        if *self != Precision::F32 && device.is_cpu() {
            return Err(PrecisionError::NeedsGpu(*self));
        }
        Ok(())
    }

    pub fn dtype(&self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = PrecisionError;
    fn from_str(s: &str) -> Result<Self, PrecisionError> {
        match s {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" | "fp16" => Ok(Precision::F16),
            _ => Err(PrecisionError::Unknown(s.to_string())),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LearnerOptions {
    pub wd: f64,
    /// Label-smoothing epsilon (0 = plain cross-entropy; fastai's is 0.1).
    pub label_smoothing: f64,
    /// Mixup alpha (None = off; fastai's is 0.4).
    pub mixup: Option<f64>,
    pub precision: Precision,
    pub seed: u64,
}

impl Default for LearnerOptions {
    fn default() -> Self {
        Self {
            wd: 0.01,
            label_smoothing: 0.0,
            mixup: None,
            precision: Precision::F32,
            seed: 42,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_errors_keep_their_messages() {
        let e = Precision::F16
            .check_device(&candle_core::Device::Cpu)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "precision F16 needs a GPU (--device cuda): candle's CPU convolutions have no half-precision kernels; use f32 on the CPU"
        );
        assert!(Precision::F32
            .check_device(&candle_core::Device::Cpu)
            .is_ok());
        let e = "f8".parse::<Precision>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown precision \"f8\" (expected f32, bf16 or f16)"
        );
        assert_eq!("fp16".parse::<Precision>(), Ok(Precision::F16));
    }
}
