//! What the daemon's parts share: its configuration, the secrets of its
//! HTTP side, what triggers a pass, and the state every task reads and
//! writes (`Shared`). The parts depend on this small module, not on the
//! process that wires them together (`mod.rs`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, watch as tokio_watch};

use super::metrics::Metrics;
use super::status::Status;
use super::{api, notify, pending, runner, store};
use crate::pass::Settings;
use crate::pass::apply::ApplySettings;

/// Everything `pier daemon` is told on its command line or environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub branch: String,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// A listener of its own for the webhooks, which the API listener then
    /// does not serve.
    pub hooks_listen: Option<SocketAddr>,
    pub http: api::HttpLimits,
    pub git_interval: Duration,
    pub registry_interval: Duration,
    pub resync_interval: Duration,
    /// How long the loop waits after a trigger for others to merge with it.
    pub debounce: Duration,
    /// The longest wait between retries of a transient failure.
    pub retry_max: Duration,
    /// How long a node may stay unreachable before it counts as down.
    pub node_down_after: Duration,
    /// Images of this many recent revisions stay on the nodes; older ones
    /// pier pulled are removed (0: none is).
    pub keep_images: usize,
    pub apply: ApplySettings,
    /// How much history the state store keeps.
    pub retention: store::Retention,
    /// Where notifications go (`--notify`).
    pub notify: notify::NotifyConfig,
    /// The file they were read from, to read again on SIGHUP.
    pub notify_file: Option<String>,
    /// The URL users reach the daemon at, behind a proxy (`--public-url`).
    pub public_url: Option<String>,
    /// What bounds the stages of other branches (`--untrusted-*`).
    pub untrusted: crate::pipeline::Confinement,
    /// `--ha`: act only while holding the lease.
    pub ha: Option<super::lease::swarm::HaConfig>,
}

/// Secrets of the HTTP side, read from the environment at start. A hook
/// whose secret is not set is disabled.
#[derive(Clone, Default)]
pub struct Secrets {
    pub github: Option<String>,
    pub gitlab: Option<String>,
    pub registry_hook: Option<String>,
    pub api: Option<String>,
    /// When set, `/api/v1/status` and `/metrics` need it as a bearer token.
    pub status: Option<String>,
}

impl Secrets {
    pub fn from_environment() -> Secrets {
        let read = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Secrets {
            github: read("PIER_GITHUB_SECRET"),
            gitlab: read("PIER_GITLAB_TOKEN"),
            registry_hook: read("PIER_REGISTRY_HOOK_TOKEN"),
            api: read("PIER_API_TOKEN"),
            status: read("PIER_STATUS_TOKEN"),
        }
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &Option<String>| if s.is_some() { "set" } else { "unset" };
        f.debug_struct("Secrets")
            .field("github", &set(&self.github))
            .field("gitlab", &set(&self.gitlab))
            .field("registry_hook", &set(&self.registry_hook))
            .field("api", &set(&self.api))
            .field("status", &set(&self.status))
            .finish()
    }
}

/// Why a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trigger {
    Startup,
    Git,
    Registry,
    Event,
    Resync,
    Webhook,
    Api,
    Retry,
    /// A pipeline run of the deploy branch finished.
    Pipeline,
    /// This daemon began or ended a term as leader (`--ha`).
    Elected,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Git => "git",
            Trigger::Registry => "registry",
            Trigger::Event => "event",
            Trigger::Resync => "resync",
            Trigger::Webhook => "webhook",
            Trigger::Api => "api",
            Trigger::Retry => "retry",
            Trigger::Pipeline => "pipeline",
            Trigger::Elected => "elected",
        }
    }
}

/// What the watchers need to know about the current desired state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Watched {
    pub stack: String,
    /// Image references of services with `autoredeploy: true`.
    pub followed: BTreeSet<String>,
    pub nodes: Vec<crate::manifest::model::Node>,
}

/// State shared by the loop, the watchers and the HTTP side.
pub struct Shared {
    pub status: RwLock<Status>,
    pub metrics: Metrics,
    pub store: store::StoreQueue,
    /// Set once the first pass has finished.
    pub ready: AtomicBool,
    pub triggers: pending::Triggers,
    /// Ask the git watcher to check the branch tip now (webhooks).
    pub git_check: Notify,
    /// Ask the registry watcher to resolve the followed tags now (webhooks).
    pub registry_check: Notify,
    pub secrets: Secrets,
    /// The latest digest of every followed reference, from the registry watcher.
    pub followed: Mutex<std::collections::BTreeMap<String, crate::registry::Resolved>>,
    pub watched: tokio_watch::Sender<Watched>,
    /// The branch tip as the git watcher last saw it: a pipeline run for an
    /// older commit stops when it moves.
    pub tip: tokio_watch::Sender<Option<String>>,
    /// The tips of the other branches, as the git watcher last saw them.
    pub branch_tips: tokio_watch::Sender<std::collections::BTreeMap<String, String>>,
    /// Commits of other branches to test.
    pub branch_runs: pending::BranchRuns,
    /// Set once stage containers left by an earlier daemon were removed.
    pub leftovers: tokio::sync::OnceCell<()>,
    /// Where other branches' stages run: from the deploy branch's last
    /// applied revision, once there is one.
    pub trusted_runners: Mutex<Option<runner::TrustedRunners>>,
    /// Told when a revision of the deploy branch is applied: other
    /// branches' runs that came before its first one wait for it.
    pub trusted_runners_known: Notify,
    /// Where events that need a person go.
    pub notifier: notify::Notifier,
    /// Bumped whenever what the dashboard shows may have changed: the
    /// status, a pipeline run, a stage's log.
    pub changes: tokio_watch::Sender<u64>,
    /// Each node's engine version, as its event follower last read it.
    pub engine_versions: Mutex<std::collections::BTreeMap<String, String>>,
    /// What the dashboard's actions need: where to commit, and the
    /// variables manifests may interpolate (to check an edit).
    pub edits: EditSettings,
    /// Services `pier restart` asked to restart, with who asked: done by
    /// the next pass, which holds the deploy slot.
    pub restarts: Mutex<Vec<(String, String)>>,
    /// The election, under `--ha` (`None` without: this daemon always acts).
    pub lease: tokio_watch::Sender<Option<super::lease::LeaseStatus>>,
}

/// Where the dashboard commits its edits.
#[derive(Debug, Clone)]
pub struct EditSettings {
    pub repo: String,
    pub cache_dir: PathBuf,
    pub branch: String,
    pub folder: String,
    pub vars: crate::manifest::Vars,
    /// How long an HTTP connection may live: the dashboard's live streams
    /// end before it, and the browser opens them again.
    pub stream_for: Duration,
    /// What `pier diff` at the branch tip reads, for the dashboard's diff page.
    pub diff: Settings,
}

impl EditSettings {
    fn of(config: &Config) -> EditSettings {
        EditSettings {
            repo: config.settings.source.repo.clone(),
            cache_dir: config.settings.source.cache_dir.clone(),
            branch: config.branch.clone(),
            folder: config.settings.source.path.clone(),
            vars: config.settings.manifest_vars(),
            stream_for: config.http.request_timeout.mul_f64(0.8),
            diff: {
                let mut settings = config.settings.clone();
                settings.source.reference = config.branch.clone();
                settings
            },
        }
    }
}

impl Shared {
    /// The state of a daemon of `config` that deploys `stack`, recording in
    /// `store`; its notifier is started.
    pub fn new(config: &Config, stack: &str, store: store::Store, secrets: Secrets) -> Shared {
        let metrics = Metrics::default();
        let coalesced = metrics.triggers_coalesced.clone();
        let notifier = notify::Notifier::start(&config.notify, stack, &config.branch, &metrics);
        Shared {
            status: RwLock::new(Status {
                stack: stack.to_string(),
                branch: config.branch.clone(),
                ..Default::default()
            }),
            metrics,
            store: store::StoreQueue::start(store),
            ready: AtomicBool::new(false),
            triggers: pending::Triggers::new(coalesced),
            git_check: Notify::new(),
            registry_check: Notify::new(),
            secrets,
            followed: Mutex::new(Default::default()),
            watched: tokio_watch::channel(Watched {
                stack: stack.to_string(),
                ..Default::default()
            })
            .0,
            tip: tokio_watch::channel(None).0,
            branch_tips: tokio_watch::channel(Default::default()).0,
            branch_runs: pending::BranchRuns::default(),
            leftovers: tokio::sync::OnceCell::new(),
            trusted_runners: Mutex::new(None),
            trusted_runners_known: Notify::new(),
            notifier,
            changes: tokio_watch::channel(0).0,
            engine_versions: Mutex::new(Default::default()),
            edits: EditSettings::of(config),
            restarts: Mutex::new(Vec::new()),
            lease: tokio_watch::channel(config.ha.as_ref().map(|ha| super::lease::LeaseStatus {
                role: "standby".into(),
                identity: ha.identity.clone(),
                ..Default::default()
            }))
            .0,
        }
    }

    /// The status document as served: the daemon's status, with how each
    /// notification target is doing.
    pub fn status_document(&self) -> Status {
        let mut status = self.status.read().expect("status lock").clone();
        status.notifications = self.notifier.targets();
        status.ha = self.lease.borrow().clone();
        status
    }

    /// Whether this daemon acts: always without `--ha`, while it holds
    /// the lease with it.
    pub fn leads(&self) -> bool {
        self.lease
            .borrow()
            .as_ref()
            .is_none_or(|lease| lease.leads())
    }

    /// Why a change asked of this daemon is refused, when it stands by.
    pub fn standing_by(&self) -> Option<String> {
        self.lease
            .borrow()
            .as_ref()
            .filter(|lease| !lease.leads())
            .map(|lease| lease.describe())
    }

    /// Tell the dashboard's live views that something changed.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// 1 s, 2 s, 4 s … up to `max`, each with ±20 % jitter so that many daemons
/// hit by one outage do not retry in step.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let base = Duration::from_secs(1)
        .saturating_mul(1u32 << failures.min(16))
        .min(max);
    let jitter = random_unit() * 0.4 - 0.2;
    base.mul_f64(1.0 + jitter).min(max)
}

/// A number in [0, 1) from the standard library's per-process random keys.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}
