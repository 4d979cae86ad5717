//! The native side of the WASM/native parity check: runs the same
//! `cxr_wasm::preprocess_native` (i.e. `cxr_models::preprocess::preprocess_u8`)
//! the wasm build exports, on the host CPU.
//!
//! `native_preprocess --spec SPEC_JSON --out DIR FILE...` writes `DIR/<file name>.u8`
//! (the raw `size*size` bytes) or `DIR/<file name>.err` (the error message).
//! `native_preprocess --spec SPEC_JSON --bench N FILE` prints the median
//! milliseconds of N runs of the whole preprocess (decode + gray + resize).

use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut spec, mut out, mut bench, mut files) = (None, None, None, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--spec" => spec = args.next(),
            "--out" => out = args.next().map(PathBuf::from),
            "--bench" => bench = args.next().and_then(|n| n.parse::<usize>().ok()),
            _ => files.push(PathBuf::from(a)),
        }
    }
    let spec = spec.expect("--spec SPEC_JSON is required");
    if let Some(n) = bench {
        for f in &files {
            let bytes = std::fs::read(f).expect("read input");
            let mut ms = Vec::with_capacity(n);
            for _ in 0..n.max(1) {
                let t = Instant::now();
                let px = cxr_wasm::preprocess_native(&bytes, &spec).expect("preprocess");
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                std::hint::black_box(px);
            }
            ms.sort_by(f64::total_cmp);
            println!("{}\t{:.2}", f.display(), ms[ms.len() / 2]);
        }
        return;
    }
    let out = out.expect("--out DIR is required (or --bench N)");
    std::fs::create_dir_all(&out).expect("create output folder");
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        let name = out_name(f);
        match cxr_wasm::preprocess_native(&bytes, &spec) {
            Ok(px) => std::fs::write(out.join(format!("{name}.u8")), px),
            Err(e) => std::fs::write(out.join(format!("{name}.err")), e.to_string()),
        }
        .expect("write output");
    }
    println!(
        "native: preprocessed {} files into {}",
        files.len(),
        out.display()
    );
}

/// `dir/sub/file.jpg` -> `sub__file.jpg`: unique across the class folders.
fn out_name(f: &Path) -> String {
    let file = f
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match f.parent().and_then(Path::file_name) {
        Some(p) => format!("{}__{file}", p.to_string_lossy()),
        None => file,
    }
}
