//! `cxr interpret`: what a model gets wrong on a labelled folder.
//! Writes `confusion_matrix.png`, `report.json`, and the top-k losses as
//! Grad-CAM overlays (`top_losses/NN_<file>.png`) with `top_losses.json`.

use super::plots::{self, PlotError};
use crate::evaluate::{evaluate, EvalError, Split};
use crate::learner::Report;
use crate::serve::model::{Model, PredictError};
use crate::train::run_dir::{write_json, FileError, RunDir};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum InterpretError {
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Predict(#[from] PredictError),
    #[error(transparent)]
    Plot(#[from] PlotError),
    #[error(transparent)]
    File(#[from] FileError),
}

/// Writes the interpretation of `p` on `data`'s `split` into `out`; returns the report.
pub fn interpret(
    p: &Model,
    data: &Path,
    split: Split,
    top_k: usize,
    out: &Path,
) -> Result<Report, InterpretError> {
    let ev = evaluate(p, data, split, 32)?;
    let dir = RunDir::new(out);
    let top = out.join("top_losses");
    std::fs::create_dir_all(&top).map_err(|e| FileError::new(&top, e))?;
    plots::confusion_png(&ev.report.confusion_matrix, &dir.confusion_plot())?;
    write_json(&dir.report(), &ev.report)?;
    let mut scored: Vec<(f32, &crate::evaluate::Scored)> = ev
        .scored
        .iter()
        .map(|s| (-(s.probs[s.label as usize].max(1e-7)).ln(), s))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut listing = Vec::new();
    for (i, (loss, s)) in scored.iter().take(top_k).enumerate() {
        let (cam, png) = p.explain(&s.gray)?;
        let stem = s
            .path
            .file_stem()
            .and_then(|x| x.to_str())
            .unwrap_or("image");
        let name = format!("{:02}_{stem}.png", i + 1);
        let path = top.join(&name);
        std::fs::write(&path, png).map_err(|e| FileError::new(&path, e))?;
        listing.push(serde_json::json!({
            "rank": i + 1,
            "file": s.path.display().to_string(),
            "actual": p.classes()[s.label as usize],
            "predicted": p.classes()[cam.class],
            "loss": loss,
            "probabilities": s.probs,
            "gradcam": format!("top_losses/{name}"),
        }));
    }
    write_json(&dir.file("top_losses.json"), &listing)?;
    Ok(ev.report)
}
