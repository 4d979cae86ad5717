//! The server's home folder (`cxr serve --home`): every path under it, named
//! in one place.

use crate::train::RunDir;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the folders the server writes into.
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.models())?;
        std::fs::create_dir_all(self.jobs())
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `cxr.sqlite`: the registry.
    pub fn database(&self) -> PathBuf {
        self.root.join("cxr.sqlite")
    }

    /// `token`: the bearer token generated when none is given.
    pub fn token(&self) -> PathBuf {
        self.root.join("token")
    }

    /// `jobs/`: one run folder per job.
    pub fn jobs(&self) -> PathBuf {
        self.root.join("jobs")
    }

    /// `jobs/<id>`: the run folder of job `id`.
    pub fn job(&self, id: &str) -> RunDir {
        RunDir::new(self.jobs().join(id))
    }

    /// `models/`: one folder per registered model.
    pub fn models(&self) -> PathBuf {
        self.root.join("models")
    }

    /// `datasets/<name>`: where an uploaded dataset is unpacked.
    pub fn dataset(&self, name: &str) -> PathBuf {
        self.root.join("datasets").join(name)
    }
}
