//! cxr-service: the data pipeline, the learner, reports, inference, jobs and
//! the HTTP API behind the `cxr` binary. Data flows one way: [`data`] ->
//! [`learner`] (driven by [`train`] from a [`recipe`]) -> [`report`]; the
//! [`serve`] wing serves trained models and runs fine-tune jobs, and [`http`]
//! puts it on the network.

pub mod data;
pub mod device;
pub mod evaluate;
pub mod http;
pub mod learner;
pub mod recipe;
pub mod report;
pub mod serve;
pub mod train;
