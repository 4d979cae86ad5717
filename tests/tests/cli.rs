//! The `cxr` command line, end to end, on generated images.

use cxr_e2e::{cxr, make_dataset, real_data};
use std::path::Path;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read json")).expect("parse json")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn tiny_training_learns_and_every_command_works_on_its_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 40, 10, 10);
    let run = tmp.path().join("run");
    let out = cxr(&[
        "train",
        "--data",
        s(&data),
        "--arch",
        "xresnet18",
        "--size",
        "32",
        "--presize",
        "48",
        "--epochs",
        "4",
        "--bs",
        "8",
        "--lr",
        "3e-3",
        "--oversample",
        "2",
        "--merge-val-test",
        "--normalize",
        "--seed",
        "1",
        "--out",
        s(&run),
        "--quiet",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "train failed:\n{stderr}");
    assert!(
        stderr.contains("NORMAL") && stderr.contains("PNEUMONIA"),
        "class counts are printed:\n{stderr}"
    );
    for f in [
        "model.safetensors",
        "model.json",
        "report.json",
        "metrics.jsonl",
        "losses.png",
        "confusion_matrix.png",
        "checkpoint/state.json",
    ] {
        assert!(run.join(f).exists(), "{f} missing from the run dir");
    }
    let report = json(&run.join("report.json"));
    let acc = report["accuracy"].as_f64().unwrap();
    assert!(
        acc >= 0.8,
        "a tiny run should learn the blob: accuracy {acc}\n{stderr}"
    );
    assert_eq!(
        report["confusion_matrix"]["labels"],
        serde_json::json!(["NORMAL", "PNEUMONIA"])
    );
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4);
    let card = json(&run.join("model.json"));
    assert_eq!(card["preprocess"]["size"], 32);
    assert!(
        card["preprocess"]["mean"][0].as_f64().unwrap() > 0.1,
        "normalisation stats come from the data"
    );

    // evaluate prints the report JSON.
    let out = cxr(&[
        "evaluate",
        "--model",
        s(&run),
        "--data",
        s(&data),
        "--split",
        "test",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ev["n"], 20);
    for k in [
        "accuracy",
        "f1",
        "precision",
        "recall",
        "auc",
        "classification_report",
    ] {
        assert!(ev.get(k).is_some(), "{k} missing");
    }

    // predict: one JSON line per file; a bad file gives a message and a non-zero exit.
    let img = data.join("test/PNEUMONIA/PNEUMONIA-test-0.png");
    let out = cxr(&["predict", "--model", s(&run), s(&img)]);
    assert!(out.status.success());
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(p["probabilities"]["PNEUMONIA"].as_f64().is_some());
    let bad = tmp.path().join("bad.jpeg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 definitely not a jpeg").unwrap();
    let out = cxr(&["predict", "--model", s(&run), s(&bad)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.jpeg"));

    // interpret: confusion matrix, report, top losses with Grad-CAM.
    let interp = tmp.path().join("interp");
    let out = cxr(&[
        "interpret",
        "--model",
        s(&run),
        "--data",
        s(&data),
        "--top-k",
        "3",
        "--out",
        s(&interp),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(interp.join("confusion_matrix.png").exists());
    let top = json(&interp.join("top_losses.json"));
    assert_eq!(top.as_array().unwrap().len(), 3);
    let first = top[0]["gradcam"].as_str().unwrap();
    assert!(image::open(interp.join(first)).is_ok());

    // export to ONNX.
    let onnx = tmp.path().join("m.onnx");
    let out = cxr(&["export", "--model", s(&run), "--out", s(&onnx)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&onnx).unwrap().len() > 100_000);
}

#[test]
fn lr_find_sweeps_suggests_and_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 24, 4, 4);
    let out_dir = tmp.path().join("lr");
    let out = cxr(&[
        "lr-find",
        "--data",
        s(&data),
        "--arch",
        "xresnet18",
        "--size",
        "32",
        "--presize",
        "40",
        "--bs",
        "8",
        "--seed",
        "3",
        "--out",
        s(&out_dir),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lr-find failed:\n{stderr}");
    let line: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("lr-find prints one JSON line");
    let iters = line["iterations"].as_u64().unwrap();
    assert!((5..=100).contains(&iters), "{iters} iterations");
    for k in ["valley", "minimum", "steep"] {
        let v = line["suggestions"][k].as_f64().unwrap();
        assert!(v > 1e-7 && v < 10.0, "{k} = {v} is outside the sweep");
    }
    // The sweep is exponential from 1e-7 and the curve is recorded and plotted.
    let rec = json(&out_dir.join("lr_find.json"));
    let lrs: Vec<f64> = rec["lrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(lrs.len() as u64, iters);
    assert!(
        (lrs[0] - 1e-7).abs() < 1e-9,
        "starts at 1e-7, got {}",
        lrs[0]
    );
    let ratio = lrs[1] / lrs[0];
    assert!(
        lrs.windows(2)
            .all(|w| ((w[1] / w[0]) / ratio - 1.0).abs() < 1e-6),
        "not geometric"
    );
    let png = std::fs::read(out_dir.join("lr_find.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
}

#[test]
fn ablation_runs_every_step_and_prints_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 24, 4, 6);
    // "Pretrained" weights for the transfer-learning steps: a resnet18 trained here for one
    // epoch (its model.safetensors has torchvision's names, as timm's files do).
    let pre = tmp.path().join("pre");
    let small = [
        "--size",
        "32",
        "--presize",
        "40",
        "--epochs",
        "1",
        "--bs",
        "8",
    ];
    let mut args = vec![
        "train",
        "--data",
        s(&data),
        "--arch",
        "resnet18",
        "--out",
        s(&pre),
        "--quiet",
    ];
    args.extend(small);
    let out = cxr(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let weights = pre.join("model.safetensors");
    let abl = tmp.path().join("abl");
    let mut args = vec![
        "ablation",
        "--data",
        s(&data),
        "--pretrained",
        s(&weights),
        "--out",
        s(&abl),
    ];
    args.extend(small);
    let out = cxr(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ablation failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| step"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(
        names,
        [
            "baseline xresnet18",
            "+ oversampling",
            "+ merged validation",
            "+ normalization",
            "+ pretrained resnet18 frozen",
            "+ unfreeze (1e-6..1e-4)",
            "+ progressive resize"
        ],
        "{stdout}"
    );
    // n valid: val only (2 x 4) until the merged-validation step adds test (2 x 6).
    let n: Vec<&str> = rows.iter().map(|r| r[6]).collect();
    assert_eq!(n, ["8", "8", "20", "20", "20", "20", "20"], "{stdout}");
    for r in &rows {
        let acc: f64 = r[1].parse().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{r:?}");
    }
    for i in 1..=7 {
        assert!(
            abl.join(format!("step{i}/report.json")).exists(),
            "step {i} report"
        );
    }
}

#[test]
fn user_errors_exit_non_zero_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 4, 2, 2);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "train".into(),
                "--data".into(),
                tmp.path().join("nowhere").display().to_string(),
            ],
            "does not exist",
        ),
        (
            vec![
                "train".into(),
                "--data".into(),
                s(&data).into(),
                "--arch".into(),
                "resnet18".into(),
                "--pretrained".into(),
                "missing.pth".into(),
            ],
            "fetch-weights.sh",
        ),
        (
            vec![
                "train".into(),
                "--data".into(),
                s(&data).into(),
                "--epochs".into(),
                "0".into(),
            ],
            "epochs",
        ),
        (
            vec![
                "train".into(),
                "--data".into(),
                s(&data).into(),
                "--lr".into(),
                "-1".into(),
            ],
            "learning rate",
        ),
        (
            vec![
                "train".into(),
                "--data".into(),
                s(&data).into(),
                "--arch".into(),
                "vgg".into(),
            ],
            "vgg",
        ),
        (
            vec![
                "train".into(),
                "--data".into(),
                s(&data).into(),
                "--recipe".into(),
                "nope".into(),
            ],
            "recipe",
        ),
        (
            vec![
                "evaluate".into(),
                "--model".into(),
                "/nonexistent".into(),
                "--data".into(),
                s(&data).into(),
            ],
            "model.json",
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cxr(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains(want), "{args:?}: expected {want:?} in:\n{err}");
        assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    }
    // An empty class folder is named.
    let empty = tmp.path().join("empty");
    make_dataset(&empty, 2, 1, 1);
    for f in std::fs::read_dir(empty.join("train/NORMAL")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let out = cxr(&["train", "--data", s(&empty)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("NORMAL"));
}

#[test]
fn real_data_smoke_run() {
    let Some(data) = real_data() else {
        eprintln!(
            "SKIPPED: ../shared/data/chest-xray-mini is absent; the real-data smoke run needs it"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = cxr(&[
        "train",
        "--data",
        s(&data),
        "--arch",
        "xresnet18",
        "--size",
        "64",
        "--presize",
        "96",
        "--epochs",
        "1",
        "--bs",
        "32",
        "--oversample",
        "3",
        "--merge-val-test",
        "--normalize",
        "--out",
        s(&run),
        "--quiet",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report = json(&run.join("report.json"));
    assert_eq!(report["n"], 264, "merged val+test of chest-xray-mini");
    let acc = report["accuracy"].as_f64().unwrap();
    eprintln!("real-data smoke run: 1 epoch at 64 px, accuracy {acc:.3}");
    assert!(acc > 0.5, "accuracy {acc}");
}
