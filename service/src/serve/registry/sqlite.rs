//! The SQLite store of the registry (`<home>/cxr.sqlite`).

use super::{
    now, JobEnd, JobProgress, JobRow, JobState, ModelRow, Registry, RegistryError, RegistryResult,
};
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

impl From<rusqlite::Error> for RegistryError {
    fn from(e: rusqlite::Error) -> Self {
        RegistryError::Backend(Box::new(e))
    }
}

/// The registry in an embedded SQLite database: small, short statements behind a mutex.
pub struct SqliteRegistry {
    conn: Mutex<Connection>,
}

fn parse_json(s: Option<String>) -> Value {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

fn state_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<JobState> {
    r.get::<_, String>(i)?
        .parse()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
}

const JOB_COLS: &str = "id, state, dataset, dataset_path, recipe, request, stage, stages, stage_name, epoch, epochs, metrics, error, model_id, activated, note, resume, created_at, started_at, finished_at";

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    let metrics = match parse_json(r.get(11)?) {
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    Ok(JobRow {
        id: r.get(0)?,
        state: state_at(r, 1)?,
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

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, dataset TEXT NOT NULL, dataset_path TEXT NOT NULL,
    recipe TEXT, request TEXT, stage INTEGER, stages INTEGER, stage_name TEXT, epoch INTEGER,
    epochs INTEGER, metrics TEXT, error TEXT, model_id TEXT, activated INTEGER NOT NULL DEFAULT 0,
    note TEXT, resume INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, started_at TEXT,
    finished_at TEXT, seq INTEGER);
 CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY, active INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL,
    metrics TEXT, card TEXT, job_id TEXT, dir TEXT NOT NULL, seq INTEGER);";

const MODEL_COLS: &str = "id, active, created_at, metrics, card, job_id, dir";

/// The finish time a job in `state` records (none while it may still run).
fn finished_at(state: JobState) -> Option<String> {
    state.is_terminal().then(now)
}

impl SqliteRegistry {
    pub fn open(path: &Path) -> RegistryResult<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn one_model(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
    ) -> RegistryResult<Option<ModelRow>> {
        let c = self.conn();
        Ok(c.query_row(
            &format!("SELECT {MODEL_COLS} FROM models {filter}"),
            args,
            model_from_row,
        )
        .optional()?)
    }
}

impl Registry for SqliteRegistry {
    fn ping(&self) -> bool {
        self.conn()
            .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            .is_ok()
    }

    fn insert_job(&self, j: &JobRow) -> RegistryResult<()> {
        let c = self.conn();
        c.execute(
            "INSERT INTO jobs (id, state, dataset, dataset_path, recipe, request, metrics, created_at, resume, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, '[]', ?7, 0, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs))",
            params![
                j.id,
                j.state.as_str(),
                j.dataset,
                j.dataset_path.to_string_lossy(),
                j.recipe.to_string(),
                j.request.to_string(),
                j.created_at
            ],
        )?;
        Ok(())
    }

    fn job(&self, id: &str) -> RegistryResult<Option<JobRow>> {
        let c = self.conn();
        Ok(c.query_row(
            &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"),
            [id],
            job_from_row,
        )
        .optional()?)
    }

    fn jobs(&self) -> RegistryResult<Vec<JobRow>> {
        let c = self.conn();
        let mut st = c.prepare(&format!("SELECT {JOB_COLS} FROM jobs ORDER BY seq DESC"))?;
        let rows = st
            .query_map([], job_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn job_ids_in(&self, state: JobState) -> RegistryResult<Vec<String>> {
        let c = self.conn();
        let mut st = c.prepare("SELECT id FROM jobs WHERE state = ?1 ORDER BY seq ASC")?;
        let rows = st
            .query_map([state.as_str()], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(rows)
    }

    fn job_state_counts(&self) -> RegistryResult<Vec<(JobState, u64)>> {
        let c = self.conn();
        let mut st = c.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
        let rows = st
            .query_map([], |r| Ok((state_at(r, 0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn interrupt_running(&self) -> RegistryResult<usize> {
        let c = self.conn();
        Ok(c.execute(
            "UPDATE jobs SET state = ?1, note = 'the server stopped while this job was running; POST /v1/jobs/{id}/resume continues it from its last checkpoint' WHERE state = ?2",
            params![JobState::Interrupted.as_str(), JobState::Running.as_str()],
        )?)
    }

    fn transition(&self, id: &str, from: &[JobState], to: JobState) -> RegistryResult<bool> {
        let c = self.conn();
        let cur = c
            .query_row("SELECT state FROM jobs WHERE id = ?1", [id], |r| {
                state_at(r, 0)
            })
            .optional()?;
        if !cur.is_some_and(|s| from.contains(&s)) {
            return Ok(false);
        }
        c.execute(
            "UPDATE jobs SET state = ?2, finished_at = COALESCE(?3, finished_at) WHERE id = ?1",
            params![id, to.as_str(), finished_at(to)],
        )?;
        if to == JobState::Running {
            c.execute(
                "UPDATE jobs SET started_at = ?2, error = NULL WHERE id = ?1",
                params![id, now()],
            )?;
        }
        Ok(true)
    }

    fn requeue(&self, id: &str, resume: bool, note: &str) -> RegistryResult<()> {
        self.conn().execute(
            "UPDATE jobs SET state = ?2, resume = ?3, error = NULL, model_id = NULL, activated = 0, note = ?4, finished_at = NULL WHERE id = ?1",
            params![id, JobState::Queued.as_str(), resume as i64, note],
        )?;
        Ok(())
    }

    fn set_progress(&self, id: &str, progress: JobProgress<'_>) -> RegistryResult<()> {
        let c = self.conn();
        match progress {
            JobProgress::Stage { stage, stages, name } => c.execute(
                "UPDATE jobs SET stage = ?2, stages = ?3, stage_name = ?4, epoch = NULL, epochs = NULL WHERE id = ?1",
                params![id, stage as i64, stages as i64, name],
            )?,
            JobProgress::Epoch { epoch, epochs } => c.execute(
                "UPDATE jobs SET epoch = ?2, epochs = ?3 WHERE id = ?1",
                params![id, epoch as i64, epochs as i64],
            )?,
        };
        Ok(())
    }

    fn set_metrics(&self, id: &str, metrics: &[Value]) -> RegistryResult<()> {
        self.conn().execute(
            "UPDATE jobs SET metrics = ?2 WHERE id = ?1",
            params![id, Value::Array(metrics.to_vec()).to_string()],
        )?;
        Ok(())
    }

    fn finish_job(&self, id: &str, end: &JobEnd) -> RegistryResult<()> {
        self.conn().execute(
            "UPDATE jobs SET state = ?2, error = ?3, model_id = ?4, activated = ?5, note = ?6, finished_at = ?7 WHERE id = ?1",
            params![
                id,
                end.state.as_str(),
                end.error,
                end.model_id,
                end.activated as i64,
                end.note,
                finished_at(end.state)
            ],
        )?;
        Ok(())
    }

    fn insert_model(&self, m: &ModelRow) -> RegistryResult<()> {
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

    fn model(&self, id: &str) -> RegistryResult<Option<ModelRow>> {
        self.one_model("WHERE id = ?1", [id])
    }

    fn models(&self) -> RegistryResult<Vec<ModelRow>> {
        let c = self.conn();
        let mut st = c.prepare(&format!(
            "SELECT {MODEL_COLS} FROM models ORDER BY seq DESC"
        ))?;
        let rows = st
            .query_map([], model_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn active_model(&self) -> RegistryResult<Option<ModelRow>> {
        self.one_model("WHERE active = 1 LIMIT 1", [])
    }

    fn set_active(&self, id: &str) -> RegistryResult<()> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute("UPDATE models SET active = 0 WHERE active = 1", [])?;
        tx.execute("UPDATE models SET active = 1 WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> JobRow {
        JobRow::queued(id.into(), "tiny".into(), PathBuf::from("/data/tiny"))
    }

    #[test]
    fn jobs_change_state_by_compare_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let reg = SqliteRegistry::open(&dir.path().join("cxr.sqlite")).unwrap();
        reg.insert_job(&job("a")).unwrap();
        reg.insert_job(&job("b")).unwrap();
        assert_eq!(reg.job_ids_in(JobState::Queued).unwrap(), ["a", "b"]);
        assert!(reg
            .transition("a", &[JobState::Queued], JobState::Running)
            .unwrap());
        assert!(!reg
            .transition("a", &[JobState::Queued], JobState::Cancelled)
            .unwrap());
        assert_eq!(reg.interrupt_running().unwrap(), 1);
        let a = reg.job("a").unwrap().unwrap();
        assert_eq!(a.state, JobState::Interrupted);
        assert!(a.started_at.is_some() && a.finished_at.is_none());
        reg.requeue("a", true, "resuming").unwrap();
        let a = reg.job("a").unwrap().unwrap();
        assert_eq!(
            (a.state, a.resume, a.note.as_deref()),
            (JobState::Queued, true, Some("resuming"))
        );
        let mut end = JobEnd::new(JobState::Failed);
        end.error = Some("boom".into());
        reg.finish_job("b", &end).unwrap();
        let b = reg.job("b").unwrap().unwrap();
        assert_eq!(
            (b.state, b.error.as_deref()),
            (JobState::Failed, Some("boom"))
        );
        assert!(b.finished_at.is_some());
        let mut counts = reg.job_state_counts().unwrap();
        counts.sort_by_key(|(s, _)| s.as_str());
        assert_eq!(counts, [(JobState::Failed, 1), (JobState::Queued, 1)]);
    }

    #[test]
    fn one_model_is_active() {
        let dir = tempfile::tempdir().unwrap();
        let reg = SqliteRegistry::open(&dir.path().join("cxr.sqlite")).unwrap();
        for id in ["m1", "m2"] {
            reg.insert_model(&ModelRow {
                id: id.into(),
                active: false,
                created_at: now(),
                metrics: Value::Null,
                card: Value::Null,
                job_id: None,
                dir: dir.path().join(id),
            })
            .unwrap();
        }
        assert!(reg.active_model().unwrap().is_none());
        reg.set_active("m1").unwrap();
        reg.set_active("m2").unwrap();
        assert_eq!(
            reg.active_model().unwrap().map(|m| m.id).as_deref(),
            Some("m2")
        );
        let ids: Vec<String> = reg.models().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["m2", "m1"]);
    }
}
