//! Dynamic batching: one inference worker thread collects concurrent requests
//! (up to `max_batch`, waiting at most `max_wait` while the server is busy)
//! and runs the model once per batch. Each request carries the model it was preprocessed for, so swapping
//! the active model never fails requests in flight: they finish on the old one.

use crate::serve::model::Predictor;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A loaded model and its registry id.
pub struct Loaded {
    pub id: String,
    pub predictor: Predictor,
}

pub struct Request {
    pub model: Arc<Loaded>,
    pub gray: Vec<u8>,
    pub reply: tokio::sync::oneshot::Sender<Result<Outcome, String>>,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub probs: Vec<f32>,
    pub batch_size: usize,
    pub queue_ms: f64,
    pub model_ms: f64,
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
    pub fn submit(&self, req: Request) -> Result<(), String> {
        self.tx
            .send((req, Instant::now()))
            .map_err(|_| "the inference worker stopped".to_string())
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

fn run_group(model: &Loaded, group: Vec<(Request, Instant)>, on_batch: &impl Fn(usize)) {
    let n = group.len();
    on_batch(n);
    let t0 = Instant::now();
    let grays: Vec<&[u8]> = group.iter().map(|(r, _)| r.gray.as_slice()).collect();
    let result = model.predictor.predict_gray(&grays);
    let model_ms = t0.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(probs) if probs.len() == n => {
            for ((req, queued), p) in group.into_iter().zip(probs) {
                let queue_ms = t0.duration_since(queued).as_secs_f64() * 1e3;
                let _ = req.reply.send(Ok(Outcome {
                    probs: p,
                    batch_size: n,
                    queue_ms,
                    model_ms,
                }));
            }
        }
        Ok(probs) => {
            let msg = format!("the model answered {} results for {n} inputs", probs.len());
            for (req, _) in group {
                let _ = req.reply.send(Err(msg.clone()));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for (req, _) in group {
                let _ = req.reply.send(Err(msg.clone()));
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
