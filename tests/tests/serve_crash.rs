//! kill -9 of `cxr serve` during a job: after a restart the job is `interrupted`,
//! nothing else is lost, and `POST /resume` finishes it from its checkpoint.

mod serve_support;

use serde_json::json;
use serve_support::*;

#[test]
fn kill_during_a_job_then_resume() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ds_root = tmp.path().join("datasets");
    make_dataset(&ds_root, "tiny", 16, 4, 4);
    let home = tmp.path().join("home");
    let mut s = Server::start(&home, &ds_root, &[]);

    // A finished job and its (active) model: these must survive the crash.
    let quick =
        json!({"dataset": "tiny", "stages": [{"size": 32, "presize": 48, "epochs": 1, "bs": 8}]});
    let r = s.post_json("/v1/jobs", &quick, Some(TOKEN));
    assert_eq!(r.status, 202, "{}", r.text());
    let done_id = r.json()["id"].as_str().expect("id").to_string();
    let done = s.wait_state(&done_id, "succeeded", 120);
    let model_a = done["model_id"].as_str().expect("model id").to_string();

    // The job to crash: several epochs; kill -9 once one epoch (and its checkpoint) is done.
    let epochs = 4;
    let long = json!({"dataset": "tiny", "stages": [{"size": 32, "presize": 48, "epochs": epochs, "bs": 8}]});
    let r = s.post_json("/v1/jobs", &long, Some(TOKEN));
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_string();
    let before = s.wait_job(&id, 120, |j| {
        assert_ne!(
            j["state"], "succeeded",
            "the job finished before the kill; make it longer"
        );
        j["metrics"].as_array().is_some_and(|m| !m.is_empty())
    });
    s.kill9();
    let done_epochs = before["metrics"].as_array().map(Vec::len).unwrap_or(0);
    assert!(done_epochs < epochs);

    let s = Server::start(&home, &ds_root, &[]);
    let j = s.get(&format!("/v1/jobs/{id}")).json();
    assert_eq!(j["state"], "interrupted", "{j}");
    assert_eq!(j["has_checkpoint"], true, "{j}");
    assert!(
        j["metrics"]
            .as_array()
            .is_some_and(|m| m.len() >= done_epochs),
        "{j}"
    );
    // Nothing else lost.
    let d = s.get(&format!("/v1/jobs/{done_id}")).json();
    assert_eq!(d["state"], "succeeded");
    assert_eq!(d["model_id"], json!(model_a));
    let models = s.get("/v1/models").json();
    assert_eq!(
        models["models"].as_array().map(Vec::len),
        Some(1),
        "{models}"
    );
    assert_eq!(models["active"], json!(model_a));
    let r = s.post(
        "/v1/predict",
        Some("image/jpeg"),
        &sample_image(0, 2, true),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Resume finishes it.
    s.post(&format!("/v1/jobs/{id}/resume"), None, b"", None)
        .err(401);
    let r = s.post(&format!("/v1/jobs/{id}/resume"), None, b"", Some(TOKEN));
    assert_eq!(r.status, 202, "{}", r.text());
    let st = r.json()["state"].as_str().unwrap_or("").to_string();
    assert!(st == "queued" || st == "running", "resumed job is {st}");
    let j = s.wait_state(&id, "succeeded", 180);
    let ms = j["metrics"].as_array().expect("metrics");
    let got: Vec<u64> = ms.iter().filter_map(|m| m["epoch"].as_u64()).collect();
    assert_eq!(got, (1..=epochs as u64).collect::<Vec<_>>(), "{j}");
    let model_b = j["model_id"].as_str().expect("model id");
    assert_ne!(model_b, model_a);
    assert_eq!(
        j["activated"], false,
        "a model was active: no auto-activation"
    );
    let models = s.get("/v1/models").json();
    assert_eq!(
        models["models"].as_array().map(Vec::len),
        Some(2),
        "{models}"
    );
    assert_eq!(models["active"], json!(model_a));
    s.assert_healthy();
}
