//! The git side of an edit: read the manifests at the branch tip, make the
//! edit, commit it as one commit on top of the tip, and push it.
//!
//! Nothing is ever forced. Before a push the remote's tip must still be the
//! commit the edit was made on (checked in libgit2's push negotiation, and
//! again by the server, which refuses a stale old value); if the branch moved,
//! the remote is fetched and the edit made again on the new tip, once. A
//! local repository's branch is moved with the same compare-and-swap, and when
//! that branch is checked out its working tree follows.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

use git2::{Oid, Repository, Signature};

use super::{Changed, Edit, Refused, plan_edit};
use crate::manifest::Vars;
use crate::source::git::{GitSource, SourceError};

/// Where and how to commit.
#[derive(Debug, Clone)]
pub struct Request {
    pub repo: String,
    pub cache_dir: PathBuf,
    /// Default: the checked-out branch of a local repository, `main` for a URL.
    pub branch: Option<String>,
    pub folder: String,
    pub message: Option<String>,
    /// `Name <mail>`; default: the repository's git config.
    pub author: Option<String>,
    /// Push: default yes for a URL; for a local repository, to its `origin`.
    pub push: Option<bool>,
    pub dry_run: bool,
}

/// What an edit did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The commit made, unless this was a dry run.
    pub commit: Option<String>,
    /// The commit the edit was made on.
    pub base: String,
    pub branch: String,
    pub changed: Vec<Changed>,
    /// The change as a unified diff.
    pub diff: String,
    pub pushed: bool,
    /// Whether the branch moved under the first attempt.
    pub retried: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("{0}")]
    Git(String),
    #[error(
        "the branch `{branch}` moved again while the edit was retried; nothing was pushed. Run the command again"
    )]
    Conflict { branch: String },
}

fn git_error(context: &str) -> impl Fn(git2::Error) -> CommitError + '_ {
    move |e| CommitError::Git(format!("{context}: {}", e.message()))
}

/// Make `edit` on the branch and commit it (unless `dry_run`).
pub fn run(request: &Request, edit: &Edit, vars: &Vars) -> Result<Outcome, CommitError> {
    run_with(request, &edit.message(), |_, snapshot| {
        let changed = plan_edit(&snapshot.files, &request.folder, edit, vars, &snapshot.tree)?;
        Ok((changed, None))
    })
}

/// Restore the manifests of an earlier revision (`pier rollback`) and
/// commit them (unless `dry_run`). A whole rollback restores every file of
/// the manifests folder, not only the YAML files.
pub fn rollback(
    request: &Request,
    rollback: &super::rollback::Rollback,
    vars: &Vars,
) -> Result<Outcome, CommitError> {
    run_with(request, &rollback.message(), |source, snapshot| {
        let then = source.manifests(&rollback.to, &request.folder)?;
        let changed = super::rollback::plan_rollback(
            &snapshot.files,
            &then.files,
            &request.folder,
            rollback,
            vars,
            &snapshot.tree,
        )?;
        let folder = if rollback.services.is_empty() {
            Some(folder_tree(
                source.repository(),
                &rollback.to,
                &request.folder,
            )?)
        } else {
            None
        };
        Ok((changed, folder))
    })
}

/// The tree of `folder` at `commit`.
fn folder_tree(repo: &Repository, commit: &str, folder: &str) -> Result<Oid, CommitError> {
    let oid = Oid::from_str(commit).map_err(git_error("reading the revision"))?;
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(git_error("reading the revision"))?;
    let folder = folder.trim_matches('/');
    if folder.is_empty() || folder == "." {
        return Ok(tree.id());
    }
    tree.get_path(Path::new(folder))
        .map(|entry| entry.id())
        .map_err(git_error("reading the manifests folder of the revision"))
}

/// What an edit changes: files, and the manifests folder's whole tree
/// when it is replaced first.
type Planned = (Vec<Changed>, Option<Oid>);

/// Make the change `plan` works out on the branch tip, and commit it
/// (unless `dry_run`); made again once on the new tip if the branch moved.
fn run_with(
    request: &Request,
    default_message: &str,
    plan: impl Fn(&GitSource, &crate::source::git::Snapshot) -> Result<Planned, CommitError>,
) -> Result<Outcome, CommitError> {
    let source = GitSource::open(&request.repo, &request.cache_dir)?;
    let branch = match &request.branch {
        Some(branch) => branch.clone(),
        None if source.is_remote() => "main".to_string(),
        None => checked_out_branch(source.repository())?,
    };
    let mut retried = false;
    for attempt in 0..2 {
        let base = source.resolve(&branch)?;
        let snapshot = source.manifests(&base.to_string(), &request.folder)?;
        let (changed, folder) = plan(&source, &snapshot)?;
        let diff = unified_diff(&changed);
        let mut outcome = Outcome {
            commit: None,
            base: base.to_string(),
            branch: branch.clone(),
            changed,
            diff,
            pushed: false,
            retried,
        };
        if request.dry_run {
            return Ok(outcome);
        }
        let repo = source.repository();
        let message = request
            .message
            .clone()
            .unwrap_or_else(|| default_message.to_string());
        let replaced = folder.map(|tree| (request.folder.as_str(), tree));
        let commit = commit_on(
            repo,
            base,
            replaced,
            &outcome.changed,
            &message,
            request.author.as_deref(),
        )?;
        outcome.commit = Some(commit.to_string());
        let moved = match source.url() {
            Some(url) if request.push != Some(false) => {
                match push(repo, url, &branch, base, commit)? {
                    Pushed::Yes => {
                        outcome.pushed = true;
                        false
                    }
                    Pushed::BranchMoved => true,
                }
            }
            Some(_) => false,
            None => {
                if !move_local_branch(repo, &branch, base, commit, &outcome.changed)? {
                    true
                } else {
                    if request.push == Some(true) {
                        push_to_origin(repo, &branch, base, commit)?;
                        outcome.pushed = true;
                    }
                    false
                }
            }
        };
        if !moved {
            return Ok(outcome);
        }
        if attempt == 0 {
            retried = true;
            source.fetch()?;
        }
    }
    Err(CommitError::Conflict { branch })
}

fn checked_out_branch(repo: &Repository) -> Result<String, CommitError> {
    let head = repo.head().map_err(git_error("reading HEAD"))?;
    if !head.is_branch() {
        return Err(CommitError::Git(
            "HEAD is detached; pass --branch to say which branch to commit to".into(),
        ));
    }
    head.shorthand()
        .map(str::to_string)
        .map_err(git_error("reading HEAD"))
}

/// Push a local repository's branch to its `origin`, which must still be
/// where the local branch was before the edit.
fn push_to_origin(
    repo: &Repository,
    branch: &str,
    base: Oid,
    commit: Oid,
) -> Result<(), CommitError> {
    let origin = repo
        .find_remote("origin")
        .map_err(|_| CommitError::Git("--push: this repository has no `origin` remote".into()))?;
    let url = origin
        .pushurl()
        .ok()
        .flatten()
        .or_else(|| origin.url().ok())
        .ok_or_else(|| CommitError::Git("--push: `origin` has no URL".into()))?
        .to_string();
    match push(repo, &url, branch, base, commit)? {
        Pushed::Yes => Ok(()),
        Pushed::BranchMoved => Err(CommitError::Git(format!(
            "committed locally, but `origin` has moved on `{branch}`; pull (rebase) and push"
        ))),
    }
}

fn signature(repo: &Repository, author: Option<&str>) -> Result<Signature<'static>, CommitError> {
    if let Some(author) = author {
        let (name, mail) = author
            .trim()
            .strip_suffix('>')
            .and_then(|a| a.split_once('<'))
            .map(|(n, m)| (n.trim(), m.trim()))
            .filter(|(n, m)| !n.is_empty() && !m.is_empty())
            .ok_or_else(|| {
                CommitError::Git(format!("--author must read `Name <mail>`, not `{author}`"))
            })?;
        return Signature::now(name, mail).map_err(git_error("author"));
    }
    repo.signature()
        .map(|s| s.to_owned())
        .or_else(|_| Signature::now("pier", "pier@localhost"))
        .map_err(git_error("author"))
}

/// A commit on top of `base` whose tree is `base`'s with the changed files
/// (and, first, a folder's tree replaced).
fn commit_on(
    repo: &Repository,
    base: Oid,
    replaced: Option<(&str, Oid)>,
    changed: &[Changed],
    message: &str,
    author: Option<&str>,
) -> Result<Oid, CommitError> {
    let parent = repo
        .find_commit(base)
        .map_err(git_error("reading the branch tip"))?;
    let mut base_tree = parent.tree().map_err(git_error("tree"))?;
    if let Some((folder, tree)) = replaced {
        let folder = folder.trim_matches('/');
        let id = if folder.is_empty() || folder == "." {
            tree
        } else {
            let mut update = git2::build::TreeUpdateBuilder::new();
            update.upsert(folder, tree, git2::FileMode::Tree);
            update
                .create_updated(repo, &base_tree)
                .map_err(git_error("restoring the manifests folder"))?
        };
        base_tree = repo.find_tree(id).map_err(git_error("tree"))?;
    }
    let mut update = git2::build::TreeUpdateBuilder::new();
    for file in changed {
        let Some(after) = &file.after else {
            // Gone already when the folder was replaced.
            if base_tree.get_path(Path::new(&file.path)).is_ok() {
                update.remove(&file.path);
            }
            continue;
        };
        // An executable manifest stays executable.
        let mode = match base_tree
            .get_path(Path::new(&file.path))
            .map(|e| e.filemode())
        {
            Ok(0o100755) => git2::FileMode::BlobExecutable,
            _ => git2::FileMode::Blob,
        };
        let blob = repo
            .blob(after.as_bytes())
            .map_err(git_error("writing the file"))?;
        update.upsert(&file.path, blob, mode);
    }
    let tree_id = update
        .create_updated(repo, &base_tree)
        .map_err(git_error("writing the tree"))?;
    let tree = repo.find_tree(tree_id).map_err(git_error("tree"))?;
    let who = signature(repo, author)?;
    repo.commit(None, &who, &who, message, &tree, &[&parent])
        .map_err(git_error("committing"))
}

enum Pushed {
    Yes,
    BranchMoved,
}

/// Push `commit` to `branch` on `url` only if the remote's branch is still `base`.
fn push(
    repo: &Repository,
    url: &str,
    branch: &str,
    base: Oid,
    commit: Oid,
) -> Result<Pushed, CommitError> {
    let staging = "refs/pier/edit";
    repo.reference(staging, commit, true, "pier edit")
        .map_err(git_error("preparing the push"))?;
    let mut remote = repo.remote_anonymous(url).map_err(git_error("remote"))?;
    let moved = Cell::new(false);
    let rejected: RefCell<Option<String>> = RefCell::new(None);
    let target = format!("refs/heads/{branch}");
    let mut callbacks = crate::source::auth::credential_callbacks();
    callbacks.push_negotiation(|updates| {
        for update in updates {
            if update.dst_refname().ok() == Some(target.as_str()) && update.src() != base {
                moved.set(true);
                return Err(git2::Error::from_str("the branch moved"));
            }
        }
        Ok(())
    });
    callbacks.push_update_reference(|_, status| {
        if let Some(message) = status {
            *rejected.borrow_mut() = Some(message.to_string());
        }
        Ok(())
    });
    let mut options = git2::PushOptions::new();
    options.remote_callbacks(callbacks);
    let result = remote.push(&[format!("{staging}:{target}")], Some(&mut options));
    drop(options);
    let _ = repo.find_reference(staging).and_then(|mut r| r.delete());
    if moved.get() {
        return Ok(Pushed::BranchMoved);
    }
    result.map_err(|e| {
        let message = crate::source::auth::redact_in(e.message(), url);
        CommitError::Git(format!("pushing: {message}"))
    })?;
    match rejected.into_inner() {
        None => Ok(Pushed::Yes),
        // The server compares the old value too: a commit that landed after
        // negotiation is refused there.
        Some(_) => Ok(Pushed::BranchMoved),
    }
}

/// Move a local branch from `base` to `commit`; `false` when it had moved.
/// When the branch is checked out, the changed files in the working tree
/// (and index) follow, provided they had no uncommitted changes.
fn move_local_branch(
    repo: &Repository,
    branch: &str,
    base: Oid,
    commit: Oid,
    changed: &[Changed],
) -> Result<bool, CommitError> {
    let refname = format!("refs/heads/{branch}");
    let checked_out = !repo.is_bare()
        && repo
            .head()
            .ok()
            .and_then(|h| h.name().ok().map(str::to_string))
            .as_deref()
            == Some(refname.as_str());
    if checked_out {
        for file in changed {
            let status = repo.status_file(Path::new(&file.path));
            let clean = match status {
                Ok(s) => s.is_empty(),
                Err(e) => e.code() == git2::ErrorCode::NotFound && file.before.is_none(),
            };
            if !clean {
                return Err(CommitError::Git(format!(
                    "{} has uncommitted changes in the working tree; commit or stash them first",
                    file.path
                )));
            }
        }
    }
    match repo.reference_matching(&refname, commit, true, base, "pier edit") {
        Ok(_) => {}
        Err(e) if e.code() == git2::ErrorCode::Modified => return Ok(false),
        Err(e) => return Err(git_error("moving the branch")(e)),
    }
    if checked_out {
        let tree = repo
            .find_commit(commit)
            .and_then(|c| c.into_object().peel(git2::ObjectType::Tree))
            .map_err(git_error("tree"))?;
        let mut checkout = git2::build::CheckoutBuilder::new();
        checkout.force();
        for file in changed {
            checkout.path(&file.path);
        }
        repo.checkout_tree(&tree, Some(&mut checkout))
            .map_err(git_error("updating the working tree"))?;
    }
    Ok(true)
}

/// The edit as a unified diff (`git diff` style, 3 lines of context).
pub fn unified_diff(changed: &[Changed]) -> String {
    let mut out = String::new();
    for file in changed {
        let old = file.before.as_deref().unwrap_or("");
        let new = file.after.as_deref().unwrap_or("");
        let mut options = git2::DiffOptions::new();
        options.context_lines(3);
        let patch = git2::Patch::from_buffers(
            old.as_bytes(),
            file.before.as_ref().map(|_| Path::new(&file.path)),
            new.as_bytes(),
            file.after.as_ref().map(|_| Path::new(&file.path)),
            Some(&mut options),
        );
        if let Ok(mut patch) = patch
            && let Ok(buf) = patch.to_buf()
        {
            out.push_str(&String::from_utf8_lossy(&buf));
        }
    }
    out
}
