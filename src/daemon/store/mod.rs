//! The daemon's history in an embedded SQLite file: revisions applied or
//! refused, the digests each commit was deployed with, every pass, and the
//! conditions last reported per service.
//!
//! Nothing here is needed for correctness: the containers' labels are the
//! truth, so deleting the file loses history, never the deployment. What the
//! store does add is memory across restarts: a revision refused stays refused,
//! and services without `autoredeploy` keep the digests their commit was first
//! applied with.
//!
//! Nothing in it grows without bound ([`Retention`]): passes and pipeline
//! runs keep a set history, and a stage's log is kept as appended chunks of
//! which the newest few MiB remain.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::registry::Resolved;

use crate::pipeline::RunStatus;

mod history;
mod queue;
mod runs;
#[cfg(test)]
mod tests;

pub use history::*;
pub use queue::*;
pub use runs::*;

/// The layout of the file this pier writes, kept in SQLite's
/// `user_version`. 0 is a file from before it was kept (the same tables).
/// A change of layout adds a step to [`migrate`] and one to this number.
pub const SCHEMA_VERSION: i64 = 1;

/// Bring a store file forward to [`SCHEMA_VERSION`], in one transaction;
/// a file written by a newer pier is refused, never rewritten in a layout
/// it does not know.
fn migrate(connection: &Connection) -> rusqlite::Result<()> {
    let found: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "it was written by a newer pier (layout {found}; this pier knows up to {SCHEMA_VERSION}): run that pier, or give this one another --state-dir"
            )),
        ));
    }
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let steps = (|| {
        // 0 → 1: the tables as they are (created if missing).
        connection.execute_batch(SCHEMA)?;
        connection.execute_batch(history::SCHEMA)?;
        connection.pragma_update(None, "user_version", SCHEMA_VERSION)
    })();
    match steps {
        Ok(()) => connection.execute_batch("COMMIT"),
        Err(e) => {
            let _ = connection.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS revisions (
    commit_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,          -- applied | failed
    reason TEXT NOT NULL DEFAULT '',
    services TEXT NOT NULL DEFAULT '{}',  -- JSON: service -> why its rollout was rolled back
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS digests (
    commit_id TEXT NOT NULL,
    service TEXT NOT NULL,
    reference TEXT NOT NULL,
    pinned TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (commit_id, service)
);
CREATE TABLE IF NOT EXISTS passes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    result TEXT NOT NULL,
    steps INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS conditions (
    service TEXT PRIMARY KEY,
    condition TEXT NOT NULL,
    reason TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pipeline_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    commit_id TEXT NOT NULL,
    branch TEXT NOT NULL,
    state TEXT NOT NULL,          -- running | passed | failed | cancelled
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    summary TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS pipeline_stages (
    run_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'running',
    exit_code INTEGER,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    log TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS stage_log (
    run_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (run_id, name, seq)
);
CREATE TABLE IF NOT EXISTS pass_steps (
    pass_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    service TEXT NOT NULL,
    node TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    ok INTEGER NOT NULL,
    message TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (pass_id, seq)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Why a revision was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    /// Services whose rollout was rolled back, with the reason. Empty when
    /// the revision was refused as a whole (invalid manifests).
    pub services: BTreeMap<String, String>,
}

/// One pass, as recorded.
#[derive(Debug, Clone)]
pub struct PassRecord {
    /// Given by the store; 0 for a pass not recorded yet.
    pub id: i64,
    pub started: SystemTime,
    pub duration_ms: u64,
    pub trigger: String,
    pub commit: String,
    pub result: String,
    pub steps: usize,
    pub message: String,
    /// The engine steps it took (kept with the pass; read with
    /// [`Store::pass_steps`]).
    pub records: Vec<StepRow>,
}

impl Default for PassRecord {
    fn default() -> PassRecord {
        PassRecord {
            id: 0,
            started: UNIX_EPOCH,
            duration_ms: 0,
            trigger: String::new(),
            commit: String::new(),
            result: String::new(),
            steps: 0,
            message: String::new(),
            records: Vec::new(),
        }
    }
}

/// One engine step of a pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepRow {
    pub service: String,
    pub node: String,
    pub action: String,
    pub target: String,
    pub ok: bool,
    pub message: String,
    pub duration_ms: u64,
}

/// A revision applied or refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionRow {
    pub commit: String,
    /// `applied` or `failed`.
    pub state: String,
    pub reason: String,
    /// Seconds since the epoch.
    pub updated_at: i64,
}

/// A pipeline run in a list of runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub id: i64,
    pub commit: String,
    pub branch: String,
    pub state: RunStatus,
    /// Seconds since the epoch.
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// The run status in column `index`: a text no version of pier wrote is an
/// error, not a guess.
fn run_status(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<RunStatus> {
    let text: String = row.get(index)?;
    RunStatus::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("`{text}` is not a run status").into(),
        )
    })
}

/// The columns [`RunRow::read`] reads, in its order.
const RUN_ROW_COLUMNS: &str = "id, commit_id, branch, state, started_at, finished_at";

impl RunRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
        Ok(RunRow {
            id: row.get(0)?,
            commit: row.get(1)?,
            branch: row.get(2)?,
            state: run_status(row, 3)?,
            started_at: row.get(4)?,
            finished_at: row.get(5)?,
        })
    }
}

/// Taken by value: a first deploy to a fleet records a few steps per
/// container, and copying them would hold every step's text twice.
impl From<crate::pass::apply::StepRecord> for StepRow {
    fn from(step: crate::pass::apply::StepRecord) -> StepRow {
        StepRow {
            service: step.service,
            node: step.node,
            action: step.action.as_str().into(),
            target: step.target,
            ok: step.ok,
            message: step.message,
            duration_ms: step
                .ended
                .duration_since(step.started)
                .unwrap_or_default()
                .as_millis() as u64,
        }
    }
}

/// How much history the store keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Passes kept, newest first.
    pub passes: usize,
    /// Pipeline runs kept (with their stages and logs), newest first.
    pub runs: usize,
    /// Bytes of each stage's log kept: its end.
    pub stage_log_bytes: usize,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            passes: 10_000,
            runs: 500,
            stage_log_bytes: 4 << 20,
        }
    }
}

/// The SQLite store. Calls are short and few per pass, so one connection
/// behind a mutex serves the loop and the API alike.
pub struct Store {
    connection: Mutex<Connection>,
    retention: Retention,
    /// Per stage being written: (next chunk number, bytes kept).
    logs: Mutex<HashMap<(i64, String), (i64, usize)>>,
}

/// Written in place of the chunks dropped from the front of a long log.
fn dropped_marker(limit: usize) -> String {
    format!(
        "[… earlier output dropped: the last {} KiB of each stage are kept]\n",
        limit / 1024
    )
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Create `path` if missing, and make it readable and writable by its
/// owner only.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn io_error(error: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(error))
}

fn now() -> i64 {
    unix_seconds(SystemTime::now())
}

impl Store {
    /// Open (or create) the store at `path`.
    pub fn open(path: &Path, retention: Retention) -> rusqlite::Result<Store> {
        // The history holds run logs and who did what: the owner's alone.
        // SQLite gives its WAL and shared-memory files the database file's
        // mode, so the file is made 0600 before SQLite opens it, and the
        // other two are checked once they exist.
        owner_only(path).map_err(io_error)?;
        let connection = Connection::open(path)?;
        // WAL keeps readers (the API) from waiting on the loop's writes.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        // Masked text must not linger in free pages once rows are rewritten.
        connection.pragma_update(None, "secure_delete", "ON")?;
        migrate(&connection)?;
        for suffix in ["-wal", "-shm"] {
            let mut companion = path.as_os_str().to_owned();
            companion.push(suffix);
            let companion = std::path::PathBuf::from(companion);
            if companion.exists() {
                owner_only(&companion).map_err(io_error)?;
            }
        }
        Ok(Store::over(connection, retention))
    }

    fn over(connection: Connection, retention: Retention) -> Store {
        Store {
            connection: Mutex::new(connection),
            retention,
            logs: Mutex::new(HashMap::new()),
        }
    }

    /// A store that lives only in memory (tests).
    pub fn in_memory() -> rusqlite::Result<Store> {
        Store::in_memory_keeping(Retention::default())
    }

    /// [`Store::in_memory`] with this much history.
    pub fn in_memory_keeping(retention: Retention) -> rusqlite::Result<Store> {
        let connection = Connection::open_in_memory()?;
        migrate(&connection)?;
        Ok(Store::over(connection, retention))
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let connection = self.connection.lock().expect("store lock");
        f(&connection)
    }

    pub fn mark_applied(&self, commit: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO revisions (commit_id, state, reason, updated_at) VALUES (?1, 'applied', '', ?2)
                 ON CONFLICT(commit_id) DO UPDATE SET state = 'applied', reason = '', updated_at = ?2",
                params![commit, now()],
            )?;
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('last_good', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = ?1",
                params![commit],
            )?;
            Ok(())
        })
    }

    /// Refuse `commit`: as a whole (`services` empty) or for the services
    /// whose rollout was rolled back.
    pub fn mark_failed(
        &self,
        commit: &str,
        reason: &str,
        services: &BTreeMap<String, String>,
    ) -> rusqlite::Result<()> {
        let services = serde_json::to_string(services).expect("a string map serialises");
        self.with(|c| {
            c.execute(
                "INSERT INTO revisions (commit_id, state, reason, services, updated_at) VALUES (?1, 'failed', ?2, ?3, ?4)
                 ON CONFLICT(commit_id) DO UPDATE SET state = 'failed', reason = ?2, services = ?3, updated_at = ?4",
                params![commit, reason, services, now()],
            )
            .map(drop)
        })
    }

    /// Why `commit` was refused, if it was.
    pub fn failure(&self, commit: &str) -> rusqlite::Result<Option<Failure>> {
        self.with(|c| {
            c.query_row(
                "SELECT reason, services FROM revisions WHERE commit_id = ?1 AND state = 'failed'",
                params![commit],
                |row| {
                    let services: String = row.get(1)?;
                    Ok(Failure {
                        reason: row.get(0)?,
                        services: serde_json::from_str(&services).unwrap_or_default(),
                    })
                },
            )
            .optional()
        })
    }

    /// The last commit that was applied in full.
    pub fn last_good(&self) -> rusqlite::Result<Option<String>> {
        self.with(|c| {
            c.query_row(
                "SELECT value FROM meta WHERE key = 'last_good'",
                [],
                |row| row.get(0),
            )
            .optional()
        })
    }

    pub fn save_digest(
        &self,
        commit: &str,
        service: &str,
        reference: &str,
        resolved: &Resolved,
    ) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO digests (commit_id, service, reference, pinned, digest) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(commit_id, service) DO UPDATE SET reference = ?3, pinned = ?4, digest = ?5",
                params![commit, service, reference, resolved.pinned, resolved.digest],
            )
            .map(drop)
        })
    }

    /// Give `to` the digests recorded for `from` (those it has not got):
    /// a rollback commit keeps running what its parent ran.
    pub fn copy_digests(&self, from: &str, to: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO digests (commit_id, service, reference, pinned, digest)
                 SELECT ?2, service, reference, pinned, digest FROM digests WHERE commit_id = ?1",
                params![from, to],
            )
            .map(drop)
        })
    }

    /// The digest `service` was deployed with at `commit`, if it was resolved
    /// from `reference`.
    pub fn digest(
        &self,
        commit: &str,
        service: &str,
        reference: &str,
    ) -> rusqlite::Result<Option<Resolved>> {
        self.with(|c| {
            c.query_row(
                "SELECT pinned, digest FROM digests WHERE commit_id = ?1 AND service = ?2 AND reference = ?3",
                params![commit, service, reference],
                |row| {
                    Ok(Resolved {
                        pinned: row.get(0)?,
                        digest: row.get(1)?,
                    })
                },
            )
            .optional()
        })
    }

    pub fn record_pass(&self, pass: &PassRecord) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO passes (started_at, duration_ms, trigger, commit_id, result, steps, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    unix_seconds(pass.started),
                    pass.duration_ms as i64,
                    pass.trigger,
                    pass.commit,
                    pass.result,
                    pass.steps as i64,
                    pass.message
                ],
            )?;
            let id = c.last_insert_rowid();
            let mut insert = c.prepare_cached(
                "INSERT INTO pass_steps (pass_id, seq, service, node, action, target, ok, message, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for (seq, step) in pass.records.iter().enumerate() {
                insert.execute(params![
                    id,
                    seq as i64,
                    step.service,
                    step.node,
                    step.action,
                    step.target,
                    step.ok,
                    step.message,
                    step.duration_ms as i64
                ])?;
            }
            let forget = id - self.retention.passes as i64;
            c.execute("DELETE FROM pass_steps WHERE pass_id <= ?1", params![forget])?;
            c.execute("DELETE FROM passes WHERE id <= ?1", params![forget])
                .map(drop)
        })
    }

    /// The engine steps of a pass, in the order taken.
    pub fn pass_steps(&self, pass: i64) -> rusqlite::Result<Vec<StepRow>> {
        self.with(|c| {
            let mut statement = c.prepare_cached(
                "SELECT service, node, action, target, ok, message, duration_ms
                 FROM pass_steps WHERE pass_id = ?1 ORDER BY seq",
            )?;
            let rows = statement.query_map(params![pass], |row| {
                Ok(StepRow {
                    service: row.get(0)?,
                    node: row.get(1)?,
                    action: row.get(2)?,
                    target: row.get(3)?,
                    ok: row.get(4)?,
                    message: row.get(5)?,
                    duration_ms: row.get::<_, i64>(6)?.max(0) as u64,
                })
            })?;
            rows.collect()
        })
    }

    /// The revisions applied or refused, newest first.
    pub fn recent_revisions(&self, limit: usize) -> rusqlite::Result<Vec<RevisionRow>> {
        self.with(|c| {
            let mut statement = c.prepare_cached(
                "SELECT commit_id, state, reason, updated_at FROM revisions
                 ORDER BY updated_at DESC, rowid DESC LIMIT ?1",
            )?;
            let rows = statement.query_map(params![limit as i64], |row| {
                Ok(RevisionRow {
                    commit: row.get(0)?,
                    state: row.get(1)?,
                    reason: row.get(2)?,
                    updated_at: row.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Forget that `commit` was refused for its pipeline, so the next pass
    /// runs it again. A refusal for anything else stays.
    pub fn forget_pipeline_failure(&self, commit: &str) -> rusqlite::Result<bool> {
        self.with(|c| {
            c.execute(
                "DELETE FROM revisions WHERE commit_id = ?1 AND state = 'failed' AND services = '{}'
                   AND EXISTS (SELECT 1 FROM pipeline_runs WHERE commit_id = ?1 AND state = 'failed')",
                params![commit],
            )
            .map(|n| n > 0)
        })
    }

    /// One pipeline run, as the list of runs shows it.
    pub fn run_row(&self, id: i64) -> rusqlite::Result<Option<RunRow>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {RUN_ROW_COLUMNS} FROM pipeline_runs WHERE id = ?1"),
                params![id],
                RunRow::read,
            )
            .optional()
        })
    }

    /// The pipeline runs, newest first.
    pub fn recent_runs(&self, limit: usize) -> rusqlite::Result<Vec<RunRow>> {
        self.with(|c| {
            let mut statement = c.prepare_cached(&format!(
                "SELECT {RUN_ROW_COLUMNS} FROM pipeline_runs ORDER BY id DESC LIMIT ?1"
            ))?;
            let rows = statement.query_map(params![limit as i64], RunRow::read)?;
            rows.collect()
        })
    }

    /// The end of a stage's log: the newest chunks, up to about `bytes`.
    pub fn stage_log_tail(&self, run: i64, name: &str, bytes: usize) -> rusqlite::Result<String> {
        self.with(|c| {
            let mut statement = c.prepare_cached(
                "SELECT text FROM stage_log WHERE run_id = ?1 AND name = ?2 ORDER BY seq DESC",
            )?;
            let mut rows = statement.query(params![run, name])?;
            let mut chunks = Vec::new();
            let mut kept = 0;
            while let Some(row) = rows.next()? {
                let text: String = row.get(0)?;
                kept += text.len();
                chunks.push(text);
                if kept >= bytes {
                    break;
                }
            }
            chunks.reverse();
            Ok(chunks.concat())
        })
    }

    /// The most recent passes, newest first.
    pub fn recent_passes(&self, limit: usize) -> rusqlite::Result<Vec<PassRecord>> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT started_at, duration_ms, trigger, commit_id, result, steps, message, id
                 FROM passes ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = statement.query_map(params![limit as i64], |row| {
                Ok(PassRecord {
                    started: UNIX_EPOCH
                        + std::time::Duration::from_secs(row.get::<_, i64>(0)?.max(0) as u64),
                    duration_ms: row.get::<_, i64>(1)?.max(0) as u64,
                    trigger: row.get(2)?,
                    commit: row.get(3)?,
                    result: row.get(4)?,
                    steps: row.get::<_, i64>(5)?.max(0) as usize,
                    message: row.get(6)?,
                    id: row.get(7)?,
                    records: Vec::new(),
                })
            })?;
            rows.collect()
        })
    }

    pub fn set_condition(
        &self,
        service: &str,
        condition: &str,
        reason: &str,
    ) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO conditions (service, condition, reason, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(service) DO UPDATE SET condition = ?2, reason = ?3, updated_at = ?4",
                params![service, condition, reason, now()],
            )
            .map(drop)
        })
    }
}
