//! Evaluating a trained model on a labelled folder (Kaggle layout): every file
//! goes through the same preprocessing as the server, then one report.

use crate::data::{Dataset, Item};
use crate::learner::metrics::{report, Report};
use crate::serve::model::{Model, PredictError};
use cxr_models::preprocess::DecodeLimits;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
    Test,
    /// val + test
    Valid,
    All,
}

/// A split name that is not one of test, val, valid, train or all.
#[derive(Debug, thiserror::Error)]
#[error("unknown split {0:?} (expected test, val, valid, train or all)")]
pub struct UnknownSplit(pub String);

impl std::str::FromStr for Split {
    type Err = UnknownSplit;
    fn from_str(s: &str) -> Result<Self, UnknownSplit> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            "valid" => Ok(Split::Valid),
            "all" => Ok(Split::All),
            _ => Err(UnknownSplit(s.to_string())),
        }
    }
}

pub fn items(ds: &Dataset, split: Split) -> Vec<Item> {
    match split {
        Split::Train => ds.train.clone(),
        Split::Val => ds.val.clone(),
        Split::Test => ds.test.clone(),
        Split::Valid => ds.val.iter().chain(&ds.test).cloned().collect(),
        Split::All => ds
            .train
            .iter()
            .chain(&ds.val)
            .chain(&ds.test)
            .cloned()
            .collect(),
    }
}

/// Per-image outcome, kept for interpretation (top losses).
#[derive(Debug, Clone)]
pub struct Scored {
    pub path: PathBuf,
    pub label: u32,
    pub probs: Vec<f32>,
    pub gray: Vec<u8>,
}

pub struct Evaluation {
    pub report: Report,
    pub scored: Vec<Scored>,
    pub skipped: Vec<(PathBuf, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("the model's classes {model:?} differ from the dataset's {data:?}")]
    Classes {
        model: Vec<String>,
        data: Vec<String>,
    },
    #[error("no image of the {0:?} split could be read")]
    Empty(Split),
    #[error(transparent)]
    Predict(#[from] PredictError),
}

/// Scores every image of `split` under `root` with `model`.
pub fn evaluate(
    model: &Model,
    root: &Path,
    split: Split,
    batch: usize,
) -> Result<Evaluation, EvalError> {
    let ds = Dataset::scan(root)?;
    if ds.classes != model.classes() {
        return Err(EvalError::Classes {
            model: model.classes().to_vec(),
            data: ds.classes.clone(),
        });
    }
    let list = items(&ds, split);
    let limits = DecodeLimits::default();
    let decoded: Vec<(Item, Result<Vec<u8>, String>)> = list
        .into_par_iter()
        .map(|it| {
            let r = std::fs::read(&it.path)
                .map_err(|e| e.to_string())
                .and_then(|b| model.gray(&b, limits).map_err(|e| e.to_string()));
            (it, r)
        })
        .collect();
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for (it, r) in decoded {
        match r {
            Ok(g) => ok.push((it, g)),
            Err(e) => skipped.push((it.path, e)),
        }
    }
    if ok.is_empty() {
        return Err(EvalError::Empty(split));
    }
    let mut scored = Vec::with_capacity(ok.len());
    for chunk in ok.chunks(batch.max(1)) {
        let grays: Vec<&[u8]> = chunk.iter().map(|(_, g)| g.as_slice()).collect();
        let probs = model.predict_gray(&grays)?;
        for ((it, g), p) in chunk.iter().zip(probs) {
            scored.push(Scored {
                path: it.path.clone(),
                label: it.label as u32,
                probs: p,
                gray: g.clone(),
            });
        }
    }
    let probs: Vec<Vec<f32>> = scored.iter().map(|s| s.probs.clone()).collect();
    let labels: Vec<u32> = scored.iter().map(|s| s.label).collect();
    Ok(Evaluation {
        report: report(&probs, &labels, model.classes()),
        scored,
        skipped,
    })
}
