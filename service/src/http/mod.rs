//! `cxr serve`: the HTTP API (actix-web). Predictions go through the dynamic
//! batcher's inference thread; fine-tune jobs run on the training thread;
//! jobs and models persist in `<home>/cxr.sqlite`.

pub mod error;
pub mod input;
pub mod jobs_api;
pub mod metrics;
pub mod models_api;
pub mod openapi;
pub mod predict;

use crate::serve::batcher::{Batcher, Loaded};
use crate::serve::jobs::Jobs;
use crate::serve::model::Predictor;
use crate::serve::registry::Registry;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::ResponseError;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use candle_core::Device;
use error::ApiError;
use metrics::Metrics;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: String,
    pub home: PathBuf,
    pub datasets_root: Option<PathBuf>,
    /// The bearer token; None = read `token_file`, else generate one into `<home>/token`.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub web_dir: Option<PathBuf>,
    pub max_batch: usize,
    pub max_wait_ms: u64,
    pub max_upload_mb: u64,
    pub max_zip_mb: u64,
    pub device: String,
    /// HTTP worker threads (0 = one per core).
    pub http_workers: usize,
    /// Data loader threads of training jobs (0 = one per core).
    pub train_workers: usize,
}

/// The active model, swapped atomically on activation.
pub struct ModelHub {
    pub reg: Arc<Registry>,
    pub device: Device,
    active: RwLock<Option<Arc<Loaded>>>,
    activating: Mutex<()>,
}

impl ModelHub {
    pub fn active(&self) -> Option<Arc<Loaded>> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn load(&self, id: &str) -> Result<Arc<Loaded>, ApiError> {
        let row = self
            .reg
            .model(id)?
            .ok_or_else(|| ApiError::not_found("unknown_model", format!("no model {id:?}")))?;
        if let Some(a) = self.active().filter(|a| a.id == id) {
            return Ok(a);
        }
        let p = Predictor::load(&row.dir, &self.device)
            .map_err(|e| ApiError::internal(format!("loading model {id}: {e}")))?;
        Ok(Arc::new(Loaded {
            id: id.to_string(),
            predictor: p,
        }))
    }

    /// Loads then swaps: requests in flight finish on the previous model.
    pub fn activate(&self, id: &str) -> Result<Arc<Loaded>, ApiError> {
        let _g = self.activating.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = self.load(id)?;
        self.reg.set_active(id)?;
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&loaded));
        tracing::info!(model = id, "model activated");
        Ok(loaded)
    }

    /// Activates `id` only when no model is active. Answers whether it did.
    pub fn activate_if_none(&self, id: &str) -> Result<bool, ApiError> {
        {
            let _g = self.activating.lock().unwrap_or_else(|p| p.into_inner());
            if self.active().is_some() {
                return Ok(false);
            }
        }
        self.activate(id).map(|_| true)
    }
}

pub struct AppState {
    pub cfg: ServeConfig,
    pub reg: Arc<Registry>,
    pub jobs: Arc<Jobs>,
    pub hub: Arc<ModelHub>,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    pub token: String,
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
        (self.cfg.max_upload_mb as usize).saturating_mul(1 << 20)
    }
    pub fn max_zip(&self) -> usize {
        (self.cfg.max_zip_mb as usize).saturating_mul(1 << 20)
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
        if !given.is_empty() && constant_eq(given.as_bytes(), self.token.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("wrong token"))
        }
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn resolve_token(cfg: &ServeConfig) -> anyhow::Result<String> {
    if let Some(t) = cfg
        .token
        .as_ref()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
    {
        return Ok(t);
    }
    if let Some(f) = &cfg.token_file {
        let t = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("reading the token file {}: {e}", f.display()))?;
        let t = t.trim().to_string();
        anyhow::ensure!(!t.is_empty(), "the token file {} is empty", f.display());
        return Ok(t);
    }
    let path = cfg.home.join("token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            tracing::info!("token: read from {}", path.display());
            return Ok(t.trim().to_string());
        }
    }
    let t = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(&path, &t).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    tracing::info!(
        "no token given (--token-file or CXR_TOKEN): generated one into {}",
        path.display()
    );
    Ok(t)
}

/// `--web-dir`, else `service/web` under the cwd or next to the binary's repository.
fn find_web_dir(cfg: &ServeConfig) -> Option<PathBuf> {
    if let Some(d) = &cfg.web_dir {
        return Some(d.clone());
    }
    let mut cands = vec![PathBuf::from("service/web")];
    if let Ok(exe) = std::env::current_exe() {
        for a in exe.ancestors().skip(1).take(4) {
            cands.push(a.join("service/web"));
        }
    }
    cands.into_iter().find(|d| d.join("index.html").is_file())
}

const NO_WEB: &str = "<!doctype html><meta charset=utf-8><title>cxr</title><h1>cxr serve</h1>\
<p>The web page is not built. Run <code>scripts/build-wasm.sh</code> in the repository (it writes \
<code>service/web/pkg/</code>) and start <code>cxr serve</code> from the repository root, or pass \
<code>--web-dir DIR</code>.</p><p>The API is at <a href=/openapi.json>/openapi.json</a>.</p>";

pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if openapi::documents_path(req.path()) {
        return Err(ApiError::method_not_allowed(format!(
            "{} is not allowed on {}",
            req.method(),
            req.path()
        )));
    }
    Err(ApiError::not_found(
        "not_found",
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(st: web::Data<AppState>) -> HttpResponse {
    let db = st.reg.ping();
    let model = st.hub.active().map(|m| m.id.clone());
    let body = json!({ "status": if db && model.is_some() { "ready" } else { "not_ready" }, "db": db, "model_id": model });
    if db && model.is_some() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics_route(st: web::Data<AppState>) -> HttpResponse {
    let states = st.reg.job_state_counts().unwrap_or_default();
    let active = st.hub.active().map(|m| m.id.clone());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(st.metrics.render(&states, active.as_deref()))
}

pub fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(cfg.home.join("models"))?;
    std::fs::create_dir_all(cfg.home.join("jobs"))?;
    let reg = Arc::new(Registry::open(&cfg.home.join("cxr.sqlite"))?);
    let device = crate::device::parse_device(&cfg.device).map_err(anyhow::Error::msg)?;
    let token = resolve_token(&cfg)?;
    let datasets_root = match &cfg.datasets_root {
        Some(r) => Some(
            r.canonicalize()
                .map_err(|e| anyhow::anyhow!("--datasets-root {}: {e}", r.display()))?,
        ),
        None => None,
    };
    let hub = Arc::new(ModelHub {
        reg: Arc::clone(&reg),
        device: device.clone(),
        active: RwLock::new(None),
        activating: Mutex::new(()),
    });
    match reg.active_model()? {
        Some(m) => match hub.activate(&m.id) {
            Ok(_) => {}
            Err(e) => tracing::error!(model = %m.id, "the active model could not be loaded: {e}"),
        },
        None => {
            tracing::info!("no model yet: predictions answer 503 until one is trained or activated")
        }
    }
    let metrics = Arc::new(Metrics::default());
    let m2 = Arc::clone(&metrics);
    let batcher = Batcher::start(
        cfg.max_batch,
        Duration::from_millis(cfg.max_wait_ms),
        move |n| m2.batch(n),
    );
    let (h2, r2, home) = (Arc::clone(&hub), Arc::clone(&reg), cfg.home.clone());
    let on_success: crate::serve::jobs::OnSuccess = Box::new(move |job_id: &str, run_dir: &Path| {
        let row = crate::serve::jobs::register_run(&r2, &home, job_id, run_dir)?;
        let activated = h2.activate_if_none(&row.id).map_err(|e| e.message)?;
        Ok((row.id, activated))
    });
    let jobs = Jobs::start(
        Arc::clone(&reg),
        cfg.home.clone(),
        device,
        cfg.train_workers,
        on_success,
    )
    .map_err(anyhow::Error::msg)?;
    let web_dir = find_web_dir(&cfg);
    match &web_dir {
        Some(d) => tracing::info!("web page: {}", d.display()),
        None => tracing::warn!(
            "web page not found (build it with scripts/build-wasm.sh, or pass --web-dir)"
        ),
    }
    let state = web::Data::new(AppState {
        cfg: cfg.clone(),
        reg,
        jobs: Arc::clone(&jobs),
        hub,
        batcher,
        metrics: Arc::clone(&metrics),
        token,
        datasets_root,
        decode_slots: Arc::new(tokio::sync::Semaphore::new(
            cfg.max_batch
                .max(std::thread::available_parallelism().map_or(2, |n| n.get())),
        )),
    });
    let workers = if cfg.http_workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2)
    } else {
        cfg.http_workers
    };
    let addr = cfg.addr.clone();
    let result = actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            let metrics = Arc::clone(&metrics);
            let mut app = App::new()
                .app_data(state.clone())
                .app_data(web::QueryConfig::default().error_handler(|e, _| {
                    ApiError::bad_request("invalid_query", e.to_string()).into()
                }))
                .app_data(web::PathConfig::default().error_handler(|e, _| {
                    ApiError::bad_request("invalid_path", e.to_string()).into()
                }))
                .app_data(web::JsonConfig::default().error_handler(|e, _| {
                    ApiError::bad_request("malformed_json", e.to_string()).into()
                }))
                .wrap_fn(move |req, srv| {
                    let t0 = std::time::Instant::now();
                    let method = req.method().to_string();
                    let metrics = Arc::clone(&metrics);
                    let fut = srv.call(req);
                    async move {
                        let res = fut.await?;
                        let route = match res.request().match_pattern() {
                            Some(p) if p.is_empty() => "static".to_string(),
                            Some(p) => p,
                            None => "unmatched".to_string(),
                        };
                        metrics.request(
                            &route,
                            &method,
                            res.status().as_u16(),
                            t0.elapsed().as_secs_f64(),
                        );
                        if res.status() == actix_web::http::StatusCode::METHOD_NOT_ALLOWED {
                            // actix answers a known path with the wrong method by an
                            // empty 405: give it the API's error shape.
                            let (req, _) = res.into_parts();
                            let msg = format!("{method} is not allowed on {}", req.path());
                            let body = ApiError::method_not_allowed(msg).error_response();
                            return Ok(ServiceResponse::new(req, body).map_into_right_body());
                        }
                        Ok(res.map_into_left_body())
                    }
                })
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics_route))
                .route("/openapi.json", web::get().to(openapi::openapi))
                .configure(predict::routes)
                .configure(jobs_api::routes)
                .configure(models_api::routes)
                .service(web::scope("/v1").default_service(web::to(not_found)));
            app = match &web_dir {
                Some(d) => app.service(
                    actix_files::Files::new("/", d)
                        .index_file("index.html")
                        .default_handler(web::to(not_found)),
                ),
                None => app.route(
                    "/",
                    web::get().to(|| async {
                        HttpResponse::Ok()
                            .content_type("text/html; charset=utf-8")
                            .body(NO_WEB)
                    }),
                ),
            };
            app.default_service(web::to(not_found))
        })
        .workers(workers)
        .bind(&addr)?;
        tracing::info!("cxr serve listening on http://{addr}");
        server.run().await
    });
    jobs.shutdown();
    result.map_err(Into::into)
}
