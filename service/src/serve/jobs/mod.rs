//! Fine-tune jobs: a queue and one dedicated training thread. Progress goes to
//! the registry (stage, epoch, per-epoch metrics) and to live subscribers (a
//! broadcast channel behind the SSE endpoint). Cancellation flips a flag that
//! the training hook reads. Running one job is [`runner`]; turning its run
//! folder into a registered model is [`register`].

pub mod register;
mod runner;

pub use register::{new_id, register_run, RegisterError};

use super::home::Home;
use super::hub::ModelHub;
use super::registry::{JobRow, JobState, Registry, RegistryError};
use crate::train::RunDir;
use candle_core::Device;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the training thread stopped")]
    Stopped,
    #[error("cannot start the training thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// What a live event tells (its SSE event name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    State,
    Stage,
    Progress,
    Epoch,
    Message,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::State => "state",
            EventKind::Stage => "stage",
            EventKind::Progress => "progress",
            EventKind::Epoch => "epoch",
            EventKind::Message => "message",
        }
    }
}

/// One live event of a job.
#[derive(Debug, Clone)]
pub struct JobEvent {
    pub job_id: String,
    pub kind: EventKind,
    pub data: Value,
}

impl JobEvent {
    /// The job state this event announces, if it is a state event.
    pub fn state(&self) -> Option<JobState> {
        if self.kind != EventKind::State {
            return None;
        }
        self.data.get("state")?.as_str()?.parse().ok()
    }
}

pub struct Jobs {
    reg: Arc<dyn Registry>,
    hub: Arc<ModelHub>,
    home: Home,
    device: Device,
    workers: usize,
    tx: crossbeam_channel::Sender<String>,
    cancel: Mutex<HashMap<String, Arc<AtomicBool>>>,
    pub events: tokio::sync::broadcast::Sender<JobEvent>,
    shutdown: AtomicBool,
    current: Mutex<Option<String>>,
}

impl Jobs {
    /// Marks jobs left `running` as `interrupted`, requeues `queued` ones and
    /// starts the training thread. A job that succeeds registers its model,
    /// activated when no model is active.
    pub fn start(
        reg: Arc<dyn Registry>,
        hub: Arc<ModelHub>,
        home: Home,
        workers: usize,
    ) -> Result<Arc<Self>, JobsError> {
        let n = reg.interrupt_running()?;
        if n > 0 {
            tracing::warn!(
                jobs = n,
                "jobs that were running when the server stopped are now interrupted"
            );
        }
        let (tx, rx) = crossbeam_channel::unbounded::<String>();
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let jobs = Arc::new(Self {
            reg: Arc::clone(&reg),
            device: hub.device().clone(),
            hub,
            home,
            workers,
            tx,
            cancel: Mutex::new(HashMap::new()),
            events,
            shutdown: AtomicBool::new(false),
            current: Mutex::new(None),
        });
        for id in reg.job_ids_in(JobState::Queued)? {
            let _ = jobs.tx.send(id);
        }
        let me = Arc::clone(&jobs);
        std::thread::Builder::new()
            .name("cxr-train".into())
            .spawn(move || {
                while let Ok(id) = rx.recv() {
                    if me.shutdown.load(Ordering::SeqCst) {
                        break;
                    }
                    me.run_one(&id);
                }
            })
            .map_err(JobsError::Spawn)?;
        Ok(jobs)
    }

    /// The run folder of job `id`.
    pub fn run_dir(&self, id: &str) -> RunDir {
        self.home.job(id)
    }

    pub fn enqueue(&self, id: &str) -> Result<(), JobsError> {
        self.tx.send(id.to_string()).map_err(|_| JobsError::Stopped)
    }

    fn emit(&self, id: &str, kind: EventKind, data: Value) {
        let _ = self.events.send(JobEvent {
            job_id: id.to_string(),
            kind,
            data,
        });
    }

    pub fn emit_state(&self, id: &str) {
        if let Ok(Some(j)) = self.reg.job(id) {
            self.emit(id, EventKind::State, state_event(&j));
        }
    }

    /// Requests cancellation. Answers the new state (`running` while the
    /// training thread winds down), or None when the job already finished.
    pub fn cancel(&self, id: &str) -> Result<Option<JobState>, JobsError> {
        let from = [JobState::Queued, JobState::Interrupted];
        if self.reg.transition(id, &from, JobState::Cancelled)? {
            self.emit_state(id);
            return Ok(Some(JobState::Cancelled));
        }
        match self.reg.job(id)? {
            Some(j) if j.state == JobState::Running => {
                self.flag(id).store(true, Ordering::SeqCst);
                Ok(Some(JobState::Running))
            }
            _ => Ok(None),
        }
    }

    fn flag(&self, id: &str) -> Arc<AtomicBool> {
        let mut m = self.cancel.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(m.entry(id.to_string()).or_default())
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the training thread: a running job ends `interrupted` (resumable).
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        let cur = self.current().clone();
        if let Some(id) = cur {
            self.flag(&id).store(true, Ordering::SeqCst);
            // Give the hook a moment to notice (it is called every batch).
            for _ in 0..100 {
                if self.current().is_none() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// The `state` event of a job (also the first event of its SSE stream).
pub fn state_event(j: &JobRow) -> Value {
    json!({ "id": j.id, "state": j.state, "stage": j.stage, "epoch": j.epoch, "error": j.error, "model_id": j.model_id })
}
