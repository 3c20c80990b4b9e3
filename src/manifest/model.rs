//! The desired state in one normalised form: what the planner reads.
//!
//! Every way of writing a thing (`deploy.replicas` or `target_num_containers`,
//! `restart` or `autorestart`, short or long ports) ends up as one field here,
//! so nothing downstream ever has to know which spelling a user chose.
//!
//! Longer than the 700 lines a file is kept to, on purpose: it is the table
//! of the normalised types, with their documentation and almost no logic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use super::diagnostic::Location;

/// Everything the manifests at one commit declare.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Manifest {
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<String, Service>,
    pub pipeline: Option<Pipeline>,
    /// Named volumes declared at the top level.
    pub volumes: BTreeMap<String, VolumeDecl>,
    /// The stack's network (`networks.default`).
    pub network: StackNetwork,
    /// Networks declared under a name of their own (top-level `networks`
    /// but `default`), by that name.
    pub networks: BTreeMap<String, NetworkDecl>,
    /// The top-level `router`, when declared.
    pub router: Option<Router>,
    /// The top-level `configs` and `secrets`, by kind and name.
    pub provided: BTreeMap<(ProvidedKind, String), ProvidedSource>,
    /// Every value opened from a SOPS file, and every secret's contents:
    /// masked wherever pier shows text (stage and service logs, diff).
    #[serde(skip)]
    pub secret_values: SecretValues,
}

/// A Compose config or secret: a file pier writes into containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProvidedKind {
    #[default]
    Config,
    Secret,
}

impl ProvidedKind {
    /// The manifest key: `configs` or `secrets`.
    pub fn key(self) -> &'static str {
        match self {
            ProvidedKind::Config => "configs",
            ProvidedKind::Secret => "secrets",
        }
    }
}

/// Where a config's or secret's contents come from.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub enum Origin {
    /// A file in the repository (normalised path from its root).
    File(String),
    /// Written inline. Never serialised: it may be a secret.
    Content(#[serde(skip)] String),
    /// A variable of pier's environment, by name.
    Environment(String),
}

// Inline contents may be a secret: `{:?}` does not show them.
impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(path) => write!(f, "File({path:?})"),
            Origin::Content(_) => f.write_str("Content(<hidden>)"),
            Origin::Environment(name) => write!(f, "Environment({name:?})"),
        }
    }
}

/// A top-level `configs`/`secrets` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvidedSource {
    pub origin: Origin,
    #[serde(skip)]
    pub location: Location,
}

/// A service's use of a config or secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvidedRef {
    pub kind: ProvidedKind,
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// A file written into a service's containers before they start.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ProvidedFile {
    pub kind: ProvidedKind,
    /// The top-level entry's name.
    pub name: String,
    /// Absolute path in the container.
    pub target: String,
    pub contents: Vec<u8>,
    /// A keyed hash of the contents (see `manifest::provided`): what the
    /// replica's fingerprint holds instead of them.
    pub digest: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl ProvidedFile {
    pub fn is_secret(&self) -> bool {
        self.kind == ProvidedKind::Secret
    }
}

// The contents may be a secret: `{:?}` shows their digest only.
impl std::fmt::Debug for ProvidedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvidedFile")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("target", &self.target)
            .field("digest", &self.digest)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// Values that must never be shown; `{:?}` counts them.
#[derive(Clone, PartialEq, Default)]
pub struct SecretValues(pub Vec<String>);

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValues({} hidden)", self.0.len())
    }
}

impl SecretValues {
    pub fn extend(&mut self, values: impl IntoIterator<Item = String>) {
        self.0.extend(values);
    }
}

/// The HTTP router: a Caddy container on each node carrying its tags.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Router {
    /// The proxy as a service (image, ports, tags); its configuration file
    /// is added once every service's route is known.
    pub service: Service,
    /// How long a request keeps trying replicas before it fails.
    pub retry_for: Duration,
    /// Certificates for HTTPS routes from an ACME CA instead of files.
    pub acme: Option<Acme>,
    #[serde(skip)]
    pub location: Location,
}

/// The router's ACME account: where its HTTPS certificates come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Acme {
    pub email: String,
    /// The CA's directory URL; Let's Encrypt's when `None`.
    pub ca: Option<String>,
}

/// Requests for `hosts` (under `path`) go to a service's replicas on `port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub hosts: Vec<String>,
    /// A prefix starting with `/`, without a trailing `/`.
    pub path: Option<String>,
    pub port: u16,
    /// HTTPS on the router's port 443; HTTP redirects there.
    pub tls: bool,
}

/// The network every container of the stack joins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StackNetwork {
    /// One overlay network across the nodes (a swarm), instead of a bridge per node.
    pub overlay: bool,
    /// IPsec between hosts (overlay).
    pub encrypted: bool,
}

impl StackNetwork {
    /// The network's name on the engines. Each kind has its own name, so
    /// changing the kind moves the containers to a new network rather than
    /// leaving them on one that no longer matches.
    pub fn name(&self, stack: &str) -> String {
        match (self.overlay, self.encrypted) {
            (false, _) => format!("pier-{stack}"),
            (true, false) => format!("pier-{stack}-overlay"),
            (true, true) => format!("pier-{stack}-overlay-ipsec"),
        }
    }

    /// The rotation network of a stack with routes: the router is on it
    /// alone, and a routed replica joins it, under its service's name,
    /// while it is running and healthy. Same kind as the stack's network.
    pub fn routes_name(&self, stack: &str) -> String {
        format!("{}{ROUTES_SUFFIX}", self.name(stack))
    }
}

/// A network declared under its own name, which services join by listing
/// it in their `networks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetworkDecl {
    /// One network across the nodes (a swarm), instead of a bridge per node.
    pub overlay: bool,
    /// IPsec between hosts (overlay).
    pub encrypted: bool,
    /// No route out of the network: its containers reach only each other.
    pub internal: bool,
    /// Made outside pier: used as it is, never created.
    pub external: bool,
    /// The network's name on the engines, when given (`name:`); required
    /// meaning for an external one.
    pub engine_name: Option<String>,
}

impl NetworkDecl {
    /// The network's name on the engines: its `name`, or `pier-<stack>_<key>`
    /// (with the kind, as the stack's network, so changing the kind moves
    /// the containers to a new network).
    pub fn name(&self, stack: &str, key: &str) -> String {
        if let Some(name) = &self.engine_name {
            return name.clone();
        }
        match (self.overlay, self.encrypted) {
            (false, _) => format!("pier-{stack}_{key}"),
            (true, false) => format!("pier-{stack}_{key}-overlay"),
            (true, true) => format!("pier-{stack}_{key}-overlay-ipsec"),
        }
    }
}

impl Manifest {
    /// The networks `service` joins, by key (`default` for the stack's
    /// own), with the aliases it takes on each beyond its own.
    pub fn service_networks<'a>(&'a self, service: &'a Service) -> Vec<(&'a str, &'a [String])> {
        if service.network_mode.is_some() {
            return Vec::new();
        }
        if service.networks.is_empty() {
            return vec![("default", &[])];
        }
        service
            .networks
            .iter()
            .map(|(key, aliases)| (key.as_str(), aliases.as_slice()))
            .collect()
    }

    /// The engine name of network `key` of `stack`, and whether it is an
    /// overlay.
    pub fn network_engine_name(&self, stack: &str, key: &str) -> (String, bool) {
        match self.networks.get(key) {
            Some(decl) => (decl.name(stack, key), decl.overlay),
            None => (self.network.name(stack), self.network.overlay),
        }
    }

    /// A link to a service of another stack (Docker Cloud's
    /// `service.stack`): the service and the stack, when `link` names no
    /// service here.
    pub fn other_stack_link<'a>(&self, link: &'a Link) -> Option<(&'a str, &'a str)> {
        if self.services.contains_key(&link.service) {
            return None;
        }
        link.service
            .split_once('.')
            .filter(|(service, stack)| !service.is_empty() && !stack.is_empty())
    }

    /// The `external: true` networks `service` lists, by key.
    pub fn external_networks<'a>(&'a self, service: &'a Service) -> Vec<&'a str> {
        self.service_networks(service)
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| self.networks.get(*key).is_some_and(|n| n.external))
            .collect()
    }

    /// Whether `service` is on an overlay network.
    pub fn on_overlay(&self, service: &Service) -> bool {
        self.service_networks(service)
            .iter()
            .any(|(key, _)| self.network_engine_name("", key).1)
    }
}

/// How a rotation network's name ends.
pub const ROUTES_SUFFIX: &str = "-routes";

/// A top-level `volumes:` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VolumeDecl {
    /// The volume's name on the engine when not `<stack>_<key>` (`name`, or `external`).
    pub engine_name: Option<String>,
    /// Made outside pier: it must exist on the node, and is never created.
    pub external: bool,
    /// Set when pier (through the engine) creates the volume.
    pub labels: BTreeMap<String, String>,
    pub driver_opts: BTreeMap<String, String>,
}

/// A Docker host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub name: String,
    pub endpoint: Endpoint,
    pub tags: BTreeSet<String>,
    pub tls: Option<Tls>,
    #[serde(skip)]
    pub location: Location,
}

/// How to reach a node's Docker engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Endpoint {
    Unix {
        path: String,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Ssh {
        user: Option<String>,
        host: String,
        port: u16,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix { path } => write!(f, "unix://{path}"),
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::Ssh {
                user: Some(user),
                host,
                port,
            } => write!(f, "ssh://{user}@{host}:{port}"),
            Endpoint::Ssh {
                user: None,
                host,
                port,
            } => write!(f, "ssh://{host}:{port}"),
        }
    }
}

/// Where a node's TLS material lives on the machine running pier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Tls {
    /// A folder named by `PIER_TLS_<NAME>` holding `ca.pem`, `cert.pem`, `key.pem`.
    Secret { name: String },
    Paths {
        ca: String,
        cert: String,
        key: String,
    },
}

/// Tutum's placement strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each new container on the matching node with the fewest containers overall.
    #[default]
    EmptiestNode,
    /// Each new container on the matching node with the fewest of this service.
    HighAvailability,
    /// One container on every matching node.
    EveryNode,
}

/// What Docker does when a container exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(tag = "policy", rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    No,
    OnFailure {
        max_retries: Option<u32>,
    },
    Always,
    UnlessStopped,
}

/// Tutum's `autodestroy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Autodestroy {
    #[default]
    Off,
    OnSuccess,
    Always,
}

/// When to pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    Always,
    #[default]
    Missing,
    Never,
    Build,
}

/// A service: N containers from one image, placed on nodes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub name: String,
    pub image: Option<String>,
    pub build: Option<Build>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `None` values mean "not set" (a key listed without value and absent from pier's environment).
    pub environment: BTreeMap<String, Option<String>>,
    pub env_files: Vec<String>,
    pub ports: Vec<Port>,
    pub expose: Vec<String>,
    pub volumes: Vec<Mount>,
    pub labels: BTreeMap<String, String>,
    pub privileged: bool,
    pub restart: Restart,
    pub healthcheck: Option<Healthcheck>,
    /// Containers to run; `None` under `every_node`, which runs one per matching node.
    pub replicas: Option<u32>,
    pub strategy: Strategy,
    /// A node must carry every one of these tags.
    pub tags: BTreeSet<String>,
    pub constraints: Vec<Constraint>,
    pub update: UpdateConfig,
    pub mem_limit: Option<u64>,
    pub cpu_shares: Option<u32>,
    pub depends_on: BTreeMap<String, DependsOnCondition>,
    /// `depends_on.<svc>.restart: true`: replaced when these are.
    pub restart_with: BTreeSet<String>,
    /// `depends_on.<svc>.required: false`: ignored when not in the manifests.
    pub optional_dependencies: BTreeSet<String>,
    pub links: Vec<Link>,
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Billionths of a CPU (`cpus`).
    pub nano_cpus: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    pub cpuset: Option<String>,
    pub mem_reservation: Option<u64>,
    /// `-1`: unlimited swap.
    pub memswap_limit: Option<i64>,
    pub oom_score_adj: Option<i64>,
    /// `deploy.resources.limits.pids`.
    pub pids_limit: Option<i64>,
    /// The one replica's container name, instead of `<stack>-<service>-1`.
    pub container_name: Option<String>,
    /// `host` or `none`; `None`: the stack's network.
    pub network_mode: Option<String>,
    /// The networks it joins (`networks`), by key, with the aliases it
    /// takes on each beyond its own; empty: the stack's network alone.
    pub networks: BTreeMap<String, Vec<String>>,
    /// `host`.
    pub pid: Option<String>,
    pub ipc: Option<String>,
    pub devices: Vec<Device>,
    pub security_opt: Vec<String>,
    /// `name` → (soft, hard).
    pub ulimits: BTreeMap<String, (i64, i64)>,
    /// The log driver, and its options.
    pub logging: Option<(String, BTreeMap<String, String>)>,
    pub init: Option<bool>,
    /// `os/arch[/variant]`, as written (lowercased).
    pub platform: Option<String>,
    pub read_only: bool,
    pub tty: bool,
    pub stdin_open: bool,
    pub stop_signal: Option<String>,
    pub shm_size: Option<u64>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub domainname: Option<String>,
    pub sysctls: BTreeMap<String, String>,
    /// `PATH[:OPTIONS]`.
    pub tmpfs: Vec<String>,
    pub group_add: Vec<String>,
    /// Services whose volumes the replicas mount; placed on their nodes.
    pub volumes_from: Vec<String>,
    /// Those of `volumes_from` mounted read-only (`service:ro`).
    pub volumes_from_read_only: BTreeSet<String>,
    pub extra_hosts: Vec<(String, String)>,
    pub stop_grace_period: Option<Duration>,
    pub pull_policy: PullPolicy,
    pub autoredeploy: bool,
    /// Deploy hooks (`hooks`).
    pub hooks: Hooks,
    /// Compose's `post_start` and `pre_stop`, run in the containers.
    pub lifecycle: Lifecycle,
    /// Compose's `configs` and `secrets` as the service names them.
    pub provided_refs: Vec<ProvidedRef>,
    /// Their contents, read once the manifests are loaded. Never serialised.
    #[serde(skip)]
    pub provided: Vec<ProvidedFile>,
    pub autodestroy: Autodestroy,
    pub sequential_deployment: bool,
    /// Requests the router sends to this service (`route`, or Docker
    /// Cloud's `VIRTUAL_HOST` in its environment).
    pub route: Option<Route>,
    /// Live configuration: files written into each container before it
    /// starts (by absolute path), rewritten in place when they change and
    /// followed by `reload` (the router's configuration). Never serialised:
    /// it may hold a TLS key.
    #[serde(skip)]
    pub files: BTreeMap<String, String>,
    pub reload: Option<Vec<String>>,
    /// Where the service's name is written.
    #[serde(skip)]
    pub location: Location,
    /// Where each of its keys is written, for problems found across services.
    #[serde(skip)]
    pub key_locations: BTreeMap<String, Location>,
}

impl Service {
    /// Where `key` is written, or the service itself when it is not.
    pub fn location_of(&self, key: &str) -> &Location {
        self.key_locations.get(key).unwrap_or(&self.location)
    }

    /// The key the network mode was written with, for messages: Tutum's
    /// `net`, or Compose's `network_mode`.
    pub fn network_mode_key(&self) -> &'static str {
        if self.key_locations.contains_key("net")
            && !self.key_locations.contains_key("network_mode")
        {
            "net"
        } else {
            "network_mode"
        }
    }

    /// The number of containers wanted when the strategy does not decide it.
    pub fn replica_count(&self) -> u32 {
        self.replicas.unwrap_or(1)
    }

    /// Whether the service may run on `node`: it carries every tag, and
    /// every constraint admits it.
    pub fn admits(&self, node: &Node) -> bool {
        self.tags.is_subset(&node.tags) && self.constraints.iter().all(|c| c.admits(node))
    }
}

impl Manifest {
    /// How many replicas of `service` are wanted: its count, or under
    /// `every_node` one per node it may run on.
    pub fn desired_replicas(&self, service: &Service) -> usize {
        match service.replicas {
            Some(count) => count as usize,
            None => self.nodes.values().filter(|n| service.admits(n)).count(),
        }
    }
}

/// Compose's lifecycle hooks: commands run in a service's containers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Lifecycle {
    pub post_start: Vec<LifecycleHook>,
    pub pre_stop: Vec<LifecycleHook>,
}

/// One command run in a container (`docker exec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleHook {
    pub command: Vec<String>,
    pub user: Option<String>,
    pub privileged: bool,
    pub working_dir: Option<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
}

/// A service's deploy hooks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hooks {
    pub pre_deploy: Option<Hook>,
    pub post_deploy: Option<Hook>,
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.pre_deploy.is_none() && self.post_deploy.is_none()
    }
}

/// One deploy hook: a command run in a one-off container of the new spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hook {
    pub command: Vec<String>,
    pub timeout: Duration,
    /// The node to run on; `None`: the first node the rollout changes.
    pub node: Option<String>,
}

/// How long a deploy hook may run unless it says.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// An image build from the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Build {
    /// Path in the repository, relative to its root, normalised (no `.`/`..`).
    pub context: String,
    pub dockerfile: String,
    pub args: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// An inclusive port range; a single port has `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn len(&self) -> u32 {
        u32::from(self.end - self.start) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A published (or, without `published`, engine-chosen) port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    pub host_ip: Option<String>,
    /// `None`: the engine picks a free host port.
    pub published: Option<PortRange>,
    pub target: PortRange,
    pub protocol: Protocol,
}

/// A volume or bind mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Mount {
    Anonymous {
        target: String,
    },
    Volume {
        source: String,
        target: String,
        read_only: bool,
        /// SELinux relabelling: `z` (shared) or `Z` (private).
        relabel: Option<char>,
    },
    Bind {
        source: String,
        target: String,
        read_only: bool,
        relabel: Option<char>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// Docker's form: `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub start_period: Option<Duration>,
}

/// A placement rule beyond tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Constraint {
    pub subject: ConstraintSubject,
    pub equal: bool,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstraintSubject {
    /// The node carries the tag `value` (`node.tags`), or `KEY=value` (`node.labels.KEY`).
    Tag {
        key: Option<String>,
    },
    NodeName,
}

impl Constraint {
    /// Whether a node satisfies this constraint.
    pub fn admits(&self, node: &Node) -> bool {
        let holds = match &self.subject {
            ConstraintSubject::Tag { key: None } => node.tags.contains(&self.value),
            ConstraintSubject::Tag { key: Some(key) } => {
                node.tags.contains(&format!("{key}={}", self.value))
            }
            ConstraintSubject::NodeName => node.name == self.value,
        };
        holds == self.equal
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

/// How stale containers are replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateConfig {
    pub parallelism: u32,
    pub delay: Duration,
    pub order: UpdateOrder,
    /// Whether `order` was written (else a routed service's default
    /// applies).
    #[serde(skip)]
    pub order_written: bool,
    /// How long a new replica must stay running (and healthy) after it
    /// first is, before the rollout counts it and moves on.
    pub monitor: Duration,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay: Duration::ZERO,
            order: UpdateOrder::StopFirst,
            order_written: false,
            monitor: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DependsOnCondition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

/// A host device made available in the container (`devices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub host: String,
    pub container: String,
    /// Of `r`, `w`, `m`.
    pub permissions: String,
}

/// `links: [service:alias]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub service: String,
    pub alias: String,
}

impl Link {
    /// The name a link to another stack's `service.stack` answers to in the
    /// linking containers: its alias, or the service's own name when none
    /// is written (`db.other` answers to `db`, and to `db.other`).
    pub fn other_stack_alias(&self, service: &str) -> String {
        if self.alias == self.service {
            service.to_string()
        } else {
            self.alias.clone()
        }
    }
}

/// The pipeline run for each new commit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pipeline {
    pub branches: Vec<String>,
    pub runner_tags: BTreeSet<String>,
    pub stages: Vec<Stage>,
    #[serde(skip)]
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Stage {
    Script {
        name: String,
        image: String,
        script: Vec<String>,
        env: BTreeMap<String, Option<String>>,
        timeout: Option<Duration>,
    },
    Build {
        name: String,
        services: Vec<String>,
        /// Bounds the builds and pushes together.
        timeout: Option<Duration>,
    },
}

impl Stage {
    pub fn name(&self) -> &str {
        match self {
            Stage::Script { name, .. } | Stage::Build { name, .. } => name,
        }
    }
}

#[cfg(test)]
mod tests {
    /// An `every_node` service wants one replica per node its tags and its
    /// constraints admit, as the planner places them.
    #[test]
    fn every_node_wants_one_replica_per_admitted_node() {
        let text = "nodes:\n  a: { endpoint: \"tcp://10.0.0.1:2375\", tags: [web, \"region=eu\"] }\n  b: { endpoint: \"tcp://10.0.0.2:2375\", tags: [web, \"region=us\"] }\n  c: { endpoint: \"tcp://10.0.0.3:2375\", tags: [db] }\nservices:\n  agent: { image: x, deployment_strategy: every_node, tags: [web], deploy: { placement: { constraints: [\"node.labels.region != us\"] } } }\n  all: { image: x, deployment_strategy: every_node }\n  three: { image: x, deploy: { replicas: 3 } }\n";
        let files = [crate::manifest::SourceFile {
            path: "p.yml".into(),
            text: text.into(),
        }];
        let loaded = crate::manifest::load_and_validate(
            &files,
            &Default::default(),
            &crate::manifest::MemoryTree::default(),
        );
        assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
        let manifest = &loaded.manifest;
        let wanted = |name: &str| manifest.desired_replicas(&manifest.services[name]);
        assert_eq!(wanted("agent"), 1, "tags and the constraint leave node a");
        assert_eq!(wanted("all"), 3);
        assert_eq!(wanted("three"), 3);
    }
}
