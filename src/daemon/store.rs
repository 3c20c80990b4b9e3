//! The daemon's history in an embedded SQLite file: revisions applied or
//! refused, the digests each commit was deployed with, every pass, and the
//! conditions last reported per service.
//!
//! Nothing here is needed for correctness: the containers' labels are the
//! truth, so deleting the file loses history, never the deployment. What the
//! store does add is memory across restarts: a revision refused stays refused,
//! and services without `autoredeploy` keep the digests their commit was first
//! applied with.

use std::collections::BTreeMap;
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
    pub started: SystemTime,
    pub duration_ms: u64,
    pub trigger: String,
    pub commit: String,
    pub result: String,
    pub steps: usize,
    pub message: String,
}

/// The SQLite store. Calls are short and few per pass, so one connection
/// behind a mutex serves the loop and the API alike.
pub struct Store {
    connection: Mutex<Connection>,
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn now() -> i64 {
    unix_seconds(SystemTime::now())
}

impl Store {
    /// Open (or create) the store at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Store> {
        let connection = Connection::open(path)?;
        // WAL keeps readers (the API) from waiting on the loop's writes.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.execute_batch(SCHEMA)?;
        Ok(Store {
            connection: Mutex::new(connection),
        })
    }

    /// A store that lives only in memory (tests).
    pub fn in_memory() -> rusqlite::Result<Store> {
        let connection = Connection::open_in_memory()?;
        connection.execute_batch(SCHEMA)?;
        Ok(Store {
            connection: Mutex::new(connection),
        })
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
            )
            .map(drop)
        })
    }

    /// The most recent passes, newest first.
    pub fn recent_passes(&self, limit: usize) -> rusqlite::Result<Vec<PassRecord>> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT started_at, duration_ms, trigger, commit_id, result, steps, message
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

#[cfg(test)]
mod tests {
    use super::*;

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
                })
                .unwrap();
        }
        let passes = store.recent_passes(10).unwrap();
        assert_eq!(
            passes.iter().map(|p| p.result.as_str()).collect::<Vec<_>>(),
            ["failed", "ok"]
        );
    }
}
