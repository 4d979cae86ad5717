//! Helpers for the end-to-end tests: locating the real `cxr` binary and
//! generating small labelled datasets in the Kaggle layout.

use image::{GrayImage, Luma};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `cxr` binary of this build (`target/debug/cxr` by default), building it if needed.
pub fn cxr_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug").join("cxr");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "cxr-service", "--bin", "cxr"])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "building cxr failed: run `cargo build -p cxr-service`"
        );
    }
    bin
}

/// Runs `cxr ARGS` and returns its output.
pub fn cxr(args: &[&str]) -> Output {
    Command::new(cxr_bin())
        .args(args)
        .output()
        .expect("run cxr")
}

/// A generated X-ray stand-in: class 1 ("PNEUMONIA") has a bright blob in one
/// lung field, class 0 is plain noise over a smooth gradient. Sizes vary and
/// are not square, as real files.
pub fn synthetic_image(label: usize, index: usize) -> GrayImage {
    let (w, h) = (44 + (index % 5) as u32 * 4, 36 + (index % 3) as u32 * 4);
    let mut seed = (index as u32)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(label as u32);
    let cx = w as f32 * if index.is_multiple_of(2) { 0.3 } else { 0.7 };
    let cy = h as f32 * 0.5;
    GrayImage::from_fn(w, h, |x, y| {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = ((seed >> 24) as f32) / 8.0;
        let base = 60.0 + 40.0 * (y as f32 / h as f32) + noise;
        let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
        let blob = if label == 1 {
            140.0 * (-d2 / (w as f32 * 1.2)).exp()
        } else {
            0.0
        };
        Luma([(base + blob).min(255.0) as u8])
    })
}

/// Writes `train/`, `val/`, `test/` with NORMAL and PNEUMONIA images (PNG and JPEG).
pub fn make_dataset(root: &Path, n_train: usize, n_val: usize, n_test: usize) {
    for (split, n) in [("train", n_train), ("val", n_val), ("test", n_test)] {
        for (label, class) in ["NORMAL", "PNEUMONIA"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).expect("mkdir");
            for i in 0..n {
                let img = synthetic_image(label, i + split.len() * 1000);
                let ext = if i % 2 == 0 { "png" } else { "jpeg" };
                img.save(dir.join(format!("{class}-{split}-{i}.{ext}")))
                    .expect("save image");
            }
        }
    }
}

/// The real chest-xray-mini folder, when present beside the checkout.
pub fn real_data() -> Option<PathBuf> {
    let p = workspace_root().join("../shared/data/chest-xray-mini");
    p.join("train").is_dir().then_some(p)
}
