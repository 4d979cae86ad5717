//! The serving wing: the model ready to serve, the batcher, jobs and the registry.

pub mod batcher;
pub mod jobs;
pub mod model;
pub mod registry;
