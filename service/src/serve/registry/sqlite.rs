//! The server's persistent state: jobs and models in an embedded SQLite
//! database (`<home>/cxr.sqlite`). Small, short statements behind a mutex.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
#[error("database: {0}")]
pub struct DbError(pub String);

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError(e.to_string())
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// Job states (the API's contract).
pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";
pub const CANCELLED: &str = "cancelled";
pub const INTERRUPTED: &str = "interrupted";
pub const STATES: [&str; 6] = [QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED];

pub fn is_terminal(state: &str) -> bool {
    matches!(state, SUCCEEDED | FAILED | CANCELLED)
}

#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: String,
    pub state: String,
    pub dataset: String,
    #[serde(skip)]
    pub dataset_path: PathBuf,
    pub recipe: Value,
    pub request: Value,
    /// 1-based stage in progress (or last run).
    pub stage: Option<u64>,
    pub stages: Option<u64>,
    pub stage_name: Option<String>,
    /// 1-based epoch in progress within the stage.
    pub epoch: Option<u64>,
    pub epochs: Option<u64>,
    pub metrics: Vec<Value>,
    pub error: Option<String>,
    pub model_id: Option<String>,
    pub activated: bool,
    pub note: Option<String>,
    pub resume: bool,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelRow {
    pub id: String,
    pub active: bool,
    pub created_at: String,
    pub metrics: Value,
    pub card: Value,
    pub job_id: Option<String>,
    #[serde(skip)]
    pub dir: PathBuf,
}

pub struct Registry {
    conn: Mutex<Connection>,
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

fn parse_json(s: Option<String>) -> Value {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

const JOB_COLS: &str = "id, state, dataset, dataset_path, recipe, request, stage, stages, stage_name, epoch, epochs, metrics, error, model_id, activated, note, resume, created_at, started_at, finished_at";

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    let metrics = match parse_json(r.get(11)?) {
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    Ok(JobRow {
        id: r.get(0)?,
        state: r.get(1)?,
        dataset: r.get(2)?,
        dataset_path: PathBuf::from(r.get::<_, String>(3)?),
        recipe: parse_json(r.get(4)?),
        request: parse_json(r.get(5)?),
        stage: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        stages: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
        stage_name: r.get(8)?,
        epoch: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        epochs: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        metrics,
        error: r.get(12)?,
        model_id: r.get(13)?,
        activated: r.get::<_, i64>(14)? != 0,
        note: r.get(15)?,
        resume: r.get::<_, i64>(16)? != 0,
        created_at: r.get(17)?,
        started_at: r.get(18)?,
        finished_at: r.get(19)?,
    })
}

fn model_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ModelRow> {
    Ok(ModelRow {
        id: r.get(0)?,
        active: r.get::<_, i64>(1)? != 0,
        created_at: r.get(2)?,
        metrics: parse_json(r.get(3)?),
        card: parse_json(r.get(4)?),
        job_id: r.get(5)?,
        dir: PathBuf::from(r.get::<_, String>(6)?),
    })
}

impl Registry {
    pub fn open(path: &Path) -> DbResult<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY, state TEXT NOT NULL, dataset TEXT NOT NULL, dataset_path TEXT NOT NULL,
                recipe TEXT, request TEXT, stage INTEGER, stages INTEGER, stage_name TEXT, epoch INTEGER,
                epochs INTEGER, metrics TEXT, error TEXT, model_id TEXT, activated INTEGER NOT NULL DEFAULT 0,
                note TEXT, resume INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, started_at TEXT,
                finished_at TEXT, seq INTEGER);
             CREATE TABLE IF NOT EXISTS models (
                id TEXT PRIMARY KEY, active INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL,
                metrics TEXT, card TEXT, job_id TEXT, dir TEXT NOT NULL, seq INTEGER);",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn ping(&self) -> bool {
        self.conn()
            .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            .is_ok()
    }

    pub fn insert_job(&self, j: &JobRow) -> DbResult<()> {
        let c = self.conn();
        c.execute(
            "INSERT INTO jobs (id, state, dataset, dataset_path, recipe, request, metrics, created_at, resume, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, '[]', ?7, 0, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs))",
            params![
                j.id,
                j.state,
                j.dataset,
                j.dataset_path.to_string_lossy(),
                j.recipe.to_string(),
                j.request.to_string(),
                j.created_at
            ],
        )?;
        Ok(())
    }

    pub fn job(&self, id: &str) -> DbResult<Option<JobRow>> {
        let c = self.conn();
        Ok(c.query_row(
            &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"),
            [id],
            job_from_row,
        )
        .optional()?)
    }

    pub fn jobs(&self) -> DbResult<Vec<JobRow>> {
        let c = self.conn();
        let mut st = c.prepare(&format!("SELECT {JOB_COLS} FROM jobs ORDER BY seq DESC"))?;
        let rows = st
            .query_map([], job_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Ids of jobs in `state`, oldest first.
    pub fn job_ids_in(&self, state: &str) -> DbResult<Vec<String>> {
        let c = self.conn();
        let mut st = c.prepare("SELECT id FROM jobs WHERE state = ?1 ORDER BY seq ASC")?;
        let rows = st
            .query_map([state], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(rows)
    }

    pub fn job_state_counts(&self) -> DbResult<Vec<(String, u64)>> {
        let c = self.conn();
        let mut st = c.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Marks every `running` job `interrupted` (at start-up: the process that ran them is gone).
    pub fn interrupt_running(&self) -> DbResult<usize> {
        let c = self.conn();
        Ok(c.execute(
            "UPDATE jobs SET state = ?1, note = 'the server stopped while this job was running; POST /v1/jobs/{id}/resume continues it from its last checkpoint' WHERE state = ?2",
            params![INTERRUPTED, RUNNING],
        )?)
    }

    /// Changes the state only when it currently is one of `from` (compare-and-set).
    pub fn transition(&self, id: &str, from: &[&str], to: &str) -> DbResult<bool> {
        let c = self.conn();
        let cur: Option<String> = c
            .query_row("SELECT state FROM jobs WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        match cur {
            Some(s) if from.contains(&s.as_str()) => {
                let fin = if is_terminal(to) { Some(now()) } else { None };
                c.execute(
                    "UPDATE jobs SET state = ?2, finished_at = COALESCE(?3, finished_at) WHERE id = ?1",
                    params![id, to, fin],
                )?;
                if to == RUNNING {
                    c.execute(
                        "UPDATE jobs SET started_at = ?2, error = NULL WHERE id = ?1",
                        params![id, now()],
                    )?;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub fn set_resume(&self, id: &str, resume: bool) -> DbResult<()> {
        self.conn().execute(
            "UPDATE jobs SET resume = ?2, finished_at = NULL, note = NULL WHERE id = ?1",
            params![id, resume as i64],
        )?;
        Ok(())
    }

    pub fn set_progress(
        &self,
        id: &str,
        stage: Option<(u64, u64, &str)>,
        epoch: Option<(u64, u64)>,
    ) -> DbResult<()> {
        let c = self.conn();
        if let Some((s, n, name)) = stage {
            c.execute(
                "UPDATE jobs SET stage = ?2, stages = ?3, stage_name = ?4, epoch = NULL, epochs = NULL WHERE id = ?1",
                params![id, s as i64, n as i64, name],
            )?;
        }
        if let Some((e, n)) = epoch {
            c.execute(
                "UPDATE jobs SET epoch = ?2, epochs = ?3 WHERE id = ?1",
                params![id, e as i64, n as i64],
            )?;
        }
        Ok(())
    }

    pub fn set_metrics(&self, id: &str, metrics: &[Value]) -> DbResult<()> {
        self.conn().execute(
            "UPDATE jobs SET metrics = ?2 WHERE id = ?1",
            params![id, Value::Array(metrics.to_vec()).to_string()],
        )?;
        Ok(())
    }

    pub fn finish_job(
        &self,
        id: &str,
        state: &str,
        error: Option<&str>,
        model_id: Option<&str>,
        activated: bool,
        note: Option<&str>,
    ) -> DbResult<()> {
        self.conn().execute(
            "UPDATE jobs SET state = ?2, error = ?3, model_id = ?4, activated = ?5, note = ?6, finished_at = ?7 WHERE id = ?1",
            params![id, state, error, model_id, activated as i64, note, if is_terminal(state) { Some(now()) } else { None }],
        )?;
        Ok(())
    }

    pub fn insert_model(&self, m: &ModelRow) -> DbResult<()> {
        self.conn().execute(
            "INSERT INTO models (id, active, created_at, metrics, card, job_id, dir, seq)
             VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6, (SELECT COALESCE(MAX(seq), 0) + 1 FROM models))",
            params![
                m.id,
                m.created_at,
                m.metrics.to_string(),
                m.card.to_string(),
                m.job_id,
                m.dir.to_string_lossy()
            ],
        )?;
        Ok(())
    }

    const MODEL_COLS: &'static str = "id, active, created_at, metrics, card, job_id, dir";

    pub fn model(&self, id: &str) -> DbResult<Option<ModelRow>> {
        let c = self.conn();
        Ok(c.query_row(
            &format!("SELECT {} FROM models WHERE id = ?1", Self::MODEL_COLS),
            [id],
            model_from_row,
        )
        .optional()?)
    }

    pub fn models(&self) -> DbResult<Vec<ModelRow>> {
        let c = self.conn();
        let mut st = c.prepare(&format!(
            "SELECT {} FROM models ORDER BY seq DESC",
            Self::MODEL_COLS
        ))?;
        let rows = st
            .query_map([], model_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn active_model(&self) -> DbResult<Option<ModelRow>> {
        let c = self.conn();
        Ok(c.query_row(
            &format!(
                "SELECT {} FROM models WHERE active = 1 LIMIT 1",
                Self::MODEL_COLS
            ),
            [],
            model_from_row,
        )
        .optional()?)
    }

    pub fn set_active(&self, id: &str) -> DbResult<()> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute("UPDATE models SET active = 0 WHERE active = 1", [])?;
        tx.execute("UPDATE models SET active = 1 WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }
}
