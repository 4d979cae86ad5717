//! The API's error shape: `{"error": {"code", "message"}}` with a 4xx/5xx status.

use crate::serve::{HubError, JobsError, RegistryError};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use cxr_models::preprocess::PreprocessError;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            b.insert_header(("WWW-Authenticate", "Bearer"));
        }
        b.json(json!({ "error": { "code": self.code, "message": self.message } }))
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }
    pub fn bad_request(code: &str, m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, m)
    }
    pub fn unprocessable(code: &str, m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, m)
    }
    pub fn not_found(code: &str, m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, m)
    }
    pub fn conflict(code: &str, m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    pub fn method_not_allowed(m: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", m)
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m)
    }
    pub fn unsupported_media(m: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            m,
        )
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }
    pub fn no_model() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_active_model",
            "no model is active: train one (POST /v1/jobs) or activate one (POST /v1/models/{id}/activate)",
        )
    }
}

/// Why an uploaded image cannot be classified -> its status.
impl From<PreprocessError> for ApiError {
    fn from(e: PreprocessError) -> Self {
        let m = e.to_string();
        match e {
            PreprocessError::Empty => ApiError::bad_request("empty_body", m),
            PreprocessError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "image_too_large", m)
            }
            PreprocessError::UnknownFormat => ApiError::unprocessable("not_an_image", m),
            PreprocessError::ZeroSize { .. } | PreprocessError::Decode(_) => {
                ApiError::unprocessable("invalid_image", m)
            }
            PreprocessError::TensorSize { .. } => ApiError::unprocessable("tensor_size", m),
            PreprocessError::Spec(_) | PreprocessError::Resize(_) => ApiError::internal(m),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError::internal(e.to_string())
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::UnknownModel(_) => ApiError::not_found("unknown_model", e.to_string()),
            HubError::Load { .. } | HubError::Registry(_) => ApiError::internal(e.to_string()),
        }
    }
}

impl From<JobsError> for ApiError {
    fn from(e: JobsError) -> Self {
        ApiError::internal(e.to_string())
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::internal(format!("worker pool: {e}"))
    }
}

/// serde_json errors: syntax -> 400 malformed_json, wrong shape -> 422 invalid_request.
pub fn json_error(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request("malformed_json", format!("malformed JSON: {e}"))
        }
        Category::Data => ApiError::unprocessable("invalid_request", e.to_string()),
    }
}
