//! Running a recipe: dataset, then loaders, then the learner stage by stage,
//! then the reports. Writes the run directory:
//! `metrics.jsonl`, `report.json`, `model.safetensors`, `model.json`,
//! `losses.png`, `confusion_matrix.png`, `lr_find.png` (when asked) and
//! `checkpoint/` (the last completed epoch, for `--resume`).

use crate::data::{DataLoaders, DataOptions, Dataset};
use crate::learner::fit::{FitError, OptState};
use crate::learner::{Event, Learner, LearnerOptions, Report};
use crate::recipe::{Recipe, Stage};
use crate::report::plots;
use candle_core::{Device, Tensor};
use cxr_models::preprocess::{PreprocessSpec, IMAGENET_MEAN, IMAGENET_STD};
use cxr_models::weights::{load_pretrained, read_tensors, save_model, ModelCard};
use cxr_models::{NetConfig, Network};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

mod run_dir;
pub use run_dir::{Checkpoint, RunDir, ARTIFACTS};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("invalid recipe: {0}")]
    Recipe(String),
    #[error("pretrained weights {path} not found. Fetch them on a machine with internet access with `scripts/fetch-weights.sh` (torchvision ResNet18 IMAGENET1K_V1), then copy the file to {path} or pass --pretrained FILE")]
    MissingWeights { path: PathBuf },
    #[error(transparent)]
    Weights(#[from] cxr_models::weights::WeightsError),
    #[error("training was cancelled")]
    Cancelled,
    #[error("{0}")]
    Fit(String),
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<FitError> for TrainError {
    fn from(e: FitError) -> Self {
        match e {
            FitError::Cancelled => TrainError::Cancelled,
            FitError::Candle(c) => TrainError::Candle(c),
            other => TrainError::Fit(other.to_string()),
        }
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Progress of a whole run, as the CLI and the job runner see it.
#[derive(Debug, Clone)]
pub enum RunEvent {
    Message(String),
    StageStart {
        stage: usize,
        stages: usize,
        name: String,
        epochs: usize,
    },
    Learner {
        stage: usize,
        event: Event,
    },
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsLine {
    pub stage: usize,
    pub stage_name: String,
    pub size: u32,
    #[serde(flatten)]
    pub metrics: crate::learner::EpochMetrics,
}

/// What `checkpoint/state.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    /// Index into the recipe's stages of the stage in progress.
    stage: usize,
    /// Epochs of that stage completed.
    epochs_done: usize,
    net: NetConfig,
    mean: [f32; 3],
    std: [f32; 3],
    opt_step: u64,
    recipe: Recipe,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub report: Report,
    pub metrics: Vec<MetricsLine>,
    pub seconds: f64,
}

pub struct RunOptions<'a> {
    pub device: Device,
    pub resume: bool,
    pub workers: usize,
    pub hook: &'a mut dyn FnMut(&RunEvent) -> bool,
}

/// Runs every stage of `recipe` on the dataset at `data_dir`, writing `run_dir`.
pub fn run_recipe(
    data_dir: &Path,
    recipe: &Recipe,
    run_dir: &Path,
    opts: RunOptions<'_>,
) -> Result<RunSummary, TrainError> {
    let t0 = std::time::Instant::now();
    recipe.validate().map_err(TrainError::Recipe)?;
    let RunOptions {
        device,
        resume,
        workers,
        hook,
    } = opts;
    std::fs::create_dir_all(run_dir).map_err(|e| io_err(run_dir, e))?;
    for s in recipe.stages.iter().filter(|s| !s.skip) {
        s.precision
            .check_device(&device)
            .map_err(|e| TrainError::Recipe(e.to_string()))?;
        if let Some(p) = &s.pretrained {
            if !p.exists() {
                return Err(TrainError::MissingWeights { path: p.clone() });
            }
        }
    }
    let ds = Dataset::scan(data_dir)?;
    hook(&RunEvent::Message(ds.counts()));

    let dir = RunDir::new(run_dir);
    let ckpt = dir.checkpoint();
    let state: Option<CheckpointState> = if resume {
        let p = ckpt.state();
        let text = std::fs::read_to_string(&p)
            .map_err(|e| io_err(&p, format!("no checkpoint to resume from ({e})")))?;
        Some(serde_json::from_str(&text).map_err(|e| io_err(&p, e))?)
    } else {
        let _ = std::fs::remove_file(dir.metrics());
        None
    };
    let mut metrics: Vec<MetricsLine> = if resume {
        read_metrics(&dir)
    } else {
        Vec::new()
    };

    let mut learner: Option<Learner> = None;
    let mut norm: Option<([f32; 3], [f32; 3])> = None;
    let mut dls: Option<(DataLoaders, DataOptions)> = None;
    let mut resume_at: Option<(usize, OptState)> = None;
    let mut start_stage = 0;
    if let Some(st) = &state {
        let net = Network::new(st.net.clone(), &device, 0)?;
        let tensors = read_tensors(&ckpt.weights())?;
        for (n, t) in &tensors {
            net.params().set(n, t)?;
        }
        let opt = candle_core::safetensors::load(ckpt.optimizer(), &device)?;
        let stage = &recipe.stages[st.stage];
        let mut l = Learner::new(net, learner_options(stage));
        l.frozen = stage.freeze;
        learner = Some(l);
        norm = Some((st.mean, st.std));
        start_stage = st.stage;
        resume_at = Some((
            st.epochs_done,
            OptState {
                tensors: opt,
                step: st.opt_step,
            },
        ));
        metrics.retain(|m| {
            m.stage < st.stage || (m.stage == st.stage && m.metrics.epoch < st.epochs_done)
        });
        hook(&RunEvent::Message(format!(
            "resuming stage {} ({}) after epoch {}",
            st.stage + 1,
            stage.name.clone().unwrap_or_default(),
            st.epochs_done
        )));
    }

    let active: Vec<usize> = (0..recipe.stages.len())
        .filter(|&i| !recipe.stages[i].skip)
        .collect();
    let mut last_stage = None;
    for (k, &si) in active.iter().enumerate() {
        if si < start_stage {
            continue;
        }
        let stage = &recipe.stages[si];
        let name = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage {}", k + 1));
        if !hook(&RunEvent::StageStart {
            stage: si,
            stages: recipe.stages.len(),
            name: name.clone(),
            epochs: stage.epochs,
        }) {
            return Err(TrainError::Cancelled);
        }
        // Data: rebuild when the cached images would differ, else only resize.
        let want = DataOptions {
            presize: stage.presize,
            size: stage.size,
            bs: stage.bs,
            oversample: stage.oversample,
            merge_val_test: stage.merge_val_test,
            seed: stage.seed,
            workers,
        };
        let rebuild = match &dls {
            Some((_, o)) => {
                o.presize != want.presize
                    || o.bs != want.bs
                    || o.oversample != want.oversample
                    || o.merge_val_test != want.merge_val_test
                    || o.seed != want.seed
            }
            None => true,
        };
        if rebuild {
            hook(&RunEvent::Message(format!(
                "presizing images to {0}x{0}",
                stage.presize
            )));
            let d = DataLoaders::new(&ds, want.clone())?;
            for (p, why) in d.skipped() {
                hook(&RunEvent::Message(format!(
                    "skipped {}: {why}",
                    p.display()
                )));
            }
            dls = Some((d, want));
        } else if let Some((d, o)) = dls.as_mut() {
            if o.size != stage.size {
                d.set_size(stage.size)?;
                o.size = stage.size;
            }
        }
        let Some((d, _)) = dls.as_mut() else {
            unreachable!("loaders were just built")
        };
        // On a GPU the crop/rotate/zoom resampling runs there (the CPU only decodes).
        d.device_augment = device.is_cuda();
        // Normalisation: fixed at the first stage so the model always sees the same scale.
        let stats = match norm {
            Some(n) => n,
            None => {
                let n = if stage.normalize {
                    d.compute_stats()
                } else if stage.pretrained.is_some() {
                    (IMAGENET_MEAN, IMAGENET_STD)
                } else {
                    ([0.0; 3], [1.0; 3])
                };
                hook(&RunEvent::Message(format!(
                    "normalisation mean {:.4?} std {:.4?}",
                    n.0, n.1
                )));
                norm = Some(n);
                n
            }
        };
        d.norm = stats;
        // Network: new for a pretrained or different architecture, else carried over.
        let carry = match &learner {
            Some(l) => l.net.config.arch == stage.arch && stage.pretrained.is_none(),
            None => false,
        };
        let mut l = if carry {
            let Some(mut l) = learner.take() else {
                unreachable!("checked above")
            };
            l.opts = learner_options(stage);
            l
        } else {
            let cfg = NetConfig::standard(stage.arch, ds.classes.len());
            let net = Network::new(cfg, &device, stage.seed)?;
            if let Some(p) = &stage.pretrained {
                let r = load_pretrained(&net, p)?;
                hook(&RunEvent::Message(format!(
                    "{}: {}",
                    p.display(),
                    r.summary()
                )));
            }
            Learner::new(net, learner_options(stage))
        };
        l.frozen = stage.freeze;
        if stage.lr_find {
            let r = l.lr_find(d, 100)?;
            plots::lr_find_png(&r, &dir.lr_find_plot()).map_err(|e| io_err(run_dir, e))?;
            if let Some(s) = r.suggestions {
                hook(&RunEvent::Message(format!(
                    "lr_find: valley {:.2e}, minimum/10 {:.2e}, steep {:.2e}",
                    s.valley, s.minimum, s.steep
                )));
            }
        }
        let (start_epoch, opt_state) = match resume_at.take() {
            Some((e, s)) if si == start_stage => (e, Some(s)),
            _ => (0, None),
        };
        let mut learner_hook = |e: &Event| {
            hook(&RunEvent::Learner {
                stage: si,
                event: e.clone(),
            })
        };
        let metrics_path = dir.metrics();
        let recipe_c = recipe.clone();
        let size = stage.size;
        let stage_name = name.clone();
        let mut new_lines: Vec<MetricsLine> = Vec::new();
        let ckpt = &ckpt;
        let mut checkpoint = |epochs_done: usize,
                              l: &Learner,
                              opt: &crate::learner::optim::AdamW|
         -> Result<(), FitError> {
            save_checkpoint(
                ckpt,
                l,
                opt,
                CheckpointState {
                    stage: si,
                    epochs_done,
                    net: l.net.config.clone(),
                    mean: stats.0,
                    std: stats.1,
                    opt_step: 0,
                    recipe: recipe_c.clone(),
                },
            )
            .map_err(|e| FitError::Other(e.to_string()))
        };
        let res = l.fit_one_cycle(
            d,
            stage.epochs,
            stage.lr,
            start_epoch,
            opt_state,
            &mut |e: &Event| {
                if let Event::Epoch(m) = e {
                    let line = MetricsLine {
                        stage: si,
                        stage_name: stage_name.clone(),
                        size,
                        metrics: m.clone(),
                    };
                    if let Ok(mut f) = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&metrics_path)
                    {
                        if let Ok(s) = serde_json::to_string(&line) {
                            let _ = writeln!(f, "{s}");
                        }
                    }
                    new_lines.push(line);
                }
                learner_hook(e)
            },
            &mut checkpoint,
        );
        metrics.extend(new_lines);
        res?;
        plots::losses_png(&l.batch_losses, &metrics, &dir.losses_plot())
            .map_err(|e| io_err(run_dir, e))?;
        last_stage = Some(si);
        learner = Some(l);
    }
    let (Some(l), Some((d, _)), Some(si)) = (learner, dls, last_stage.or(Some(start_stage))) else {
        return Err(TrainError::Recipe("no stage ran".into()));
    };
    let stage: &Stage = &recipe.stages[si];
    let report = l.valid_report(&d)?;
    let (mean, std) = norm.unwrap_or(([0.0; 3], [1.0; 3]));
    let mut card = ModelCard::new(
        l.net.config.clone(),
        d.classes().to_vec(),
        PreprocessSpec::new(stage.size, mean, std),
    );
    card.metrics = serde_json::to_value(&report).unwrap_or_default();
    card.training = serde_json::json!({ "recipe": recipe, "data": data_dir.display().to_string() });
    card.created_at = chrono::Utc::now().to_rfc3339();
    save_model(&l.net, &card, run_dir)?;
    write_json(&dir.report(), &report)?;
    plots::confusion_png(
        &report.confusion_matrix,
        &dir.confusion_plot(),
    )
    .map_err(|e| io_err(run_dir, e))?;
    Ok(RunSummary {
        run_dir: run_dir.to_path_buf(),
        report,
        metrics,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn learner_options(stage: &Stage) -> LearnerOptions {
    LearnerOptions {
        wd: stage.wd,
        label_smoothing: stage.label_smoothing.value(0.1).unwrap_or(0.0),
        mixup: stage.mixup.value(0.4),
        precision: stage.precision,
        seed: stage.seed,
    }
}

fn save_checkpoint(
    ckpt: &Checkpoint,
    l: &Learner,
    opt: &crate::learner::optim::AdamW,
    mut state: CheckpointState,
) -> Result<(), TrainError> {
    let dir = ckpt.dir();
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    l.net.params().save_safetensors(&ckpt.weights())?;
    let (tensors, step) = opt.state()?;
    state.opt_step = step;
    let tmp = dir.join("optimizer.safetensors.tmp");
    let tensors: HashMap<String, Tensor> = tensors;
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, ckpt.optimizer()).map_err(|e| io_err(dir, e))?;
    // state.json last: it is what marks the checkpoint complete.
    write_json(&ckpt.state(), &state)
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value).map_err(|e| io_err(path, e))?;
    std::fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

fn read_metrics(dir: &RunDir) -> Vec<MetricsLine> {
    std::fs::read_to_string(dir.metrics())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Whether `run_dir` holds a checkpoint that `--resume` can continue.
pub fn has_checkpoint(run_dir: &Path) -> bool {
    RunDir::new(run_dir).has_checkpoint()
}
