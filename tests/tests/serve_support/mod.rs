//! Shared helpers of the `serve*` end-to-end tests: start the real `cxr serve`
//! on a free port with a temporary home, generate a tiny dataset, talk HTTP.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "e2e-secret-token";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `target/debug/cxr` (or `$CARGO_TARGET_DIR/debug/cxr`); built once if missing.
pub fn cxr_bin() -> PathBuf {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target = if target.is_relative() {
        root.join(target)
    } else {
        target
    };
    let bin = target
        .join("debug")
        .join(if cfg!(windows) { "cxr.exe" } else { "cxr" });
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "cxr-service", "--bin", "cxr"])
            .current_dir(&root)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok && bin.exists(),
            "the cxr binary {} is missing and could not be built: run `cargo build -p cxr-service` first",
            bin.display()
        );
    }
    bin
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

pub struct Server {
    pub child: Child,
    pub base: String,
    pub home: PathBuf,
    pub log: PathBuf,
}

impl Server {
    pub fn start(home: &Path, datasets_root: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let log = home.join(format!("server-{port}.log"));
        std::fs::create_dir_all(home).expect("home");
        let f = std::fs::File::create(&log).expect("log file");
        let child = Command::new(cxr_bin())
            .arg("serve")
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--home")
            .arg(home)
            .arg("--datasets-root")
            .arg(datasets_root)
            .args(["--train-workers", "1", "--http-workers", "2"])
            .args(extra)
            .env("CXR_TOKEN", TOKEN)
            .env("CXR_LOG", "info")
            .current_dir(workspace_root())
            .stdout(Stdio::null())
            .stderr(Stdio::from(f))
            .spawn()
            .expect("start cxr serve");
        let s = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            home: home.to_path_buf(),
            log,
        };
        let t0 = Instant::now();
        loop {
            if let Ok(r) = agent().get(&s.url("/healthz")).call() {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "cxr serve did not come up; log:\n{}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL on unix
        let _ = self.child.wait();
    }

    pub fn get(&self, path: &str) -> Resp {
        send(agent().get(&self.url(path)).call())
    }

    pub fn post(&self, path: &str, ctype: Option<&str>, body: &[u8], token: Option<&str>) -> Resp {
        let mut r = agent().post(&self.url(path));
        if let Some(c) = ctype {
            r = r.header("Content-Type", c);
        }
        if let Some(t) = token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        send(r.send(body))
    }

    pub fn post_json(&self, path: &str, v: &Value, token: Option<&str>) -> Resp {
        self.post(
            path,
            Some("application/json"),
            v.to_string().as_bytes(),
            token,
        )
    }

    /// Polls the job until `pred` holds (or panics after `secs`).
    pub fn wait_job(&self, id: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let r = self.get(&format!("/v1/jobs/{id}"));
            assert_eq!(r.status, 200, "{}", r.text());
            let j = r.json();
            if pred(&j) {
                return j;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "timeout waiting on job {id}: {j}\nlog:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_state(&self, id: &str, state: &str, secs: u64) -> Value {
        self.wait_job(id, secs, |j| {
            let s = j["state"].as_str().unwrap_or("");
            assert!(
                s == state || !matches!(s, "succeeded" | "failed" | "cancelled"),
                "job {id} ended {s}, expected {state}: {j}"
            );
            s == state
        })
    }

    pub fn assert_healthy(&self) {
        let r = self.get("/healthz");
        assert_eq!(r.status, 200, "server unhealthy; log:\n{}", self.log_text());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Resp {
    pub status: u16,
    pub ctype: String,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// Asserts the status and the API's error shape; answers the error code.
    pub fn err(&self, status: u16) -> String {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {}: {}",
            self.status,
            self.text()
        );
        let v = self.json();
        let code = v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {v}"))
            .to_string();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "no error.message in {v}"
        );
        code
    }
}

pub fn agent() -> ureq::Agent {
    let cfg = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build();
    ureq::Agent::new_with_config(cfg)
}

fn send(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Resp {
    let mut r = r.unwrap_or_else(|e| panic!("HTTP transport error: {e}"));
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = r
        .body_mut()
        .with_config()
        .limit(200 << 20)
        .read_to_vec()
        .unwrap_or_default();
    Resp {
        status,
        ctype,
        body,
    }
}

/// A multipart/form-data body: (field name, optional filename, bytes).
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "cxr-e2e-boundary-7d1f";
    let mut b = Vec::new();
    for (name, filename, data) in parts {
        b.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => b.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => b.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), b)
}

/// An X-ray-like 48x40 image: NORMAL = dark with thin vertical lines, PNEUMONIA = bright cloudy blob.
pub fn sample_image(class: usize, seed: u32, jpeg: bool) -> Vec<u8> {
    let (w, h) = (48u32, 40u32);
    let img = image::GrayImage::from_fn(w, h, |x, y| {
        let noise = ((x * 31 + y * 17 + seed * 101) % 23) as i32 - 11;
        let v: i32 = if class == 0 {
            if (x + seed) % 8 < 2 {
                150
            } else {
                40
            }
        } else {
            let dx = x as i32 - 24 - (seed % 5) as i32;
            let dy = y as i32 - 20;
            if dx * dx + dy * dy < 180 {
                220
            } else {
                110
            }
        };
        image::Luma([(v + noise).clamp(0, 255) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    let fmt = if jpeg {
        image::ImageFormat::Jpeg
    } else {
        image::ImageFormat::Png
    };
    img.write_to(&mut out, fmt).expect("encode sample image");
    out.into_inner()
}

/// `root/name/{train,val,test}/{NORMAL,PNEUMONIA}/*.png|jpeg`.
pub fn make_dataset(root: &Path, name: &str, train: u32, val: u32, test: u32) -> PathBuf {
    let dir = root.join(name);
    for (split, n) in [("train", train), ("val", val), ("test", test)] {
        for (c, class) in ["NORMAL", "PNEUMONIA"].iter().enumerate() {
            let d = dir.join(split).join(class);
            std::fs::create_dir_all(&d).expect("dataset dir");
            for i in 0..n {
                let jpeg = i % 2 == 0;
                let seed = i + 1000 * (split.len() as u32);
                let f = d.join(format!("img{i}.{}", if jpeg { "jpeg" } else { "png" }));
                std::fs::write(f, sample_image(c, seed, jpeg)).expect("write sample");
            }
        }
    }
    dir
}

/// Reads a job's SSE stream until a terminal `state` event (or `max` seconds); answers (event, data) pairs.
pub fn read_events(server: &Server, id: &str, max: u64) -> Vec<(String, Value)> {
    let cfg = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(max)))
        .build();
    let a = ureq::Agent::new_with_config(cfg);
    let r = a
        .get(&server.url(&format!("/v1/jobs/{id}/events")))
        .call()
        .expect("open the event stream");
    assert_eq!(r.status().as_u16(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "content type {ct}");
    let reader = BufReader::new(r.into_body().into_reader());
    let mut out = Vec::new();
    let mut event = String::new();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(d).unwrap_or(Value::Null);
            let done = event == "state"
                && matches!(
                    v["state"].as_str(),
                    Some("succeeded" | "failed" | "cancelled" | "interrupted")
                );
            out.push((event.clone(), v));
            if done {
                break;
            }
        }
    }
    out
}

pub fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = r.read_to_end(&mut v);
    v
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut c = kind.to_vec();
    c.extend_from_slice(data);
    out.extend_from_slice(&c);
    out.extend_from_slice(&crc32(&c).to_be_bytes());
}

/// A valid-looking PNG header declaring `w` x `h` pixels (a decompression bomb's header).
pub fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit gray
    png_chunk(&mut out, b"IHDR", &ihdr);
    // zlib stream of a few zero bytes (stored block), nowhere near w*h
    png_chunk(
        &mut out,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, 0x00, 0x04, 0x00, 0x01,
        ],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A zip of (name, bytes) entries, names taken as given (even `../x`).
pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts: zip::write::SimpleFileOptions = zip::write::SimpleFileOptions::default();
    for (name, data) in entries {
        w.start_file(*name, opts).expect("zip entry");
        w.write_all(data).expect("zip write");
    }
    w.finish().expect("zip finish").into_inner()
}
