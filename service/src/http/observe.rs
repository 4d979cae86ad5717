//! The `/metrics` route and the middleware that counts and times every request.

use super::error::ApiError;
use super::state::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};
use std::time::Instant;

/// `GET /metrics`.
pub async fn route(st: web::Data<AppState>) -> HttpResponse {
    let states = st.reg.job_state_counts().unwrap_or_default();
    let active = st.hub.active_id();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(st.metrics.render(&states, active.as_deref()))
}

/// Middleware: counts and times every request by route; gives actix's empty
/// 405 (a known path with the wrong method) the API's error shape.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let t0 = Instant::now();
    let method = req.method().to_string();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|st| std::sync::Arc::clone(&st.metrics));
    let res = next.call(req).await?;
    let route = match res.request().match_pattern() {
        Some(p) if p.is_empty() => "static".to_string(),
        Some(p) => p,
        None => "unmatched".to_string(),
    };
    if let Some(m) = metrics {
        m.request(
            &route,
            &method,
            res.status().as_u16(),
            t0.elapsed().as_secs_f64(),
        );
    }
    if res.status() == actix_web::http::StatusCode::METHOD_NOT_ALLOWED {
        let (req, _) = res.into_parts();
        let msg = format!("{method} is not allowed on {}", req.path());
        let body = ApiError::method_not_allowed(msg).error_response();
        return Ok(ServiceResponse::new(req, body).map_into_right_body());
    }
    Ok(res.map_into_left_body())
}
