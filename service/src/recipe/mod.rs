//! Training recipes: one or more stages, each the options of one `cxr train`
//! run; the model carries over from stage to stage (same architecture).
//!
//! A [`Recipe`] is parsed and validated once, wherever it comes from (CLI
//! flags, a TOML file or built-in, a job's JSON): every value of the type is
//! valid, and deserialising one validates it.

mod request;
mod stage;

pub use request::{RecipeRequest, RecipeSource};
pub use stage::{Smoothing, Stage};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Why a recipe was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecipeError {
    #[error("{stage}: {msg}")]
    Stage { stage: String, msg: String },
    #[error("the recipe has no stage to run")]
    NoStage,
    #[error("the first stage freezes the body but loads no pretrained weights")]
    FreezeWithoutWeights,
    #[error("cannot read recipe {path}: {msg}")]
    Read { path: PathBuf, msg: String },
    #[error("recipe {name}: {msg}")]
    Parse { name: String, msg: String },
    #[error("unknown recipe {0:?} (built-in recipes: {list})", list = BUILTIN.join(", "))]
    Unknown(String),
    #[error("recipe {0:?} is neither a file nor a built-in recipe ({list})", list = BUILTIN.join(", "))]
    NotFound(String),
    #[error("{0}")]
    Request(&'static str),
    #[error("{0}")]
    Value(String),
}

/// A validated recipe: at least one stage to run, every stage's options in range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RecipeFile")]
pub struct Recipe {
    name: String,
    description: String,
    #[serde(rename = "stage")]
    stages: Vec<Stage>,
}

/// A recipe as written (TOML or JSON), before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(rename = "stage", alias = "stages")]
    stages: Vec<Stage>,
}

impl TryFrom<RecipeFile> for Recipe {
    type Error = RecipeError;
    fn try_from(f: RecipeFile) -> Result<Self, RecipeError> {
        Recipe::new(f.name, f.description, f.stages)
    }
}

impl Recipe {
    /// Validates the stages into a recipe.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        stages: Vec<Stage>,
    ) -> Result<Self, RecipeError> {
        let Some(first) = stages.iter().find(|s| !s.skip) else {
            return Err(RecipeError::NoStage);
        };
        for s in &stages {
            s.validate()?;
        }
        if first.freeze && first.pretrained.is_none() {
            return Err(RecipeError::FreezeWithoutWeights);
        }
        Ok(Self {
            name: name.into(),
            description: description.into(),
            stages,
        })
    }

    /// A recipe of one stage (`cxr train` with flags).
    pub fn single(stage: Stage) -> Result<Self, RecipeError> {
        Self::new("single", "", vec![stage])
    }

    pub fn from_toml(text: &str) -> Result<Self, RecipeError> {
        toml::from_str(text).map_err(|e| RecipeError::Parse {
            name: "text".into(),
            msg: e.to_string(),
        })
    }

    /// A TOML file, or a built-in recipe by name; relative `pretrained` paths
    /// resolve against the file's folder (or the working directory).
    pub fn load(spec: &str) -> Result<Self, RecipeError> {
        let path = Path::new(spec);
        let (text, base) = if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| RecipeError::Read {
                path: path.to_path_buf(),
                msg: e.to_string(),
            })?;
            let base = path.parent().filter(|p| !p.as_os_str().is_empty());
            (text, base.unwrap_or(Path::new(".")).to_path_buf())
        } else if let Some(text) = builtin(spec) {
            (text.to_string(), PathBuf::from("."))
        } else {
            return Err(RecipeError::NotFound(spec.to_string()));
        };
        let mut r: Recipe = toml::from_str(&text).map_err(|e| RecipeError::Parse {
            name: spec.to_string(),
            msg: e.to_string(),
        })?;
        r.resolve_paths(&base);
        Ok(r)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Every stage, skipped ones included (their indices are the stage numbers
    /// of checkpoints and metrics).
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The stages that run, with their indices.
    pub fn active(&self) -> impl Iterator<Item = (usize, &Stage)> {
        self.stages.iter().enumerate().filter(|(_, s)| !s.skip)
    }

    /// The first pretrained weights file of a stage that runs that is not there.
    pub fn missing_weights(&self) -> Option<&Path> {
        self.active()
            .filter_map(|(_, s)| s.pretrained.as_deref())
            .find(|p| !p.exists())
    }

    /// Resolves relative `pretrained` paths against `base` (the recipe's folder or the cwd).
    fn resolve_paths(&mut self, base: &Path) {
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
        "seed" => Some(include_str!("../../../recipes/seed.toml")),
        "cpu-quick" => Some(include_str!("../../../recipes/cpu-quick.toml")),
        "bench" => Some(include_str!("../../../recipes/bench.toml")),
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
            assert!(!r.stages().is_empty());
            assert_eq!(Recipe::load(n).unwrap().stages().len(), r.stages().len());
        }
    }

    #[test]
    fn every_recipe_value_is_valid() {
        let bad = r#"[[stage]]
epochs = 0"#;
        assert!(Recipe::from_toml(bad)
            .unwrap_err()
            .to_string()
            .contains("epochs"));
        assert_eq!(Recipe::new("x", "", vec![]), Err(RecipeError::NoStage));
        let json = r#"{"name": "x", "description": "", "stage": [{"bs": 1}]}"#;
        let e = serde_json::from_str::<Recipe>(json)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bs"), "{e}");
        let frozen = Stage {
            freeze: true,
            arch: cxr_models::Arch::Resnet18,
            ..Stage::default()
        };
        assert_eq!(
            Recipe::single(frozen),
            Err(RecipeError::FreezeWithoutWeights)
        );
        assert!(matches!(
            Recipe::load("no-such-recipe"),
            Err(RecipeError::NotFound(_))
        ));
    }

    #[test]
    fn a_recipe_round_trips_through_json() {
        let r = Recipe::load("seed").unwrap();
        let back: Recipe = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
