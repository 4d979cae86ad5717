//! Training recipes: one or more stages, each the options of one `cxr train`
//! run. The model carries over from stage to stage (same architecture).
//! Stage keys are the CLI flags in snake_case, in TOML (`--recipe FILE`) and in
//! the HTTP API's job requests.

use crate::learner::{LrSpec, Precision};
use cxr_models::Arch;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Free-form label shown in logs and reports.
    #[serde(default)]
    pub name: Option<String>,
    /// A stage kept in the recipe for reference but not run (the baseline).
    #[serde(default)]
    pub skip: bool,
    #[serde(default = "d_arch")]
    pub arch: Arch,
    /// ImageNet weights for the body (resnet18 only): .pth, .safetensors or .onnx.
    #[serde(default)]
    pub pretrained: Option<PathBuf>,
    #[serde(default = "d_size")]
    pub size: u32,
    #[serde(default = "d_presize")]
    pub presize: u32,
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    #[serde(default = "d_bs")]
    pub bs: usize,
    #[serde(default = "d_lr")]
    pub lr: LrSpec,
    #[serde(default)]
    pub freeze: bool,
    /// Times the minority class appears in training (3 = NORMAL three times).
    #[serde(default)]
    pub oversample: Option<usize>,
    #[serde(default)]
    pub merge_val_test: bool,
    #[serde(default)]
    pub normalize: bool,
    /// `true` = fastai's 0.1, or a number.
    #[serde(default)]
    pub label_smoothing: Smoothing,
    /// `true` = fastai's alpha 0.4, or a number.
    #[serde(default)]
    pub mixup: Smoothing,
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default)]
    pub precision: Precision,
    #[serde(default = "d_wd")]
    pub wd: f64,
    /// Run lr_find before fitting and write `lr_find.png`.
    #[serde(default)]
    pub lr_find: bool,
}

/// A boolean that may also carry a value: `true`, `false` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Smoothing(pub Option<f64>);

impl Smoothing {
    pub fn value(&self, default: f64) -> Option<f64> {
        self.0.map(|v| if v.is_nan() { default } else { v })
    }
}

impl Serialize for Smoothing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_bool(false),
            Some(v) if v.is_nan() => s.serialize_bool(true),
            Some(v) => s.serialize_f64(v),
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
            Raw::B(false) => Smoothing(None),
            Raw::B(true) => Smoothing(Some(f64::NAN)),
            Raw::N(v) => Smoothing(Some(v)),
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
    /// Checks the options a user may get wrong, with messages naming the option.
    pub fn validate(&self) -> Result<(), String> {
        let name = self.name.clone().unwrap_or_else(|| "stage".into());
        let err = |m: String| Err(format!("{name}: {m}"));
        if self.epochs == 0 || self.epochs > 1000 {
            return err(format!(
                "epochs must be between 1 and 1000, got {}",
                self.epochs
            ));
        }
        if self.bs < 2 || self.bs > 4096 {
            return err(format!(
                "bs (batch size) must be between 2 and 4096, got {}",
                self.bs
            ));
        }
        if self.size < 32 || self.size > 1024 {
            return err(format!(
                "size must be between 32 and 1024 pixels, got {}",
                self.size
            ));
        }
        if self.presize < self.size || self.presize > 2048 {
            return err(format!(
                "presize must be at least size ({}) and at most 2048, got {}",
                self.size, self.presize
            ));
        }
        self.lr.validate().map_err(|e| e.to_string()).or_else(err)?;
        if let Some(k) = self.oversample {
            if k == 0 || k > 20 {
                return err(format!("oversample must be between 1 and 20, got {k}"));
            }
        }
        if !(0.0..1.0).contains(&self.wd) {
            return err(format!("wd must be in [0, 1), got {}", self.wd));
        }
        if let Some(v) = self.label_smoothing.value(0.1) {
            if !(0.0..1.0).contains(&v) {
                return err(format!("label_smoothing must be in [0, 1), got {v}"));
            }
        }
        if let Some(v) = self.mixup.value(0.4) {
            if !(v > 0.0 && v <= 10.0) {
                return err(format!("mixup alpha must be in (0, 10], got {v}"));
            }
        }
        if self.pretrained.is_some() && self.arch != Arch::Resnet18 {
            return err("pretrained weights are available for resnet18 only".into());
        }
        if self.freeze && self.pretrained.is_none() && self.arch == Arch::Xresnet18 {
            return err("freeze needs a pretrained body; xresnet18 trains from scratch".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "stage", alias = "stages")]
    pub stages: Vec<Stage>,
}

impl Recipe {
    pub fn single(stage: Stage) -> Self {
        Self {
            name: "single".into(),
            description: String::new(),
            stages: vec![stage],
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let r: Recipe = toml::from_str(text).map_err(|e| e.to_string())?;
        r.validate()?;
        Ok(r)
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read recipe {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("recipe {}: {e}", path.display()))
    }

    pub fn validate(&self) -> Result<(), String> {
        let active: Vec<&Stage> = self.stages.iter().filter(|s| !s.skip).collect();
        if active.is_empty() {
            return Err("the recipe has no stage to run".into());
        }
        for s in &self.stages {
            s.validate()?;
        }
        if active[0].freeze && active[0].pretrained.is_none() {
            return Err("the first stage freezes the body but loads no pretrained weights".into());
        }
        Ok(())
    }

    /// Resolves relative `pretrained` paths against `base` (the recipe's folder or the cwd).
    pub fn resolve_paths(&mut self, base: &Path) {
        for s in &mut self.stages {
            if let Some(p) = &s.pretrained {
                if p.is_relative() && !p.exists() {
                    s.pretrained = Some(base.join(p));
                }
            }
        }
    }
}

/// The recipes shipped in `recipes/`, by name, compiled in.
pub fn builtin(name: &str) -> Option<&'static str> {
    match name {
        "seed" => Some(include_str!("../../recipes/seed.toml")),
        "cpu-quick" => Some(include_str!("../../recipes/cpu-quick.toml")),
        "bench" => Some(include_str!("../../recipes/bench.toml")),
        _ => None,
    }
}

pub const BUILTIN: [&str; 3] = ["seed", "cpu-quick", "bench"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_recipes_parse() {
        for n in BUILTIN {
            let r = Recipe::from_toml(builtin(n).unwrap()).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert!(!r.stages.is_empty());
        }
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
    fn invalid_options_are_rejected_with_the_option_name() {
        let bad = |j: &str| -> String {
            match serde_json::from_str::<Stage>(j) {
                Err(e) => e.to_string(),
                Ok(s) => s.validate().unwrap_err(),
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
