//! The server's persistent state: jobs and the models they produced. The
//! [`Registry`] trait is every operation the service needs on that state; a
//! store is one implementation of it ([`sqlite::SqliteRegistry`] today).

pub mod sqlite;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;

pub use sqlite::SqliteRegistry;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store failed (I/O, SQL, a row it cannot read).
    #[error("database: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type RegistryResult<T> = Result<T, RegistryError>;

/// A job's state (the API's contract: these strings on the wire and in the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown job state {0:?}")]
pub struct UnknownJobState(pub String);

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
        }
    }

    /// Finished for good (an interrupted job may still continue).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// The states `POST /v1/jobs/{id}/resume` starts again from.
    pub const RESUMABLE: [JobState; 3] =
        [JobState::Interrupted, JobState::Failed, JobState::Cancelled];

    pub fn is_resumable(self) -> bool {
        Self::RESUMABLE.contains(&self)
    }

    /// No more events will come for a job in this state (until it is resumed).
    pub fn ends_stream(self) -> bool {
        self.is_terminal() || self == JobState::Interrupted
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = UnknownJobState;
    fn from_str(s: &str) -> Result<Self, UnknownJobState> {
        JobState::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .ok_or_else(|| UnknownJobState(s.to_string()))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: String,
    pub state: JobState,
    pub dataset: String,
    #[serde(skip)]
    pub dataset_path: PathBuf,
    pub recipe: Value,
    pub request: Value,
    /// 1-based stage in progress (or last run).
    pub stage: Option<u64>,
    pub stages: Option<u64>,
    pub stage_name: Option<String>,
    /// 1-based epoch in progress within the stage.
    pub epoch: Option<u64>,
    pub epochs: Option<u64>,
    pub metrics: Vec<Value>,
    pub error: Option<String>,
    pub model_id: Option<String>,
    pub activated: bool,
    pub note: Option<String>,
    pub resume: bool,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl JobRow {
    /// A new job as it is queued.
    pub fn queued(id: String, dataset: String, dataset_path: PathBuf) -> Self {
        Self {
            id,
            state: JobState::Queued,
            dataset,
            dataset_path,
            recipe: Value::Null,
            request: Value::Null,
            stage: None,
            stages: None,
            stage_name: None,
            epoch: None,
            epochs: None,
            metrics: Vec::new(),
            error: None,
            model_id: None,
            activated: false,
            note: None,
            resume: false,
            created_at: now(),
            started_at: None,
            finished_at: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelRow {
    pub id: String,
    pub active: bool,
    pub created_at: String,
    pub metrics: Value,
    pub card: Value,
    pub job_id: Option<String>,
    #[serde(skip)]
    pub dir: PathBuf,
}

/// Where a running job is (1-based, as the API shows it).
#[derive(Debug, Clone, Copy)]
pub enum JobProgress<'a> {
    /// A stage starts: its epoch is unknown until the first one starts.
    Stage {
        stage: u64,
        stages: u64,
        name: &'a str,
    },
    Epoch {
        epoch: u64,
        epochs: u64,
    },
}

/// How a job run ended (or, for a requeued job, its new state).
#[derive(Debug, Clone)]
pub struct JobEnd {
    pub state: JobState,
    pub error: Option<String>,
    pub model_id: Option<String>,
    pub activated: bool,
    pub note: Option<String>,
}

impl JobEnd {
    pub fn new(state: JobState) -> Self {
        Self {
            state,
            error: None,
            model_id: None,
            activated: false,
            note: None,
        }
    }
}

/// The operations the service needs on its persistent state. Jobs change
/// state by compare-and-set ([`Registry::transition`]) so the HTTP handlers
/// and the training thread never overwrite each other's decision.
pub trait Registry: Send + Sync {
    /// Whether the store answers.
    fn ping(&self) -> bool;

    fn insert_job(&self, job: &JobRow) -> RegistryResult<()>;
    fn job(&self, id: &str) -> RegistryResult<Option<JobRow>>;
    /// Every job, newest first.
    fn jobs(&self) -> RegistryResult<Vec<JobRow>>;
    /// Ids of jobs in `state`, oldest first.
    fn job_ids_in(&self, state: JobState) -> RegistryResult<Vec<String>>;
    fn job_state_counts(&self) -> RegistryResult<Vec<(JobState, u64)>>;
    /// Marks every running job interrupted (at start-up: the process that ran them is gone).
    fn interrupt_running(&self) -> RegistryResult<usize>;
    /// Changes the state only when it currently is one of `from`; answers whether it did.
    fn transition(&self, id: &str, from: &[JobState], to: JobState) -> RegistryResult<bool>;
    /// A job queued again: `resume` from its checkpoint or not, its last outcome cleared.
    fn requeue(&self, id: &str, resume: bool, note: &str) -> RegistryResult<()>;
    fn set_progress(&self, id: &str, progress: JobProgress<'_>) -> RegistryResult<()>;
    /// The per-epoch metrics so far (replaces the list).
    fn set_metrics(&self, id: &str, metrics: &[Value]) -> RegistryResult<()>;
    fn finish_job(&self, id: &str, end: &JobEnd) -> RegistryResult<()>;

    fn insert_model(&self, model: &ModelRow) -> RegistryResult<()>;
    fn model(&self, id: &str) -> RegistryResult<Option<ModelRow>>;
    /// Every model, newest first.
    fn models(&self) -> RegistryResult<Vec<ModelRow>>;
    fn active_model(&self) -> RegistryResult<Option<ModelRow>>;
    /// Makes `id` the only active model.
    fn set_active(&self, id: &str) -> RegistryResult<()>;
}

/// A timestamp as the registry stores it (RFC 3339, UTC).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_states_keep_their_strings() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().ok(), Some(s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(Value::String(s.as_str().into()))
            );
        }
        assert!("done".parse::<JobState>().is_err());
        assert!(JobState::Interrupted.ends_stream() && !JobState::Interrupted.is_terminal());
    }
}
