//! `cxr serve`: the HTTP API (actix-web). Translation only: requests are
//! parsed into calls on the serving wing (`crate::serve`), its answers and
//! errors into JSON and status codes. Predictions go through the dynamic
//! batcher's inference thread; fine-tune jobs run on the training thread;
//! jobs and models persist in `<home>/cxr.sqlite`.

pub mod error;
pub mod health;
pub mod input;
pub mod jobs_api;
pub mod metrics;
pub mod models_api;
pub mod observe;
pub mod openapi;
pub mod predict;
pub mod startup;
pub mod state;
pub mod web_page;

pub use startup::{Application, ServeConfig, StartError};
pub use state::AppState;

/// Builds the server from `cfg`, then serves until it stops.
pub fn serve(cfg: ServeConfig) -> Result<(), StartError> {
    Application::build(cfg)?.run()
}
