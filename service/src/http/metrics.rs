//! Prometheus metrics: requests and latency per route, predictions per class,
//! batch sizes, job states: the counters and their text format. The route
//! and the middleware that feed them are in [`super::observe`].

use crate::serve::JobState;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Clone)]
struct Hist {
    buckets: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Hist {
    fn new(buckets: &'static [f64]) -> Self {
        Self {
            buckets,
            counts: vec![0; buckets.len()],
            sum: 0.0,
            count: 0,
        }
    }
    fn observe(&mut self, v: f64) {
        for (b, c) in self.buckets.iter().zip(self.counts.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.buckets.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let l = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{l} {}", self.sum);
        let _ = writeln!(out, "{name}_count{l} {}", self.count);
    }
}

struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Hist>,
    predictions: BTreeMap<String, u64>,
    batches: Hist,
}

pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                requests: BTreeMap::new(),
                latency: BTreeMap::new(),
                predictions: BTreeMap::new(),
                batches: Hist::new(&BATCH_BUCKETS),
            }),
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let mut m = self.lock();
        *m.requests
            .entry((route.to_string(), method.to_string(), status))
            .or_insert(0) += 1;
        m.latency
            .entry(route.to_string())
            .or_insert_with(|| Hist::new(&LATENCY_BUCKETS))
            .observe(seconds);
    }

    pub fn prediction(&self, label: &str) {
        *self
            .lock()
            .predictions
            .entry(label.to_string())
            .or_insert(0) += 1;
    }

    pub fn batch(&self, size: usize) {
        self.lock().batches.observe(size as f64);
    }

    pub fn render(&self, job_states: &[(JobState, u64)], active_model: Option<&str>) -> String {
        let m = self.lock();
        let mut out = String::new();
        out.push_str("# HELP cxr_http_requests_total HTTP requests by route, method and status.\n# TYPE cxr_http_requests_total counter\n");
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(out, "cxr_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}", esc(route));
        }
        out.push_str("# HELP cxr_http_request_duration_seconds Request latency by route.\n# TYPE cxr_http_request_duration_seconds histogram\n");
        for (route, h) in &m.latency {
            h.render(
                &mut out,
                "cxr_http_request_duration_seconds",
                &format!("route=\"{}\"", esc(route)),
            );
        }
        out.push_str("# HELP cxr_predictions_total Predictions by predicted class.\n# TYPE cxr_predictions_total counter\n");
        for (label, n) in &m.predictions {
            let _ = writeln!(out, "cxr_predictions_total{{class=\"{}\"}} {n}", esc(label));
        }
        out.push_str("# HELP cxr_inference_batch_size Inputs per forward pass of the inference worker.\n# TYPE cxr_inference_batch_size histogram\n");
        m.batches.render(&mut out, "cxr_inference_batch_size", "");
        out.push_str("# HELP cxr_jobs Jobs by state.\n# TYPE cxr_jobs gauge\n");
        for s in JobState::ALL {
            let n = job_states
                .iter()
                .find(|(k, _)| *k == s)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            let _ = writeln!(out, "cxr_jobs{{state=\"{s}\"}} {n}");
        }
        out.push_str(
            "# HELP cxr_active_model 1 for the active model.\n# TYPE cxr_active_model gauge\n",
        );
        if let Some(id) = active_model {
            let _ = writeln!(out, "cxr_active_model{{model_id=\"{}\"}} 1", esc(id));
        }
        out
    }
}
