//! Registering a finished run as a model: its files copied under
//! `<home>/models/<id>/` and a registry row.

use crate::serve::home::Home;
use crate::serve::hub::HubError;
use crate::serve::registry::{now, ModelRow, Registry, RegistryError};
use crate::train::{RunDir, ARTIFACTS};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the run left no readable model.json")]
    NoCard,
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Activate(#[from] HubError),
}

fn io(path: PathBuf) -> impl FnOnce(std::io::Error) -> RegisterError {
    move |source| RegisterError::Io { path, source }
}

/// Copies a finished run's model and reports into `<home>/models/<id>/` (through a temporary
/// folder and a rename, so a crash never leaves a half-written model) and records it.
pub fn register_run(
    reg: &dyn Registry,
    home: &Home,
    job_id: &str,
    run_dir: &RunDir,
) -> Result<ModelRow, RegisterError> {
    let id = new_id();
    let tmp = home.models().join(format!(".tmp-{id}"));
    let dir = home.models().join(&id);
    std::fs::create_dir_all(&tmp).map_err(io(tmp.clone()))?;
    for f in ARTIFACTS {
        let src = run_dir.file(f);
        if src.exists() {
            std::fs::copy(&src, tmp.join(f)).map_err(io(src))?;
        }
    }
    std::fs::rename(&tmp, &dir).map_err(io(dir.clone()))?;
    let card: Value = std::fs::read_to_string(RunDir::new(&dir).card())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or(RegisterError::NoCard)?;
    let row = ModelRow {
        id,
        active: false,
        created_at: card
            .get("created_at")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .unwrap_or_else(now),
        metrics: card.get("metrics").cloned().unwrap_or(Value::Null),
        card,
        job_id: Some(job_id.to_string()),
        dir,
    };
    reg.insert_model(&row)?;
    Ok(row)
}

/// A short random id (12 hex digits).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}
