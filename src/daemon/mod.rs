//! `pier daemon`: keeps the nodes equal to a branch of the repository.
//!
//! A reconcile loop in the kube-runtime style. Triggers (git, the registry,
//! engine events, a resync timer, webhooks, the API) feed one pending set
//! ([`pending`]: bounded, however many arrive); the
//! loop waits for a trigger (after a quiet period it starts at once; right
//! after a pass, a short debounce window lets the rest of a burst join),
//! and runs one pass: load the desired state at the branch tip
//! → observe → plan → apply → record. Transient failures requeue with
//! exponential backoff and jitter; permanent ones mark the revision failed
//! until a new commit arrives, while the last good state keeps running.
//!
//! This module owns the loop and the process (lock, signals, listener); the
//! pass itself is in [`reconciler`], the triggers in [`watch`] and
//! [`pending`], pipeline runs in [`runner`], the HTTP
//! side in [`api`], history in [`store`], and under `--ha` the election
//! that decides whether this daemon acts in [`lease`].

pub mod api;
mod auth;
pub mod control;
pub mod dashboard;
pub mod lease;
pub mod metrics;
pub mod notify;
pub mod pending;
pub mod reconciler;
mod rules;
pub mod runner;
pub mod shared;
pub mod status;
pub mod store;
pub mod throttle;
pub mod watch;

pub use shared::{Config, EditSettings, Secrets, Shared, Trigger, Watched, backoff};

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::source::git::GitSource;

use reconciler::{Outcome, Reconciler};
use store::Store;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "another pier daemon is using the state folder {0} ({1}); stop it, or give this one its own --state-dir"
    )]
    Locked(PathBuf, String),
    #[error("cannot use the state folder {0}: {1}")]
    StateDir(PathBuf, std::io::Error),
    #[error("cannot open the state store {0}: {1}")]
    Store(PathBuf, rusqlite::Error),
    #[error("cannot listen on {0}: {1} (choose another with --listen or --hooks-listen)")]
    Listen(SocketAddr, std::io::Error),
    #[error(transparent)]
    Source(#[from] crate::source::git::SourceError),
}

/// Hold the state folder for this process: a second daemon on the same
/// folder would apply the same plans twice.
fn lock_state_dir(dir: &Path) -> Result<File, StartError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| StartError::StateDir(dir.into(), e))?;
    // History and logs are the daemon's own: nobody else on the host reads them.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| StartError::StateDir(dir.into(), e))?;
    let path = dir.join("lock");
    let mut file = open_private(&path, false).map_err(|e| StartError::StateDir(dir.into(), e))?;
    if file.try_lock().is_err() {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        let holder = match holder.trim() {
            "" => "pid unknown".to_string(),
            pid => format!("pid {pid}"),
        };
        return Err(StartError::Locked(dir.into(), holder));
    }
    file.set_len(0)
        .and_then(|_| write!(file, "{}", std::process::id()))
        .map_err(|e| StartError::StateDir(dir.into(), e))?;
    Ok(file)
}

/// Open (creating, mode 0600) a file of the state folder, never through a
/// symbolic link: another user must not redirect the daemon's writes.
fn open_private(path: &Path, truncate: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(truncate)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Bind `address` and write the address bound (the port when 0 was asked
/// for) to `file` in the state folder, where `pier status` and scripts
/// find it.
async fn listen(
    address: SocketAddr,
    state_dir: &Path,
    file: &str,
) -> Result<tokio::net::TcpListener, StartError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| StartError::Listen(address, e))?;
    let bound = listener.local_addr().unwrap_or(address);
    // Written aside and renamed into place, so a reader never sees the file
    // created but still empty.
    let (aside, path) = (state_dir.join(format!(".{file}.new")), state_dir.join(file));
    if let Err(e) = open_private(&aside, true)
        .and_then(|mut f| write!(f, "{bound}"))
        .and_then(|()| std::fs::rename(&aside, &path))
    {
        warn!(error = %e, file, "cannot write a listening address to the state folder");
    }
    Ok(listener)
}

/// Hand memory freed by a pass back to the system. A pass over a large
/// fleet allocates much and frees it all; glibc keeps freed memory in its
/// arenas, so without this a daemon's resident size only ever grows to its
/// largest pass's.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused heap pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raise the soft limit on open files to the hard one. Each node costs the
/// daemon an event stream and a pooled connection (an ssh node also its
/// ssh process's pipes), so the usual soft limit of 1,024 caps a fleet at a
/// few hundred nodes; the hard limit is the operator's real bound.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::debug!(
                from = soft,
                to = limit.rlim_max,
                "raised the open files limit"
            );
        }
    }
}

/// Run the daemon until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), StartError> {
    raise_open_files_limit();
    let _lock = lock_state_dir(&config.state_dir)?;
    let store_path = config.state_dir.join("pier.db");
    let store = Store::open(&store_path, config.retention)
        .map_err(|e| StartError::Store(store_path.clone(), e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&store_path, std::fs::Permissions::from_mode(0o600));
    }
    let repo = {
        let (location, cache) = (
            config.settings.source.repo.clone(),
            config.settings.source.cache_dir.clone(),
        );
        tokio::task::spawn_blocking(move || GitSource::open(&location, &cache))
            .await
            .expect("opening the repository does not panic")?
    };
    let stack = config.settings.stack.clone().unwrap_or_else(|| repo.name());
    let repo = Arc::new(Mutex::new(repo));
    let shared = Arc::new(Shared::new(
        &config,
        &stack,
        store,
        Secrets::from_environment(),
    ));
    let watched_rx = shared.watched.subscribe();

    let listener = listen(config.listen, &config.state_dir, "listen").await?;
    let address = listener.local_addr().unwrap_or(config.listen);
    info!(%address, stack, branch = %config.branch, "pier daemon listening");
    let hooks_listener = match config.hooks_listen {
        Some(hooks) => {
            let listener = listen(hooks, &config.state_dir, "hooks-listen").await?;
            let address = listener.local_addr().unwrap_or(hooks);
            info!(%address, "webhooks listening");
            Some(listener)
        }
        None => None,
    };

    let shutdown = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    let public_https = config.public_url.as_deref().is_some_and(|url| {
        url.get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    });
    let router = api::router(shared.clone(), hooks_listener.is_none(), public_https);
    tasks.spawn(api::serve(listener, router, config.http, shutdown.clone()));
    if let Some(listener) = hooks_listener {
        let router = api::hooks_router(shared.clone());
        tasks.spawn(api::serve(listener, router, config.http, shutdown.clone()));
    }
    tasks.spawn(watch::git(
        repo.clone(),
        config.branch.clone(),
        config.git_interval,
        shared.clone(),
    ));
    // One registry client for the watcher and the passes: bearer tokens are
    // fetched once and every request is counted in the metrics.
    let metrics = shared.metrics.clone();
    let registry = Arc::new(
        crate::registry::Registry::with_timeout(
            config.settings.insecure_registries.clone(),
            crate::registry::CredentialStore::from_environment(),
            config.settings.registry_timeout,
        )
        .with_observer(Arc::new(move |result| metrics.registry_request(result))),
    );
    let runner = runner::PipelineRunner::new(
        shared.clone(),
        repo.clone(),
        &config,
        &registry,
        std::env::vars().collect(),
    );
    tasks.spawn(watch::registry(
        registry.clone(),
        config.registry_interval,
        shared.clone(),
        watched_rx.clone(),
    ));
    tasks.spawn(watch::events(
        config.settings.engine_timeout,
        shared.clone(),
        watched_rx,
    ));
    tasks.spawn(watch::resync(config.resync_interval, shared.clone()));
    tasks.spawn(runner::other_branches(
        runner.clone(),
        config.settings.source.path.clone(),
        stack.clone(),
    ));

    tasks.spawn(reload_on_hangup(
        config.clone(),
        runner.policy.clone(),
        shared.clone(),
    ));

    let lease = config.ha.clone().map(|ha| {
        crate::docker::fence::arm();
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(lease::swarm::keep(
            ha,
            stack.clone(),
            shared.clone(),
            config.settings.engine_timeout,
            address,
            stop.clone(),
        ));
        (stop, task)
    });

    shared.triggers.send(Trigger::Startup);
    let reconciler = Reconciler::new(
        crate::pass::Engines,
        config.clone(),
        stack,
        registry,
        runner,
    )
    .await;
    // Listening, and the first pass asked for: ready, to systemd.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    reconcile_loop(reconciler, &config, shutdown_signal()).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    info!("pier daemon stopping");
    if let Some((stop, task)) = lease {
        // Released, so a standby takes over now rather than a lease later;
        // bounded, since the store may be what is gone.
        stop.notify_one();
        let bound = config.settings.engine_timeout * 2;
        let _ = tokio::time::timeout(bound, task).await;
    }
    shutdown.notify_waiters();
    tasks.abort_all();
    Ok(())
}

/// On SIGHUP, read the operator's files again (the policy and the
/// notification targets) and use them from the next pass on, keeping all
/// other state. A file that no longer reads is reported and the one in use
/// is kept. Told to systemd as `RELOADING=1`, then `READY=1`.
async fn reload_on_hangup(
    config: Config,
    policy: Arc<std::sync::RwLock<Arc<crate::policy::Policy>>>,
    shared: Arc<Shared>,
) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        warn!("cannot install a SIGHUP handler: the operator's files are read at start only");
        return;
    };
    while hangups.recv().await.is_some() {
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        let _ = sd_notify::notify(&reloading);
        let path = policy.read().expect("policy lock").path.clone();
        match path.as_deref().map(crate::policy::Policy::from_file) {
            None => {}
            Some(Ok(read)) => {
                *policy.write().expect("policy lock") = Arc::new(read);
                info!(path, "policy read again");
            }
            Some(Err(error)) => error!(%error, "policy not read again; the one in use stays"),
        }
        match config
            .notify_file
            .as_deref()
            .map(notify::NotifyConfig::from_file)
        {
            None => {}
            Some(Ok(read)) => {
                shared.notifier.reload(&read, &shared.metrics);
                info!(path = ?config.notify_file, "notification targets read again");
            }
            Some(Err(error)) => {
                error!(%error, "notification targets not read again; those in use stay")
            }
        }
        // Applied by the next pass, which runs now.
        shared.triggers.send(Trigger::Resync);
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Wait for a trigger, merge what arrives within the debounce window, run
/// one pass, and schedule a retry when it failed transiently. A shutdown
/// signal is honoured between passes, so a replica is never left
/// half-replaced.
async fn reconcile_loop(
    mut reconciler: Reconciler,
    config: &Config,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut failures: u32 = 0;
    let mut debounce = Debounce::new(config.debounce);
    loop {
        let shared = reconciler.shared.clone();
        let mut triggers = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            triggers = shared.triggers.next() => triggers,
            _ = sleep_until(retry_at) => BTreeSet::from([Trigger::Retry]),
        };
        // After a quiet period the first trigger runs at once; one that
        // follows a pass closely waits the window, so the rest of its
        // burst (a commit's files, a flurry of events) joins its pass.
        let wait = debounce.wait_at(tokio::time::Instant::now());
        if !wait.is_zero() {
            tokio::select! {
                biased;
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        triggers.extend(shared.triggers.take());
        if !shared.leads() {
            // A standby (--ha) follows the branch and changes nothing.
            reconciler.standby_pass().await;
            debounce.passed(tokio::time::Instant::now());
            (retry_at, failures) = (None, 0);
            continue;
        }
        let started = Instant::now();
        let outcome = reconciler.pass(&triggers).await;
        debounce.passed(tokio::time::Instant::now());
        retry_at = match outcome {
            Outcome::Transient(ref reason) => {
                let wait = backoff(failures, config.retry_max);
                failures = failures.saturating_add(1);
                warn!(retry_in = ?wait, %reason, "pass incomplete; retrying");
                Some(tokio::time::Instant::now() + wait)
            }
            Outcome::Done | Outcome::Permanent(_) => {
                failures = 0;
                None
            }
        };
        // A node on its way to counting as down gets a pass the moment it does.
        if let Some(down_at) = reconciler.next_down_at() {
            let down_at = tokio::time::Instant::from_std(down_at);
            retry_at = Some(retry_at.map_or(down_at, |at| at.min(down_at)));
        }
        // A freeze that runs out gets a pass the moment it does.
        if let Some(thaw_at) = reconciler.next_thaw_at() {
            let thaw_at = tokio::time::Instant::from_std(thaw_at);
            retry_at = Some(retry_at.map_or(thaw_at, |at| at.min(thaw_at)));
        }
        release_freed_memory();
        tracing::debug!(took = ?started.elapsed(), "pass finished");
    }
}

/// The debounce window's rule: a trigger after a quiet period (no pass
/// ended within the window) starts its pass at once; one that comes
/// sooner waits out the window.
struct Debounce {
    window: std::time::Duration,
    last_pass_ended: Option<tokio::time::Instant>,
}

impl Debounce {
    fn new(window: std::time::Duration) -> Debounce {
        Debounce {
            window,
            last_pass_ended: None,
        }
    }

    /// How long a trigger that arrives at `now` waits before its pass.
    fn wait_at(&self, now: tokio::time::Instant) -> std::time::Duration {
        match self.last_pass_ended {
            Some(ended) if now.saturating_duration_since(ended) < self.window => self.window,
            _ => std::time::Duration::ZERO,
        }
    }

    fn passed(&mut self, at: tokio::time::Instant) {
        self.last_pass_ended = Some(at);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_keeps_pier_credentials_out_by_default() {
        let environment: crate::manifest::Vars = [
            ("PIER_REGISTRY_PASSWORD", "p"),
            ("APP_VERSION", "1"),
            ("APP_TOKEN", "t"),
            ("HOME", "/root"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let names = |allow: &[&str]| {
            let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
            let mut names: Vec<String> =
                crate::manifest::interpolate::admitted(&environment, &allow)
                    .into_keys()
                    .collect();
            names.sort();
            names
        };
        assert_eq!(names(&[]), ["APP_TOKEN", "APP_VERSION", "HOME"]);
        assert_eq!(names(&["APP_*"]), ["APP_TOKEN", "APP_VERSION"]);
        assert_eq!(names(&["*_VERSION", "HOME"]), ["APP_VERSION", "HOME"]);
        assert_eq!(names(&["A*T*N"]), ["APP_TOKEN"]);
        assert_eq!(
            names(&["*"]),
            ["APP_TOKEN", "APP_VERSION", "HOME"],
            "no glob reaches PIER_*"
        );
        assert_eq!(names(&["PIER_*", "P*"]), Vec::<String>::new());
        assert_eq!(
            names(&["PIER_REGISTRY_PASSWORD"]),
            ["PIER_REGISTRY_PASSWORD"],
            "named exactly"
        );
    }

    #[test]
    fn the_first_trigger_after_a_quiet_period_runs_at_once_and_a_burst_waits() {
        let window = std::time::Duration::from_millis(200);
        let start = tokio::time::Instant::now();
        let mut debounce = Debounce::new(window);
        assert!(debounce.wait_at(start).is_zero(), "the first trigger ever");
        debounce.passed(start + std::time::Duration::from_millis(50));
        assert_eq!(
            debounce.wait_at(start + std::time::Duration::from_millis(100)),
            window,
            "right after a pass: the rest of the burst joins"
        );
        assert!(
            debounce
                .wait_at(start + std::time::Duration::from_millis(250))
                .is_zero(),
            "quiet for a whole window"
        );
    }

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_the_cap() {
        let max = std::time::Duration::from_secs(60);
        for failures in 0..5u32 {
            let base = 1u64 << failures;
            let wait = backoff(failures, max).as_secs_f64();
            assert!(
                wait >= base as f64 * 0.8 && wait <= base as f64 * 1.2,
                "{failures} failures: waited {wait}s"
            );
        }
        assert!(backoff(30, max) <= max);
    }

    #[test]
    fn the_state_folder_is_private_and_its_files_are_never_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _lock = lock_state_dir(&state).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("lock")), 0o600);

        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, other.join("lock")).unwrap();
        assert!(
            lock_state_dir(&other).is_err(),
            "a symlinked lock is refused"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn a_second_daemon_on_the_same_state_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = lock_state_dir(dir.path()).unwrap();
        let second = lock_state_dir(dir.path()).unwrap_err();
        let message = second.to_string();
        assert!(
            message.contains("another pier daemon")
                && message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
    }
}
