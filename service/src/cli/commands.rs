//! What each subcommand does, in terms of the library.

use super::progress::Progress;
use super::{AblationArgs, Command, ExportFormat, TrainArgs};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use cxr_models::preprocess::DecodeLimits;
use cxr_models::weights::export_onnx;
use cxr_service::data::DataLoaders;
use cxr_service::evaluate::{evaluate, Split};
use cxr_service::learner::{Learner, LearnerOptions, LrSpec};
use cxr_service::recipe::{Recipe, Stage};
use cxr_service::report::plots;
use cxr_service::serve::{Model, Prediction};
use cxr_service::train::{run_recipe, stage, write_json, RunDir, RunOptions};
use std::path::{Path, PathBuf};

/// A model folder loaded for predictions on `device`.
fn load_model(dir: &Path, device: &Device) -> Result<Model> {
    Model::load(dir, device).with_context(|| format!("loading model {}", dir.display()))
}

fn evaluate_model(model: &Path, data: &Path, split: Split, device: &Device) -> Result<()> {
    let p = load_model(model, device)?;
    let ev = evaluate(&p, data, split, 32)?;
    for (path, why) in &ev.skipped {
        eprintln!("skipped {}: {why}", path.display());
    }
    println!("{}", serde_json::to_string_pretty(&ev.report)?);
    Ok(())
}

fn predict(model: &Path, images: &[PathBuf], device: &Device) -> Result<()> {
    let p = load_model(model, device)?;
    let mut failed = 0;
    for path in images {
        match classify(&p, path) {
            Ok(prediction) => {
                let line = FilePrediction {
                    file: path.display().to_string(),
                    prediction,
                };
                println!("{}", serde_json::to_string(&line)?);
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e}", path.display());
            }
        }
    }
    if failed > 0 {
        bail!("{failed} file(s) could not be classified");
    }
    Ok(())
}

fn interpret(
    model: &Path,
    data: &Path,
    split: Split,
    top_k: usize,
    out: &Path,
    device: &Device,
) -> Result<()> {
    let p = load_model(model, device)?;
    let report = cxr_service::report::interpret::interpret(&p, data, split, top_k, out)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn export(model: &Path, out: &Path, format: ExportFormat) -> Result<()> {
    match format {
        ExportFormat::Onnx => {}
    }
    let p = load_model(model, &Device::Cpu)?;
    export_onnx(p.network(), p.spec().size as usize, out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// One line of `cxr predict`: the file and its prediction.
#[derive(serde::Serialize)]
struct FilePrediction {
    file: String,
    #[serde(flatten)]
    prediction: Prediction,
}

/// One image file through the model (the server's preprocessing and forward pass).
fn classify(p: &Model, path: &Path) -> Result<Prediction> {
    let bytes = std::fs::read(path)?;
    let gray = p.gray(&bytes, DecodeLimits::default())?;
    let probs = p.predict_gray(&[gray.as_slice()])?;
    let probs = probs.first().context("the model gave no result")?;
    Ok(p.prediction(probs))
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Train(a) => train(&a),
        Command::LrFind(a) => lr_find(&a),
        Command::Evaluate {
            model,
            data,
            split,
            device,
        } => evaluate_model(&model, &data, split, &device),
        Command::Predict {
            model,
            images,
            device,
        } => predict(&model, &images, &device),
        Command::Interpret {
            model,
            data,
            split,
            top_k,
            out,
            device,
        } => {
            let out = out.unwrap_or_else(|| model.join("interpret"));
            interpret(&model, &data, split, top_k, &out, &device)
        }
        Command::Ablation(a) => ablation(&a),
        Command::Serve(a) => a.run(),
        Command::Bench(a) => super::bench::run(a),
        Command::Export { model, out, format } => export(&model, &out, format),
    }
}

fn recipe_of(a: &TrainArgs) -> Result<Recipe> {
    Ok(match &a.recipe {
        Some(r) => Recipe::load(r)?,
        None => Recipe::single(a.stage.clone())?,
    })
}

fn train(a: &TrainArgs) -> Result<()> {
    let recipe = recipe_of(a)?;
    let mut progress = Progress::new(a.quiet);
    let mut hook = |e: &cxr_service::train::RunEvent| progress.on(e);
    let summary = run_recipe(
        &a.data,
        &recipe,
        &a.out,
        RunOptions {
            device: a.device.clone(),
            resume: a.resume,
            workers: a.workers,
            hook: &mut hook,
        },
    )?;
    let r = &summary.report;
    eprintln!(
        "\nfinal: accuracy {:.4}  f1 {:.4}  precision {:.4}  recall {:.4}  auc {:.4}  ({} images, {:.0} s)\nconfusion matrix {:?}\nmodel: {}",
        r.accuracy, r.f1, r.precision, r.recall, r.auc, r.n, summary.seconds, r.confusion_matrix.matrix, summary.run_dir.display()
    );
    Ok(())
}

/// `cxr lr-find`: the stage's data, normalisation and network as training
/// would build them, then the sweep.
fn lr_find(a: &TrainArgs) -> Result<()> {
    let stage = &a.stage;
    Recipe::single(stage.clone())?;
    let ds = cxr_service::data::Dataset::scan(&a.data)?;
    eprintln!("{}", ds.counts());
    let mut dls = DataLoaders::new(&ds, stage::data_options(stage, a.workers))?;
    if stage.normalize {
        dls.norm = stage::normalisation(stage, &dls);
    }
    dls.device_augment = a.device.is_cuda();
    let mut say = |e: &cxr_service::train::RunEvent| {
        if let cxr_service::train::RunEvent::Message(m) = e {
            eprintln!("{m}");
        }
        true
    };
    let net = stage::new_network(stage, ds.classes.len(), &a.device, &mut say)?;
    let mut l = Learner::new(
        net,
        LearnerOptions {
            seed: stage.seed,
            ..Default::default()
        },
    );
    l.frozen = stage.freeze;
    let r = l.lr_find(&dls, 100)?;
    let dir = RunDir::new(&a.out);
    dir.create()?;
    plots::lr_find_png(&r, &dir.lr_find_plot())?;
    write_json(&dir.file("lr_find.json"), &r)?;
    println!(
        "{}",
        serde_json::json!({"suggestions": r.suggestions, "iterations": r.lrs.len(), "plot": dir.lr_find_plot()})
    );
    Ok(())
}

/// The ablation's steps: each adds one trick to the one before.
fn ablation_steps(a: &AblationArgs) -> Vec<(&'static str, Vec<Stage>)> {
    let s0 = Stage {
        size: a.size,
        presize: a.presize,
        epochs: a.epochs,
        bs: a.bs,
        lr: a.lr,
        seed: a.seed,
        ..Stage::default()
    };
    let s1 = Stage {
        oversample: Some(3),
        ..s0.clone()
    };
    let s2 = Stage {
        merge_val_test: true,
        ..s1.clone()
    };
    let s3 = Stage {
        normalize: true,
        ..s2.clone()
    };
    let mut steps: Vec<(&str, Vec<Stage>)> = vec![
        ("baseline xresnet18", vec![s0]),
        ("+ oversampling", vec![s1]),
        ("+ merged validation", vec![s2]),
        ("+ normalization", vec![s3.clone()]),
    ];
    match &a.pretrained {
        Some(p) => {
            let frozen = Stage { arch: cxr_models::Arch::Resnet18, pretrained: Some(p.clone()), freeze: true, lr: LrSpec::Single(2e-3), ..s3 };
            steps.push(("+ pretrained resnet18 frozen", vec![frozen.clone()]));
            let unfrozen = Stage { pretrained: None, freeze: false, lr: LrSpec::Range(1e-6, 1e-4), ..frozen.clone() };
            steps.push(("+ unfreeze (1e-6..1e-4)", vec![frozen.clone(), unfrozen.clone()]));
            let big = (a.size * 3 / 2).min(a.presize);
            let rf = Stage { size: big, freeze: true, lr: LrSpec::Single(1e-3), ..unfrozen.clone() };
            let ru = Stage { size: big, freeze: false, lr: LrSpec::Range(1e-6, 1e-4), ..unfrozen.clone() };
            steps.push(("+ progressive resize", vec![frozen, unfrozen, rf, ru]));
        }
        None => eprintln!(
            "note: no --pretrained weights: the pretrained, unfreeze and progressive-resize steps are skipped (scripts/fetch-weights.sh gets them)"
        ),
    }
    steps
}

/// `cxr ablation`: the tricks cumulatively, a table of metrics per step.
fn ablation(a: &AblationArgs) -> Result<()> {
    let mut rows = Vec::new();
    for (i, (name, stages)) in ablation_steps(a).into_iter().enumerate() {
        eprintln!("\n### step {}: {name}", i + 1);
        let recipe = Recipe::new(name, "", stages)?;
        let mut progress = Progress::new(true);
        let mut hook = |e: &cxr_service::train::RunEvent| progress.on(e);
        let out = a.out.join(format!("step{}", i + 1));
        let s = run_recipe(
            &a.data,
            &recipe,
            &out,
            RunOptions {
                device: a.device.clone(),
                resume: false,
                workers: 0,
                hook: &mut hook,
            },
        )?;
        let r = &s.report;
        rows.push(format!(
            "| {name} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {:.0} |",
            r.accuracy, r.f1, r.precision, r.recall, r.auc, r.n, s.seconds
        ));
    }
    println!("\n| step | accuracy | f1 | precision | recall | auc | n valid | seconds |\n|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}
