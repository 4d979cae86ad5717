//! `cxr serve` end to end: every route, a fine-tune job that succeeds, streams
//! its events, reports, activates and predicts; cancellation.

mod serve_support;

use serde_json::{json, Value};
use serve_support::*;

const CLASSES: [&str; 2] = ["NORMAL", "PNEUMONIA"];

fn tiny_job() -> Value {
    json!({"dataset": "tiny", "stages": [{"arch": "xresnet18", "size": 32, "presize": 48, "epochs": 1, "bs": 8, "lr": 0.003}]})
}

fn check_prediction(p: &Value, model_id: &str) {
    let label = p["label"]
        .as_str()
        .unwrap_or_else(|| panic!("no label: {p}"));
    assert!(CLASSES.contains(&label), "{p}");
    let probs = p["probabilities"]
        .as_object()
        .unwrap_or_else(|| panic!("no probabilities: {p}"));
    assert_eq!(probs.len(), 2);
    let sum: f64 = probs.values().map(|v| v.as_f64().unwrap_or(f64::NAN)).sum();
    assert!((sum - 1.0).abs() < 1e-3, "probabilities sum to {sum}: {p}");
    assert_eq!(p["model_id"], json!(model_id));
    assert!(p["timing_ms"].as_f64().is_some_and(|t| t >= 0.0), "{p}");
}

#[test]
fn serve_end_to_end() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ds_root = tmp.path().join("datasets");
    make_dataset(&ds_root, "tiny", 12, 4, 4);
    let s = Server::start(&tmp.path().join("home"), &ds_root, &[]);

    // -------- before any model
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.get("/readyz").status, 503);
    let m = s.get("/v1/models").json();
    assert_eq!(m["models"], json!([]));
    assert!(
        m["message"]
            .as_str()
            .is_some_and(|t| t.contains("no model")),
        "{m}"
    );
    let jpeg = sample_image(1, 7, true);
    assert_eq!(
        s.post("/v1/predict", Some("image/jpeg"), &jpeg, None)
            .err(503),
        "no_active_model"
    );
    let api = s.get("/openapi.json").json();
    for p in [
        "/v1/predict",
        "/v1/predict/tensor",
        "/v1/jobs",
        "/v1/jobs/{id}/events",
        "/v1/models/{id}/activate",
    ] {
        assert!(api["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert!(page.ctype.starts_with("text/html"), "{}", page.ctype);
    assert_eq!(s.get("/v1/jobs").json()["jobs"], json!([]));

    // -------- a job: token, 202, events, success
    assert_eq!(
        s.post_json("/v1/jobs", &tiny_job(), None).err(401),
        "unauthorized"
    );
    assert_eq!(
        s.post_json("/v1/jobs", &tiny_job(), Some("wrong")).err(401),
        "unauthorized"
    );
    let r = s.post_json("/v1/jobs", &tiny_job(), Some(TOKEN));
    assert_eq!(r.status, 202, "{}", r.text());
    let job = r.json();
    assert_eq!(job["state"], "queued");
    let id = job["id"].as_str().expect("job id").to_string();
    let events = read_events(&s, &id, 120);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert!(kinds.contains(&"epoch"), "no epoch event in {kinds:?}");
    assert!(
        kinds.contains(&"progress") || kinds.contains(&"stage"),
        "no progress in {kinds:?}"
    );
    let (_, last) = events.last().expect("events");
    assert_eq!(last["state"], "succeeded", "{events:?}\n{}", s.log_text());
    let epoch = events
        .iter()
        .find(|(k, _)| k == "epoch")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    for k in ["epoch", "train_loss", "valid_loss", "accuracy"] {
        assert!(epoch.get(k).is_some(), "epoch event lacks {k}: {epoch}");
    }

    let job = s.wait_state(&id, "succeeded", 60);
    let model_id = job["model_id"].as_str().expect("model_id").to_string();
    assert_eq!(
        job["activated"], true,
        "the first model activates itself: {job}"
    );
    assert_eq!(job["metrics"].as_array().map(Vec::len), Some(1), "{job}");
    assert_eq!(job["stage"], 1);
    assert_eq!(job["epoch"], 1);
    assert!(job["error"].is_null());
    let list = s.get("/v1/jobs").json();
    assert_eq!(list["jobs"][0]["id"], json!(id));

    // -------- report
    let rep = s.get(&format!("/v1/jobs/{id}/report")).json();
    assert_eq!(rep["confusion_matrix"]["labels"], json!(CLASSES));
    let mx = rep["confusion_matrix"]["matrix"]
        .as_array()
        .expect("matrix");
    assert_eq!(mx.len(), 2);
    assert!(mx.iter().all(|row| row.as_array().map(Vec::len) == Some(2)));
    for k in [
        "classification_report",
        "accuracy",
        "f1",
        "precision",
        "recall",
        "auc",
    ] {
        assert!(rep.get(k).is_some(), "report lacks {k}: {rep}");
    }
    for f in ["confusion_matrix.png", "losses.png"] {
        let r = s.get(&format!("/v1/jobs/{id}/report/{f}"));
        assert_eq!(r.status, 200, "{f}: {}", r.text());
        assert_eq!(r.ctype, "image/png");
        assert!(r.body.starts_with(b"\x89PNG"), "{f} is not a PNG");
    }
    assert_eq!(
        s.get(&format!("/v1/jobs/{id}/report/lr_find.png")).err(404),
        "report_not_ready"
    );
    s.get(&format!("/v1/jobs/{id}/report/passwd")).err(404);

    // -------- models
    let m = s.get("/v1/models").json();
    assert_eq!(m["models"].as_array().map(Vec::len), Some(1), "{m}");
    let entry = &m["models"][0];
    assert_eq!(entry["id"], json!(model_id));
    assert_eq!(entry["active"], true);
    assert!(entry["created_at"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(entry["metrics"]["accuracy"].is_number(), "{entry}");
    let card = s.get(&format!("/v1/models/{model_id}")).json();
    let size = card["card"]["preprocess"]["size"]
        .as_u64()
        .expect("preprocess.size");
    let version = card["card"]["preprocess"]["version"]
        .as_u64()
        .expect("preprocess.version");
    assert_eq!(size, 32);
    assert_eq!(s.get("/readyz").status, 200);
    s.get("/v1/models/nope").err(404);

    // -------- predictions
    let r = s.post("/v1/predict", Some("image/jpeg"), &jpeg, None);
    assert_eq!(r.status, 200, "{}", r.text());
    check_prediction(&r.json(), &model_id);
    let png = sample_image(0, 3, false);
    let (ct, body) = multipart(&[("image", Some("x.png"), &png)]);
    let r = s.post("/v1/predict", Some(&ct), &body, None);
    assert_eq!(r.status, 200, "{}", r.text());
    check_prediction(&r.json(), &model_id);
    let r = s.post("/v1/predict?explain=true", Some("image/png"), &png, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json();
    check_prediction(&p, &model_id);
    assert!(
        p["gradcam_png"]
            .as_str()
            .is_some_and(|b| b.starts_with("iVBOR")),
        "no gradcam_png PNG"
    );

    let (ct, body) = multipart(&[
        ("a", Some("a.jpeg"), &jpeg),
        ("b", Some("b.png"), &png),
        ("c", Some("c.txt"), b"not an image"),
    ]);
    let r = s.post("/v1/predict/batch", Some(&ct), &body, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let results = b["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    check_prediction(&results[0], &model_id);
    check_prediction(&results[1], &model_id);
    assert_eq!(results[2]["error"]["code"], "not_an_image", "{b}");
    s.post("/v1/predict/batch", Some("image/jpeg"), &jpeg, None)
        .err(415);

    // -------- tensor input (the web client's path)
    use base64_like::encode;
    let px = vec![128u8; (size * size) as usize];
    let ok = json!({"size": size, "spec_version": version, "pixels": encode(&px)});
    let r = s.post_json("/v1/predict/tensor", &ok, None);
    assert_eq!(r.status, 200, "{}", r.text());
    check_prediction(&r.json(), &model_id);
    let r = s.post(
        &format!("/v1/predict/tensor?size={size}&spec_version={version}"),
        Some("application/octet-stream"),
        &px,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    check_prediction(&r.json(), &model_id);
    let bad_size =
        json!({"size": 64, "spec_version": version, "pixels": encode(&vec![0u8; 64 * 64])});
    assert_eq!(
        s.post_json("/v1/predict/tensor", &bad_size, None).err(422),
        "size_mismatch"
    );
    let bad_ver = json!({"size": size, "spec_version": version + 1, "pixels": encode(&px)});
    assert_eq!(
        s.post_json("/v1/predict/tensor", &bad_ver, None).err(422),
        "spec_version_mismatch"
    );
    let short = json!({"size": size, "spec_version": version, "pixels": encode(&px[..10])});
    assert_eq!(
        s.post_json("/v1/predict/tensor", &short, None).err(422),
        "tensor_size"
    );
    let notb64 = json!({"size": size, "spec_version": version, "pixels": "***"});
    s.post_json("/v1/predict/tensor", &notb64, None).err(422);
    s.post(
        "/v1/predict/tensor",
        Some("application/octet-stream"),
        &px,
        None,
    )
    .err(422);
    s.post(
        "/v1/predict/tensor",
        Some("application/json"),
        b"{\"size\": ",
        None,
    )
    .err(400);

    // -------- download, activate, evaluate
    let r = s.get(&format!(
        "/v1/models/{model_id}/download?format=safetensors"
    ));
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 1000);
    let r = s.get(&format!("/v1/models/{model_id}/download?format=onnx"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.len() > 1000);
    s.get(&format!("/v1/models/{model_id}/download?format=pickle"))
        .err(422);
    s.get("/v1/models/nope/download?format=onnx").err(404);
    s.post(&format!("/v1/models/{model_id}/activate"), None, b"", None)
        .err(401);
    s.post("/v1/models/nope/activate", None, b"", Some(TOKEN))
        .err(404);
    let r = s.post(
        &format!("/v1/models/{model_id}/activate"),
        None,
        b"",
        Some(TOKEN),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    s.post_json(
        &format!("/v1/models/{model_id}/evaluate"),
        &json!({"dataset": "tiny"}),
        None,
    )
    .err(401);
    let r = s.post_json(
        &format!("/v1/models/{model_id}/evaluate"),
        &json!({"dataset": "tiny", "split": "test"}),
        Some(TOKEN),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = r.json();
    assert_eq!(ev["confusion_matrix"]["labels"], json!(CLASSES));
    assert!(ev["accuracy"].is_number());
    s.post_json(
        &format!("/v1/models/{model_id}/evaluate"),
        &json!({"dataset": "tiny", "split": "sideways"}),
        Some(TOKEN),
    )
    .err(422);

    // -------- cancel
    let long = json!({"dataset": "tiny", "stages": [{"arch": "xresnet18", "size": 32, "presize": 48, "epochs": 500, "bs": 8, "lr": 0.003}]});
    let r = s.post_json("/v1/jobs", &long, Some(TOKEN));
    assert_eq!(r.status, 202, "{}", r.text());
    let cid = r.json()["id"].as_str().expect("id").to_string();
    s.wait_job(&cid, 60, |j| {
        j["state"] == "running" && j["epoch"].is_number()
    });
    s.post(&format!("/v1/jobs/{cid}/cancel"), None, b"", None)
        .err(401);
    let r = s.post(&format!("/v1/jobs/{cid}/cancel"), None, b"", Some(TOKEN));
    assert_eq!(r.status, 202, "{}", r.text());
    let j = s.wait_state(&cid, "cancelled", 60);
    assert!(j["model_id"].is_null());
    assert_eq!(
        s.post(&format!("/v1/jobs/{cid}/cancel"), None, b"", Some(TOKEN))
            .err(409),
        "job_finished"
    );
    s.post("/v1/jobs/nope/cancel", None, b"", Some(TOKEN))
        .err(404);
    // A finished job's event stream answers its state and ends.
    let ev = read_events(&s, &cid, 10);
    assert_eq!(
        ev.last().map(|(_, v)| v["state"].clone()),
        Some(json!("cancelled"))
    );

    // -------- metrics
    let text = s.get("/metrics").text();
    for needle in [
        "cxr_http_requests_total{route=\"/v1/predict\"",
        "cxr_http_request_duration_seconds_bucket{route=\"/v1/predict\"",
        "cxr_predictions_total{class=",
        "cxr_inference_batch_size_count",
        "cxr_jobs{state=\"succeeded\"} 1",
        "cxr_jobs{state=\"cancelled\"} 1",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    s.assert_healthy();
}

/// Standard base64, enough for the tests (no extra dependency).
mod base64_like {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    pub fn encode(data: &[u8]) -> String {
        let mut out = String::new();
        for c in data.chunks(3) {
            let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
