//! A recipe as a job asks for it: a built-in by name or inline stages, with
//! options applied to every stage. The options are merged into the stages as
//! written, then the whole recipe is parsed (and validated) once.

use super::{builtin, Recipe, RecipeError};
use serde_json::{Map, Value};

/// Where a job's stages come from.
#[derive(Debug, Clone)]
pub enum RecipeSource {
    /// A built-in recipe (`seed`, `cpu-quick`, `bench`).
    Named(String),
    /// Stages written out in the request.
    Inline(Vec<Value>),
}

/// What a job request says about its recipe.
#[derive(Debug, Clone)]
pub struct RecipeRequest {
    pub source: RecipeSource,
    /// Stage options applied to every stage (e.g. `{"epochs": 1}`).
    pub options: Map<String, Value>,
    /// The recipe's name for inline stages (default "custom").
    pub name: Option<String>,
}

impl RecipeRequest {
    /// `recipe` and `stages` as a request gives them: exactly one of the two.
    pub fn source(
        recipe: Option<String>,
        stages: Option<Vec<Value>>,
    ) -> Result<RecipeSource, RecipeError> {
        match (recipe, stages) {
            (Some(_), Some(_)) => Err(RecipeError::Request(
                "give either recipe or stages, not both",
            )),
            (None, None) => Err(RecipeError::Request(
                "give a recipe name (recipe) or inline stages (stages)",
            )),
            (Some(name), None) => Ok(RecipeSource::Named(name)),
            (None, Some(s)) if s.is_empty() => Err(RecipeError::Request("stages is empty")),
            (None, Some(s)) => Ok(RecipeSource::Inline(s)),
        }
    }

    /// The recipe: the source's stages with the options written over each, parsed once.
    pub fn parse(&self) -> Result<Recipe, RecipeError> {
        let (name, description, stages) = match &self.source {
            RecipeSource::Named(n) => {
                let text = builtin(n).ok_or_else(|| RecipeError::Unknown(n.clone()))?;
                let file: toml::Table = toml::from_str(text).map_err(|e| RecipeError::Parse {
                    name: n.clone(),
                    msg: e.to_string(),
                })?;
                let json = serde_json::to_value(file).map_err(|e| RecipeError::Parse {
                    name: n.clone(),
                    msg: e.to_string(),
                })?;
                let field = |k: &str| json.get(k).cloned().unwrap_or(Value::Null);
                let stages = match field("stage") {
                    Value::Array(a) => a,
                    _ => Vec::new(),
                };
                (field("name"), field("description"), stages)
            }
            RecipeSource::Inline(stages) => {
                let name = self.name.clone().unwrap_or_else(|| "custom".into());
                (
                    Value::String(name),
                    Value::String(String::new()),
                    stages.clone(),
                )
            }
        };
        let stages: Vec<Value> = stages.into_iter().map(|s| self.merged(s)).collect();
        let mut recipe = Map::new();
        recipe.insert("name".into(), name);
        recipe.insert("description".into(), description);
        recipe.insert("stage".into(), Value::Array(stages));
        serde_json::from_value(Value::Object(recipe)).map_err(|e| RecipeError::Value(e.to_string()))
    }

    fn merged(&self, mut stage: Value) -> Value {
        if let Value::Object(o) = &mut stage {
            for (k, v) in &self.options {
                o.insert(k.clone(), v.clone());
            }
        }
        stage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(source: RecipeSource, options: Value) -> RecipeRequest {
        let Value::Object(options) = options else {
            panic!("options must be an object")
        };
        RecipeRequest {
            source,
            options,
            name: None,
        }
    }

    #[test]
    fn options_apply_to_every_stage_of_a_builtin() {
        let r = req(
            RecipeSource::Named("seed".into()),
            json!({"epochs": 1, "size": 64, "presize": 96}),
        )
        .parse()
        .unwrap();
        assert!(r.stages().len() > 1);
        assert!(r.stages().iter().all(|s| s.epochs == 1 && s.size == 64));
        assert_eq!(r.name(), Recipe::load("seed").unwrap().name());
    }

    #[test]
    fn inline_stages_are_parsed_and_validated_once() {
        let ok = req(
            RecipeSource::Inline(vec![json!({"size": 32, "presize": 48})]),
            json!({}),
        );
        assert_eq!(ok.parse().unwrap().name(), "custom");
        let bad = req(RecipeSource::Inline(vec![json!({"epochs": 0})]), json!({}));
        assert!(bad.parse().unwrap_err().to_string().contains("epochs"));
        let unknown = req(RecipeSource::Inline(vec![json!({})]), json!({"colour": 1}));
        assert!(unknown.parse().unwrap_err().to_string().contains("colour"));
        let nope = req(RecipeSource::Named("nonexistent".into()), json!({}));
        assert!(matches!(nope.parse(), Err(RecipeError::Unknown(_))));
        assert!(RecipeRequest::source(None, None).is_err());
        assert!(RecipeRequest::source(None, Some(vec![])).is_err());
        assert!(RecipeRequest::source(Some("seed".into()), Some(vec![json!({})])).is_err());
    }
}
