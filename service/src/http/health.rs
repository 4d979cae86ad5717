//! Liveness and readiness probes.

use super::state::AppState;
use actix_web::{web, HttpResponse};
use serde_json::json;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the registry answers and a model is active.
pub async fn readyz(st: web::Data<AppState>) -> HttpResponse {
    let db = st.reg.ping();
    let model = st.hub.active_id();
    let ready = db && model.is_some();
    let body =
        json!({ "status": if ready { "ready" } else { "not_ready" }, "db": db, "model_id": model });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
