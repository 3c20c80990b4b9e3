//! The Docker edge: what pier asks of an engine, as a small trait
//! ([`Runtime`]) with two implementations: [`engine::Engine`] (bollard, real
//! engines over unix, tcp and tcp+TLS) and [`fake::FakeRuntime`] (in memory,
//! for the planner's tests and scale benchmarks only).
//!
//! The container configuration it carries out and the label names come
//! from the planner (`crate::plan::container`).

pub mod engine;
pub mod fake;
pub mod fence;
pub mod jobs;
mod ssh;

/// The planner's output types and label names, which this edge carries out.
pub use crate::plan::container::{
    ContainerSpec, HealthcheckSpec, LABEL_COMMIT, LABEL_FILES, LABEL_IMAGE_DIGEST, LABEL_REPLACES,
    LABEL_REPLICA, LABEL_RESTARTS_WITH, LABEL_SERVICE, LABEL_SOURCE, LABEL_SOURCE_NAME,
    LABEL_SPEC_FIELDS, LABEL_SPEC_HASH, LABEL_STACK, MountSpec, PortBinding,
};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Whether it is on a rotation network (one named `…-routes`).
    pub in_rotation: bool,
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

/// A command to run in a container, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    pub user: Option<String>,
    pub privileged: bool,
    pub working_dir: Option<String>,
    /// `KEY=VALUE`, added to the container's.
    pub env: Vec<String>,
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
    /// Pull an image: the node's own platform's, or `platform`'s.
    fn pull(
        &self,
        reference: &str,
        credentials: Option<&Credentials>,
        platform: Option<&str>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// The engine's platform, as Docker names them (`linux/amd64`).
    fn platform(&self) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// Wait until a container exits; its exit code. Unbounded: the caller
    /// bounds it.
    fn wait(&self, id: &str) -> impl Future<Output = Result<i64, RuntimeError>> + Send;
    /// The last `lines` lines of a container's output (stdout and stderr).
    fn log_tail(
        &self,
        id: &str,
        lines: usize,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// Remove a local image by reference, never by force: an image a
    /// container uses is refused ([`RuntimeError::Conflict`]); one already
    /// gone is [`RuntimeError::NotFound`].
    fn remove_image(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Create a bridge network unless the engine has one of this name;
    /// `internal`: with no route out.
    fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        internal: bool,
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
    /// Make the swarm node `node_id` a manager, or a worker (this engine
    /// is a manager).
    fn swarm_set_role(
        &self,
        node_id: &str,
        manager: bool,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Leave the swarm this engine is in (as a worker).
    fn swarm_leave(&self) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Forget the swarm node `node_id`, which left (this engine is a manager).
    fn swarm_forget(&self, node_id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// The containers here attached to an overlay network, by name.
    fn overlay_containers(&self) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;
    /// The ids of the swarm's nodes whose role is manager, whether they act
    /// as one yet or not (a promoted engine does at its next certificate
    /// renewal). This engine is a manager.
    fn swarm_manager_ids(
        &self,
    ) -> impl Future<Output = Result<BTreeSet<String>, RuntimeError>> + Send;
    /// Attach a running container to `network`, answering to `aliases`.
    fn connect(
        &self,
        container: &str,
        network: &str,
        aliases: &[String],
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Detach a container from `network`.
    fn disconnect(
        &self,
        container: &str,
        network: &str,
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
        internal: bool,
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
    /// Write Compose's configs and secrets into a created container, each
    /// with its owner and mode (and the folders above it, 0755, made).
    fn provide_files(
        &self,
        id: &str,
        files: &[crate::manifest::model::ProvidedFile],
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
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
    /// Run a command in a running container as `request` says (user,
    /// privileges, folder, more environment); its exit code and output.
    fn exec_with(
        &self,
        id: &str,
        request: &ExecRequest,
    ) -> impl Future<Output = Result<(i64, String), RuntimeError>> + Send;
    /// Run `command` in a running container; its exit code and output.
    fn exec(
        &self,
        id: &str,
        command: &[String],
    ) -> impl Future<Output = Result<(i64, String), RuntimeError>> + Send;
}
