//! Fine-tune jobs: a queue and one dedicated training thread. Progress goes to
//! the registry (stage, epoch, per-epoch metrics) and to live subscribers (a
//! broadcast channel behind the SSE endpoint). Cancellation flips a flag that
//! the training hook reads.

use crate::recipe::Recipe;
use crate::serve::registry::{self, JobRow, ModelRow, Registry};
use crate::train::{has_checkpoint, run_recipe, RunEvent, RunOptions, TrainError};
use candle_core::Device;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One live event of a job (`kind` is the SSE event name: state, stage, progress, epoch, message).
#[derive(Debug, Clone)]
pub struct JobEvent {
    pub job_id: String,
    pub kind: &'static str,
    pub data: Value,
}

/// Called when a job succeeds: registers its model; answers (model id, activated).
pub type OnSuccess = Box<dyn Fn(&str, &Path) -> Result<(String, bool), String> + Send + Sync>;

pub struct Jobs {
    reg: Arc<Registry>,
    home: PathBuf,
    device: Device,
    workers: usize,
    tx: crossbeam_channel::Sender<String>,
    cancel: Mutex<HashMap<String, Arc<AtomicBool>>>,
    pub events: tokio::sync::broadcast::Sender<JobEvent>,
    shutdown: AtomicBool,
    on_success: OnSuccess,
    current: Mutex<Option<String>>,
}

impl Jobs {
    /// Marks jobs left `running` as `interrupted`, requeues `queued` ones and starts the training thread.
    pub fn start(
        reg: Arc<Registry>,
        home: PathBuf,
        device: Device,
        workers: usize,
        on_success: OnSuccess,
    ) -> Result<Arc<Self>, String> {
        let n = reg.interrupt_running().map_err(|e| e.to_string())?;
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
            home,
            device,
            workers,
            tx,
            cancel: Mutex::new(HashMap::new()),
            events,
            shutdown: AtomicBool::new(false),
            on_success,
            current: Mutex::new(None),
        });
        for id in reg
            .job_ids_in(registry::QUEUED)
            .map_err(|e| e.to_string())?
        {
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
            .map_err(|e| format!("cannot start the training thread: {e}"))?;
        Ok(jobs)
    }

    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.home.join("jobs").join(id)
    }

    pub fn enqueue(&self, id: &str) -> Result<(), String> {
        self.tx
            .send(id.to_string())
            .map_err(|_| "the training thread stopped".to_string())
    }

    fn emit(&self, id: &str, kind: &'static str, data: Value) {
        let _ = self.events.send(JobEvent {
            job_id: id.to_string(),
            kind,
            data,
        });
    }

    pub fn emit_state(&self, id: &str) {
        if let Ok(Some(j)) = self.reg.job(id) {
            self.emit(id, "state", state_event(&j));
        }
    }

    /// Requests cancellation. Answers the new state, or None when the job already finished.
    pub fn cancel(&self, id: &str) -> Result<Option<String>, String> {
        if self
            .reg
            .transition(
                id,
                &[registry::QUEUED, registry::INTERRUPTED],
                registry::CANCELLED,
            )
            .map_err(|e| e.to_string())?
        {
            self.emit_state(id);
            return Ok(Some(registry::CANCELLED.into()));
        }
        let job = self.reg.job(id).map_err(|e| e.to_string())?;
        match job {
            Some(j) if j.state == registry::RUNNING => {
                let flag = self.flag(id);
                flag.store(true, Ordering::SeqCst);
                Ok(Some(registry::RUNNING.into()))
            }
            _ => Ok(None),
        }
    }

    fn flag(&self, id: &str) -> Arc<AtomicBool> {
        let mut m = self.cancel.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(m.entry(id.to_string()).or_default())
    }

    /// Stops the training thread: a running job ends `interrupted` (resumable).
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        let cur = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(id) = cur {
            self.flag(&id).store(true, Ordering::SeqCst);
            // Give the hook a moment to notice (it is called every batch).
            for _ in 0..100 {
                if self
                    .current
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_none()
                {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }

    fn run_one(&self, id: &str) {
        let job = match self.reg.job(id) {
            Ok(Some(j)) => j,
            _ => return,
        };
        match self
            .reg
            .transition(id, &[registry::QUEUED], registry::RUNNING)
        {
            Ok(true) => {}
            _ => return, // cancelled while queued
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.to_string());
        self.emit_state(id);
        let flag = self.flag(id);
        flag.store(false, Ordering::SeqCst);
        let result = self.train(&job, &flag);
        let (state, error, model, note) = match result {
            Ok(()) => {
                let run_dir = self.run_dir(id);
                match (self.on_success)(id, &run_dir) {
                    Ok((mid, activated)) => {
                        let note = if activated {
                            Some("no model was active: this job's model was activated".to_string())
                        } else {
                            Some(format!("model registered; activate it with POST /v1/models/{mid}/activate"))
                        };
                        (registry::SUCCEEDED, None, Some((mid, activated)), note)
                    }
                    Err(e) => (registry::FAILED, Some(format!("registering the model failed: {e}")), None, None),
                }
            }
            Err(TrainError::Cancelled) if self.shutdown.load(Ordering::SeqCst) => (
                registry::INTERRUPTED,
                None,
                None,
                Some("the server stopped while this job was running; POST /v1/jobs/{id}/resume continues it".to_string()),
            ),
            Err(TrainError::Cancelled) => (registry::CANCELLED, None, None, None),
            Err(e) => (registry::FAILED, Some(e.to_string()), None, None),
        };
        if let Err(e) = self.reg.finish_job(
            id,
            state,
            error.as_deref(),
            model.as_ref().map(|m| m.0.as_str()),
            model.as_ref().is_some_and(|m| m.1),
            note.as_deref(),
        ) {
            tracing::error!(job = id, "cannot record the job's end: {e}");
        }
        tracing::info!(
            job = id,
            state,
            error = error.as_deref().unwrap_or(""),
            "job finished"
        );
        self.cancel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.emit_state(id);
    }

    fn train(&self, job: &JobRow, flag: &AtomicBool) -> Result<(), TrainError> {
        let recipe: Recipe = serde_json::from_value(job.recipe.clone())
            .map_err(|e| TrainError::Recipe(e.to_string()))?;
        let run_dir = self.run_dir(&job.id);
        let resume = job.resume && has_checkpoint(&run_dir);
        let mut metrics: Vec<Value> = if resume {
            job.metrics.clone()
        } else {
            Vec::new()
        };
        if !resume {
            let _ = self.reg.set_metrics(&job.id, &[]);
        }
        let id = job.id.clone();
        let reg = &self.reg;
        let mut last_progress = std::time::Instant::now() - std::time::Duration::from_secs(1);
        let mut hook = |e: &RunEvent| -> bool {
            match e {
                RunEvent::Message(m) => {
                    tracing::info!(job = %id, "{m}");
                    self.emit(&id, "message", json!({ "message": m }));
                }
                RunEvent::StageStart {
                    stage,
                    stages,
                    name,
                    epochs,
                } => {
                    let _ = reg.set_progress(
                        &id,
                        Some((*stage as u64 + 1, *stages as u64, name)),
                        None,
                    );
                    self.emit(&id, "stage", json!({ "stage": stage + 1, "stages": stages, "name": name, "epochs": epochs }));
                }
                RunEvent::Learner { stage, event } => match event {
                    crate::learner::Event::EpochStart {
                        epoch,
                        epochs,
                        iters,
                    } => {
                        let _ =
                            reg.set_progress(&id, None, Some((*epoch as u64 + 1, *epochs as u64)));
                        self.emit(
                            &id,
                            "progress",
                            json!({ "stage": stage + 1, "epoch": epoch + 1, "epochs": epochs, "iter": 0, "iters": iters }),
                        );
                    }
                    crate::learner::Event::Batch {
                        epoch,
                        iter,
                        iters,
                        loss,
                        lr,
                    } => {
                        // Subscribers get at most ~10 progress events a second (and the last batch).
                        if last_progress.elapsed().as_millis() >= 100 || iter == iters {
                            last_progress = std::time::Instant::now();
                            self.emit(
                                &id,
                                "progress",
                                json!({ "stage": stage + 1, "epoch": epoch + 1, "iter": iter, "iters": iters, "loss": finite(*loss), "lr": lr }),
                            );
                        }
                    }
                    crate::learner::Event::Epoch(m) => {
                        let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
                        if let Value::Object(o) = &mut v {
                            o.insert("epoch".into(), json!(m.epoch + 1));
                            o.insert("stage".into(), json!(stage + 1));
                            for k in [
                                "train_loss",
                                "valid_loss",
                                "accuracy",
                                "f1",
                                "precision",
                                "recall",
                                "auc",
                            ] {
                                if let Some(x) = o.get(k).and_then(Value::as_f64) {
                                    o.insert(k.into(), finite(x));
                                }
                            }
                        }
                        metrics.retain(|x| {
                            !(x["stage"] == json!(stage + 1) && x["epoch"] == json!(m.epoch + 1))
                        });
                        metrics.push(v.clone());
                        let _ = reg.set_metrics(&id, &metrics);
                        self.emit(&id, "epoch", v);
                    }
                },
            }
            !flag.load(Ordering::SeqCst)
        };
        run_recipe(
            &job.dataset_path,
            &recipe,
            &run_dir,
            RunOptions {
                device: self.device.clone(),
                resume,
                workers: self.workers,
                hook: &mut hook,
            },
        )
        .map(|_| ())
    }
}

fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

pub fn state_event(j: &JobRow) -> Value {
    json!({ "id": j.id, "state": j.state, "stage": j.stage, "epoch": j.epoch, "error": j.error, "model_id": j.model_id })
}

/// Copies a finished run's model and reports into `<home>/models/<id>/` (through a temporary
/// folder and a rename, so a crash never leaves a half-written model) and records it.
pub fn register_run(
    reg: &Registry,
    home: &Path,
    job_id: &str,
    run_dir: &Path,
) -> Result<ModelRow, String> {
    let id = new_id();
    let models = home.join("models");
    let tmp = models.join(format!(".tmp-{id}"));
    let dir = models.join(&id);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    for f in crate::train::ARTIFACTS {
        let src = run_dir.join(f);
        if src.exists() {
            std::fs::copy(&src, tmp.join(f)).map_err(|e| format!("{}: {e}", src.display()))?;
        }
    }
    std::fs::rename(&tmp, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let card: Value = std::fs::read_to_string(crate::train::RunDir::new(&dir).card())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| "the run left no readable model.json".to_string())?;
    let row = ModelRow {
        id,
        active: false,
        created_at: card
            .get("created_at")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .unwrap_or_else(registry::now),
        metrics: card.get("metrics").cloned().unwrap_or(Value::Null),
        card,
        job_id: Some(job_id.to_string()),
        dir,
    };
    reg.insert_model(&row).map_err(|e| e.to_string())?;
    Ok(row)
}

/// A short random id (12 hex digits).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}
