//! Dynamic batching: one inference worker thread collects concurrent requests
//! (up to `max_batch`, waiting at most `max_wait` while the server is busy)
//! and runs the model once per batch. Each request carries the model it was preprocessed for, so swapping
//! the active model never fails requests in flight: they finish on the old one. A request that
//! asks for Grad-CAM gets it from the same forward pass as its probabilities.

use super::model::{Model, PredictError, Scores};
use super::prediction::Timing;
use crate::report::gradcam::GradCam;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Request {
    pub model: Arc<Model>,
    pub gray: Vec<u8>,
    /// Also compute the Grad-CAM of the predicted class.
    pub explain: bool,
    pub reply: tokio::sync::oneshot::Sender<Result<Outcome, InferError>>,
}

#[derive(Debug)]
pub struct Outcome {
    pub probs: Vec<f32>,
    /// The Grad-CAM a request asked for, from the same forward pass.
    pub cam: Option<candle_core::Result<GradCam>>,
    pub batch_size: usize,
    pub queue_ms: f64,
    pub model_ms: f64,
}

impl Outcome {
    /// The answer's `timing`, given the time preprocessing took.
    pub fn timing(&self, preprocess_ms: f64) -> Timing {
        Timing {
            batch_size: self.batch_size,
            model_ms: self.model_ms,
            preprocess_ms,
            queue_ms: self.queue_ms,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum InferError {
    #[error("the inference worker stopped")]
    Stopped,
    #[error("the model answered {got} results for {n} inputs")]
    Count { got: usize, n: usize },
    #[error("{0}")]
    Model(Arc<PredictError>),
}

#[derive(Clone)]
pub struct Batcher {
    tx: Sender<(Request, Instant)>,
}

impl Batcher {
    /// Starts the worker thread. `on_batch(size)` is called for every forward pass.
    pub fn start(
        max_batch: usize,
        max_wait: Duration,
        on_batch: impl Fn(usize) + Send + 'static,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<(Request, Instant)>();
        let max_batch = max_batch.max(1);
        std::thread::Builder::new()
            .name("cxr-inference".into())
            .spawn(move || worker(rx, max_batch, max_wait, on_batch))
            .unwrap_or_else(|e| panic!("cannot start the inference thread: {e}"));
        Self { tx }
    }

    /// Queues one preprocessed input; the reply arrives on the request's oneshot.
    pub fn submit(&self, req: Request) -> Result<(), InferError> {
        self.tx
            .send((req, Instant::now()))
            .map_err(|_| InferError::Stopped)
    }
}

fn worker(
    rx: Receiver<(Request, Instant)>,
    max_batch: usize,
    max_wait: Duration,
    on_batch: impl Fn(usize),
) {
    let mut last_batch = 1;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        if max_batch > 1 {
            let deadline = Instant::now() + batch_window(last_batch, max_wait);
            while batch.len() < max_batch {
                // Take what is already waiting without sleeping.
                match rx.try_recv() {
                    Ok(r) => {
                        batch.push(r);
                        continue;
                    }
                    Err(crossbeam_channel::TryRecvError::Disconnected) => break,
                    Err(crossbeam_channel::TryRecvError::Empty) => {}
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(r) => batch.push(r),
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        last_batch = batch.len();
        // Group by model (a swap may happen between two requests of one batch).
        while !batch.is_empty() {
            let model = Arc::clone(&batch[0].0.model);
            let (group, rest): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|(r, _)| Arc::ptr_eq(&r.model, &model));
            batch = rest;
            run_group(&model, group, &on_batch);
        }
    }
}

/// How long a batch waits for company after its first request: `max_wait`
/// while requests arrive together (the last batch had more than one), none
/// when the server is idle, so a lone request never pays the wait (it cost
/// 5 ms of a 37 ms prediction at concurrency 1). Under load, requests that
/// arrive during a forward pass are taken without waiting anyway.
fn batch_window(last_batch: usize, max_wait: Duration) -> Duration {
    if last_batch > 1 {
        max_wait
    } else {
        Duration::ZERO
    }
}

fn run_group(model: &Model, group: Vec<(Request, Instant)>, on_batch: &impl Fn(usize)) {
    let n = group.len();
    on_batch(n);
    let t0 = Instant::now();
    let grays: Vec<&[u8]> = group.iter().map(|(r, _)| r.gray.as_slice()).collect();
    let explain: Vec<bool> = group.iter().map(|(r, _)| r.explain).collect();
    let result = match model.score(&grays, &explain) {
        Ok(s) if s.len() == n => Ok(s),
        Ok(s) => Err(InferError::Count { got: s.len(), n }),
        Err(e) => Err(InferError::Model(Arc::new(e))),
    };
    let model_ms = t0.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(scores) => {
            for ((req, queued), Scores { probs, cam }) in group.into_iter().zip(scores) {
                let queue_ms = t0.duration_since(queued).as_secs_f64() * 1e3;
                let _ = req.reply.send(Ok(Outcome {
                    probs,
                    cam,
                    batch_size: n,
                    queue_ms,
                    model_ms,
                }));
            }
        }
        Err(e) => {
            for (req, _) in group {
                let _ = req.reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_busy_server_waits_for_company() {
        let w = Duration::from_millis(5);
        assert_eq!(batch_window(1, w), Duration::ZERO);
        assert_eq!(batch_window(2, w), w);
        assert_eq!(batch_window(16, w), w);
    }
}
