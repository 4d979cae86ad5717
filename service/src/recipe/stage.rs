//! One stage of a recipe: the options of one `cxr train` run. The same type
//! is the CLI's flags (clap), a TOML `[[stage]]` table and a job's JSON stage:
//! its keys are the flags in snake_case, and its defaults are written once.

use super::RecipeError;
use crate::learner::{LrSpec, Precision};
use cxr_models::Arch;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Free-form label shown in logs and reports.
    #[serde(default)]
    #[arg(skip)]
    pub name: Option<String>,
    /// A stage kept in the recipe for reference but not run (the baseline).
    #[serde(default)]
    #[arg(skip)]
    pub skip: bool,
    /// Network: xresnet18 (from scratch) or resnet18 (ImageNet body with --pretrained).
    #[serde(default = "d_arch")]
    #[arg(long, default_value_t = d_arch())]
    pub arch: Arch,
    /// ImageNet weights for resnet18 (.pth, .safetensors or .onnx).
    #[serde(default)]
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    /// Input size of the model (random-resized crop to this side).
    #[serde(default = "d_size")]
    #[arg(long, default_value_t = d_size())]
    pub size: u32,
    /// Presize: images are squish-resized to this side once, before augmentation.
    #[serde(default = "d_presize")]
    #[arg(long, default_value_t = d_presize())]
    pub presize: u32,
    #[serde(default = "d_epochs")]
    #[arg(long, default_value_t = d_epochs())]
    pub epochs: usize,
    /// Batch size.
    #[serde(default = "d_bs")]
    #[arg(long, default_value_t = d_bs())]
    pub bs: usize,
    /// One learning rate, or lo..hi spread over the parameter groups.
    #[serde(default = "d_lr")]
    #[arg(long, default_value_t = d_lr(), allow_hyphen_values = true)]
    pub lr: LrSpec,
    /// Train only the head (and the body's batch norms).
    #[serde(default)]
    #[arg(long)]
    pub freeze: bool,
    /// Times the minority class appears in training (3 = NORMAL three times).
    #[serde(default)]
    #[arg(long)]
    pub oversample: Option<usize>,
    /// Merge the (tiny) validation set into the test set and validate on both.
    #[serde(default)]
    #[arg(long)]
    pub merge_val_test: bool,
    /// Normalise with the training data's statistics.
    #[serde(default)]
    #[arg(long)]
    pub normalize: bool,
    /// `true` = fastai's 0.1, or a number.
    #[serde(default)]
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true")]
    pub label_smoothing: Smoothing,
    /// `true` = fastai's alpha 0.4, or a number.
    #[serde(default)]
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true")]
    pub mixup: Smoothing,
    #[serde(default = "d_seed")]
    #[arg(long, default_value_t = d_seed())]
    pub seed: u64,
    /// f32, or bf16/f16 (mixed precision, GPU only).
    #[serde(default)]
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Weight decay (AdamW).
    #[serde(default = "d_wd")]
    #[arg(long, default_value_t = d_wd())]
    pub wd: f64,
    /// Run lr_find before fitting and write `lr_find.png`.
    #[serde(default)]
    #[arg(long)]
    pub lr_find: bool,
}

/// A trick that is off, on with fastai's value, or on with a given value
/// (`false`, `true` or a number in TOML, JSON and on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Smoothing {
    #[default]
    Off,
    /// On, with the trick's default (fastai's).
    On,
    Value(f64),
}

impl Smoothing {
    /// The value to use, `default` for [`Smoothing::On`]; `None` when off.
    pub fn value(&self, default: f64) -> Option<f64> {
        match *self {
            Smoothing::Off => None,
            Smoothing::On => Some(default),
            Smoothing::Value(v) => Some(v),
        }
    }
}

impl std::str::FromStr for Smoothing {
    type Err = RecipeError;
    fn from_str(s: &str) -> Result<Self, RecipeError> {
        match s {
            "false" => Ok(Smoothing::Off),
            "true" => Ok(Smoothing::On),
            n => n
                .parse()
                .map(Smoothing::Value)
                .map_err(|_| RecipeError::Value(format!("{s:?} is not true, false or a number"))),
        }
    }
}

impl std::fmt::Display for Smoothing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Smoothing::Off => f.write_str("false"),
            Smoothing::On => f.write_str("true"),
            Smoothing::Value(v) => write!(f, "{v}"),
        }
    }
}

impl Serialize for Smoothing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Smoothing::Off => s.serialize_bool(false),
            Smoothing::On => s.serialize_bool(true),
            Smoothing::Value(v) => s.serialize_f64(v),
        }
    }
}

impl<'de> Deserialize<'de> for Smoothing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            B(bool),
            N(f64),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::B(false) => Smoothing::Off,
            Raw::B(true) => Smoothing::On,
            Raw::N(v) => Smoothing::Value(v),
        })
    }
}

fn d_arch() -> Arch {
    Arch::Xresnet18
}
fn d_size() -> u32 {
    224
}
fn d_presize() -> u32 {
    512
}
fn d_epochs() -> usize {
    5
}
fn d_bs() -> usize {
    32
}
fn d_lr() -> LrSpec {
    LrSpec::Single(3e-3)
}
fn d_seed() -> u64 {
    42
}
fn d_wd() -> f64 {
    0.01
}

impl Default for Stage {
    fn default() -> Self {
        serde_json::from_str("{}")
            .unwrap_or_else(|_| unreachable!("all stage fields have defaults"))
    }
}

impl Stage {
    /// The stage's label: its name, or "stage".
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| "stage".into())
    }

    /// Checks the options a user may get wrong, with messages naming the option.
    pub fn validate(&self) -> Result<(), RecipeError> {
        self.check().map_err(|Problem(msg)| RecipeError::Stage {
            stage: self.label(),
            msg,
        })
    }

    fn check(&self) -> Result<(), Problem> {
        let range = |name: &str, v: usize, lo: usize, hi: usize, what: &str| {
            if v < lo || v > hi {
                Err(Problem(format!(
                    "{name} must be between {lo} and {hi}{what}, got {v}"
                )))
            } else {
                Ok(())
            }
        };
        range("epochs", self.epochs, 1, 1000, "")?;
        range("bs (batch size)", self.bs, 2, 4096, "")?;
        range("size", self.size as usize, 32, 1024, " pixels")?;
        if self.presize < self.size || self.presize > 2048 {
            return Err(Problem(format!(
                "presize must be at least size ({}) and at most 2048, got {}",
                self.size, self.presize
            )));
        }
        self.lr.validate().map_err(|e| Problem(e.to_string()))?;
        if let Some(k) = self.oversample {
            range("oversample", k, 1, 20, "")?;
        }
        self.check_regularisation()?;
        if self.pretrained.is_some() && self.arch != Arch::Resnet18 {
            return Err("pretrained weights are available for resnet18 only".into());
        }
        if self.freeze && self.pretrained.is_none() && self.arch == Arch::Xresnet18 {
            return Err("freeze needs a pretrained body; xresnet18 trains from scratch".into());
        }
        Ok(())
    }

    fn check_regularisation(&self) -> Result<(), Problem> {
        if !(0.0..1.0).contains(&self.wd) {
            return Err(Problem(format!("wd must be in [0, 1), got {}", self.wd)));
        }
        if let Some(v) = self.label_smoothing.value(0.1) {
            if !(0.0..1.0).contains(&v) {
                return Err(Problem(format!(
                    "label_smoothing must be in [0, 1), got {v}"
                )));
            }
        }
        if let Some(v) = self.mixup.value(0.4) {
            if !(v > 0.0 && v <= 10.0) {
                return Err(Problem(format!("mixup alpha must be in (0, 10], got {v}")));
            }
        }
        Ok(())
    }
}

/// What is wrong with one option of a stage (the stage's name is added by
/// [`Stage::validate`]).
struct Problem(String);

impl From<&str> for Problem {
    fn from(s: &str) -> Self {
        Problem(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        stage: Stage,
    }

    #[test]
    fn stage_keys_are_the_api_contract() {
        let s: Stage = serde_json::from_str(
            r#"{"arch": "xresnet18", "size": 64, "presize": 96, "epochs": 1, "bs": 16, "lr": 0.003,
                "oversample": 3, "merge_val_test": true, "normalize": true, "seed": 42,
                "label_smoothing": true, "mixup": 0.4, "precision": "bf16", "freeze": false}"#,
        )
        .unwrap();
        assert_eq!(s.size, 64);
        assert_eq!(s.label_smoothing.value(0.1), Some(0.1));
        assert_eq!(s.mixup.value(0.4), Some(0.4));
        s.validate().unwrap();
    }

    #[test]
    fn flag_defaults_are_the_stage_defaults() {
        let f = Flags::try_parse_from(["cxr"]).unwrap();
        assert_eq!(f.stage, Stage::default());
    }

    #[test]
    fn flags_parse_into_the_same_stage_as_json() {
        let f = Flags::try_parse_from([
            "cxr",
            "--arch",
            "resnet18",
            "--size",
            "64",
            "--presize",
            "96",
            "--lr",
            "1e-4..1e-3",
            "--mixup",
            "--label-smoothing",
            "0.2",
            "--oversample",
            "3",
            "--normalize",
        ])
        .unwrap();
        let j: Stage = serde_json::from_str(
            r#"{"arch": "resnet18", "size": 64, "presize": 96, "lr": "1e-4..1e-3",
                "mixup": true, "label_smoothing": 0.2, "oversample": 3, "normalize": true}"#,
        )
        .unwrap();
        assert_eq!(f.stage, j);
        assert!(Flags::try_parse_from(["cxr", "--mixup", "often"]).is_err());
        assert!(Flags::try_parse_from(["cxr", "--lr", "-1"]).is_err());
    }

    #[test]
    fn invalid_options_are_rejected_with_the_option_name() {
        let bad = |j: &str| -> String {
            match serde_json::from_str::<Stage>(j) {
                Err(e) => e.to_string(),
                Ok(s) => s.validate().unwrap_err().to_string(),
            }
        };
        assert!(bad(r#"{"epochs": 0}"#).contains("epochs"));
        assert!(bad(r#"{"lr": -0.1}"#).contains("learning rate"));
        assert!(bad(r#"{"arch": "vgg16"}"#).contains("vgg16"));
        assert!(bad(r#"{"bs": 1}"#).contains("bs"));
        assert!(bad(r#"{"size": 64, "presize": 32}"#).contains("presize"));
        assert!(bad(r#"{"colour": true}"#).contains("colour"));
    }
}
