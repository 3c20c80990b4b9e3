//! What git says about the revisions of a branch: the commits that changed
//! the manifests (`pier history --offline`), and the commits `pier
//! rollback` made, which name the revision they restore.

use std::path::Path;

use super::git::{GitSource, SourceError};

/// The trailer `pier rollback` writes into its commits, naming the
/// revision restored.
pub const ROLLBACK_TRAILER: &str = "Pier-Rollback-Of";

impl GitSource {
    /// The revision `commit` rolls back to, when it is a rollback commit: its
    /// message carries [`ROLLBACK_TRAILER`] and, against its only parent, it
    /// changes files under `folder` and nothing else (so the code it
    /// carries is its parent's). `None` for any other commit.
    pub fn rollback_of(&self, commit: &str, folder: &str) -> Option<String> {
        let oid = git2::Oid::from_str(commit).ok()?;
        let commit = self.repository().find_commit(oid).ok()?;
        let restored = rollback_trailer(commit.message().ok()?)?;
        if commit.parent_count() != 1 {
            return None;
        }
        let parent = commit.parent(0).ok()?;
        let diff = self
            .repository()
            .diff_tree_to_tree(Some(&parent.tree().ok()?), Some(&commit.tree().ok()?), None)
            .ok()?;
        let folder = folder.trim_matches('/');
        let inside = |path: Option<&Path>| {
            path.is_some_and(|p| folder.is_empty() || folder == "." || p.starts_with(folder))
        };
        diff.deltas()
            .all(|d| inside(d.old_file().path()) && inside(d.new_file().path()))
            .then_some(restored)
    }

    /// The commits on `reference`'s first-parent line that changed `folder`,
    /// newest first, at most `limit`.
    pub fn folder_log(
        &self,
        reference: &str,
        folder: &str,
        limit: usize,
    ) -> Result<Vec<LogEntry>, SourceError> {
        let start = self.resolve(reference)?;
        let failed = |e: git2::Error| SourceError::Read {
            commit: start.to_string(),
            path: folder.into(),
            source: e,
        };
        let folder = folder.trim_matches('/');
        let subtree = |commit: &git2::Commit<'_>| -> Option<git2::Oid> {
            let tree = commit.tree().ok()?;
            if folder.is_empty() || folder == "." {
                return Some(tree.id());
            }
            tree.get_path(Path::new(folder)).ok().map(|e| e.id())
        };
        let mut walk = self.repository().revwalk().map_err(failed)?;
        walk.push(start).map_err(failed)?;
        walk.simplify_first_parent().map_err(failed)?;
        let mut out = Vec::new();
        for oid in walk {
            let commit = self
                .repository()
                .find_commit(oid.map_err(failed)?)
                .map_err(failed)?;
            let parent = commit.parent(0).ok();
            if parent.as_ref().and_then(&subtree) == subtree(&commit) && parent.is_some() {
                continue;
            }
            out.push(LogEntry {
                commit: commit.id().to_string(),
                time: commit.time().seconds(),
                subject: commit
                    .summary()
                    .ok()
                    .flatten()
                    .unwrap_or_default()
                    .to_string(),
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The first parent of `commit`, if it has one.
    pub fn parent_of(&self, commit: &str) -> Option<String> {
        let oid = git2::Oid::from_str(commit).ok()?;
        let parent = self.repository().find_commit(oid).ok()?.parent_id(0).ok()?;
        Some(parent.to_string())
    }
}

/// A commit in [`GitSource::folder_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub commit: String,
    /// Seconds since the epoch (the committer's time).
    pub time: i64,
    pub subject: String,
}

/// The full commit id in a message's `Pier-Rollback-Of:` trailer.
pub fn rollback_trailer(message: &str) -> Option<String> {
    message.lines().rev().find_map(|line| {
        let value = line
            .strip_prefix(ROLLBACK_TRAILER)?
            .strip_prefix(':')?
            .trim();
        (value.len() == 40 && value.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| value.to_ascii_lowercase())
    })
}
