//! What `pier history`, `pier rollback`, `--hold` and `pier freeze` keep in
//! the store: every revision the daemon deployed or refused with the
//! digest each service ran, the stack's hold, and the services frozen.
//!
//! A hold and the freezes are the daemon's state, not the manifests': they
//! live here so they survive a restart, and each names who set it and why.

#[allow(unused_imports)]
use super::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The history table and the control tables, created beside the others.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    commit_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    cause TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    services TEXT NOT NULL DEFAULT '{}'  -- JSON: service -> {image, pinned, digest}
);
CREATE INDEX IF NOT EXISTS history_by_commit ON history (commit_id, verdict);
CREATE TABLE IF NOT EXISTS pulled_images (
    node TEXT NOT NULL,
    image TEXT NOT NULL,          -- the pinned reference pulled
    at INTEGER NOT NULL,
    PRIMARY KEY (node, image)
);
CREATE TABLE IF NOT EXISTS hooks_done (
    service TEXT NOT NULL,
    spec_hash TEXT NOT NULL,      -- the revision of the service it ran for
    at INTEGER NOT NULL,
    PRIMARY KEY (service, spec_hash)
);
CREATE TABLE IF NOT EXISTS freezes (
    service TEXT PRIMARY KEY,     -- a service, or '*' for every service
    by TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL,
    until INTEGER                 -- seconds since the epoch; NULL: until unfrozen
);
";

/// How many revisions the history keeps, newest first.
const HISTORY_KEPT: i64 = 1000;

/// What made a revision reach the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A new commit on the branch, seen by polling or the refs watcher.
    Commit,
    /// A new commit announced by a webhook.
    Webhook,
    /// A followed tag moved to a new digest.
    Autoredeploy,
    /// A commit made by `pier rollback`.
    Rollback,
    /// `pier rollback --hold`: applied without a commit.
    Hold,
    /// `pier restart`: the replicas restarted in place, not a revision.
    Restart,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Commit => "commit",
            Cause::Webhook => "webhook",
            Cause::Autoredeploy => "autoredeploy",
            Cause::Rollback => "rollback",
            Cause::Hold => "hold",
            Cause::Restart => "restart",
        }
    }

    fn parse(text: &str) -> Option<Cause> {
        [
            Cause::Commit,
            Cause::Webhook,
            Cause::Autoredeploy,
            Cause::Rollback,
            Cause::Hold,
            Cause::Restart,
        ]
        .into_iter()
        .find(|c| c.as_str() == text)
    }
}

/// How a revision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every service converged to it.
    Applied,
    /// Some services' rollout failed its health checks and was undone.
    RolledBack,
    /// Never deployed: invalid manifests, the policy, a failed pipeline.
    Refused,
    /// A restart whose replica did not come back healthy.
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Applied => "applied",
            Verdict::RolledBack => "rolled_back",
            Verdict::Refused => "refused",
            Verdict::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Verdict> {
        [
            Verdict::Applied,
            Verdict::RolledBack,
            Verdict::Refused,
            Verdict::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == text)
    }
}

/// The image one service ran at a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceImage {
    /// The reference as the manifests write it.
    pub image: String,
    /// `registry/repository@sha256:…`, what the containers were created from.
    pub pinned: String,
    pub digest: String,
}

/// One revision in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Given by the store; 0 before it is recorded.
    #[serde(default)]
    pub id: i64,
    pub commit: String,
    /// Seconds since the epoch.
    pub at: i64,
    pub cause: Cause,
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Each service's image (empty for a refused revision).
    #[serde(default)]
    pub services: BTreeMap<String, ServiceImage>,
}

/// The stack held at a revision by `pier rollback --hold`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub commit: String,
    /// The history entry held: its digests are the ones run.
    pub revision: i64,
    pub by: String,
    pub reason: String,
    /// Seconds since the epoch.
    pub at: i64,
    /// The images the held revision ran, by service: what a standby that
    /// takes over (`--ha`) holds with, having no history entry of its own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, ServiceImage>,
}

/// A service (or `*`, every service) frozen by `pier freeze`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub service: String,
    pub by: String,
    pub reason: String,
    /// Seconds since the epoch.
    pub at: i64,
    /// When it thaws by itself; `None`: when someone unfreezes it.
    pub until: Option<i64>,
}

impl Freeze {
    /// Whether the freeze holds at `now` (seconds since the epoch).
    pub fn holds_at(&self, now: i64) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

const REVISION_COLUMNS: &str = "id, commit_id, at, cause, verdict, reason, services";

fn read_revision(row: &rusqlite::Row<'_>) -> rusqlite::Result<Revision> {
    let bad = |index: usize, value: String, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("`{value}` is not a {what}").into(),
        )
    };
    let cause: String = row.get(3)?;
    let verdict: String = row.get(4)?;
    let services: String = row.get(6)?;
    Ok(Revision {
        id: row.get(0)?,
        commit: row.get(1)?,
        at: row.get(2)?,
        cause: Cause::parse(&cause).ok_or_else(|| bad(3, cause.clone(), "cause"))?,
        verdict: Verdict::parse(&verdict).ok_or_else(|| bad(4, verdict.clone(), "verdict"))?,
        reason: row.get(5)?,
        services: serde_json::from_str(&services).map_err(|e| bad(6, e.to_string(), "map"))?,
    })
}

impl Store {
    /// Add a revision to the history (and forget the oldest beyond what is kept).
    pub fn record_revision(&self, revision: &Revision) -> rusqlite::Result<i64> {
        let services = serde_json::to_string(&revision.services).expect("a map serialises");
        self.with(|c| {
            c.execute(
                "INSERT INTO history (commit_id, at, cause, verdict, reason, services)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    revision.commit,
                    revision.at,
                    revision.cause.as_str(),
                    revision.verdict.as_str(),
                    revision.reason,
                    services
                ],
            )?;
            let id = c.last_insert_rowid();
            c.execute(
                "DELETE FROM history WHERE id <= ?1",
                params![id - HISTORY_KEPT],
            )?;
            Ok(id)
        })
    }

    /// The history, newest first.
    pub fn history(&self, limit: usize) -> rusqlite::Result<Vec<Revision>> {
        self.with(|c| {
            let mut statement = c.prepare_cached(&format!(
                "SELECT {REVISION_COLUMNS} FROM history ORDER BY id DESC LIMIT ?1"
            ))?;
            let rows = statement.query_map(params![limit as i64], read_revision)?;
            rows.collect()
        })
    }

    /// The newest applied revision (a restart is none).
    pub fn latest_applied(&self) -> rusqlite::Result<Option<Revision>> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {REVISION_COLUMNS} FROM history
                     WHERE verdict = 'applied' AND cause != 'restart' ORDER BY id DESC LIMIT 1"
                ),
                [],
                read_revision,
            )
            .optional()
        })
    }

    /// The newest applied revision of `commit`: what it ran last.
    pub fn applied_revision(&self, commit: &str) -> rusqlite::Result<Option<Revision>> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {REVISION_COLUMNS} FROM history
                     WHERE commit_id = ?1 AND verdict = 'applied' ORDER BY id DESC LIMIT 1"
                ),
                params![commit],
                read_revision,
            )
            .optional()
        })
    }

    /// The history entry `id`.
    pub fn revision(&self, id: i64) -> rusqlite::Result<Option<Revision>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {REVISION_COLUMNS} FROM history WHERE id = ?1"),
                params![id],
                read_revision,
            )
            .optional()
        })
    }

    /// Whether `commit` was ever refused in the history.
    pub fn refused_in_history(&self, commit: &str) -> rusqlite::Result<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM history WHERE commit_id = ?1 AND verdict = 'refused'",
                params![commit],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n > 0)
        })
    }

    /// Remember that the `pre_deploy` hook of `service` succeeded for the
    /// revision whose spec hashes to `hash`: never run again for it.
    pub fn record_hook(&self, service: &str, hash: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO hooks_done (service, spec_hash, at) VALUES (?1, ?2, ?3)",
                params![service, hash, now()],
            )
            .map(drop)
        })
    }

    /// Every `(service, spec hash)` whose `pre_deploy` hook succeeded.
    pub fn hooks_done(&self) -> rusqlite::Result<BTreeSet<(String, String)>> {
        self.with(|c| {
            let mut statement = c.prepare_cached("SELECT service, spec_hash FROM hooks_done")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
    }

    /// Remember that pier pulled `image` onto `node`: only such images are
    /// ever removed.
    pub fn record_pull(&self, node: &str, image: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO pulled_images (node, image, at) VALUES (?1, ?2, ?3)",
                params![node, image, now()],
            )
            .map(drop)
        })
    }

    /// Every (node, image) pier pulled and has not removed.
    pub fn pulled_images(&self) -> rusqlite::Result<Vec<(String, String)>> {
        self.with(|c| {
            let mut statement =
                c.prepare_cached("SELECT node, image FROM pulled_images ORDER BY node, image")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
    }

    pub fn forget_pull(&self, node: &str, image: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM pulled_images WHERE node = ?1 AND image = ?2",
                params![node, image],
            )
            .map(drop)
        })
    }

    /// The images of the newest `revisions` applied revisions: kept.
    pub fn recent_images(&self, revisions: usize) -> rusqlite::Result<BTreeSet<String>> {
        let mut statement_rows = Vec::new();
        self.with(|c| {
            let mut statement = c.prepare_cached(
                "SELECT services FROM history WHERE verdict = 'applied' AND cause != 'restart'
                 ORDER BY id DESC LIMIT ?1",
            )?;
            let rows =
                statement.query_map(params![revisions as i64], |row| row.get::<_, String>(0))?;
            for row in rows {
                statement_rows.push(row?);
            }
            Ok(())
        })?;
        Ok(statement_rows
            .iter()
            .filter_map(|text| serde_json::from_str::<BTreeMap<String, ServiceImage>>(text).ok())
            .flat_map(|services| services.into_values().map(|image| image.pinned))
            .collect())
    }

    /// The hold on the stack, if there is one.
    pub fn hold(&self) -> rusqlite::Result<Option<Hold>> {
        self.with(|c| {
            let text: Option<String> = c
                .query_row("SELECT value FROM meta WHERE key = 'hold'", [], |row| {
                    row.get(0)
                })
                .optional()?;
            Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
        })
    }

    /// Hold the stack (`Some`), or let it follow its branch again (`None`).
    pub fn set_hold(&self, hold: Option<&Hold>) -> rusqlite::Result<()> {
        self.with(|c| {
            match hold {
                Some(hold) => c.execute(
                    "INSERT INTO meta (key, value) VALUES ('hold', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = ?1",
                    params![serde_json::to_string(hold).expect("a hold serialises")],
                )?,
                None => c.execute("DELETE FROM meta WHERE key = 'hold'", [])?,
            };
            Ok(())
        })
    }

    /// Every freeze, expired ones included (they are shown until lifted).
    pub fn freezes(&self) -> rusqlite::Result<Vec<Freeze>> {
        self.with(|c| {
            let mut statement = c.prepare_cached(
                "SELECT service, by, reason, at, until FROM freezes ORDER BY service",
            )?;
            let rows = statement.query_map([], |row| {
                Ok(Freeze {
                    service: row.get(0)?,
                    by: row.get(1)?,
                    reason: row.get(2)?,
                    at: row.get(3)?,
                    until: row.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    pub fn freeze(&self, freeze: &Freeze) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO freezes (service, by, reason, at, until) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(service) DO UPDATE SET by = ?2, reason = ?3, at = ?4, until = ?5",
                params![
                    freeze.service,
                    freeze.by,
                    freeze.reason,
                    freeze.at,
                    freeze.until
                ],
            )
            .map(drop)
        })
    }

    /// Make the freezes exactly `freezes` (a standby mirrors its leader's).
    pub fn replace_freezes(&self, freezes: &[Freeze]) -> rusqlite::Result<()> {
        self.with(|c| c.execute("DELETE FROM freezes", []).map(drop))?;
        freezes.iter().try_for_each(|freeze| self.freeze(freeze))
    }

    /// Lift the freeze of `service` (`*`: the freeze of every service); whether there was one.
    pub fn unfreeze(&self, service: &str) -> rusqlite::Result<bool> {
        self.with(|c| {
            c.execute("DELETE FROM freezes WHERE service = ?1", params![service])
                .map(|n| n > 0)
        })
    }

    /// Forget freezes that ended before `now`; the ones forgotten.
    pub fn thaw_expired(&self, now: i64) -> rusqlite::Result<Vec<Freeze>> {
        let ended: Vec<Freeze> = self
            .freezes()?
            .into_iter()
            .filter(|f| !f.holds_at(now))
            .collect();
        for freeze in &ended {
            self.unfreeze(&freeze.service)?;
        }
        Ok(ended)
    }
}
