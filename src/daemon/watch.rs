//! The daemon's triggers: the branch tip (polled, and watched on disk for a
//! local repository), the registry tags that services follow, the engines'
//! container events, and the resync timer. Each only says *that* something
//! may have changed; the pass reads the truth itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::shared::{Shared, Trigger, Watched};
use crate::docker::engine::Engine;
use crate::manifest::model::Node;
use crate::registry::Registry;
use crate::source::git::GitSource;

/// Check the branch tips every `interval`, when a webhook asks, and (for a
/// local repository) as soon as its refs change on disk. A remote is asked
/// for its tips first (one ls-remote) and fetched only when one moved. The
/// deployed branch moving triggers a pass; another branch moving queues its
/// new commit for testing.
///
/// The checks go through a handle of their own on the repository, so a
/// slow or hung remote never holds the lock that passes and pipeline runs
/// read commits under.
pub async fn git(
    shared_repo: Arc<Mutex<GitSource>>,
    branch: String,
    interval: Duration,
    shared: Arc<Shared>,
) {
    // One pending "refs changed" is enough, however many files a commit writes.
    let (changed_tx, mut changed) = mpsc::channel(1);
    let _watcher = watch_refs(&shared_repo, changed_tx);
    let repo = {
        let handle = shared_repo.lock().expect("repository lock").reopen();
        match handle {
            Ok(handle) => Arc::new(Mutex::new(handle)),
            Err(e) => {
                warn!(error = %e, "cannot open a second handle on the repository; checks share the passes' one");
                shared_repo
            }
        }
    };
    // Where every branch was at start: only commits after it are tested.
    let mut known = check(&repo, &shared, false).await.ok();
    let mut last = match &known {
        Some(tips) => tips.get(&branch).cloned(),
        None => head_of(&repo, &branch).await.ok().flatten(),
    };
    shared.tip.send_replace(last.clone());
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let cause = tokio::select! {
            _ = ticker.tick() => Trigger::Git,
            _ = shared.git_check.notified() => Trigger::Webhook,
            Some(()) = changed.recv() => {
                // A commit touches several files; let it finish.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while changed.try_recv().is_ok() {}
                Trigger::Git
            }
        };
        let tips = match check(&repo, &shared, cause == Trigger::Webhook).await {
            Ok(tips) => tips,
            Err(e) => {
                warn!(error = %e, "cannot check the branch");
                if cause == Trigger::Webhook {
                    shared.triggers.send(cause);
                }
                continue;
            }
        };
        // A webhook's pass runs after the fetch, so it sees the new commit;
        // and it runs even when the tip had not moved, as the caller asked.
        let tip = tips.get(&branch).cloned();
        if tip != last {
            info!(
                branch,
                tip = tip.as_deref().unwrap_or("none"),
                "branch moved"
            );
            shared.tip.send_replace(tip.clone());
            last = tip;
            shared.triggers.send(cause);
        } else if cause == Trigger::Webhook {
            shared.triggers.send(cause);
        }
        other_branches_moved(&branch, &tips, known.as_ref(), &shared);
        known = Some(tips);
    }
}

/// Queue a pipeline run for every other branch whose tip moved (or that
/// appeared) since the last check.
fn other_branches_moved(
    deployed: &str,
    tips: &BTreeMap<String, String>,
    known: Option<&BTreeMap<String, String>>,
    shared: &Shared,
) {
    let others: BTreeMap<String, String> = tips
        .iter()
        .filter(|(name, _)| *name != deployed)
        .map(|(name, commit)| (name.clone(), commit.clone()))
        .collect();
    if let Some(known) = known {
        for (name, commit) in &others {
            if known.get(name) != Some(commit) {
                info!(branch = %name, tip = %commit, "branch moved; testing it");
                shared.branch_runs.send(name.clone(), commit.clone());
            }
        }
    }
    shared.branch_tips.send_replace(others);
}

/// Watch a local repository's refs; `None` for a remote one (polled instead)
/// or when the platform offers no watcher.
fn watch_refs(
    repo: &Arc<Mutex<GitSource>>,
    changed: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let repo = repo.lock().expect("repository lock");
    if repo.is_remote() {
        return None;
    }
    let git_dir = repo.git_dir().to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = changed.try_send(());
        }
    })
    .map_err(|e| warn!(error = %e, "cannot watch the repository; polling only"))
    .ok()?;
    // HEAD and packed-refs live in the git folder itself, branches under refs/.
    let watched = watcher
        .watch(&git_dir, RecursiveMode::NonRecursive)
        .and_then(|_| watcher.watch(&git_dir.join("refs"), RecursiveMode::Recursive));
    if let Err(e) = watched {
        warn!(error = %e, "cannot watch the repository; polling only");
        return None;
    }
    Some(watcher)
}

async fn head_of(repo: &Arc<Mutex<GitSource>>, branch: &str) -> Result<Option<String>, String> {
    let (repo, branch) = (repo.clone(), branch.to_string());
    tokio::task::spawn_blocking(move || {
        let repo = repo.lock().expect("repository lock");
        Ok(repo.resolve(&branch).ok().map(|oid| oid.to_string()))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// One check: ask the remote for every branch tip, fetch only if one
/// moved, then read the tips locally. After a webhook, which says
/// something was pushed, fetch at once: one round trip instead of two.
async fn check(
    repo: &Arc<Mutex<GitSource>>,
    shared: &Arc<Shared>,
    pushed: bool,
) -> Result<BTreeMap<String, String>, String> {
    let (repo, shared) = (repo.clone(), shared.clone());
    tokio::task::spawn_blocking(move || {
        let repo = repo.lock().expect("repository lock");
        shared.metrics.git_checks.inc();
        if pushed && repo.is_remote() {
            shared.metrics.git_fetches.inc();
            let tips = repo.fetch_tips().map_err(|e| e.to_string())?;
            return Ok(tips
                .into_iter()
                .map(|(branch, oid)| (branch, oid.to_string()))
                .collect());
        }
        let tips = repo.branch_tips().map_err(|e| e.to_string())?;
        if repo.is_behind(&tips) {
            shared.metrics.git_fetches.inc();
            repo.fetch().map_err(|e| e.to_string())?;
        }
        Ok(tips
            .into_iter()
            .map(|(branch, oid)| (branch, oid.to_string()))
            .collect())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Resolve every followed tag once per `interval` (or when a registry
/// webhook asks); a digest that changed triggers a pass, which replaces
/// only the services that follow that tag.
pub async fn registry(
    registry: Arc<Registry>,
    interval: Duration,
    shared: Arc<Shared>,
    mut watched: watch::Receiver<Watched>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut failing: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shared.registry_check.notified() => {}
            changed = watched.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        }
        let references = watched.borrow().followed.clone();
        let mut moved = false;
        for reference in references {
            match registry.resolve(&reference).await {
                Ok(resolved) => {
                    if failing.remove(&reference).is_some() {
                        info!(reference, "registry reachable again");
                    }
                    let mut followed = shared.followed.lock().expect("followed lock");
                    let previous = followed.insert(reference.clone(), resolved.clone());
                    if previous.is_some_and(|p| p != resolved) {
                        info!(reference, digest = %resolved.digest, "followed tag moved");
                        moved = true;
                    }
                }
                Err(error) => {
                    let message = error.to_string();
                    if failing.insert(reference.clone(), message.clone()).as_ref() != Some(&message)
                    {
                        warn!(reference, error = %message, "cannot resolve a followed tag; keeping the running digest");
                    }
                }
            }
        }
        if moved {
            shared.triggers.send(Trigger::Registry);
        }
    }
}

/// Follow every node's container events for the stack: a replica that
/// dies, is removed or changes health triggers a pass at once. A broken stream is re-established
/// with backoff; the node set follows the manifests.
pub async fn events(
    engine_timeout: Duration,
    shared: Arc<Shared>,
    mut watched: watch::Receiver<Watched>,
) {
    let mut followers = tokio::task::JoinSet::new();
    let mut current: Option<(String, Vec<Node>)> = None;
    loop {
        let next = {
            let w = watched.borrow_and_update();
            (w.stack.clone(), w.nodes.clone())
        };
        if current.as_ref() != Some(&next) {
            followers.abort_all();
            for node in next.1.clone() {
                followers.spawn(follow_node(
                    node,
                    next.0.clone(),
                    engine_timeout,
                    shared.clone(),
                ));
            }
            current = Some(next);
        }
        if watched.changed().await.is_err() {
            return;
        }
    }
}

async fn follow_node(node: Node, stack: String, engine_timeout: Duration, shared: Arc<Shared>) {
    let mut failures = 0u32;
    loop {
        match Engine::connect(&node, engine_timeout).await {
            Ok(engine) => {
                debug!(node = %node.name, "following container events");
                if let Some(version) = engine.server_version().await {
                    shared
                        .engine_versions
                        .lock()
                        .expect("engine versions lock")
                        .insert(node.name.clone(), version);
                }
                let mut stream = Box::pin(engine.container_events(&stack));
                if failures > 0 {
                    // Events may have been missed while the stream was down.
                    shared.triggers.send(Trigger::Event);
                }
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(event) => {
                            failures = 0;
                            debug!(node = %node.name, action = %event.action, container = %event.container, "container event");
                            shared.triggers.send(Trigger::Event);
                        }
                        Err(e) => {
                            debug!(node = %node.name, error = %e, "event stream broke");
                            break;
                        }
                    }
                }
            }
            Err(e) => debug!(node = %node.name, error = %e, "cannot follow events"),
        }
        let wait = super::shared::backoff(failures, Duration::from_secs(30));
        failures = failures.saturating_add(1);
        tokio::time::sleep(wait).await;
    }
}

/// A full pass every `interval`, whatever else happened: corrects drift
/// nothing reported.
pub async fn resync(interval: Duration, shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        shared.triggers.send(Trigger::Resync);
    }
}
