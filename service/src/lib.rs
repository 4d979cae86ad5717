//! cxr-service: the data pipeline, the learner, reports, inference, jobs and
//! the HTTP API behind the `cxr` binary. Data flows one way: [`data`] ->
//! [`learner`] (driven by [`train`] from a [`recipe`]) -> [`report`]; the
//! [`predictor`] serves a trained model.

pub mod batcher;
pub mod data;
pub mod device;
pub mod evaluate;
pub mod http;
pub mod jobs;
pub mod learner;
pub mod predictor;
pub mod recipe;
pub mod registry;
pub mod report;
pub mod train;
