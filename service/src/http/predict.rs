//! Predictions: decode + preprocess on the blocking pool, then the batcher's
//! inference thread runs the model once per batch.

use super::error::{json_error, ApiError};
use super::input::{media_type, read_body, read_multipart};
use super::AppState;
use crate::serve::batcher::{Loaded, Outcome, Request};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use cxr_models::preprocess::DecodeLimits;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/predict", web::post().to(predict))
        .route("/v1/predict/batch", web::post().to(predict_batch))
        .route("/v1/predict/tensor", web::post().to(predict_tensor));
}

#[derive(Deserialize)]
struct PredictQuery {
    #[serde(default)]
    explain: Option<String>,
}

fn truthy(v: &Option<String>) -> Result<bool, ApiError> {
    match v.as_deref() {
        None | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("") | Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(o) => Err(ApiError::bad_request(
            "invalid_query",
            format!("explain must be true or false, got {o:?}"),
        )),
    }
}

fn is_raw_image_type(t: &str) -> bool {
    t.is_empty() || t.starts_with("image/") || t == "application/octet-stream"
}

fn wrong_type(t: &str) -> ApiError {
    ApiError::unsupported_media(format!(
        "content type {t:?} is not accepted here: send the image as the raw body (image/jpeg, image/png, application/octet-stream) or as multipart/form-data"
    ))
}

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

/// Preprocessed input of one image, on the blocking pool, at most a batch's
/// worth of decodes at a time.
async fn gray_of(
    st: &AppState,
    model: &Arc<Loaded>,
    bytes: web::Bytes,
) -> Result<Vec<u8>, ApiError> {
    let _slot = Arc::clone(&st.decode_slots)
        .acquire_owned()
        .await
        .map_err(|_| {
            ApiError::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            )
        })?;
    let m = Arc::clone(model);
    Ok(web::block(move || m.predictor.gray(&bytes, limits())).await??)
}

async fn infer(st: &AppState, model: &Arc<Loaded>, gray: Vec<u8>) -> Result<Outcome, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.batcher
        .submit(Request {
            model: Arc::clone(model),
            gray,
            reply: tx,
        })
        .map_err(ApiError::internal)?;
    rx.await
        .map_err(|_| ApiError::internal("the inference worker dropped the request"))?
        .map_err(|e| ApiError::internal(format!("inference failed: {e}")))
}

fn answer(
    st: &AppState,
    model: &Loaded,
    out: &Outcome,
    t0: Instant,
    pre_ms: f64,
) -> Map<String, Value> {
    let classes = model.predictor.classes();
    let best = crate::learner::metrics::argmax(&out.probs);
    let label = classes.get(best).cloned().unwrap_or_default();
    st.metrics.prediction(&label);
    let probs: Map<String, Value> = classes
        .iter()
        .zip(&out.probs)
        .map(|(c, p)| (c.clone(), json!(p)))
        .collect();
    let mut m = Map::new();
    m.insert("label".into(), json!(label));
    m.insert("probabilities".into(), Value::Object(probs));
    m.insert("model_id".into(), json!(model.id));
    m.insert("timing_ms".into(), json!(t0.elapsed().as_secs_f64() * 1e3));
    m.insert(
        "timing".into(),
        json!({ "preprocess_ms": pre_ms, "queue_ms": out.queue_ms, "model_ms": out.model_ms, "batch_size": out.batch_size }),
    );
    m
}

fn active(st: &AppState) -> Result<Arc<Loaded>, ApiError> {
    st.hub.active().ok_or_else(ApiError::no_model)
}

/// The image of a single-image request: the raw body, or the first file part of a multipart body.
async fn image_bytes(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let t = media_type(req);
    if t == "multipart/form-data" {
        let parts = read_multipart(req, payload, limit).await?;
        let part = parts
            .iter()
            .find(|p| p.filename.is_some() || matches!(p.name.as_str(), "image" | "file"))
            .or(parts.first())
            .ok_or_else(|| {
                ApiError::bad_request("empty_body", "the multipart body has no image part")
            })?;
        Ok(part.data.clone())
    } else if is_raw_image_type(&t) {
        read_body(req, payload, limit).await
    } else {
        Err(wrong_type(&t))
    }
}

async fn predict(
    st: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    q: web::Query<PredictQuery>,
) -> Result<HttpResponse, ApiError> {
    let t0 = Instant::now();
    let explain = truthy(&q.explain)?;
    let bytes = image_bytes(&req, payload, st.max_upload()).await?;
    let model = active(&st)?;
    let gray = gray_of(&st, &model, bytes).await?;
    let pre_ms = t0.elapsed().as_secs_f64() * 1e3;
    let png = if explain {
        let (m, g) = (Arc::clone(&model), gray.clone());
        let (_cam, png) = web::block(move || m.predictor.explain(&g))
            .await?
            .map_err(|e| ApiError::internal(format!("Grad-CAM failed: {e}")))?;
        Some(png)
    } else {
        None
    };
    let out = infer(&st, &model, gray).await?;
    let mut m = answer(&st, &model, &out, t0, pre_ms);
    if let Some(png) = png {
        m.insert(
            "gradcam_png".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(png)),
        );
    }
    Ok(HttpResponse::Ok().json(Value::Object(m)))
}

async fn predict_batch(
    st: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let t0 = Instant::now();
    let t = media_type(&req);
    if t != "multipart/form-data" {
        return Err(ApiError::unsupported_media(format!(
            "content type {t:?} is not accepted here: send several images as multipart/form-data parts"
        )));
    }
    let parts = read_multipart(&req, payload, st.max_upload()).await?;
    if parts.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the multipart body has no image part",
        ));
    }
    if parts.len() > 256 {
        return Err(ApiError::too_large("at most 256 images per batch request"));
    }
    let model = active(&st)?;
    // Every image to the batcher concurrently: they travel as one (or few) forward passes.
    let futs = parts.into_iter().enumerate().map(|(i, p)| {
        let st = st.clone();
        let model = Arc::clone(&model);
        async move {
            let name = p.filename.clone().unwrap_or_else(|| if p.name.is_empty() { format!("#{i}") } else { p.name.clone() });
            let t1 = Instant::now();
            let r = async {
                let g = gray_of(&st, &model, p.data).await?;
                let pre = t1.elapsed().as_secs_f64() * 1e3;
                let out = infer(&st, &model, g).await?;
                Ok::<_, ApiError>(answer(&st, &model, &out, t1, pre))
            }
            .await;
            match r {
                Ok(mut m) => {
                    m.insert("filename".into(), json!(name));
                    Value::Object(m)
                }
                Err(e) => json!({ "filename": name, "error": { "code": e.code, "message": e.message, "status": e.status.as_u16() } }),
            }
        }
    });
    let results = futures_util::future::join_all(futs).await;
    Ok(HttpResponse::Ok().json(json!({
        "results": results,
        "model_id": model.id,
        "timing_ms": t0.elapsed().as_secs_f64() * 1e3,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorBody {
    size: u32,
    spec_version: u32,
    pixels: String,
}

#[derive(Deserialize)]
struct TensorQuery {
    size: Option<u32>,
    spec_version: Option<u32>,
}

async fn predict_tensor(
    st: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    q: web::Query<TensorQuery>,
) -> Result<HttpResponse, ApiError> {
    let t0 = Instant::now();
    let t = media_type(&req);
    let (size, version, pixels) = if t == "application/json" {
        let body = read_body(&req, payload, st.max_upload()).await?;
        if body.is_empty() {
            return Err(ApiError::bad_request(
                "empty_body",
                "the body is empty: expected {\"size\", \"spec_version\", \"pixels\"}",
            ));
        }
        let b: TensorBody = serde_json::from_slice(&body).map_err(|e| json_error(&e))?;
        let px = base64::engine::general_purpose::STANDARD
            .decode(b.pixels.trim())
            .map_err(|e| {
                ApiError::unprocessable("invalid_pixels", format!("pixels must be base64: {e}"))
            })?;
        (b.size, b.spec_version, px)
    } else if t == "application/octet-stream" || t.is_empty() {
        let (Some(s), Some(v)) = (q.size, q.spec_version) else {
            return Err(ApiError::unprocessable(
                "missing_parameter",
                "a raw tensor body needs ?size=N&spec_version=V (or send JSON {\"size\", \"spec_version\", \"pixels\"})",
            ));
        };
        let body = read_body(&req, payload, st.max_upload()).await?;
        (s, v, body.to_vec())
    } else {
        return Err(ApiError::unsupported_media(format!(
            "content type {t:?} is not accepted here: send application/json or application/octet-stream"
        )));
    };
    let model = active(&st)?;
    let spec = model.predictor.spec();
    if version != spec.version {
        return Err(ApiError::unprocessable(
            "spec_version_mismatch",
            format!(
                "preprocessing spec version {version} does not match the active model's {}",
                spec.version
            ),
        ));
    }
    if size != spec.size {
        return Err(ApiError::unprocessable(
            "size_mismatch",
            format!(
                "input size {size} does not match the active model's {} (see GET /v1/models)",
                spec.size
            ),
        ));
    }
    let n = spec.size as usize * spec.size as usize;
    if pixels.len() != n {
        return Err(ApiError::unprocessable(
            "tensor_size",
            format!(
                "expected {n} bytes of {0}x{0} grayscale pixels, got {1}",
                spec.size,
                pixels.len()
            ),
        ));
    }
    let pre_ms = t0.elapsed().as_secs_f64() * 1e3;
    let out = infer(&st, &model, pixels).await?;
    Ok(HttpResponse::Ok().json(Value::Object(answer(&st, &model, &out, t0, pre_ms))))
}
