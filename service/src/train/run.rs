//! Running a recipe: check it can run, resume from the checkpoint when asked,
//! run its stages in order, then write the model and its reports.

use super::checkpoint::Restored;
use super::run_dir::{write_json, MetricsLine, RunDir};
use super::stage::{learner_options, run_stage, Carried, Hook, ResumeAt, RunContext};
use super::{RunEvent, RunOptions, RunSummary, TrainError};
use crate::data::Dataset;
use crate::learner::Learner;
use crate::recipe::Recipe;
use crate::report::plots;
use candle_core::Device;
use cxr_models::preprocess::{Normalize, PreprocessSpec};
use cxr_models::weights::{save_model, ModelCard};
use std::path::Path;
use std::time::Instant;

/// Runs every stage of `recipe` on the dataset at `data_dir`, writing `run_dir`.
pub fn run_recipe(
    data_dir: &Path,
    recipe: &Recipe,
    run_dir: &Path,
    opts: RunOptions<'_>,
) -> Result<RunSummary, TrainError> {
    let t0 = Instant::now();
    let RunOptions {
        device,
        resume,
        workers,
        hook,
    } = opts;
    let dir = RunDir::new(run_dir);
    dir.create()?;
    preflight(recipe, &device)?;
    let ds = Dataset::scan(data_dir)?;
    hook(&RunEvent::Message(ds.counts()));
    let ctx = RunContext {
        recipe,
        ds: &ds,
        dir: &dir,
        device: &device,
        workers,
    };
    let mut carried = Carried::default();
    let Start {
        mut metrics,
        mut resume_at,
        stage: start,
    } = if resume {
        restore(&ctx, &mut carried, hook)?
    } else {
        dir.clear_metrics();
        Start::fresh()
    };
    let mut last = None;
    for (k, (si, stage)) in recipe
        .active()
        .enumerate()
        .filter(|(_, (si, _))| *si >= start)
    {
        let name = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage {}", k + 1));
        let at = resume_at.take().filter(|_| si == start);
        metrics.extend(run_stage(&ctx, &mut carried, (si, name), at, hook)?);
        if let Some(l) = &carried.learner {
            plots::losses_png(&l.batch_losses, &metrics, &dir.losses_plot())?;
        }
        last = Some(si);
    }
    let summary = finish(&ctx, carried, last.unwrap_or(start), data_dir)?;
    Ok(RunSummary {
        run_dir: run_dir.to_path_buf(),
        report: summary,
        metrics,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// What can be checked before any work: the device can run each stage's
/// precision, and pretrained weights are where the recipe says.
fn preflight(recipe: &Recipe, device: &Device) -> Result<(), TrainError> {
    for (_, s) in recipe.active() {
        s.precision.check_device(device)?;
    }
    if let Some(path) = recipe.missing_weights() {
        return Err(TrainError::MissingWeights {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Where a run starts: the metrics already written, and the stage (with its
/// epochs done and optimizer state when it resumes).
struct Start {
    metrics: Vec<MetricsLine>,
    resume_at: Option<ResumeAt>,
    stage: usize,
}

impl Start {
    fn fresh() -> Self {
        Self {
            metrics: Vec::new(),
            resume_at: None,
            stage: 0,
        }
    }
}

/// Reads the checkpoint back into `carried` (the learner, the normalisation)
/// and says where to start.
fn restore(
    ctx: &RunContext<'_>,
    carried: &mut Carried,
    hook: &mut Hook<'_>,
) -> Result<Start, TrainError> {
    let Restored { state, net, opt } = ctx.dir.checkpoint().restore(ctx.device)?;
    let stage = ctx
        .recipe
        .stages()
        .get(state.stage)
        .ok_or(TrainError::CheckpointStage(state.stage))?;
    let mut l = Learner::new(net, learner_options(stage));
    l.frozen = stage.freeze;
    carried.learner = Some(l);
    carried.norm = Some(state.norm);
    let mut metrics = ctx.dir.read_metrics();
    metrics.retain(|m| {
        m.stage < state.stage || (m.stage == state.stage && m.metrics.epoch < state.epochs_done)
    });
    hook(&RunEvent::Message(format!(
        "resuming stage {} ({}) after epoch {}",
        state.stage + 1,
        stage.name.clone().unwrap_or_default(),
        state.epochs_done
    )));
    let at = ResumeAt {
        epochs_done: state.epochs_done,
        opt,
    };
    Ok(Start {
        metrics,
        resume_at: Some(at),
        stage: state.stage,
    })
}

/// The validation report of the last stage, the model (weights and card) and
/// the report files.
fn finish(
    ctx: &RunContext<'_>,
    carried: Carried,
    si: usize,
    data_dir: &Path,
) -> Result<crate::learner::Report, TrainError> {
    let (Some(l), Some((d, _))) = (carried.learner, carried.data) else {
        return Err(TrainError::NoStageRan);
    };
    let stage = &ctx.recipe.stages()[si];
    let report = l.valid_report(&d)?;
    let norm = carried.norm.unwrap_or(Normalize::IDENTITY);
    let mut card = ModelCard::new(
        l.net.config.clone(),
        d.classes().to_vec(),
        PreprocessSpec::new(stage.size, norm),
    );
    card.metrics = serde_json::to_value(&report).unwrap_or_default();
    card.training =
        serde_json::json!({ "recipe": ctx.recipe, "data": data_dir.display().to_string() });
    card.created_at = chrono::Utc::now().to_rfc3339();
    save_model(&l.net, &card, ctx.dir.path())?;
    write_json(&ctx.dir.report(), &report)?;
    plots::confusion_png(&report.confusion_matrix, &ctx.dir.confusion_plot())?;
    Ok(report)
}
