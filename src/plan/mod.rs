//! The pure core: `plan(&Desired, &Observed, &Options) -> Plan`.
//!
//! No I/O and no clock: the same inputs give the same plan, so every decision
//! (placement, scaling, staleness, pruning, order) is tested with plain
//! values and benchmarked at scale without an engine. Placement follows
//! Tutum's documented strategies and is stable: a healthy replica is never
//! moved just to rebalance.

pub mod container;
pub mod desired;
pub mod order;
mod placement;
mod planner;
pub mod render;
pub mod spec;
pub mod swarm;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use serde::Serialize;

use crate::manifest::model::{
    Autodestroy, Constraint, DependsOnCondition, Node, Strategy, UpdateConfig, UpdateOrder,
};
use container::ContainerSpec;

#[allow(unused_imports)]
use placement::*;
#[allow(unused_imports)]
use planner::*;
pub use planner::{plan, successor_name};

/// One service as it should run.
#[derive(Debug, Clone)]
pub struct DesiredService {
    pub name: String,
    pub spec: Arc<ContainerSpec>,
    pub hash: String,
    /// The image as written (`name:tag`), for display.
    pub image_display: String,
    /// The digest (or local image id) the spec pins.
    pub digest: String,
    /// `None` under `every_node`.
    pub replicas: Option<u32>,
    pub strategy: Strategy,
    pub tags: BTreeSet<String>,
    pub constraints: Vec<Constraint>,
    pub update: UpdateConfig,
    pub sequential: bool,
    /// Services this one starts after (links, depends_on, volumes_from).
    pub after: Vec<String>,
    /// Whether its replicas may be started elsewhere when their node is
    /// down: not with volumes or host folders (the data stays on the node)
    /// nor when pinned to a node by name.
    pub movable: bool,
    /// Services this one waits for beyond being started (`depends_on`
    /// conditions `service_healthy` and `service_completed_successfully`).
    pub waits_for: Vec<(String, DependsOnCondition)>,
    /// Another service waits for this one to exit with 0: a job whose
    /// replicas have done their work once they exited with 0.
    pub run_to_completion: bool,
    /// Another service waits for this one's health or completion, so the
    /// plan lists its matching replicas ([`ServicePlan::current`]).
    pub awaited: bool,
    /// Tutum's `autodestroy`: remove a replica that exited (with 0, or at all).
    pub autodestroy: Autodestroy,
    /// `pull_policy: never`: a node without the image gets no pull, and
    /// the service's replicas there fail saying so.
    pub never_pull: bool,
    /// Services whose volumes the replicas mount (`volumes_from`): the
    /// replicas go only to nodes where each of them has one.
    pub volumes_from: Vec<String>,
    /// `container_name`: the one replica's name.
    pub container_name: Option<String>,
    /// Commands run once per new revision, around its rollout.
    pub hooks: crate::manifest::model::Hooks,
    /// Commands run in its containers after they start and before they stop.
    pub lifecycle: crate::manifest::model::Lifecycle,
    /// The router sends it requests (`route`, `VIRTUAL_HOST`): its replicas
    /// are in rotation while they run and are healthy, and out otherwise.
    pub routed: bool,
    /// On an overlay network, where the engine cannot rename a running
    /// container (moby/moby#42351): a start-first successor keeps the name
    /// it was started under (see [`successor_name`]).
    pub keeps_successor_name: bool,
}

impl Desired {
    /// Whether the stack has a router or a routed service: it then has a
    /// rotation network.
    pub fn has_routes(&self) -> bool {
        self.services.contains_key(crate::manifest::router::SERVICE)
            || self.services.values().any(|s| s.routed)
    }

    /// The named networks, by engine name: (created by pier, its declaration).
    pub fn named_networks(&self) -> BTreeMap<String, &crate::manifest::model::NetworkDecl> {
        self.networks
            .iter()
            .map(|(key, decl)| (decl.name(&self.stack, key), decl))
            .collect()
    }

    /// The overlay networks pier makes through the swarm: the stack's own
    /// (with its rotation network) when it is one, and each named overlay
    /// network a service joins. An external one is not pier's to make.
    pub fn overlay_networks(&self) -> Vec<swarm::OverlayNetwork> {
        let mut networks = Vec::new();
        if self.network.overlay {
            networks.push(swarm::OverlayNetwork {
                name: self.network.name(&self.stack),
                encrypted: self.network.encrypted,
                internal: false,
            });
            if self.has_routes() {
                networks.push(swarm::OverlayNetwork {
                    name: self.network.routes_name(&self.stack),
                    encrypted: self.network.encrypted,
                    internal: false,
                });
            }
        }
        let joined: BTreeSet<&str> = self
            .services
            .values()
            .flat_map(|s| {
                std::iter::once(s.spec.network.as_str())
                    .chain(s.spec.more_networks.iter().map(|(n, _)| n.as_str()))
            })
            .collect();
        for (name, decl) in self.named_networks() {
            if decl.overlay && !decl.external && joined.contains(name.as_str()) {
                networks.push(swarm::OverlayNetwork {
                    name,
                    encrypted: decl.encrypted,
                    internal: decl.internal,
                });
            }
        }
        networks
    }
}

impl DesiredService {
    /// The name replica `replica` runs under.
    pub fn replica_name(&self, stack: &str, replica: u32) -> String {
        match &self.container_name {
            Some(name) => name.clone(),
            None => spec::container_name(stack, &self.name, replica),
        }
    }
}

impl DesiredService {
    /// Whether an exited replica has done what it is for and stays as it is.
    fn completed(&self, container: &OwnedContainer) -> bool {
        self.run_to_completion && container.exit_code == Some(0)
    }

    /// Whether an exited replica is to be removed for good (`autodestroy`).
    fn destroys(&self, container: &OwnedContainer) -> bool {
        match self.autodestroy {
            Autodestroy::Off => false,
            Autodestroy::OnSuccess => container.exit_code == Some(0),
            Autodestroy::Always => container.exit_code.is_some(),
        }
    }
}

/// The reason a removal gives when `autodestroy` takes an exited replica.
pub const AUTODESTROYED: &str = "autodestroy: it exited";

impl DesiredService {
    /// Whether a replica binds a fixed host port, so two cannot share a node.
    pub fn has_fixed_host_port(&self) -> bool {
        self.spec.ports.iter().any(|p| p.host_port.is_some())
    }

    /// Fingerprints of each part of `spec` ([`spec::field_fingerprints`]).
    /// Computed on demand: only replicas being created or replaced need them,
    /// and a converged pass has none.
    pub fn fields(&self) -> BTreeMap<String, String> {
        spec::field_fingerprints(&self.spec)
    }

    fn admits(&self, node: &Node) -> bool {
        self.tags.is_subset(&node.tags) && self.constraints.iter().all(|c| c.admits(node))
    }
}

/// Where a deployment's manifests come from, as its containers' labels record it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceId {
    /// What is compared: a hash of `name`.
    pub hash: String,
    /// The repository (no credentials) and the manifest folder, for people.
    pub name: String,
}

impl SourceId {
    pub fn new(repository: &str, folder: &str) -> SourceId {
        use sha2::Digest;
        let name = format!("{repository}#{}", folder.trim_matches('/'));
        let hash = hex::encode(&sha2::Sha256::digest(name.as_bytes())[..8]);
        SourceId { hash, name }
    }
}

/// Everything that should run, at one commit.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub stack: String,
    pub commit: String,
    /// Where these manifests come from (empty: not recorded, as in unit tests).
    pub source: SourceId,
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<String, DesiredService>,
    /// Declared services that cannot be planned this pass (e.g. their registry
    /// is unreachable), with the reason: their containers are left as they are.
    pub frozen: BTreeMap<String, String>,
    /// The network every container joins.
    pub network: crate::manifest::model::StackNetwork,
    /// Networks declared under their own names, by key.
    pub networks: BTreeMap<String, crate::manifest::model::NetworkDecl>,
}

/// A container of this stack, as its labels describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnedContainer {
    pub id: String,
    pub name: String,
    pub service: String,
    pub replica: u32,
    pub spec_hash: String,
    pub image_digest: String,
    pub commit: String,
    pub running: bool,
    /// When the engine created it (seconds since the epoch): of two copies
    /// of one replica, the older placement goes.
    #[serde(skip)]
    pub created: i64,
    /// Running, and its health check (if any) passed.
    #[serde(skip)]
    pub healthy: bool,
    /// Its `pier.source` and `pier.source-name` labels (empty for
    /// containers from before pier recorded them, which count as this
    /// source's).
    #[serde(skip)]
    pub source: SourceId,
    /// The exit code of a container that has exited.
    #[serde(skip)]
    pub exit_code: Option<i64>,
    /// Its `pier.spec-fields` label as found (JSON): which parts of its
    /// configuration hash to what. Read only when the container is replaced.
    /// Shared: the replicas of one configuration carry the same label, and
    /// an observation keeps it once (see `pass::observe`).
    #[serde(skip)]
    pub spec_fields: Arc<str>,
    /// The fingerprint of its live configuration files as read back from it
    /// ([`spec::files_hash`]); `None` when it has none, or they could not
    /// be read (and are then written again).
    #[serde(skip)]
    pub files_hash: Option<String>,
    /// On its stack's rotation network: the router sends it requests.
    #[serde(skip)]
    pub in_rotation: bool,
    /// Its `pier.replaces` label: the container a start-first successor
    /// was started to replace.
    #[serde(skip)]
    pub replaces: Option<String>,
}

impl OwnedContainer {
    /// The fingerprints its `pier.spec-fields` label records; empty when the
    /// label is missing or unreadable.
    pub fn fields(&self) -> BTreeMap<String, String> {
        serde_json::from_str(&self.spec_fields).unwrap_or_default()
    }
}

/// What one node looks like right now.
#[derive(Debug, Clone, Default)]
pub struct NodeObservation {
    /// `Some(reason)` when the engine could not be reached.
    pub unreachable: Option<String>,
    /// Running containers, pier's or not (for `emptiest_node`).
    pub running: usize,
    pub owned: Vec<OwnedContainer>,
    /// Names of containers pier does not own here: never touched, never reused.
    pub foreign_names: BTreeSet<String>,
    /// The node left the manifests: what pier owns there is removed.
    pub draining: bool,
}

/// What all nodes look like right now.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub nodes: BTreeMap<String, NodeObservation>,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Allow a desired state with no services to remove every owned container.
    pub allow_empty: bool,
    /// Unreachable nodes the caller has given up waiting for (the daemon,
    /// after `--node-down-after`): the replicas of movable services that
    /// ran there are started on other nodes. Any other unreachable node may
    /// still run its replicas, so none of them is started elsewhere.
    pub down: BTreeSet<String>,
    /// Take over containers of this stack deployed from another source,
    /// instead of refusing to touch them.
    pub adopt: bool,
    /// `(service, spec hash)` of `autodestroy` replicas that ran and were
    /// removed: not started again for that configuration.
    pub destroyed: BTreeSet<(String, String)>,
}

/// One change to one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    Create {
        node: String,
        replica: u32,
        name: String,
    },
    Replace {
        node: String,
        replica: u32,
        name: String,
        old: OwnedContainer,
        start_first: bool,
        /// What differs from the running container (empty when it predates
        /// field fingerprints or only its state differs).
        changed: Vec<FieldChange>,
    },
    Remove {
        node: String,
        container: OwnedContainer,
        reason: String,
    },
    /// Rewrite a running container's live configuration files and run its
    /// `reload` command: the container stays.
    Reload {
        node: String,
        container: OwnedContainer,
    },
    /// Put a routed replica in rotation (it is healthy again) or take it
    /// out (its health check fails): the container stays.
    Rotate {
        node: String,
        container: OwnedContainer,
        into: bool,
    },
}

impl Change {
    pub fn node(&self) -> &str {
        match self {
            Change::Create { node, .. }
            | Change::Replace { node, .. }
            | Change::Remove { node, .. }
            | Change::Reload { node, .. }
            | Change::Rotate { node, .. } => node,
        }
    }
}

/// One part of a container's configuration that a replacement changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// `image`, `command`, `ports`, ... or `env.KEY` for one variable.
    pub field: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// The new value of an environment variable. Plans never carry one;
    /// `diff --show-values` adds those that are safe to show (see
    /// [`render::reveal_env_values`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What differs between a running container's fingerprints and the desired ones.
pub fn field_changes(old: &OwnedContainer, service: &DesiredService) -> Vec<FieldChange> {
    let old = old.fields();
    if old.is_empty() {
        return Vec::new();
    }
    let new = service.fields();
    let mut changes = Vec::new();
    for (field, hash) in &new {
        let change = match old.get(field) {
            None => "added",
            Some(previous) if previous != hash => "changed",
            Some(_) => continue,
        };
        changes.push(FieldChange {
            field: field.clone(),
            change,
            value: None,
        });
    }
    for field in old.keys().filter(|f| !new.contains_key(*f)) {
        changes.push(FieldChange {
            field: field.clone(),
            change: "removed",
            value: None,
        });
    }
    changes
}

/// Something the plan should do but cannot, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub reason: String,
}

/// The changes for one service, in the order they are applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePlan {
    pub service: String,
    /// Whether the service is still declared (false: being pruned).
    pub declared: bool,
    pub changes: Vec<Change>,
    pub blocked: Vec<Blocked>,
    /// Replicas that already match.
    pub unchanged: usize,
    /// How many replicas may change at once.
    pub parallelism: u32,
    /// `(node, container id)` of the replicas that already match, when a
    /// service waits for this one (`DesiredService::awaited`) and checks them.
    #[serde(skip)]
    pub current: Vec<(String, String)>,
    /// `(replica number, container name)` of every replica once the plan is
    /// carried out, when another service links to this one (its replicas
    /// get per-replica link variables).
    #[serde(skip)]
    pub replicas: Vec<(u32, String)>,
    /// The order its changes run in: batches of indices into `changes`
    /// (see [`order`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<Vec<usize>>,
}

/// The whole plan: services in dependency order, pruned services last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub stack: String,
    pub commit: String,
    pub services: Vec<ServicePlan>,
    /// Reasons the plan refuses to run at all.
    pub refused: Vec<String>,
    /// Nodes that could not be observed, with the reason: nothing on them is
    /// planned.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unreachable: BTreeMap<String, String>,
    /// What the stack's overlay network needs of the swarm, done first.
    #[serde(skip_serializing_if = "swarm_plan_is_empty")]
    pub swarm: swarm::SwarmPlan,
    /// The order services roll out in (see [`order`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<order::Wave>,
}

fn swarm_plan_is_empty(plan: &swarm::SwarmPlan) -> bool {
    plan.steps.is_empty() && plan.blocked.is_empty()
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.swarm.steps.is_empty() && self.services.iter().all(|s| s.changes.is_empty())
    }

    pub fn count(&self, f: impl Fn(&Change) -> bool) -> usize {
        self.services
            .iter()
            .flat_map(|s| &s.changes)
            .filter(|c| f(c))
            .count()
    }

    pub fn blocked_count(&self) -> usize {
        self.swarm.blocked.len() + self.services.iter().map(|s| s.blocked.len()).sum::<usize>()
    }

    /// Take `swarm` as the swarm plan, and hold back the replicas it would
    /// start on nodes that cannot join the stack's swarm: they could not
    /// join its overlay network. Each is blocked with the node's reason.
    pub fn with_swarm(mut self, swarm: swarm::SwarmPlan) -> Plan {
        for service in &mut self.services {
            let (held, kept): (Vec<Change>, Vec<Change>) = std::mem::take(&mut service.changes)
                .into_iter()
                .partition(|c| {
                    matches!(c, Change::Create { .. } | Change::Replace { .. })
                        && swarm.blocked.contains_key(c.node())
                });
            service.changes = kept;
            for change in held {
                let (Change::Create { node, replica, .. } | Change::Replace { node, replica, .. }) =
                    change
                else {
                    continue;
                };
                service.blocked.push(Blocked {
                    replica: Some(replica),
                    reason: format!(
                        "{node} cannot join the stack's swarm: {}",
                        swarm.blocked[&node]
                    ),
                    node: Some(node),
                });
            }
        }
        self.swarm = swarm;
        self.reorder();
        self
    }
}

/// Running containers per node as the plan unfolds, for `emptiest_node`.
struct Load {
    slots: HashMap<String, usize>,
    total: Vec<i64>,
    reachable: Vec<bool>,
}

/// Lookups built once per plan, so planning stays linear in services and
/// containers rather than their product.
struct Index<'a> {
    /// Each service's containers with their node.
    by_service: HashMap<&'a str, Vec<(&'a str, &'a OwnedContainer)>>,
    /// Nodes matching a tag set, for services without constraints.
    matching: HashMap<BTreeSet<String>, Rc<Matching<'a>>>,
    /// Where the replicas of services planned so far will be, for those
    /// whose volumes others mount (`volumes_from`).
    placed: HashMap<String, BTreeSet<String>>,
    /// Services another service links to.
    linked: BTreeSet<&'a str>,
}

/// Nodes a service may run on and their slots in [`Load`].
#[derive(Default)]
struct Matching<'a> {
    nodes: Vec<&'a Node>,
    slots: Vec<usize>,
    /// Each node's position in `nodes`, by name.
    positions: HashMap<&'a str, usize>,
}

#[cfg(test)]
mod tests;
