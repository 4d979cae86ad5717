//! Every bad input gets its 4xx with the API's error shape, and the server keeps serving.

mod serve_support;

use serde_json::json;
use serve_support::*;

#[test]
fn bad_inputs_get_4xx_and_the_server_keeps_serving() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ds_root = tmp.path().join("datasets");
    make_dataset(&ds_root, "tiny", 12, 4, 4);
    // A folder outside the root and a symlink into it.
    let outside = make_dataset(tmp.path(), "outside", 2, 1, 1);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside, ds_root.join("escape")).expect("symlink");
    let s = Server::start(
        &tmp.path().join("home"),
        &ds_root,
        &["--max-upload-mb", "1"],
    );

    // -------- tokens
    let job = json!({"dataset": "tiny", "stages": [{"arch": "xresnet18", "size": 32, "presize": 48, "epochs": 1, "bs": 8}]});
    assert_eq!(s.post_json("/v1/jobs", &job, None).err(401), "unauthorized");
    assert_eq!(
        s.post_json("/v1/jobs", &job, Some("nope")).err(401),
        "unauthorized"
    );

    // -------- job requests
    let post = |body: &[u8], ct: &str| s.post("/v1/jobs", Some(ct), body, Some(TOKEN));
    assert_eq!(
        post(b"{\"dataset\": \"tiny\", ", "application/json").err(400),
        "malformed_json"
    );
    assert_eq!(post(b"", "application/json").err(400), "empty_body");
    assert_eq!(
        post(b"dataset=tiny", "text/plain").err(415),
        "unsupported_media_type"
    );
    let stage_err = |stage: serde_json::Value, needle: &str| {
        let r = s.post_json(
            "/v1/jobs",
            &json!({"dataset": "tiny", "stages": [stage]}),
            Some(TOKEN),
        );
        r.err(422);
        let msg = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            msg.contains(needle),
            "message {msg:?} does not name {needle:?}"
        );
    };
    stage_err(
        json!({"lr": -0.1, "size": 32, "presize": 48}),
        "learning rate",
    );
    stage_err(json!({"epochs": 0, "size": 32, "presize": 48}), "epochs");
    stage_err(json!({"arch": "vgg16", "size": 32, "presize": 48}), "vgg16");
    stage_err(json!({"bs": 1, "size": 32, "presize": 48}), "bs");
    stage_err(json!({"colour": true}), "colour");
    s.post_json(
        "/v1/jobs",
        &json!({"dataset": "tiny", "recipe": "nonexistent"}),
        Some(TOKEN),
    )
    .err(422);
    s.post_json("/v1/jobs", &json!({"dataset": "tiny"}), Some(TOKEN))
        .err(422);
    s.post_json(
        "/v1/jobs",
        &json!({"dataset": "tiny", "recipe": "cpu-quick", "bogus": 1}),
        Some(TOKEN),
    )
    .err(422);
    s.post_json("/v1/jobs", &json!({"stages": [{}]}), Some(TOKEN))
        .err(422);

    // -------- dataset paths outside the root
    for bad in [
        "../outside",
        "/etc",
        "tiny/../../outside",
        "..",
        "escape",
        "./tiny/../..",
    ] {
        let r = s.post_json(
            "/v1/jobs",
            &json!({"dataset": bad, "recipe": "cpu-quick"}),
            Some(TOKEN),
        );
        assert_eq!(r.err(400), "invalid_dataset_path", "dataset {bad:?}");
    }
    s.post_json(
        "/v1/jobs",
        &json!({"dataset": "missing", "recipe": "cpu-quick"}),
        Some(TOKEN),
    )
    .err(404);

    // -------- zip uploads: zip-slip and not a zip
    let slip = zip_of(&[
        ("../../evil.txt", b"x"),
        ("train/NORMAL/a.png", &sample_image(0, 1, false)),
    ]);
    let (ct, body) = multipart(&[
        ("dataset_zip", Some("d.zip"), &slip),
        ("recipe", None, b"cpu-quick"),
    ]);
    assert_eq!(
        s.post("/v1/jobs", Some(&ct), &body, Some(TOKEN)).err(400),
        "invalid_zip_path"
    );
    assert!(!tmp.path().join("home").join("evil.txt").exists());
    let (ct, body) = multipart(&[
        ("dataset_zip", Some("d.zip"), b"PK not really"),
        ("recipe", None, b"cpu-quick"),
    ]);
    s.post("/v1/jobs", Some(&ct), &body, Some(TOKEN)).err(422);

    // -------- unknown ids
    for p in [
        "/v1/jobs/nope",
        "/v1/jobs/nope/report",
        "/v1/jobs/nope/report/losses.png",
        "/v1/jobs/nope/events",
        "/v1/models/nope",
    ] {
        s.get(p).err(404);
    }
    s.post("/v1/jobs/nope/resume", None, b"", Some(TOKEN))
        .err(404);
    s.post("/v1/jobs/nope/resume", None, b"", None).err(401);

    // -------- a known route with the wrong method: 405 in the API's error shape
    assert_eq!(s.get("/v1/predict").err(405), "method_not_allowed");
    assert_eq!(
        s.post("/healthz", None, b"", None).err(405),
        "method_not_allowed"
    );

    // -------- a model, then bad images
    let r = s.post_json("/v1/jobs", &job, Some(TOKEN));
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_string();
    s.wait_state(&id, "succeeded", 120);
    s.post(&format!("/v1/jobs/{id}/resume"), None, b"", Some(TOKEN))
        .err(409);

    let jpeg = sample_image(1, 5, true);
    let predict = |ct: Option<&str>, body: &[u8]| s.post("/v1/predict", ct, body, None);
    assert_eq!(predict(Some("image/jpeg"), b"").err(400), "empty_body");
    assert_eq!(
        predict(Some("image/jpeg"), b"this is not an image at all").err(422),
        "not_an_image"
    );
    assert_eq!(
        predict(Some("image/jpeg"), &jpeg[..jpeg.len() / 2]).err(422),
        "invalid_image"
    );
    let bomb = predict(Some("image/png"), &png_bomb(60_000, 60_000));
    assert!(
        bomb.status == 413 || bomb.status == 422,
        "bomb: {} {}",
        bomb.status,
        bomb.text()
    );
    bomb.err(bomb.status);
    let big = vec![0u8; (1 << 20) + 4096];
    assert_eq!(
        predict(Some("image/jpeg"), &big).err(413),
        "payload_too_large"
    );
    assert_eq!(
        predict(Some("text/plain"), &jpeg).err(415),
        "unsupported_media_type"
    );
    assert_eq!(
        predict(Some("application/json"), b"{}").err(415),
        "unsupported_media_type"
    );
    s.post("/v1/predict?explain=maybe", Some("image/jpeg"), &jpeg, None)
        .err(400);
    let (ct, body) = multipart(&[]);
    predict(Some(&ct), &body).err(400);
    predict(Some("multipart/form-data; boundary=zz"), b"--zz\r\ngarbage").err(400);
    s.post("/v1/predict/tensor", Some("text/plain"), b"x", None)
        .err(415);
    s.post(
        "/v1/predict/tensor",
        Some("application/json"),
        b"[1,2",
        None,
    )
    .err(400);
    s.post(
        "/v1/predict/tensor",
        Some("application/json"),
        b"{\"size\": \"big\"}",
        None,
    )
    .err(422);

    // Still serving, and still predicting.
    s.assert_healthy();
    let r = predict(Some("image/jpeg"), &jpeg);
    assert_eq!(r.status, 200, "{}", r.text());
    let metrics = s.get("/metrics").text();
    assert!(
        !metrics.contains("status=\"500\""),
        "a 500 was served:\n{metrics}"
    );
}
