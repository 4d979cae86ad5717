//! Predictions: decode + preprocess on the blocking pool, then the batcher's
//! inference thread runs the model once per batch (with Grad-CAM from that
//! same pass when `explain=true`). This file decides how a request becomes a
//! prediction; the answer is `serve::Prediction` framed with its timing.

use super::error::{json_error, ApiError};
use super::input::{media_type, read_body, read_multipart};
use super::state::AppState;
use crate::serve::batcher::{Outcome, Request};
use crate::serve::{Model, Prediction, Timing};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use cxr_models::preprocess::DecodeLimits;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// The answer for one image: the prediction, how it was served, and what
/// the request asked for besides.
#[derive(Serialize)]
struct Answer {
    /// The image's part name (batch requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<String>,
    /// The Grad-CAM overlay, PNG in base64 (`explain=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    gradcam_png: Option<String>,
    #[serde(flatten)]
    prediction: Prediction,
    timing: Timing,
    timing_ms: f64,
}

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
    model: &Arc<Model>,
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
    Ok(web::block(move || m.gray(&bytes, limits())).await??)
}

async fn infer(
    st: &AppState,
    model: &Arc<Model>,
    gray: Vec<u8>,
    explain: bool,
) -> Result<Outcome, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.batcher
        .submit(Request {
            model: Arc::clone(model),
            gray,
            explain,
            reply: tx,
        })
        .map_err(|e| ApiError::internal(e.to_string()))?;
    rx.await
        .map_err(|_| ApiError::internal("the inference worker dropped the request"))?
        .map_err(|e| ApiError::internal(format!("inference failed: {e}")))
}

fn answer(st: &AppState, model: &Model, out: &Outcome, t0: Instant, pre_ms: f64) -> Answer {
    let prediction = model.prediction(&out.probs).by_model(&model.id);
    st.metrics.prediction(&prediction.label);
    Answer {
        filename: None,
        gradcam_png: None,
        prediction,
        timing: out.timing(pre_ms),
        timing_ms: t0.elapsed().as_secs_f64() * 1e3,
    }
}

fn active(st: &AppState) -> Result<Arc<Model>, ApiError> {
    st.hub.active().ok_or_else(ApiError::no_model)
}

/// The Grad-CAM of an explained request drawn over its input, PNG in base64.
async fn overlay(model: &Arc<Model>, out: &mut Outcome, gray: Vec<u8>) -> Result<String, ApiError> {
    let failed = |e: &dyn std::fmt::Display| ApiError::internal(format!("Grad-CAM failed: {e}"));
    let cam = match out.cam.take() {
        Some(Ok(cam)) => cam,
        Some(Err(e)) => return Err(failed(&e)),
        None => return Err(failed(&"no heatmap came back")),
    };
    let m = Arc::clone(model);
    let png = web::block(move || m.overlay(&cam, &gray))
        .await?
        .map_err(|e| failed(&e))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(png))
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
    let kept = explain.then(|| gray.clone());
    let mut out = infer(&st, &model, gray, explain).await?;
    let png = match kept {
        Some(gray) => Some(overlay(&model, &mut out, gray).await?),
        None => None,
    };
    let mut a = answer(&st, &model, &out, t0, pre_ms);
    a.gradcam_png = png;
    Ok(HttpResponse::Ok().json(a))
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
                let out = infer(&st, &model, g, false).await?;
                Ok::<_, ApiError>(answer(&st, &model, &out, t1, pre))
            }
            .await;
            match r {
                Ok(mut a) => {
                    a.filename = Some(name);
                    serde_json::to_value(a).unwrap_or(Value::Null)
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
    let spec = model.spec();
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
    let out = infer(&st, &model, pixels, false).await?;
    Ok(HttpResponse::Ok().json(answer(&st, &model, &out, t0, pre_ms)))
}
