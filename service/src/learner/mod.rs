//! The learner: fastai's training loop on a cxr network.
//!
//! - [`schedule`]: one-cycle and lr_find schedules, lr suggestions;
//! - [`optim`]: AdamW with parameter groups;
//! - [`loss`]: cross-entropy, label smoothing, mixup;
//! - [`metrics`]: accuracy, F1, precision, recall, AUC, confusion matrix, report;
//! - [`options`]: the learner's options and activation precision;
//! - `base`: the [`Learner`] (network, options, parameter groups, validation);
//! - `events`: what a fit reports and how it fails;
//! - [`fit`]: the one training loop `fit`, and `fit_one_cycle` and `lr_find`
//!   assembled from callbacks;
//! - [`callback`]: the hooks the loop calls, and the state they share;
//! - [`callbacks`]: the tricks as callbacks (mixup, label smoothing, loss
//!   scaling, one-cycle, recording, checkpointing, progress/cancel, lr_find).

mod base;
pub mod callback;
pub mod callbacks;
mod events;
pub mod fit;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod options;
pub mod schedule;
#[cfg(test)]
mod testutil;

pub use base::{Learner, LossScale, OptState, Validation};
pub use callback::{BatchState, Callback, FitState, Halt, HookResult, StepHooks};
pub use callbacks::OptionCallbacks;
pub use events::{EpochMetrics, Event, FitError, LrFindResult};
pub use metrics::{report, Report};
pub use options::{LearnerOptions, Precision, PrecisionError};
pub use schedule::{even_mults, LrSuggestions, OneCycle};

/// Learning rate as given on the command line or in a recipe: one value for
/// every group, or `lo..hi` spread geometrically over the groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSpec {
    Single(f64),
    Range(f64, f64),
}

impl LrSpec {
    /// One learning rate per parameter group.
    pub fn per_group(&self, n: usize) -> Vec<f64> {
        match *self {
            LrSpec::Single(x) => vec![x; n],
            LrSpec::Range(a, b) => even_mults(a, b, n),
        }
    }

    pub fn max(&self) -> f64 {
        match *self {
            LrSpec::Single(x) => x,
            LrSpec::Range(_, b) => b,
        }
    }

    pub fn validate(&self) -> Result<(), LrSpecError> {
        let ok = |x: f64| x.is_finite() && x > 0.0 && x < 100.0;
        match *self {
            LrSpec::Single(x) if ok(x) => Ok(()),
            LrSpec::Range(a, b) if ok(a) && ok(b) && a <= b => Ok(()),
            _ => Err(LrSpecError::Invalid(*self)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LrSpecError {
    #[error("learning rate {0} is invalid: it must be positive and finite (a range lo..hi needs lo <= hi)")]
    Invalid(LrSpec),
    #[error("learning rate {0:?} is not a number or a range like 1e-6..1e-4")]
    NotANumber(String),
}

impl std::fmt::Display for LrSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LrSpec::Single(x) => write!(f, "{x:e}"),
            LrSpec::Range(a, b) => write!(f, "{a:e}..{b:e}"),
        }
    }
}

impl std::str::FromStr for LrSpec {
    type Err = LrSpecError;
    fn from_str(s: &str) -> Result<Self, LrSpecError> {
        let parse = |t: &str| {
            t.trim()
                .parse::<f64>()
                .map_err(|_| LrSpecError::NotANumber(s.to_string()))
        };
        let spec = match s.split_once("..") {
            Some((a, b)) => LrSpec::Range(parse(a)?, parse(b)?),
            None => LrSpec::Single(parse(s)?),
        };
        spec.validate()?;
        Ok(spec)
    }
}

impl serde::Serialize for LrSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LrSpec::Single(x) => s.serialize_f64(*x),
            LrSpec::Range(..) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for LrSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(x) => {
                let spec = LrSpec::Single(x);
                spec.validate().map_err(serde::de::Error::custom)?;
                Ok(spec)
            }
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_specs_parse_and_validate() {
        assert_eq!("3e-3".parse::<LrSpec>().unwrap(), LrSpec::Single(3e-3));
        assert_eq!(
            "1e-6..1e-4".parse::<LrSpec>().unwrap(),
            LrSpec::Range(1e-6, 1e-4)
        );
        assert!("-1".parse::<LrSpec>().is_err());
        assert!("1e-3..1e-5".parse::<LrSpec>().is_err());
        assert!("fast".parse::<LrSpec>().is_err());
        let v: LrSpec = serde_json::from_str("\"1e-6..1e-4\"").unwrap();
        assert_eq!(v.per_group(3).len(), 3);
        assert!(serde_json::from_str::<LrSpec>("-0.1").is_err());
    }
}
