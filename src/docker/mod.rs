//! The Docker edge: what pier asks of an engine, as a small trait
//! ([`Runtime`]) with two implementations: [`engine::Engine`] (bollard, real
//! engines over unix, tcp and tcp+TLS) and [`fake::FakeRuntime`] (in memory,
//! for the planner's tests and scale benchmarks only).
//!
//! Also owns the label names that mark what pier owns. They are a public
//! interface: users and tools filter on them.

pub mod engine;
pub mod fake;
pub mod jobs;
mod ssh;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;

/// Stack the container belongs to (`--stack`).
pub const LABEL_STACK: &str = "pier.stack";
/// Service name in the manifests.
pub const LABEL_SERVICE: &str = "pier.service";
/// Replica number, from 1.
pub const LABEL_REPLICA: &str = "pier.replica";
/// Hash of the effective container configuration, image digest included.
pub const LABEL_SPEC_HASH: &str = "pier.spec-hash";
/// Commit the container was deployed from.
pub const LABEL_COMMIT: &str = "pier.commit";
/// Image digest (or local image id) the container runs.
pub const LABEL_IMAGE_DIGEST: &str = "pier.image-digest";
/// Where the manifests that created the container come from: a hash of the
/// repository (see [`crate::source::git::GitSource::identity`]) and the
/// manifest folder. Two repositories that share a stack name never touch
/// each other's containers.
pub const LABEL_SOURCE: &str = "pier.source";
/// The same, readable (the repository without credentials, `#` the folder).
pub const LABEL_SOURCE_NAME: &str = "pier.source-name";
/// Short hashes of each part of the configuration (each env value apart),
/// so a plan can say which parts a replacement changes without storing values.
pub const LABEL_SPEC_FIELDS: &str = "pier.spec-fields";
/// The paths of a container's live configuration files, comma-separated.
pub const LABEL_FILES: &str = "pier.files";
/// `depends_on.<svc>.restart`: the spec hashes of the services whose
/// replacement replaces this container too.
pub const LABEL_RESTARTS_WITH: &str = "pier.restarts-with";

/// Everything pier sets on a container it creates. Built by the planner from
/// a service; hashed to decide staleness.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    /// Pinned reference, `name@sha256:…` (or a local image id).
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE`, sorted.
    pub env: Vec<String>,
    pub ports: Vec<PortBinding>,
    pub exposed: Vec<String>,
    pub mounts: Vec<MountSpec>,
    pub labels: BTreeMap<String, String>,
    pub privileged: bool,
    /// Docker's restart policy name and retry count.
    pub restart: (String, Option<u32>),
    pub healthcheck: Option<HealthcheckSpec>,
    pub memory: Option<u64>,
    pub cpu_shares: Option<u32>,
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub extra_hosts: Vec<String>,
    pub stop_timeout: Option<Duration>,
    /// Network (per stack) and the aliases the container answers to there.
    pub network: String,
    pub aliases: Vec<String>,
    /// `service` or `service:ro`: the replica mounts the volumes of that
    /// service's replica on its node. A service name here; the container's
    /// name or id once apply creates the replica. (Left out of the hash
    /// when empty, so specs from before it hash the same.)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<String>,
    // Added later: left out of the hash when unset, like `volumes_from`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_period: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    /// `name` → (soft, hard).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, (i64, i64)>,
    /// Log driver and options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<(String, BTreeMap<String, String>)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub tty: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub stdin_open: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// `PATH[:OPTIONS]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    /// (host path, container path, permissions).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<(String, String, String)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipc_mode: Option<String>,
    /// Live configuration: files (absolute path → contents) written into
    /// the container before it starts, and rewritten in place when they
    /// change, followed by `reload`. Not part of the hash: changing them
    /// reloads a replica, never replaces it.
    #[serde(skip)]
    pub files: BTreeMap<String, String>,
    /// The command run in the container after its files are rewritten.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload: Option<Vec<String>>,
}

impl ContainerSpec {
    /// Whether the container joins the stack's network (not `host` or `none`),
    /// and so takes aliases there.
    pub fn on_stack_network(&self) -> bool {
        !matches!(self.network.as_str(), "host" | "none")
    }
}

fn is_false(value: &bool) -> bool {
    !value
}

/// `container_port/proto` published on `host_ip:host_port` (empty port: engine's choice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortBinding {
    pub container: String,
    pub host_ip: Option<String>,
    pub host_port: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MountSpec {
    /// `volume`, `bind` or anonymous volume (`source` empty).
    pub kind: String,
    pub source: String,
    pub target: String,
    pub read_only: bool,
    /// A volume made outside pier: it must exist, never created on use.
    #[serde(default, skip_serializing_if = "is_false")]
    pub external: bool,
    /// SELinux relabelling, `z` or `Z`. The engine's mount API has no
    /// such option, so these mounts are passed as `Binds` strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relabel: Option<char>,
    /// What a named volume is created with, when the engine creates it on
    /// first use; an existing volume is used as it is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthcheckSpec {
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
}

/// What becomes of a container's anonymous volumes when it is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volumes {
    /// Kept: the default, since they may hold the only copy of a replica's data.
    Keep,
    /// Removed with the container (`docker rm -v`), when the user asks for it.
    Remove,
}

/// An anonymous volume mounted in a container: the engine's generated name
/// and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnonymousVolume {
    pub name: String,
    pub target: String,
}

/// Whether a volume name is one the engine generated for an anonymous
/// volume: 64 hex digits. (Engines before 23.0 mark them no other way.)
pub fn is_generated_volume_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A container as listed by an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    /// When it was created (seconds since the epoch).
    pub created: i64,
    /// Running, but its health check has not passed (yet).
    pub unhealthy: bool,
    /// How it exited, once it has (not for a container never started).
    pub exit_code: Option<i64>,
}

/// What an engine says about a container's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Running, and healthy (or without a health check).
    Healthy,
    /// Running, health check not passed yet.
    Starting,
    Unhealthy,
    /// Not running; the exit code when it exited.
    Exited(Option<i64>),
}

/// Registry credentials for one pull. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: <hidden> }}",
            self.username
        )
    }
}

/// Why an engine operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be reached: retry later, change nothing.
    #[error("engine unreachable: {0}")]
    Unreachable(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The engine refused because of its current state (HTTP 409), e.g. a
    /// name still held by a container being removed: retry later.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
}

/// The operations pier needs from one Docker engine.
pub trait Runtime: Send + Sync {
    /// Every container, running or not.
    fn list(&self) -> impl Future<Output = Result<Vec<ContainerInfo>, RuntimeError>> + Send;
    /// The id of a local image, if the engine has it.
    fn image_id(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<Option<String>, RuntimeError>> + Send;
    fn pull(
        &self,
        reference: &str,
        credentials: Option<&Credentials>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Whether the engine has a volume of this name.
    fn volume_exists(&self, name: &str) -> impl Future<Output = Result<bool, RuntimeError>> + Send;
    /// This engine's place in a swarm.
    fn swarm(
        &self,
    ) -> impl Future<Output = Result<crate::plan::swarm::SwarmMembership, RuntimeError>> + Send;
    /// Start a swarm with this engine as its first manager.
    fn swarm_init(
        &self,
        advertise: Option<&str>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// The tokens that join this manager's swarm, `(worker, manager)`.
    /// Secrets: never logged, stored or shown.
    fn swarm_tokens(&self) -> impl Future<Output = Result<(String, String), RuntimeError>> + Send;
    /// Join the swarm of the manager at `manager` (`host:port`).
    fn swarm_join(
        &self,
        advertise: Option<&str>,
        manager: &str,
        token: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Whether a network of this name exists here.
    fn network_exists(&self, name: &str)
    -> impl Future<Output = Result<bool, RuntimeError>> + Send;
    /// Create an attachable overlay network (on a manager).
    fn create_overlay(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        encrypted: bool,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Create a container; returns its id.
    fn create(
        &self,
        name: &str,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn stop(
        &self,
        id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn rename(&self, id: &str, name: &str)
    -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Remove a container (running or not). Its anonymous volumes go with it
    /// only when `volumes` is [`Volumes::Remove`]; named volumes never do.
    fn remove(
        &self,
        id: &str,
        volumes: Volumes,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// The anonymous volumes a container has mounted (declared as a bare
    /// path or by its image's `VOLUME`), so a replacement can take them over.
    fn anonymous_volumes(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Vec<AnonymousVolume>, RuntimeError>> + Send;
    fn health(&self, id: &str) -> impl Future<Output = Result<Health, RuntimeError>> + Send;
    /// Write `files` (absolute path → contents) into a container.
    fn write_files(
        &self,
        id: &str,
        files: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// The contents of a file in a container; `None` when there is none.
    fn read_file(
        &self,
        id: &str,
        path: &str,
    ) -> impl Future<Output = Result<Option<String>, RuntimeError>> + Send;
    /// Run `command` in a running container; its exit code and output.
    fn exec(
        &self,
        id: &str,
        command: &[String],
    ) -> impl Future<Output = Result<(i64, String), RuntimeError>> + Send;
}
