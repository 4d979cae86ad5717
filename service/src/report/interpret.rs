//! `cxr interpret`: what a model gets wrong on a labelled folder.
//! Writes `confusion_matrix.png`, `report.json`, and the top-k losses as
//! Grad-CAM overlays (`top_losses/NN_<file>.png`) with `top_losses.json`.

use super::plots;
use crate::evaluate::{evaluate, Split};
use crate::serve::model::Model;
use std::path::Path;

pub fn interpret(
    p: &Model,
    data: &Path,
    split: Split,
    top_k: usize,
    out: &Path,
) -> anyhow::Result<()> {
    let ev = evaluate(p, data, split, 32)?;
    std::fs::create_dir_all(out.join("top_losses"))?;
    plots::confusion_png(
        &ev.report.confusion_matrix,
        &crate::train::RunDir::new(out).confusion_plot(),
    )
    .map_err(anyhow::Error::msg)?;
    crate::train::write_json(&crate::train::RunDir::new(out).report(), &ev.report)?;
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
        std::fs::write(out.join("top_losses").join(&name), png)?;
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
    crate::train::write_json(&out.join("top_losses.json"), &listing)?;
    println!("{}", serde_json::to_string_pretty(&ev.report)?);
    Ok(())
}
