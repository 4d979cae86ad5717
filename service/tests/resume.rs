//! Checkpoint and resume: a run stopped after an epoch continues from the next one.

use cxr_service::learner::Event;
use cxr_service::recipe::{Recipe, Stage};
use cxr_service::train::{run_recipe, RunDir, RunEvent, RunOptions, TrainError};
use image::{GrayImage, Luma};

fn dataset(root: &std::path::Path) {
    for split in ["train", "val"] {
        for (label, class) in ["NORMAL", "PNEUMONIA"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..12u32 {
                let img = GrayImage::from_fn(40, 36, |x, y| {
                    Luma([((x * 3 + y + i * 7) % 50) as u8
                        + if label == 1 && x > 20 { 150 } else { 0 }])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

#[test]
fn a_stopped_run_resumes_from_the_last_completed_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    dataset(tmp.path());
    let run = tmp.path().join("run");
    let stage = Stage {
        size: 32,
        presize: 40,
        epochs: 3,
        bs: 8,
        ..Stage::default()
    };
    let recipe = Recipe::single(stage).unwrap();
    // First run: stop right after epoch 0 completes (as a crash would).
    let mut epochs_seen = Vec::new();
    let mut hook = |e: &RunEvent| {
        if let RunEvent::Learner {
            event: Event::Epoch(m),
            ..
        } = e
        {
            epochs_seen.push(m.epoch);
            return false;
        }
        true
    };
    let r = run_recipe(
        tmp.path(),
        &recipe,
        &run,
        RunOptions {
            device: candle_core::Device::Cpu,
            resume: false,
            workers: 1,
            hook: &mut hook,
        },
    );
    assert!(matches!(r, Err(TrainError::Cancelled)), "{:?}", r.err());
    assert_eq!(epochs_seen, vec![0]);
    assert!(cxr_service::train::has_checkpoint(&run));
    // Resume: the first epoch started is 1, and the run finishes.
    let mut starts = Vec::new();
    let mut hook = |e: &RunEvent| {
        if let RunEvent::Learner {
            event: Event::EpochStart { epoch, .. },
            ..
        } = e
        {
            starts.push(*epoch);
        }
        true
    };
    let s = run_recipe(
        tmp.path(),
        &recipe,
        &run,
        RunOptions {
            device: candle_core::Device::Cpu,
            resume: true,
            workers: 1,
            hook: &mut hook,
        },
    )
    .expect("resume");
    assert_eq!(starts, vec![1, 2]);
    let epochs: Vec<usize> = s.metrics.iter().map(|m| m.metrics.epoch).collect();
    assert_eq!(epochs, vec![0, 1, 2]);
    let lines = std::fs::read_to_string(RunDir::new(&run).metrics()).unwrap();
    assert_eq!(lines.lines().count(), 3, "{lines}");
    assert!(RunDir::new(&run).card().exists());
}
