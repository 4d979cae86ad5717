//! The command line: parses arguments and calls the library; errors become a
//! message on stderr and a non-zero exit.

mod bench;
mod commands;
mod progress;

use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use cxr_service::device::parse_device;
use cxr_service::evaluate::Split;
use cxr_service::learner::LrSpec;
use cxr_service::recipe::Stage;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cxr",
    version,
    about = "Chest X-ray classification (NORMAL vs PNEUMONIA): fine-tune, evaluate, serve"
)]
pub struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "CXR_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train a model (one stage from flags, or several with --recipe).
    Train(TrainArgs),
    /// Sweep the learning rate (fastai's lr_find) and suggest one.
    LrFind(TrainArgs),
    /// Score a model on a labelled folder; prints the report as JSON.
    Evaluate {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        /// test, val, valid (val + test), train or all.
        #[arg(long, default_value = "test")]
        split: Split,
        #[arg(long, default_value = "cpu", value_parser = parse_device)]
        device: Device,
    },
    /// Classify image files; prints one JSON line per file.
    Predict {
        #[arg(long)]
        model: PathBuf,
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[arg(long, default_value = "cpu", value_parser = parse_device)]
        device: Device,
    },
    /// Confusion matrix, classification report, top losses with Grad-CAM overlays.
    Interpret {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "valid")]
        split: Split,
        #[arg(long, default_value_t = 9)]
        top_k: usize,
        /// Output folder (default: MODEL/interpret).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value = "cpu", value_parser = parse_device)]
        device: Device,
    },
    /// Run the recipe's tricks cumulatively and print a table of metrics per step.
    Ablation(AblationArgs),
    /// Time one network on random input: images/s and the median step (JSON line).
    Bench(bench::BenchArgs),
    /// Export a trained model (ONNX).
    Export {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = ExportFormat::Onnx)]
        format: ExportFormat,
    },
    /// Serve the HTTP API and the web page (predictions, fine-tune jobs, models).
    Serve(ServeArgs),
}

/// The formats `cxr export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Onnx,
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    #[arg(long, env = "CXR_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Database, models and job runs live here.
    #[arg(long, env = "CXR_HOME", default_value = "./cxr-home")]
    pub home: PathBuf,
    /// Folder whose subfolders (Kaggle layout) jobs may name as their dataset.
    #[arg(long, env = "CXR_DATASETS_ROOT")]
    pub datasets_root: Option<PathBuf>,
    /// File holding the bearer token for jobs and activation.
    #[arg(long, env = "CXR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The bearer token itself (prefer --token-file; without either, one is generated into HOME/token).
    #[arg(long, env = "CXR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The web page's folder (default: service/web).
    #[arg(long, env = "CXR_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Largest inference batch (1 = dynamic batching off). The CPU kernels
    /// split a batch by image, so 4 already keeps both cores busy; at 224 px
    /// a batch of 16 took the server past 400 MB under load, 4 stays near
    /// 265 MB (scripts/bench-serve.sh, concurrency 32).
    #[arg(long, env = "CXR_MAX_BATCH", default_value_t = 4)]
    pub max_batch: usize,
    /// Longest wait for a batch to fill, in milliseconds (only while requests
    /// arrive together; a lone request runs at once).
    #[arg(long, env = "CXR_MAX_WAIT_MS", default_value_t = 5)]
    pub max_wait_ms: u64,
    /// Largest image upload, in MB (413 beyond).
    #[arg(long, env = "CXR_MAX_UPLOAD_MB", default_value_t = 20)]
    pub max_upload_mb: u64,
    /// Largest dataset zip upload, in MB.
    #[arg(long, env = "CXR_MAX_ZIP_MB", default_value_t = 2048)]
    pub max_zip_mb: u64,
    #[arg(long, env = "CXR_DEVICE", default_value = "cpu")]
    pub device: String,
    /// HTTP worker threads (0 = one per core).
    #[arg(long, env = "CXR_HTTP_WORKERS", default_value_t = 0)]
    pub http_workers: usize,
    /// Data loader threads of training jobs (0 = one per core).
    #[arg(long, env = "CXR_TRAIN_WORKERS", default_value_t = 0)]
    pub train_workers: usize,
}

impl ServeArgs {
    /// Builds the server from these settings, then serves until it stops.
    pub fn run(self) -> anyhow::Result<()> {
        let app = cxr_service::http::Application::build(self.config())?;
        Ok(app.run()?)
    }

    fn config(self) -> cxr_service::http::ServeConfig {
        cxr_service::http::ServeConfig {
            addr: self.addr,
            home: self.home,
            datasets_root: self.datasets_root,
            token: self.token,
            token_file: self.token_file,
            web_dir: self.web_dir,
            max_batch: self.max_batch,
            max_wait_ms: self.max_wait_ms,
            max_upload_mb: self.max_upload_mb,
            max_zip_mb: self.max_zip_mb,
            device: self.device,
            http_workers: self.http_workers,
            train_workers: self.train_workers,
        }
    }
}

#[derive(Args, Clone)]
pub struct TrainArgs {
    /// Dataset folder in the Kaggle layout (train|val|test/NORMAL|PNEUMONIA).
    #[arg(long, env = "CXR_DATA")]
    pub data: PathBuf,
    /// A recipe: a TOML file or a built-in name (seed, cpu-quick, bench); the
    /// stage flags below are then ignored.
    #[arg(long)]
    pub recipe: Option<String>,
    /// The stage to run without --recipe (its keys are a recipe stage's).
    #[command(flatten)]
    pub stage: Stage,
    /// Run directory (model, metrics, reports, checkpoint).
    #[arg(long, default_value = "runs/latest")]
    pub out: PathBuf,
    /// Continue from the last completed epoch in --out.
    #[arg(long)]
    pub resume: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
    /// Loader threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Print no progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Clone)]
pub struct AblationArgs {
    #[arg(long, env = "CXR_DATA")]
    pub data: PathBuf,
    #[arg(long, default_value_t = 128)]
    pub size: u32,
    #[arg(long, default_value_t = 256)]
    pub presize: u32,
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub bs: usize,
    #[arg(long, default_value = "3e-3", allow_hyphen_values = true)]
    pub lr: LrSpec,
    /// ImageNet weights for the pretrained steps; without them those steps are skipped.
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value = "runs/ablation")]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
}

/// Parses the command line and runs it; `configure_allocator` learns first
/// whether the command is the long-running server.
pub fn main(configure_allocator: fn(bool)) -> ExitCode {
    let cli = Cli::parse();
    configure_allocator(matches!(cli.command, Command::Serve(..)));
    init_tracing(cli.log_json);
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CXR_LOG").unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}
