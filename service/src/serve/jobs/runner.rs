//! Running one job on the training thread: the recipe through
//! `train::run_recipe`, its events to the registry and to subscribers, and
//! how it ended.

use super::{register_run, EventKind, Jobs};
use crate::learner::Event;
use crate::recipe::Recipe;
use crate::serve::registry::{JobEnd, JobProgress, JobRow, JobState};
use crate::train::{run_recipe, RunEvent, RunOptions, TrainError};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const INTERRUPTED_NOTE: &str =
    "the server stopped while this job was running; POST /v1/jobs/{id}/resume continues it";

impl Jobs {
    pub(super) fn run_one(&self, id: &str) {
        let job = match self.reg.job(id) {
            Ok(Some(j)) => j,
            _ => return,
        };
        match self
            .reg
            .transition(id, &[JobState::Queued], JobState::Running)
        {
            Ok(true) => {}
            _ => return, // cancelled while queued
        }
        *self.current() = Some(id.to_string());
        self.emit_state(id);
        let flag = self.flag(id);
        flag.store(false, Ordering::SeqCst);
        let result = self.train(&job, &flag);
        let end = self.end_of(id, result);
        if let Err(e) = self.reg.finish_job(id, &end) {
            tracing::error!(job = id, "cannot record the job's end: {e}");
        }
        tracing::info!(
            job = id,
            state = end.state.as_str(),
            error = end.error.as_deref().unwrap_or(""),
            "job finished"
        );
        self.cancel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        *self.current() = None;
        self.emit_state(id);
    }

    /// How a run ended: a success registers the model (activated when none is).
    fn end_of(&self, id: &str, result: Result<(), TrainError>) -> JobEnd {
        match result {
            Ok(()) => self.register(id),
            Err(TrainError::Cancelled) if self.shutdown.load(Ordering::SeqCst) => JobEnd {
                note: Some(INTERRUPTED_NOTE.to_string()),
                ..JobEnd::new(JobState::Interrupted)
            },
            Err(TrainError::Cancelled) => JobEnd::new(JobState::Cancelled),
            Err(e) => JobEnd {
                error: Some(e.to_string()),
                ..JobEnd::new(JobState::Failed)
            },
        }
    }

    fn register(&self, id: &str) -> JobEnd {
        let registered = register_run(self.reg.as_ref(), &self.home, id, &self.run_dir(id))
            .and_then(|row| Ok((self.hub.activate_if_none(&row.id)?, row.id)));
        match registered {
            Ok((activated, mid)) => JobEnd {
                model_id: Some(mid.clone()),
                activated,
                note: Some(if activated {
                    "no model was active: this job's model was activated".to_string()
                } else {
                    format!("model registered; activate it with POST /v1/models/{mid}/activate")
                }),
                ..JobEnd::new(JobState::Succeeded)
            },
            Err(e) => JobEnd {
                error: Some(format!("registering the model failed: {e}")),
                ..JobEnd::new(JobState::Failed)
            },
        }
    }

    fn train(&self, job: &JobRow, flag: &AtomicBool) -> Result<(), TrainError> {
        let recipe: Recipe = serde_json::from_value(job.recipe.clone())
            .map_err(|e| TrainError::Recipe(crate::recipe::RecipeError::Value(e.to_string())))?;
        let run_dir = self.run_dir(&job.id);
        let resume = job.resume && run_dir.has_checkpoint();
        if !resume {
            let _ = self.reg.set_metrics(&job.id, &[]);
        }
        let mut progress = Progress {
            jobs: self,
            id: &job.id,
            metrics: if resume {
                job.metrics.clone()
            } else {
                Vec::new()
            },
            last_progress: Instant::now() - Duration::from_secs(1),
        };
        let mut hook = |e: &RunEvent| -> bool {
            progress.on(e);
            !flag.load(Ordering::SeqCst)
        };
        run_recipe(
            &job.dataset_path,
            &recipe,
            run_dir.path(),
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

/// A running job's events -> the registry and the live subscribers.
struct Progress<'a> {
    jobs: &'a Jobs,
    id: &'a str,
    /// Per-epoch metrics so far (of the earlier run too, when resuming).
    metrics: Vec<Value>,
    last_progress: Instant,
}

impl Progress<'_> {
    fn emit(&self, kind: EventKind, data: Value) {
        self.jobs.emit(self.id, kind, data);
    }

    fn on(&mut self, e: &RunEvent) {
        let reg = &self.jobs.reg;
        match e {
            RunEvent::Message(m) => {
                tracing::info!(job = %self.id, "{m}");
                self.emit(EventKind::Message, json!({ "message": m }));
            }
            RunEvent::StageStart {
                stage,
                stages,
                name,
                epochs,
            } => {
                let p = JobProgress::Stage {
                    stage: *stage as u64 + 1,
                    stages: *stages as u64,
                    name,
                };
                let _ = reg.set_progress(self.id, p);
                self.emit(
                    EventKind::Stage,
                    json!({ "stage": stage + 1, "stages": stages, "name": name, "epochs": epochs }),
                );
            }
            RunEvent::Learner { stage, event } => self.on_learner(*stage, event),
        }
    }

    fn on_learner(&mut self, stage: usize, event: &Event) {
        match event {
            Event::EpochStart {
                epoch,
                epochs,
                iters,
            } => {
                let p = JobProgress::Epoch {
                    epoch: *epoch as u64 + 1,
                    epochs: *epochs as u64,
                };
                let _ = self.jobs.reg.set_progress(self.id, p);
                self.emit(
                    EventKind::Progress,
                    json!({ "stage": stage + 1, "epoch": epoch + 1, "epochs": epochs, "iter": 0, "iters": iters }),
                );
            }
            Event::Batch {
                epoch,
                iter,
                iters,
                loss,
                lr,
            } => {
                // Subscribers get at most ~10 progress events a second (and the last batch).
                if self.last_progress.elapsed().as_millis() >= 100 || iter == iters {
                    self.last_progress = Instant::now();
                    self.emit(
                        EventKind::Progress,
                        json!({ "stage": stage + 1, "epoch": epoch + 1, "iter": iter, "iters": iters, "loss": finite(*loss), "lr": lr }),
                    );
                }
            }
            Event::Epoch(m) => {
                let v = epoch_json(stage, m);
                self.metrics.retain(|x| {
                    !(x["stage"] == json!(stage + 1) && x["epoch"] == json!(m.epoch + 1))
                });
                self.metrics.push(v.clone());
                let _ = self.jobs.reg.set_metrics(self.id, &self.metrics);
                self.emit(EventKind::Epoch, v);
            }
        }
    }
}

/// One epoch's metrics as the API shows them: 1-based epoch and stage, no NaN.
fn epoch_json(stage: usize, m: &crate::learner::EpochMetrics) -> Value {
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
    v
}

fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}
