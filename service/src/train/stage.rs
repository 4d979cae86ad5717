//! One stage of a recipe: its data (rebuilt only when the cached images would
//! differ), its normalisation (fixed by the first stage), its network (carried
//! over or new), lr_find when asked, then `fit_one_cycle` writing metrics and
//! checkpoints.

use super::checkpoint::CheckpointState;
use super::run_dir::{MetricsLine, RunDir};
use super::{RunEvent, TrainError};
use crate::data::{DataLoaders, DataOptions, Dataset};
use crate::learner::optim::AdamW;
use crate::learner::{Event, Learner, LearnerOptions};
use crate::learner::{FitError, OptState};
use crate::recipe::{Recipe, Stage};
use crate::report::plots;
use candle_core::Device;
use cxr_models::preprocess::Normalize;
use cxr_models::weights::load_pretrained;
use cxr_models::{NetConfig, Network};

/// What does not change during a run.
pub struct RunContext<'a> {
    pub recipe: &'a Recipe,
    pub ds: &'a Dataset,
    pub dir: &'a RunDir,
    pub device: &'a Device,
    pub workers: usize,
}

/// What one stage hands to the next.
#[derive(Default)]
pub struct Carried {
    pub learner: Option<Learner>,
    pub data: Option<(DataLoaders, DataOptions)>,
    pub norm: Option<Normalize>,
}

/// Where a resumed stage starts: epochs done and the optimizer's state.
pub struct ResumeAt {
    pub epochs_done: usize,
    pub opt: OptState,
}

/// A hook that sees every event of the run; `false` cancels.
pub type Hook<'h> = dyn FnMut(&RunEvent) -> bool + 'h;

/// The loaders' options a stage asks for.
pub fn data_options(stage: &Stage, workers: usize) -> DataOptions {
    DataOptions {
        presize: stage.presize,
        size: stage.size,
        bs: stage.bs,
        oversample: stage.oversample,
        merge_val_test: stage.merge_val_test,
        seed: stage.seed,
        workers,
    }
}

/// The normalisation a first stage sets: the data's statistics with
/// `normalize`, else ImageNet's for a pretrained body, else none.
pub fn normalisation(stage: &Stage, d: &DataLoaders) -> Normalize {
    if stage.normalize {
        d.compute_stats()
    } else if stage.pretrained.is_some() {
        Normalize::IMAGENET
    } else {
        Normalize::IDENTITY
    }
}

/// The learner's options of a stage (its tricks).
pub fn learner_options(stage: &Stage) -> LearnerOptions {
    LearnerOptions {
        wd: stage.wd,
        label_smoothing: stage.label_smoothing.value(0.1).unwrap_or(0.0),
        mixup: stage.mixup.value(0.4),
        precision: stage.precision,
        seed: stage.seed,
    }
}

/// A new network for the stage, with its pretrained weights loaded.
pub fn new_network(
    stage: &Stage,
    n_classes: usize,
    device: &Device,
    hook: &mut Hook<'_>,
) -> Result<Network, TrainError> {
    let net = Network::new(
        NetConfig::standard(stage.arch, n_classes),
        device,
        stage.seed,
    )?;
    if let Some(p) = &stage.pretrained {
        let r = load_pretrained(&net, p)?;
        hook(&RunEvent::Message(format!(
            "{}: {}",
            p.display(),
            r.summary()
        )));
    }
    Ok(net)
}

/// Runs stage `si` (`name` for logs) and returns the metrics lines it wrote.
pub fn run_stage(
    ctx: &RunContext<'_>,
    carried: &mut Carried,
    (si, name): (usize, String),
    resume: Option<ResumeAt>,
    hook: &mut Hook<'_>,
) -> Result<Vec<MetricsLine>, TrainError> {
    let stage = &ctx.recipe.stages()[si];
    let start = RunEvent::StageStart {
        stage: si,
        stages: ctx.recipe.stages().len(),
        name: name.clone(),
        epochs: stage.epochs,
    };
    if !hook(&start) {
        return Err(TrainError::Cancelled);
    }
    let mut d = take_data(ctx, carried, stage, hook)?;
    let norm = *carried.norm.get_or_insert_with(|| {
        let n = normalisation(stage, &d.0);
        hook(&RunEvent::Message(format!(
            "normalisation mean {:.4?} std {:.4?}",
            n.mean, n.std
        )));
        n
    });
    d.0.norm = norm;
    let mut l = take_learner(ctx, carried, stage, hook)?;
    let out = fit_stage(ctx, &mut l, &d.0, (si, name), norm, resume, hook);
    carried.learner = Some(l);
    carried.data = Some(d);
    out
}

/// The loaders: rebuilt when the cached images would differ, else only resized.
fn take_data(
    ctx: &RunContext<'_>,
    carried: &mut Carried,
    stage: &Stage,
    hook: &mut Hook<'_>,
) -> Result<(DataLoaders, DataOptions), TrainError> {
    let want = data_options(stage, ctx.workers);
    let mut data = match carried.data.take() {
        Some((mut d, mut o)) if same_cache(&o, &want) => {
            if o.size != want.size {
                d.set_size(want.size)?;
                o.size = want.size;
            }
            (d, o)
        }
        _ => {
            hook(&RunEvent::Message(format!(
                "presizing images to {0}x{0}",
                stage.presize
            )));
            let d = DataLoaders::new(ctx.ds, want.clone())?;
            for (p, why) in d.skipped() {
                hook(&RunEvent::Message(format!(
                    "skipped {}: {why}",
                    p.display()
                )));
            }
            (d, want)
        }
    };
    // On a GPU the crop/rotate/zoom resampling runs there (the CPU only decodes).
    data.0.device_augment = ctx.device.is_cuda();
    Ok(data)
}

/// Whether loaders built with `have` hold the images `want` needs.
fn same_cache(have: &DataOptions, want: &DataOptions) -> bool {
    have.presize == want.presize
        && have.bs == want.bs
        && have.oversample == want.oversample
        && have.merge_val_test == want.merge_val_test
        && have.seed == want.seed
}

/// The learner: carried over for the same architecture without new
/// pretrained weights, else a new network.
fn take_learner(
    ctx: &RunContext<'_>,
    carried: &mut Carried,
    stage: &Stage,
    hook: &mut Hook<'_>,
) -> Result<Learner, TrainError> {
    let mut l = match carried.learner.take() {
        Some(mut l) if l.net.config.arch == stage.arch && stage.pretrained.is_none() => {
            l.opts = learner_options(stage);
            l
        }
        _ => {
            let net = new_network(stage, ctx.ds.classes.len(), ctx.device, hook)?;
            Learner::new(net, learner_options(stage))
        }
    };
    l.frozen = stage.freeze;
    Ok(l)
}

/// lr_find when asked, then the one-cycle fit: a metrics line and a
/// checkpoint after every epoch, the loss plot at the end.
fn fit_stage(
    ctx: &RunContext<'_>,
    l: &mut Learner,
    d: &DataLoaders,
    (si, name): (usize, String),
    norm: Normalize,
    resume: Option<ResumeAt>,
    hook: &mut Hook<'_>,
) -> Result<Vec<MetricsLine>, TrainError> {
    let stage = &ctx.recipe.stages()[si];
    if stage.lr_find {
        lr_find(ctx.dir, l, d, hook)?;
    }
    let (start_epoch, opt_state) = match resume {
        Some(r) => (r.epochs_done, Some(r.opt)),
        None => (0, None),
    };
    let mut lines: Vec<MetricsLine> = Vec::new();
    let ckpt = ctx.dir.checkpoint();
    let mut checkpoint = |epochs_done: usize, l: &Learner, opt: &AdamW| {
        let state = CheckpointState {
            stage: si,
            epochs_done,
            net: l.net.config.clone(),
            norm,
            opt_step: 0,
            recipe: ctx.recipe.clone(),
        };
        ckpt.save(l, opt, state)
            .map_err(|e| FitError::Checkpoint(Box::new(e)))
    };
    let mut on_event = |e: &Event| {
        if let Event::Epoch(m) = e {
            let line = MetricsLine {
                stage: si,
                stage_name: name.clone(),
                size: stage.size,
                metrics: m.clone(),
            };
            if let Err(e) = ctx.dir.append_metrics(&line) {
                tracing::warn!("metrics line not written: {e}");
            }
            lines.push(line);
        }
        hook(&RunEvent::Learner {
            stage: si,
            event: e.clone(),
        })
    };
    l.fit_one_cycle(
        d,
        stage.epochs,
        stage.lr,
        start_epoch,
        opt_state,
        &mut on_event,
        &mut checkpoint,
    )?;
    Ok(lines)
}

/// lr_find on the stage's learner: writes `lr_find.png`, reports the suggestions.
fn lr_find(
    dir: &RunDir,
    l: &mut Learner,
    d: &DataLoaders,
    hook: &mut Hook<'_>,
) -> Result<(), TrainError> {
    let r = l.lr_find(d, 100)?;
    plots::lr_find_png(&r, &dir.lr_find_plot())?;
    if let Some(s) = r.suggestions {
        hook(&RunEvent::Message(format!(
            "lr_find: valley {:.2e}, minimum/10 {:.2e}, steep {:.2e}",
            s.valley, s.minimum, s.steep
        )));
    }
    Ok(())
}
