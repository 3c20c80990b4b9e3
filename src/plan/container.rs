//! What the planner asks the engines to run: a container's full
//! configuration ([`ContainerSpec`]) and the label names that mark what pier
//! owns. They are a public interface: users and tools filter on the labels.
//! The Docker edge (`crate::docker`) turns these into Engine API requests.

use std::collections::BTreeMap;
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
/// On a start-first successor: the id of the container it replaces. While
/// that container is still there, the successor is an unfinished one.
pub const LABEL_REPLACES: &str = "pier.replaces";

/// A link to another service, as its per-replica variables need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaLink {
    /// The linked service.
    pub service: String,
    /// The variables' prefix: the link alias, upper-cased (`REDIS`).
    pub prefix: String,
    /// The link alias, for `_NAME`.
    pub alias: String,
    /// The ports the linked service publishes or exposes, with protocol.
    pub ports: Vec<(u32, &'static str)>,
}

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
    /// More networks the container joins, each with its aliases there (a
    /// service listing several `networks`): joined after it is created,
    /// before it starts. (Left out of the hash when empty.)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub more_networks: Vec<(String, Vec<String>)>,
    /// Links to other stacks' services (`db.other:alias`), by the network
    /// they resolve on: the container's endpoint there maps each alias to
    /// the other service's name. (Left out of the hash when empty.)
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub network_links: BTreeMap<String, Vec<String>>,
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
    /// The platform pulled and run (`linux/arm64`); none: the node's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub tty: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub stdin_open: bool,
    /// Close the container's input when the first attached client's input
    /// ends (`docker run -i`): a one-off's. Without it the engine closes
    /// that client's output instead, losing what the command had still to
    /// print. Never a service's, so never hashed.
    #[serde(skip)]
    pub stdin_once: bool,
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
    /// The services this one links to, for Tutum's per-replica link
    /// variables (`REDIS_1_PORT`…): filled in from the replicas the linked
    /// service has when a replica is created, and, as on Tutum, not
    /// updated when it scales. Not part of the hash.
    #[serde(skip)]
    pub replica_links: Vec<ReplicaLink>,
    /// The command run in the container after its files are rewritten.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload: Option<Vec<String>>,
    /// Compose's configs and secrets: files written into the container
    /// before it starts. Their contents are never serialised (so never in
    /// a label); `provided_digest` stands for them in the hash, so a change
    /// replaces the replicas.
    #[serde(skip)]
    pub provided: Vec<crate::manifest::model::ProvidedFile>,
    /// Per file (`secret db`, `config app.conf`): a digest of its place,
    /// owner, mode and keyed contents digest.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub provided_digest: BTreeMap<String, String>,
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
