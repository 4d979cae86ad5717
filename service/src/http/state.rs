//! What every handler reaches: the serving wing's parts, the parsed
//! configuration values, and the bearer token check.

use super::error::ApiError;
use super::metrics::Metrics;
use crate::serve::{Batcher, Home, Jobs, ModelHub, Registry};
use actix_web::HttpRequest;
use std::path::PathBuf;
use std::sync::Arc;

/// The bearer token of the routes that change state: trimmed, never empty.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// `s` trimmed, or None when nothing is left.
    pub fn parse(s: &str) -> Option<Self> {
        let t = s.trim();
        (!t.is_empty()).then(|| Self(t.to_string()))
    }

    /// A fresh random token (256 bits, hex).
    pub fn generate() -> Self {
        Self(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares in constant time.
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (given.as_bytes(), self.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Request body limits, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// An image upload (and any JSON body).
    pub upload: usize,
    /// A dataset zip upload.
    pub zip: usize,
}

impl Limits {
    pub fn from_mb(upload_mb: u64, zip_mb: u64) -> Self {
        let bytes = |mb: u64| (mb as usize).saturating_mul(1 << 20);
        Self {
            upload: bytes(upload_mb),
            zip: bytes(zip_mb),
        }
    }
}

pub struct AppState {
    pub home: Home,
    pub limits: Limits,
    pub reg: Arc<dyn Registry>,
    pub jobs: Arc<Jobs>,
    pub hub: Arc<ModelHub>,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    pub token: Token,
    /// Canonical `--datasets-root`.
    pub datasets_root: Option<PathBuf>,
    /// Image decodes allowed at once: enough to fill one batch, no more.
    /// Unbounded, concurrency 32 ran 32 decodes on 32 blocking threads, each
    /// holding a full-size image (peak RSS 570 MB); one per core starved the
    /// batcher (batches of 2.7 at concurrency 8, half the throughput).
    pub decode_slots: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn max_upload(&self) -> usize {
        self.limits.upload
    }

    pub fn max_zip(&self) -> usize {
        self.limits.zip
    }

    /// `Authorization: Bearer <token>` or 401.
    pub fn require_token(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let h = req.headers().get(actix_web::http::header::AUTHORIZATION);
        let Some(h) = h else {
            return Err(ApiError::unauthorized(
                "this route needs a token: send Authorization: Bearer <token>",
            ));
        };
        let given = h
            .to_str()
            .ok()
            .and_then(|s| s.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if !given.is_empty() && self.token.matches(given) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("wrong token"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_non_empty_and_compared_whole() {
        assert!(Token::parse("  \n").is_none());
        let t = Token::parse(" s3cret\n").unwrap();
        assert_eq!(t.as_str(), "s3cret");
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre") && !t.matches("s3cret!") && !t.matches(""));
        assert_eq!(Token::generate().as_str().len(), 64);
    }
}
