//! A prediction as the API answers it and `cxr predict` prints it: the
//! predicted label and every class's probability. The HTTP answer and the
//! CLI line add their own framing fields around it (serde `flatten`), so the
//! prediction's JSON is written by this one type.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub label: String,
    /// The registry's id of the model that answered (the server's answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Class name -> probability (f32 values, written as the f64 they widen to).
    pub probabilities: BTreeMap<String, f64>,
}

impl Prediction {
    /// The answer for `probs`, one per class of `classes`, in order.
    pub fn new(classes: &[String], probs: &[f32]) -> Self {
        let best = crate::learner::metrics::argmax(probs);
        Self {
            label: classes.get(best).cloned().unwrap_or_default(),
            model_id: None,
            probabilities: classes
                .iter()
                .zip(probs)
                .map(|(c, p)| (c.clone(), f64::from(*p)))
                .collect(),
        }
    }

    pub fn by_model(mut self, id: impl Into<String>) -> Self {
        self.model_id = Some(id.into());
        self
    }
}

/// Where the time of one served prediction went (the HTTP answer's `timing`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    pub batch_size: usize,
    pub model_ms: f64,
    pub preprocess_ms: f64,
    pub queue_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_label_and_probabilities_as_before() {
        let classes = ["NORMAL".to_string(), "PNEUMONIA".to_string()];
        let probs = [0.3f32, 0.7];
        let p = Prediction::new(&classes, &probs);
        // What the HTTP answer and `cxr predict` built by hand before.
        let before = serde_json::json!({
            "label": "PNEUMONIA",
            "probabilities": { "NORMAL": probs[0], "PNEUMONIA": probs[1] },
        });
        assert_eq!(serde_json::to_string(&p).ok(), Some(before.to_string()));
        let served = serde_json::to_value(p.by_model("m1")).ok();
        assert_eq!(served.as_ref().map(|v| v["model_id"] == "m1"), Some(true));
    }
}
