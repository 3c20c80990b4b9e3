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
    pub state: String,
    /// Seconds since the epoch.
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// The columns [`RunRow::read`] reads, in its order.
const RUN_ROW_COLUMNS: &str = "id, commit_id, branch, state, started_at, finished_at";

impl RunRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
        Ok(RunRow {
            id: row.get(0)?,
            commit: row.get(1)?,
            branch: row.get(2)?,
            state: row.get(3)?,
            started_at: row.get(4)?,
            finished_at: row.get(5)?,
        })
    }
}

impl From<&crate::pass::apply::StepRecord> for StepRow {
    fn from(step: &crate::pass::apply::StepRecord) -> StepRow {
        StepRow {
            service: step.service.clone(),
            node: step.node.clone(),
            action: step.action.clone(),
            target: step.target.clone(),
            ok: step.ok,
            message: step.message.clone(),
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
        connection.execute_batch(SCHEMA)?;
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
        connection.execute_batch(SCHEMA)?;
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

/// One pipeline run as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    pub id: i64,
    pub commit: String,
    pub branch: String,
    pub state: String,
    pub summary: String,
}

/// One stage of a recorded run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRow {
    pub name: String,
    pub node: String,
    pub state: String,
    pub exit_code: Option<i64>,
    pub duration_ms: u64,
    pub message: String,
    pub log: String,
}

/// Drop the oldest chunks of a stage's log until at most `keep` bytes
/// remain (the newest chunk always stays), with `marker` in their place;
/// the bytes now kept.
fn trim_log(
    c: &Connection,
    run: i64,
    name: &str,
    keep: usize,
    marker: &str,
) -> rusqlite::Result<usize> {
    let mut statement = c.prepare_cached(
        "SELECT seq, length(CAST(text AS BLOB)) FROM stage_log
         WHERE run_id = ?1 AND name = ?2 ORDER BY seq DESC",
    )?;
    let chunks = statement
        .query_map(params![run, name], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?.max(0) as usize))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let oldest = chunks.last().map_or(0, |(seq, _)| *seq);
    let mut kept = 0;
    let mut first_kept = i64::MAX;
    for &(seq, length) in &chunks {
        if kept > 0 && kept + length > keep {
            break;
        }
        kept += length;
        first_kept = seq;
    }
    if first_kept <= oldest {
        return Ok(kept);
    }
    c.execute(
        "DELETE FROM stage_log WHERE run_id = ?1 AND name = ?2 AND seq < ?3",
        params![run, name, first_kept],
    )?;
    // Chunk numbers start at 1, and the marker takes the one just before
    // the first kept, so followers never see a number twice.
    c.execute(
        "INSERT OR REPLACE INTO stage_log (run_id, name, seq, text) VALUES (?1, ?2, ?3, ?4)",
        params![run, name, first_kept - 1, marker],
    )?;
    Ok(kept + marker.len())
}

impl Store {
    /// Open the store of a daemon's state folder for reading (`pier logs`).
    pub fn open_existing(path: &Path) -> rusqlite::Result<Store> {
        let connection =
            Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Ok(Store::over(connection, Retention::default()))
    }

    /// Record a new run, and forget the runs beyond the history kept.
    pub fn start_run(&self, commit: &str, branch: &str) -> rusqlite::Result<i64> {
        self.with(|c| {
            c.execute(
                "INSERT INTO pipeline_runs (commit_id, branch, state, started_at) VALUES (?1, ?2, 'running', ?3)",
                params![commit, branch, now()],
            )?;
            let run = c.last_insert_rowid();
            let forget = run - self.retention.runs as i64;
            c.execute("DELETE FROM stage_log WHERE run_id <= ?1", params![forget])?;
            c.execute("DELETE FROM pipeline_stages WHERE run_id <= ?1", params![forget])?;
            c.execute("DELETE FROM pipeline_runs WHERE id <= ?1", params![forget])?;
            Ok(run)
        })
    }

    pub fn finish_run(&self, id: i64, state: &str, summary: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE pipeline_runs SET state = ?2, summary = ?3, finished_at = ?4 WHERE id = ?1",
                params![id, state, summary, now()],
            )
            .map(drop)
        })
    }

    /// Append output to a stage's log (creating its row on first output):
    /// one new chunk, whatever the log's length. Past the bytes kept per
    /// stage, the oldest chunks are dropped down to three quarters of it.
    pub fn append_stage_log(
        &self,
        run: i64,
        position: usize,
        name: &str,
        text: &str,
    ) -> rusqlite::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let limit = self.retention.stage_log_bytes;
        let mut logs = self.logs.lock().expect("log lock");
        let (next, bytes) = logs.entry((run, name.to_string())).or_insert((1, 0));
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO pipeline_stages (run_id, position, name) VALUES (?1, ?2, ?3)",
                params![run, position as i64, name],
            )?;
            c.execute(
                "INSERT INTO stage_log (run_id, name, seq, text) VALUES (?1, ?2, ?3, ?4)",
                params![run, name, *next, text],
            )?;
            *next += 1;
            *bytes += text.len();
            if *bytes > limit {
                *bytes = trim_log(c, run, name, limit * 3 / 4, &dropped_marker(limit))?;
            }
            Ok(())
        })
    }

    /// The chunks of a stage's log after chunk `after`: (chunk, text), in order.
    pub fn stage_log_after(
        &self,
        run: i64,
        name: &str,
        after: i64,
    ) -> rusqlite::Result<Vec<(i64, String)>> {
        self.with(|c| {
            let mut statement = c.prepare_cached(
                "SELECT seq, text FROM stage_log WHERE run_id = ?1 AND name = ?2 AND seq > ?3 ORDER BY seq",
            )?;
            let rows = statement.query_map(params![run, name, after], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            rows.collect()
        })
    }

    pub fn finish_stage(
        &self,
        run: i64,
        position: usize,
        stage: &StageRow,
    ) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO pipeline_stages (run_id, position, name, node, state, exit_code, duration_ms, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(run_id, name) DO UPDATE SET node = ?4, state = ?5, exit_code = ?6,
                   duration_ms = ?7, message = ?8",
                params![
                    run,
                    position as i64,
                    stage.name,
                    stage.node,
                    stage.state,
                    stage.exit_code,
                    stage.duration_ms as i64,
                    stage.message,
                ],
            )
            .map(drop)
        })?;
        // Its log was written as it came ([`Store::append_stage_log`]).
        self.logs
            .lock()
            .expect("log lock")
            .remove(&(run, stage.name.clone()));
        Ok(())
    }

    /// The state of the last run of `branch` before `run` that passed or
    /// failed, if there is one.
    pub fn previous_run_state(&self, branch: &str, run: i64) -> rusqlite::Result<Option<String>> {
        self.with(|c| {
            c.query_row(
                "SELECT state FROM pipeline_runs
                 WHERE branch = ?1 AND id < ?2 AND state IN ('passed', 'failed')
                 ORDER BY id DESC LIMIT 1",
                params![branch, run],
                |row| row.get(0),
            )
            .optional()
        })
    }

    /// Whether a run for `commit` passed.
    pub fn pipeline_passed(&self, commit: &str) -> rusqlite::Result<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM pipeline_runs WHERE commit_id = ?1 AND state = 'passed'",
                params![commit],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n > 0)
        })
    }

    /// The run with this id, or the latest run of a commit given by a prefix
    /// of at least 4 characters.
    pub fn find_run(&self, run: &str) -> rusqlite::Result<Option<RunRecord>> {
        let read = |row: &rusqlite::Row<'_>| {
            Ok(RunRecord {
                id: row.get(0)?,
                commit: row.get(1)?,
                branch: row.get(2)?,
                state: row.get(3)?,
                summary: row.get(4)?,
            })
        };
        self.with(|c| {
            if let Ok(id) = run.parse::<i64>() {
                let found = c
                    .query_row(
                        "SELECT id, commit_id, branch, state, summary FROM pipeline_runs WHERE id = ?1",
                        params![id],
                        read,
                    )
                    .optional()?;
                if found.is_some() {
                    return Ok(found);
                }
            }
            if run.len() < 4 {
                return Ok(None);
            }
            c.query_row(
                "SELECT id, commit_id, branch, state, summary FROM pipeline_runs
                 WHERE commit_id LIKE ?1 || '%' ORDER BY id DESC LIMIT 1",
                params![run],
                read,
            )
            .optional()
        })
    }

    /// A run's stages, each with its whole log as kept.
    pub fn stages(&self, run: i64) -> rusqlite::Result<Vec<StageRow>> {
        let mut stages = self.stage_rows(run)?;
        for stage in &mut stages {
            self.append_whole_log(run, stage)?;
        }
        Ok(stages)
    }

    /// One stage of a run, with its whole log as kept.
    pub fn stage(&self, run: i64, name: &str) -> rusqlite::Result<Option<StageRow>> {
        let Some(mut stage) = self.stage_rows(run)?.into_iter().find(|s| s.name == name) else {
            return Ok(None);
        };
        self.append_whole_log(run, &mut stage)?;
        Ok(Some(stage))
    }

    /// Add a stage's log chunks after what older stores kept in its row.
    fn append_whole_log(&self, run: i64, stage: &mut StageRow) -> rusqlite::Result<()> {
        for (_, text) in self.stage_log_after(run, &stage.name, 0)? {
            stage.log.push_str(&text);
        }
        Ok(())
    }

    /// A run's stages; `log` holds only what stores of older versions kept
    /// in the row itself.
    pub fn stage_rows(&self, run: i64) -> rusqlite::Result<Vec<StageRow>> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT name, node, state, exit_code, duration_ms, message, log
                 FROM pipeline_stages WHERE run_id = ?1 ORDER BY position",
            )?;
            let rows = statement.query_map(params![run], |row| {
                Ok(StageRow {
                    name: row.get(0)?,
                    node: row.get(1)?,
                    state: row.get(2)?,
                    exit_code: row.get(3)?,
                    duration_ms: row.get::<_, i64>(4)?.max(0) as u64,
                    message: row.get(5)?,
                    log: row.get(6)?,
                })
            })?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    /// The history and SQLite's WAL and shared-memory files beside it are
    /// the owner's alone, however loose the umask.
    #[test]
    fn the_store_files_are_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pier.db");
        // A file left group- and world-readable by an earlier version.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = Store::open(&path, Retention::default()).unwrap();
        store.start_run("abc", "main").unwrap();
        for name in ["pier.db", "pier.db-wal", "pier.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
    }

    use super::*;

    /// Writes queued without waiting are seen by every read queued after
    /// them, and a run's log chunks keep their order, whichever runtime
    /// thread queued them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_keeps_order_and_reads_see_earlier_writes() {
        let queue = StoreQueue::start(Store::in_memory().unwrap());
        queue.write(|store| store.mark_failed("c1", "bad", &BTreeMap::new()).unwrap());
        let failure = queue.call(|store| store.failure("c1").unwrap()).await;
        assert_eq!(failure.map(|f| f.reason).as_deref(), Some("bad"));

        let run = queue
            .call(|store| store.start_run("c1", "main").unwrap())
            .await;
        for n in 0..200 {
            let chunk = format!("line {n}\n");
            queue.write(move |store| store.append_stage_log(run, 0, "test", &chunk).unwrap());
        }
        let log = queue
            .call(move |store| store.stage_log_after(run, "test", 0).unwrap())
            .await;
        let expected: String = (0..200).map(|n| format!("line {n}\n")).collect();
        let text: String = log.into_iter().map(|(_, chunk)| chunk).collect();
        assert_eq!(text, expected);
    }

    #[test]
    fn a_refused_revision_stays_refused_until_applied() {
        let store = Store::in_memory().unwrap();
        assert_eq!(store.failure("c1").unwrap(), None);
        let rolled_back = BTreeMap::from([("web".to_string(), "unhealthy".to_string())]);
        store
            .mark_failed("c1", "pier/a.yml:3:5: bad", &rolled_back)
            .unwrap();
        assert_eq!(
            store.failure("c1").unwrap(),
            Some(Failure {
                reason: "pier/a.yml:3:5: bad".into(),
                services: rolled_back
            })
        );
        store.mark_applied("c1").unwrap();
        assert_eq!(store.failure("c1").unwrap(), None);
        assert_eq!(store.last_good().unwrap().as_deref(), Some("c1"));
    }

    #[test]
    fn digests_are_kept_per_commit_service_and_reference() {
        let store = Store::in_memory().unwrap();
        let resolved = Resolved {
            pinned: "r/web@sha256:1".into(),
            digest: "sha256:1".into(),
        };
        store
            .save_digest("c1", "web", "r/web:1", &resolved)
            .unwrap();
        assert_eq!(
            store.digest("c1", "web", "r/web:1").unwrap(),
            Some(resolved)
        );
        assert_eq!(store.digest("c1", "web", "r/web:2").unwrap(), None);
        assert_eq!(store.digest("c2", "web", "r/web:1").unwrap(), None);
    }

    #[test]
    fn pipeline_runs_keep_their_stages_and_logs() {
        let store = Store::in_memory().unwrap();
        let run = store.start_run("abcdef123456", "main").unwrap();
        store
            .append_stage_log(run, 0, "test", "$ sh app/test.sh\n")
            .unwrap();
        store.append_stage_log(run, 0, "test", "ok\n").unwrap();
        assert!(!store.pipeline_passed("abcdef123456").unwrap());
        store
            .finish_stage(
                run,
                0,
                &StageRow {
                    name: "test".into(),
                    node: "n3".into(),
                    state: "passed".into(),
                    exit_code: Some(0),
                    duration_ms: 5,
                    message: String::new(),
                    log: "$ sh app/test.sh\nok\n".into(),
                },
            )
            .unwrap();
        store.finish_run(run, "passed", "").unwrap();
        assert!(store.pipeline_passed("abcdef123456").unwrap());
        let found = store.find_run("abcdef").unwrap().unwrap();
        assert_eq!((found.id, found.state.as_str()), (run, "passed"));
        assert_eq!(store.find_run(&run.to_string()).unwrap().unwrap().id, run);
        let stages = store.stages(run).unwrap();
        assert_eq!(stages[0].log, "$ sh app/test.sh\nok\n");
    }

    #[test]
    fn a_long_stage_log_keeps_its_end_in_appended_chunks() {
        let store = Store::in_memory_keeping(Retention {
            stage_log_bytes: 4096,
            ..Retention::default()
        })
        .unwrap();
        let run = store.start_run("c1", "main").unwrap();
        for line in 0..1000 {
            store
                .append_stage_log(run, 0, "test", &format!("line {line:04} é\n"))
                .unwrap();
        }
        let log = &store.stages(run).unwrap()[0].log;
        assert!(log.len() <= 4096, "{} bytes kept", log.len());
        assert!(log.starts_with("[… earlier output dropped"), "{log}");
        assert!(log.ends_with("line 0999 é\n"), "{log}");
        assert!(!log.contains("line 0000"));
        // A follower that read chunk 10 long ago resumes at the marker.
        let after = store.stage_log_after(run, "test", 10).unwrap();
        assert!(after[0].1.starts_with("[… earlier output dropped"));
        assert!(after.windows(2).all(|w| w[0].0 < w[1].0));
        let last = after.last().unwrap().0;
        assert!(store.stage_log_after(run, "test", last).unwrap().is_empty());
    }

    #[test]
    fn passes_and_runs_keep_a_set_history() {
        let store = Store::in_memory_keeping(Retention {
            passes: 3,
            runs: 2,
            ..Retention::default()
        })
        .unwrap();
        for _ in 0..5 {
            store
                .record_pass(&PassRecord {
                    started: SystemTime::now(),
                    duration_ms: 1,
                    trigger: "git".into(),
                    commit: "c".into(),
                    result: "ok".into(),
                    steps: 0,
                    message: String::new(),
                    ..Default::default()
                })
                .unwrap();
        }
        assert_eq!(store.recent_passes(10).unwrap().len(), 3);
        let runs: Vec<i64> = (0..3)
            .map(|n| {
                let run = store.start_run(&format!("commit{n}"), "main").unwrap();
                store.append_stage_log(run, 0, "test", "out\n").unwrap();
                run
            })
            .collect();
        assert!(store.find_run(&runs[0].to_string()).unwrap().is_none());
        assert!(
            store
                .stage_log_after(runs[0], "test", 0)
                .unwrap()
                .is_empty()
        );
        assert!(store.find_run(&runs[2].to_string()).unwrap().is_some());
    }

    #[test]
    fn passes_come_back_newest_first() {
        let store = Store::in_memory().unwrap();
        for (i, result) in ["ok", "failed"].iter().enumerate() {
            store
                .record_pass(&PassRecord {
                    started: SystemTime::now(),
                    duration_ms: i as u64,
                    trigger: "git".into(),
                    commit: "c".into(),
                    result: result.to_string(),
                    steps: 2,
                    message: String::new(),
                    records: vec![
                        StepRow {
                            service: "web".into(),
                            action: "create".into(),
                            ok: true,
                            ..Default::default()
                        },
                        StepRow {
                            service: "web".into(),
                            action: "start".into(),
                            ok: i == 0,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                })
                .unwrap();
        }
        let passes = store.recent_passes(10).unwrap();
        let steps = store.pass_steps(passes[0].id).unwrap();
        let actions: Vec<(&str, bool)> = steps.iter().map(|s| (s.action.as_str(), s.ok)).collect();
        assert_eq!(
            actions,
            [("create", true), ("start", false)],
            "the newest pass's steps"
        );
        assert_eq!(
            passes.iter().map(|p| p.result.as_str()).collect::<Vec<_>>(),
            ["failed", "ok"]
        );
    }
}

/// Work for the store's thread.
type Job = Box<dyn FnOnce(&Store) + Send>;

/// Jobs waiting for the store's thread, at most: beyond it a writer waits,
/// so a flood of output cannot grow memory without bound.
const QUEUE_LENGTH: usize = 4096;

/// The daemon's way to the store: one thread owns every SQLite call, so
/// none blocks an async runtime thread, and jobs run in the order they
/// were queued (a write is seen by every read queued after it; log chunks
/// stay in order).
#[derive(Clone)]
pub struct StoreQueue {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl StoreQueue {
    /// Start the store's thread; it ends when the last queue handle is dropped.
    pub fn start(store: Store) -> StoreQueue {
        let (jobs, queued) = std::sync::mpsc::sync_channel::<Job>(QUEUE_LENGTH);
        std::thread::Builder::new()
            .name("pier-store".into())
            .spawn(move || {
                for job in queued {
                    job(&store);
                }
            })
            .expect("the store thread starts");
        StoreQueue { jobs }
    }

    /// Queue `work` and wait for its result without blocking the runtime.
    pub async fn call<T, F>(&self, work: F) -> T
    where
        F: FnOnce(&Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.write(move |store| {
            let _ = reply.send(work(store));
        });
        match result.await {
            Ok(value) => value,
            // The store thread only ends with the process; a panic there is a bug.
            Err(_) => panic!("the store thread ended"),
        }
    }

    /// Queue `work` (a write) and go on: it runs after everything queued before.
    pub fn write(&self, work: impl FnOnce(&Store) + Send + 'static) {
        // Fails only once the thread ended, which it does not while a handle lives.
        let _ = self.jobs.send(Box::new(work));
    }
}
