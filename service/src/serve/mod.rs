//! The serving wing: a trained model ready to serve ([`model`]), the one
//! prediction answer ([`prediction`]), the active model ([`hub`]), the
//! dynamic batcher ([`batcher`]), fine-tune jobs ([`jobs`]) and the registry
//! they persist to ([`registry`]). Nothing here knows HTTP: `crate::http`
//! translates requests into these calls.

pub mod batcher;
pub mod home;
pub mod hub;
pub mod jobs;
pub mod model;
pub mod prediction;
pub mod registry;

pub use batcher::{Batcher, InferError, Outcome};
pub use home::Home;
pub use hub::{HubError, ModelHub};
pub use jobs::{Jobs, JobsError};
pub use model::{Model, PredictError};
pub use prediction::{Prediction, Timing};
pub use registry::{JobState, Registry, RegistryError, SqliteRegistry};
