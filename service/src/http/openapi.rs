//! A hand-written OpenAPI 3 document of the API.

use crate::serve::JobState;
use actix_web::HttpResponse;
use serde_json::{json, Value};

fn op(summary: &str, token: bool, ok: &str) -> Value {
    let mut v = json!({
        "summary": summary,
        "responses": {
            ok: { "description": "success" },
            "default": { "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
        }
    });
    if token {
        v["security"] = json!([{ "bearer": [] }]);
    }
    v
}

fn id_param() -> Value {
    json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }])
}

/// The documented paths, each with its operations.
#[derive(Default)]
struct Paths(serde_json::Map<String, Value>);

impl Paths {
    fn add(&mut self, path: &str, method: &str, mut o: Value) {
        // As before: a path with {id} documents only the id parameter (this
        // overrides the report name's and the download format's).
        if path.contains("{id}") {
            o["parameters"] = id_param();
        }
        let e = self.0.entry(path.to_string()).or_insert_with(|| json!({}));
        e[method] = o;
    }
}

fn service_paths(paths: &mut Paths) {
    let mut add = |path: &str, method: &str, o: Value| paths.add(path, method, o);
    add("/healthz", "get", op("Liveness", false, "200"));
    add(
        "/readyz",
        "get",
        op(
            "Readiness: database open and a model active (503 otherwise)",
            false,
            "200",
        ),
    );
    add("/metrics", "get", op("Prometheus metrics", false, "200"));
}

fn predict_paths(paths: &mut Paths) {
    let mut add = |path: &str, method: &str, o: Value| paths.add(path, method, o);
    let mut p = op("Classify one image (JPEG/PNG raw body or multipart); ?explain=true adds gradcam_png (base64 PNG)", false, "200");
    p["parameters"] =
        json!([{ "name": "explain", "in": "query", "schema": { "type": "boolean" } }]);
    p["responses"]["200"]["content"] =
        json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Prediction" } } });
    add("/v1/predict", "post", p);
    add(
        "/v1/predict/batch",
        "post",
        op("Classify several images (multipart parts)", false, "200"),
    );
    let mut t = op("Classify a preprocessed tensor: JSON {size, spec_version, pixels: base64 u8 size*size}, or application/octet-stream with ?size=&spec_version=; 422 on mismatch with the active model", false, "200");
    t["requestBody"] = json!({ "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Tensor" } } } });
    add("/v1/predict/tensor", "post", t);
}

fn jobs_paths(paths: &mut Paths) {
    let mut add = |path: &str, method: &str, o: Value| paths.add(path, method, o);
    let mut j = op(
        "Create a fine-tune job (JSON, or multipart with dataset_zip + request); 202",
        true,
        "202",
    );
    j["requestBody"] = json!({ "content": { "application/json": { "schema": { "$ref": "#/components/schemas/JobRequest" } } } });
    add("/v1/jobs", "post", j);
    add(
        "/v1/jobs",
        "get",
        op("List jobs: {jobs: [Job]}", false, "200"),
    );
    add("/v1/jobs/{id}", "get", op("One job", false, "200"));
    add(
        "/v1/jobs/{id}/events",
        "get",
        op(
            "Server-sent events: state, stage, progress, epoch, message",
            false,
            "200",
        ),
    );
    add(
        "/v1/jobs/{id}/cancel",
        "post",
        op("Cancel a queued or running job", true, "202"),
    );
    add(
        "/v1/jobs/{id}/resume",
        "post",
        op(
            "Resume an interrupted (or failed/cancelled) job from its last checkpoint",
            true,
            "202",
        ),
    );
    add(
        "/v1/jobs/{id}/report",
        "get",
        op(
            "Confusion matrix and classification report (JSON)",
            false,
            "200",
        ),
    );
    let mut r = op(
        "Report figure: confusion_matrix.png, lr_find.png or losses.png",
        false,
        "200",
    );
    r["parameters"] = json!([
        { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
        { "name": "name", "in": "path", "required": true, "schema": { "type": "string", "enum": ["confusion_matrix.png", "lr_find.png", "losses.png"] } }
    ]);
    add("/v1/jobs/{id}/report/{name}", "get", r);
}

fn models_paths(paths: &mut Paths) {
    let mut add = |path: &str, method: &str, o: Value| paths.add(path, method, o);
    add(
        "/v1/models",
        "get",
        op(
            "List models: {models: [{id, active, created_at, metrics, card}]}",
            false,
            "200",
        ),
    );
    add(
        "/v1/models/{id}",
        "get",
        op("A model and its card", false, "200"),
    );
    add(
        "/v1/models/{id}/activate",
        "post",
        op("Make this model serve predictions", true, "200"),
    );
    let mut d = op(
        "Download the weights (?format=onnx|safetensors)",
        false,
        "200",
    );
    d["parameters"] = json!([
        { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
        { "name": "format", "in": "query", "schema": { "type": "string", "enum": ["onnx", "safetensors"] } }
    ]);
    add("/v1/models/{id}/download", "get", d);
    add("/v1/models/{id}/evaluate", "post", op("Evaluate on a dataset folder ({dataset, split}) or a zip (multipart dataset_zip); answers the report", true, "200"));
}

fn schemas() -> Value {
    let states: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
    json!({
        "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } } },
        "Prediction": { "type": "object", "properties": {
            "label": { "type": "string" }, "probabilities": { "type": "object", "additionalProperties": { "type": "number" } },
            "model_id": { "type": "string" }, "timing_ms": { "type": "number" }, "gradcam_png": { "type": "string", "format": "byte" } } },
        "Tensor": { "type": "object", "required": ["size", "spec_version", "pixels"], "properties": {
            "size": { "type": "integer" }, "spec_version": { "type": "integer" }, "pixels": { "type": "string", "format": "byte" } } },
        "JobRequest": { "type": "object", "properties": {
            "dataset": { "type": "string" }, "recipe": { "type": "string" },
            "stages": { "type": "array", "items": { "type": "object" } }, "options": { "type": "object" } } },
        "Job": { "type": "object", "properties": {
            "id": { "type": "string" }, "state": { "type": "string", "enum": states },
            "stage": { "type": "integer" }, "epoch": { "type": "integer" }, "metrics": { "type": "array", "items": { "type": "object" } },
            "error": { "type": "string" }, "model_id": { "type": "string" } } }
    })
}

pub fn document() -> Value {
    let mut paths = Paths::default();
    service_paths(&mut paths);
    predict_paths(&mut paths);
    jobs_paths(&mut paths);
    models_paths(&mut paths);
    json!({
        "openapi": "3.0.3",
        "info": { "title": "cxr", "version": env!("CARGO_PKG_VERSION"), "description": "Chest X-ray classification (NORMAL vs PNEUMONIA): predictions, fine-tune jobs, models" },
        "paths": paths.0,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas()
        }
    })
}

/// Whether `path` is one of the documented API paths (any method): the
/// router's fallback uses it to tell a wrong method (405) from an unknown path (404).
pub fn documents_path(path: &str) -> bool {
    static DEFS: std::sync::OnceLock<Vec<actix_web::dev::ResourceDef>> = std::sync::OnceLock::new();
    DEFS.get_or_init(|| {
        document()["paths"]
            .as_object()
            .map(|m| {
                m.keys()
                    .map(|k| actix_web::dev::ResourceDef::new(k.as_str()))
                    .collect()
            })
            .unwrap_or_default()
    })
    .iter()
    .any(|d| d.is_match(path))
}

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(document())
}
