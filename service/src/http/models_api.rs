//! Models over HTTP: list, card, activate, download, evaluate.

use super::error::{json_error, ApiError};
use super::input::{extract_zip, media_type, read_body, read_multipart, resolve_dataset};
use super::state::AppState;
use crate::evaluate::{evaluate, EvalError, Split};
use crate::serve::jobs::new_id;
use crate::serve::registry::ModelRow;
use crate::serve::Model;
use crate::train::RunDir;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/models", web::get().to(list))
        .route("/v1/models/{id}", web::get().to(get))
        .route("/v1/models/{id}/activate", web::post().to(activate))
        .route("/v1/models/{id}/download", web::get().to(download))
        .route("/v1/models/{id}/evaluate", web::post().to(eval));
}

fn model_json(m: &ModelRow, active: Option<&str>) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    v["active"] = json!(active == Some(m.id.as_str()));
    v
}

fn load_row(st: &AppState, id: &str) -> Result<ModelRow, ApiError> {
    st.reg
        .model(id)?
        .ok_or_else(|| ApiError::not_found("unknown_model", format!("no model {id:?}")))
}

async fn list(st: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let active = st.hub.active_id();
    let models: Vec<Value> = st
        .reg
        .models()?
        .iter()
        .map(|m| model_json(m, active.as_deref()))
        .collect();
    let mut body = json!({ "models": models, "active": active });
    if active.is_none() {
        body["message"] = json!(if models.is_empty() {
            "no model yet: train one with POST /v1/jobs; predictions answer 503 until a model is active"
        } else {
            "no model is active: POST /v1/models/{id}/activate; predictions answer 503 until then"
        });
    }
    Ok(HttpResponse::Ok().json(body))
}

async fn get(st: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let m = load_row(&st, &id)?;
    let active = st.hub.active_id();
    Ok(HttpResponse::Ok().json(model_json(&m, active.as_deref())))
}

async fn activate(
    st: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    st.require_token(&req)?;
    let m = load_row(&st, &id)?;
    let hub = st.hub.clone();
    let mid = m.id.clone();
    web::block(move || hub.activate(&mid)).await??;
    Ok(HttpResponse::Ok().json(model_json(&m, Some(&m.id))))
}

#[derive(Deserialize)]
struct DownloadQuery {
    #[serde(default)]
    format: Option<String>,
}

async fn download(
    st: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    let m = load_row(&st, &id)?;
    let format = q.format.clone().unwrap_or_else(|| "safetensors".into());
    let (path, ctype) = match format.as_str() {
        "safetensors" => (RunDir::new(&m.dir).weights(), "application/octet-stream"),
        "onnx" => {
            let path = RunDir::new(&m.dir).onnx();
            if !path.exists() {
                let dir = m.dir.clone();
                let p2 = path.clone();
                web::block(move || -> Result<(), ApiError> {
                    let p = Model::load(&dir, &candle_core::Device::Cpu)
                        .map_err(|e| ApiError::internal(format!("loading the model: {e}")))?;
                    let tmp = dir.join(format!(".model.onnx.{}.tmp", new_id()));
                    cxr_models::weights::export_onnx(p.network(), p.spec().size as usize, &tmp)
                        .map_err(|e| ApiError::internal(format!("ONNX export: {e}")))?;
                    std::fs::rename(&tmp, &p2).map_err(|e| ApiError::internal(e.to_string()))
                })
                .await??;
            }
            (path, "application/octet-stream")
        }
        other => {
            return Err(ApiError::unprocessable(
                "invalid_format",
                format!("format must be onnx or safetensors, got {other:?}"),
            ))
        }
    };
    let bytes = web::block(move || std::fs::read(path))
        .await?
        .map_err(|e| ApiError::internal(format!("reading the model: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type(ctype)
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"cxr-{}.{format}\"", m.id),
        ))
        .body(bytes))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvalRequest {
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    split: Option<String>,
}

/// `POST /v1/models/{id}/evaluate` as multipart: a dataset name or zip, and a split.
async fn eval_multipart(
    st: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<(PathBuf, Option<String>, String), ApiError> {
    let parts = read_multipart(req, payload, st.max_zip()).await?;
    let mut split = None;
    let mut root = None;
    let mut label = String::new();
    for p in parts {
        match p.name.as_str() {
            "split" => split = Some(String::from_utf8_lossy(&p.data).trim().to_string()),
            "dataset" => {
                label = String::from_utf8_lossy(&p.data).trim().to_string();
                root = Some(resolve_dataset(st.datasets_root.as_deref(), &label)?);
            }
            "dataset_zip" => {
                let dest = st.home.dataset(&format!("eval-{}", new_id()));
                let max = st.max_zip() as u64 * 4;
                root = Some(web::block(move || extract_zip(&p.data, &dest, max)).await??);
                label = "upload".into();
            }
            other => {
                return Err(ApiError::unprocessable(
                    "invalid_options",
                    format!("unknown multipart field {other:?}"),
                ))
            }
        }
    }
    let root = root.ok_or_else(|| {
        ApiError::unprocessable("invalid_options", "dataset or dataset_zip is required")
    })?;
    Ok((root, split, label))
}

async fn eval(
    st: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    st.require_token(&req)?;
    let m = load_row(&st, &id)?;
    let t = media_type(&req);
    let (root, split_s, label) = if t == "application/json" {
        let body = read_body(&req, payload, st.max_upload()).await?;
        if body.is_empty() {
            return Err(ApiError::bad_request(
                "empty_body",
                "expected {\"dataset\": \"<folder>\", \"split\": \"test\"}",
            ));
        }
        let r: EvalRequest = serde_json::from_slice(&body).map_err(|e| json_error(&e))?;
        let name = r
            .dataset
            .ok_or_else(|| ApiError::unprocessable("invalid_options", "dataset is required"))?;
        (
            resolve_dataset(st.datasets_root.as_deref(), &name)?,
            r.split,
            name,
        )
    } else if t == "multipart/form-data" {
        eval_multipart(&st, &req, payload).await?
    } else {
        return Err(ApiError::unsupported_media(format!(
            "content type {t:?} is not accepted here: send application/json or multipart/form-data"
        )));
    };
    let split_name = split_s.unwrap_or_else(|| "test".into());
    let split: Split = split_name
        .parse()
        .map_err(|e| ApiError::unprocessable("invalid_options", format!("split: {e}")))?;
    let loaded = st.hub.load(&m.id)?;
    let ev = web::block(move || evaluate(&loaded, &root, split, 32))
        .await?
        .map_err(|e| match e {
            EvalError::Predict(p) => ApiError::internal(p.to_string()),
            other => ApiError::unprocessable("invalid_dataset", other.to_string()),
        })?;
    let mut v = serde_json::to_value(&ev.report).map_err(|e| ApiError::internal(e.to_string()))?;
    v["model_id"] = json!(m.id);
    v["dataset"] = json!(label);
    v["split"] = json!(split_name);
    v["skipped"] = json!(ev.skipped.len());
    Ok(HttpResponse::Ok().json(v))
}
