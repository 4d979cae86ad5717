//! Start-up, in two steps: [`Application::build`] parses the configuration
//! into typed values and builds the app state (registry, model hub, batcher,
//! jobs, token); [`Application::run`] binds the address and serves until the
//! server stops.

use super::error::ApiError;
use super::metrics::Metrics;
use super::observe;
use super::state::{AppState, Limits, Token};
use super::{health, jobs_api, models_api, openapi, predict, web_page};
use crate::serve::{
    Batcher, Home, HubError, Jobs, JobsError, ModelHub, Registry, RegistryError, SqliteRegistry,
};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `cxr serve`'s settings, as given on the command line.
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

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--datasets-root {}: {source}", path.display())]
    DatasetsRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the token file {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {} is empty", .0.display())]
    EmptyTokenFile(PathBuf),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Jobs(#[from] JobsError),
    /// Binding the address or serving failed.
    #[error(transparent)]
    Serve(#[from] std::io::Error),
}

/// A built server, not yet listening.
pub struct Application {
    state: web::Data<AppState>,
    addr: String,
    http_workers: usize,
    web_dir: Option<PathBuf>,
}

impl Application {
    /// Configuration -> app state: home folders, registry, the active model,
    /// the batcher, the training thread and the token.
    pub fn build(cfg: ServeConfig) -> Result<Self, StartError> {
        let home = Home::new(&cfg.home);
        home.create().map_err(|source| StartError::Io {
            path: home.path().to_path_buf(),
            source,
        })?;
        let reg: Arc<dyn Registry> = Arc::new(SqliteRegistry::open(&home.database())?);
        let device = crate::device::parse_device(&cfg.device)?;
        let token = resolve_token(&cfg, &home)?;
        let datasets_root = match &cfg.datasets_root {
            Some(r) => Some(
                r.canonicalize()
                    .map_err(|source| StartError::DatasetsRoot {
                        path: r.clone(),
                        source,
                    })?,
            ),
            None => None,
        };
        let hub = Arc::new(ModelHub::new(Arc::clone(&reg), device));
        hub.restore()?;
        let metrics = Arc::new(Metrics::default());
        let m2 = Arc::clone(&metrics);
        let batcher = Batcher::start(
            cfg.max_batch,
            Duration::from_millis(cfg.max_wait_ms),
            move |n| m2.batch(n),
        );
        let jobs = Jobs::start(
            Arc::clone(&reg),
            Arc::clone(&hub),
            home.clone(),
            cfg.train_workers,
        )?;
        let web_dir = web_page::find_web_dir(cfg.web_dir.as_deref());
        let state = AppState {
            home,
            limits: Limits::from_mb(cfg.max_upload_mb, cfg.max_zip_mb),
            reg,
            jobs,
            hub,
            batcher,
            metrics,
            token,
            datasets_root,
            decode_slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_batch.max(cores()))),
        };
        Ok(Self {
            state: web::Data::new(state),
            addr: cfg.addr,
            http_workers: if cfg.http_workers == 0 {
                cores().max(2)
            } else {
                cfg.http_workers
            },
            web_dir,
        })
    }

    /// Binds the address and serves until the server stops; a running job
    /// then ends interrupted (resumable).
    pub fn run(self) -> Result<(), StartError> {
        let Self {
            state,
            addr,
            http_workers,
            web_dir,
        } = self;
        let jobs = Arc::clone(&state.jobs);
        let result = actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                let web_dir = web_dir.clone();
                App::new()
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
                    .wrap(from_fn(observe::observe))
                    .configure(routes)
                    .configure(|c| web_page::routes(c, web_dir.as_deref()))
                    .default_service(web::to(web_page::not_found))
            })
            .workers(http_workers)
            .bind(&addr)?;
            tracing::info!("cxr serve listening on http://{addr}");
            server.run().await
        });
        jobs.shutdown();
        Ok(result?)
    }
}

/// Every API route.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(observe::route))
        .route("/openapi.json", web::get().to(openapi::openapi))
        .configure(predict::routes)
        .configure(jobs_api::routes)
        .configure(models_api::routes)
        .service(web::scope("/v1").default_service(web::to(web_page::not_found)));
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// `--token`, else `--token-file`, else `<home>/token`, else a new one written there.
fn resolve_token(cfg: &ServeConfig, home: &Home) -> Result<Token, StartError> {
    if let Some(t) = cfg.token.as_deref().and_then(Token::parse) {
        return Ok(t);
    }
    if let Some(f) = &cfg.token_file {
        let t = std::fs::read_to_string(f).map_err(|source| StartError::TokenFile {
            path: f.clone(),
            source,
        })?;
        return Token::parse(&t).ok_or_else(|| StartError::EmptyTokenFile(f.clone()));
    }
    let path = home.token();
    if let Some(t) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| Token::parse(&t))
    {
        tracing::info!("token: read from {}", path.display());
        return Ok(t);
    }
    let t = Token::generate();
    std::fs::write(&path, t.as_str()).map_err(|source| StartError::Io {
        path: path.clone(),
        source,
    })?;
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
