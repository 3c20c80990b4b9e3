//! Pipeline runs in the store: runs, their stages, and each stage's log
//! kept to its end within the retention.

#[allow(unused_imports)]
use super::*;
use crate::pipeline::RunState;

/// One pipeline run as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    pub id: i64,
    pub commit: String,
    pub branch: String,
    pub state: RunStatus,
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

    pub fn finish_run(&self, id: i64, state: RunState, summary: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE pipeline_runs SET state = ?2, summary = ?3, finished_at = ?4 WHERE id = ?1",
                params![id, state.as_str(), summary, now()],
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
    pub fn previous_run_state(
        &self,
        branch: &str,
        run: i64,
    ) -> rusqlite::Result<Option<RunStatus>> {
        self.with(|c| {
            c.query_row(
                "SELECT state FROM pipeline_runs
                 WHERE branch = ?1 AND id < ?2 AND state IN ('passed', 'failed')
                 ORDER BY id DESC LIMIT 1",
                params![branch, run],
                |row| run_status(row, 0),
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
                state: run_status(row, 3)?,
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
