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
    #[serde(skip)]
    pub spec_fields: String,
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

/// Decide what to change. Pure and deterministic.
pub fn plan(desired: &Desired, observed: &Observed, options: &Options) -> Plan {
    let mut plan = Plan {
        stack: desired.stack.clone(),
        commit: desired.commit.clone(),
        unreachable: observed
            .nodes
            .iter()
            .filter_map(|(name, o)| Some((name.clone(), o.unreachable.clone()?)))
            .collect(),
        ..Default::default()
    };
    let owned_total: usize = observed.nodes.values().map(|n| n.owned.len()).sum();
    if desired.services.is_empty()
        && desired.frozen.is_empty()
        && owned_total > 0
        && !options.allow_empty
    {
        plan.refused.push(format!(
            "the manifests declare no services while {owned_total} container(s) of stack `{}` run; \
             refusing to remove them all (pass --allow-empty if that is what you want)",
            desired.stack
        ));
        return plan;
    }
    if !options.adopt
        && let Some(refusal) = other_source(desired, observed)
    {
        plan.refused.push(refusal);
        return plan;
    }
    let mut load = Load::new(desired, observed);
    let mut index = Index::new(desired, observed);
    let silent = silent_nodes(desired, observed);
    for name in dependency_order(desired) {
        let service = &desired.services[&name];
        let planned = plan_service(
            desired, observed, options, &silent, service, &mut load, &mut index,
        );
        if service.awaited {
            index.placed.insert(name.clone(), nodes_after(&planned));
        }
        plan.services.push(planned);
    }
    for (name, reason) in &desired.frozen {
        plan.services.push(ServicePlan {
            service: name.clone(),
            declared: true,
            changes: Vec::new(),
            blocked: vec![Blocked {
                replica: None,
                node: None,
                reason: reason.clone(),
            }],
            unchanged: 0,
            parallelism: 1,
            current: Vec::new(),
            replicas: Vec::new(),
            batches: Vec::new(),
        });
    }
    plan.services.extend(prune(desired, observed));
    plan.order(desired);
    plan
}

/// The nodes a service's replicas are on once its plan is carried out: the
/// matching replicas it keeps, and those it creates or replaces.
fn nodes_after(service_plan: &ServicePlan) -> BTreeSet<String> {
    let kept = service_plan.current.iter().map(|(node, _)| node.clone());
    let changed = service_plan
        .changes
        .iter()
        .filter_map(|change| match change {
            Change::Create { node, .. }
            | Change::Replace { node, .. }
            | Change::Reload { node, .. }
            | Change::Rotate { node, .. } => Some(node.clone()),
            Change::Remove { .. } => None,
        });
    kept.chain(changed).collect()
}

/// Whether a container records a source other than the desired state's.
fn from_other_source(desired: &Desired, container: &OwnedContainer) -> bool {
    !container.source.hash.is_empty()
        && !desired.source.hash.is_empty()
        && container.source.hash != desired.source.hash
}

/// A refusal naming both sources, when containers of this stack come from
/// another repository or folder: two deployments share the stack name.
fn other_source(desired: &Desired, observed: &Observed) -> Option<String> {
    let (node, container) = observed.nodes.iter().find_map(|(node, o)| {
        o.owned
            .iter()
            .find(|c| from_other_source(desired, c))
            .map(|c| (node, c))
    })?;
    let theirs = if container.source.name.is_empty() {
        container.source.hash.clone()
    } else {
        container.source.name.clone()
    };
    Some(format!(
        "container `{}` on {node} belongs to stack `{}` as deployed from {theirs}, but these manifests are {}; \
         two deployments share the stack name: give one of them another --stack, or pass --adopt to take its containers over",
        container.name, desired.stack, desired.source.name
    ))
}

/// Running containers per node as the plan unfolds, for `emptiest_node`.
struct Load {
    slots: HashMap<String, usize>,
    total: Vec<i64>,
    reachable: Vec<bool>,
}

impl Load {
    fn new(desired: &Desired, observed: &Observed) -> Self {
        let mut load = Load {
            slots: HashMap::new(),
            total: Vec::new(),
            reachable: Vec::new(),
        };
        for name in desired.nodes.keys().chain(observed.nodes.keys()) {
            let slot = load.slot(name);
            if let Some(o) = observed.nodes.get(name) {
                load.total[slot] = o.running as i64;
                load.reachable[slot] = o.unreachable.is_none();
            }
        }
        load
    }
    /// The node's index in `total` and `reachable` (a new one for an unknown node).
    fn slot(&mut self, node: &str) -> usize {
        if let Some(&slot) = self.slots.get(node) {
            return slot;
        }
        self.slots.insert(node.to_string(), self.total.len());
        self.total.push(0);
        self.reachable.push(false);
        self.total.len() - 1
    }
    fn add(&mut self, node: &str, delta: i64) {
        let slot = self.slot(node);
        self.total[slot] += delta;
    }
}

/// Services ordered so each comes after the ones it links to or depends on;
/// ties (and cycles, which validation rejects) by name.
fn dependency_order(desired: &Desired) -> Vec<String> {
    let mut order = Vec::new();
    let mut placed = BTreeSet::new();
    let mut visiting = BTreeSet::new();
    fn visit(
        name: &str,
        desired: &Desired,
        placed: &mut BTreeSet<String>,
        visiting: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        if placed.contains(name) || !visiting.insert(name.to_string()) {
            return;
        }
        if let Some(service) = desired.services.get(name) {
            let mut after = service.after.clone();
            after.sort();
            for dependency in &after {
                visit(dependency, desired, placed, visiting, order);
            }
            placed.insert(name.to_string());
            order.push(name.to_string());
        }
    }
    for name in desired.services.keys() {
        visit(name, desired, &mut placed, &mut visiting, &mut order);
    }
    order
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

impl Matching<'_> {
    fn position(&self, node: &str) -> Option<usize> {
        self.positions.get(node).copied()
    }
}

impl<'a> Index<'a> {
    fn new(desired: &'a Desired, observed: &'a Observed) -> Self {
        let mut by_service: HashMap<&str, Vec<(&str, &OwnedContainer)>> = HashMap::new();
        for (node, observation) in &observed.nodes {
            for container in &observation.owned {
                by_service
                    .entry(container.service.as_str())
                    .or_default()
                    .push((node.as_str(), container));
            }
        }
        let linked = desired
            .services
            .values()
            .flat_map(|s| s.spec.replica_links.iter().map(|l| l.service.as_str()))
            .collect();
        Index {
            by_service,
            matching: HashMap::new(),
            placed: HashMap::new(),
            linked,
        }
    }

    /// The nodes a service may run on, in name order, with their slots in
    /// [`Load`] (which numbers the desired nodes first, in the same order).
    fn matching(&mut self, desired: &'a Desired, service: &DesiredService) -> Rc<Matching<'a>> {
        let select = |admits: &dyn Fn(&Node) -> bool| {
            let mut matching = Matching::default();
            for (slot, node) in desired.nodes.values().enumerate() {
                if admits(node) {
                    matching
                        .positions
                        .insert(node.name.as_str(), matching.nodes.len());
                    matching.nodes.push(node);
                    matching.slots.push(slot);
                }
            }
            Rc::new(matching)
        };
        if !service.volumes_from.is_empty() {
            let placed = &self.placed;
            return select(&|n| {
                service.admits(n)
                    && service.volumes_from.iter().all(|source| {
                        placed
                            .get(source)
                            .is_some_and(|nodes| nodes.contains(&n.name))
                    })
            });
        }
        if !service.constraints.is_empty() {
            return select(&|n| service.admits(n));
        }
        // Services share a handful of tag sets: select their nodes once.
        self.matching
            .entry(service.tags.clone())
            .or_insert_with(|| select(&|n| service.tags.is_subset(&n.tags)))
            .clone()
    }
}

/// The name a stop-first replacement keeps the old container under until
/// its successor is healthy.
fn is_set_aside(name: &str) -> bool {
    name.ends_with("-pier-old")
}

/// The name a start-first successor of `old` is started under, beside it:
/// `<name>-pier-next`, or the replica's own name when `old` has the other.
/// Where the engine cannot rename a running container (an overlay network,
/// moby/moby#42351) the successor keeps it, so a replica's name alternates
/// between the two from one replacement to the next.
pub fn successor_name(name: &str, old: &str) -> String {
    let next = format!("{name}-pier-next");
    if old == next { name.to_string() } else { next }
}

/// Whether `c` is a start-first successor whose predecessor is still among
/// `copies`: a replacement that never finished. Containers from before the
/// `pier.replaces` label are recognised by their `-pier-next` name beside
/// another copy on the same node.
fn is_unfinished_successor(
    c: &OwnedContainer,
    node: &str,
    copies: &[(&str, &OwnedContainer)],
    ids: &HashSet<&str>,
) -> bool {
    match &c.replaces {
        Some(old) => ids.contains(old.as_str()),
        None => {
            c.name.ends_with("-pier-next")
                && copies.iter().any(|(n, o)| {
                    *n == node && o.replica == c.replica && o.id != c.id && !is_set_aside(&o.name)
                })
        }
    }
}

/// Which copy of one replica is the replica, when there are several (left
/// by an interrupted replacement, or started elsewhere while a node was
/// down), lowest first:
/// 0. a healthy copy under its own name that runs the desired configuration
///    (a replacement that finished);
/// 1. the previous version set aside by a stop-first replacement that never
///    finished: the last copy known to work, never pruned for a copy that
///    is not healthy;
/// 2. any other copy under its own name;
/// 3. an unfinished start-first successor.
///
/// Then running before stopped, and the newer placement first.
fn copy_rank(
    service: &DesiredService,
    c: &OwnedContainer,
    unfinished_successor: bool,
) -> (u8, bool, Reverse<i64>) {
    let rank = if is_set_aside(&c.name) {
        1
    } else if unfinished_successor {
        3
    } else if c.healthy && c.spec_hash == service.hash {
        0
    } else {
        2
    };
    (rank, !c.running, Reverse(c.created))
}

fn plan_service<'a>(
    desired: &'a Desired,
    observed: &Observed,
    options: &Options,
    silent: &[&str],
    service: &DesiredService,
    load: &mut Load,
    index: &mut Index<'a>,
) -> ServicePlan {
    let name = &service.name;
    let mut result = ServicePlan {
        service: name.clone(),
        declared: true,
        changes: Vec::new(),
        blocked: Vec::new(),
        unchanged: 0,
        parallelism: if service.sequential {
            1
        } else {
            service.update.parallelism.max(1)
        },
        current: Vec::new(),
        replicas: Vec::new(),
        batches: Vec::new(),
    };
    let matching = index.matching(desired, service);
    let reachable = |node: &str| {
        observed
            .nodes
            .get(node)
            .is_some_and(|o| o.unreachable.is_none())
    };

    // Current replicas, by node; of several copies of one replica number,
    // the best ranked is the replica and the others go.
    let mut current: Vec<(String, OwnedContainer)> = Vec::new();
    let mut seen_replicas = BTreeSet::new();
    let copies = index
        .by_service
        .get(name.as_str())
        .map_or(&[][..], Vec::as_slice);
    let ids: HashSet<&str> = copies.iter().map(|(_, c)| c.id.as_str()).collect();
    let mut ranked: Vec<_> = copies
        .iter()
        .map(|&(node, c)| {
            let successor = is_unfinished_successor(c, node, copies, &ids);
            ((c.replica, copy_rank(service, c, successor), node), c)
        })
        .collect();
    ranked.sort_by_key(|(key, _)| *key);
    for ((_, _, node), container) in ranked {
        let node = &node.to_string();
        let answers = observed
            .nodes
            .get(node)
            .is_some_and(|o| o.unreachable.is_none());
        // A node that left the manifests is drained; its copies never
        // count as the replica.
        let declared = desired.nodes.contains_key(node);
        if declared && seen_replicas.insert(container.replica) {
            current.push((node.clone(), container.clone()));
        } else if answers {
            let reason = if declared {
                "duplicate replica number"
            } else {
                "node no longer in the manifests"
            };
            result.changes.push(remove(node, container, reason));
            load.add(node, -1);
        }
    }
    current.sort_by_key(|(_, c)| c.replica);

    // Replicas on nodes that no longer match move; unreachable ones stay untouched.
    let mut kept: Vec<(String, OwnedContainer)> = Vec::new();
    for (node, container) in current {
        let still_matches = matching.position(&node).is_some();
        if still_matches || !reachable(&node) {
            kept.push((node, container));
        } else {
            result.changes.push(remove(
                &node,
                &container,
                "node no longer matches the service's tags or constraints",
            ));
            load.add(&node, -1);
        }
    }

    match service.strategy {
        Strategy::EveryNode => every_node(
            desired,
            service,
            &matching.nodes,
            observed,
            &mut kept,
            &mut result,
            load,
        ),
        _ => scaled(
            desired,
            service,
            &matching,
            observed,
            options,
            silent,
            &mut kept,
            &mut result,
            load,
        ),
    }

    // A job that ran under `autodestroy` is not started again for this configuration.
    if options
        .destroyed
        .contains(&(name.clone(), service.hash.clone()))
    {
        result
            .changes
            .retain(|c| !matches!(c, Change::Create { .. }));
    }

    // Stale replicas are replaced where they are; those with stale live
    // configuration get it rewritten.
    let live_files =
        (!service.spec.files.is_empty()).then(|| spec::files_hash(&service.spec.files));
    let fixed_port = service.has_fixed_host_port();
    let start_first = service.update.order == UpdateOrder::StartFirst && !fixed_port;
    for (node, container) in &kept {
        let matches = container.spec_hash == service.hash
            && !is_set_aside(&container.name)
            && !from_other_source(desired, container);
        if reachable(node) && service.destroys(container) {
            result.changes.push(remove(node, container, AUTODESTROYED));
        } else if matches
            && container.running
            && reachable(node)
            && live_files.is_some()
            && container.files_hash != live_files
        {
            result.changes.push(Change::Reload {
                node: node.clone(),
                container: container.clone(),
            });
        } else if matches
            && service.routed
            && container.running
            && reachable(node)
            && container.healthy != container.in_rotation
        {
            result.changes.push(Change::Rotate {
                node: node.clone(),
                container: container.clone(),
                into: container.healthy,
            });
        } else if matches && (container.running || service.completed(container)) {
            result.unchanged += 1;
            if service.awaited {
                result.current.push((node.clone(), container.id.clone()));
            }
        } else if !reachable(node) {
            result.blocked.push(Blocked {
                replica: Some(container.replica),
                node: Some(node.clone()),
                reason: format!("node unreachable: {}", unreachable_reason(observed, node)),
            });
        } else {
            result.changes.push(Change::Replace {
                node: node.clone(),
                replica: container.replica,
                name: service.replica_name(&desired.stack, container.replica),
                old: container.clone(),
                start_first,
                changed: field_changes(container, service),
            });
        }
    }
    if index.linked.contains(name.as_str()) {
        result.replicas = replicas_after(desired, service, &kept, &result.changes);
    }
    check_names(desired, observed, &mut result);
    result
}

/// `(replica number, container name)` of a service's replicas once its
/// changes are carried out: those kept and those created.
fn replicas_after(
    desired: &Desired,
    service: &DesiredService,
    kept: &[(String, OwnedContainer)],
    changes: &[Change],
) -> Vec<(u32, String)> {
    let removed: BTreeSet<&str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Remove { container, .. } => Some(container.id.as_str()),
            _ => None,
        })
        .collect();
    let mut numbers: BTreeSet<u32> = kept
        .iter()
        .filter(|(_, c)| !removed.contains(c.id.as_str()))
        .map(|(_, c)| c.replica)
        .collect();
    numbers.extend(changes.iter().filter_map(|c| match c {
        Change::Create { replica, .. } => Some(*replica),
        _ => None,
    }));
    numbers
        .into_iter()
        .map(|replica| (replica, service.replica_name(&desired.stack, replica)))
        .collect()
}

fn unreachable_reason(observed: &Observed, node: &str) -> String {
    observed
        .nodes
        .get(node)
        .and_then(|o| o.unreachable.clone())
        .unwrap_or_else(|| "not observed".into())
}

fn remove(node: &str, container: &OwnedContainer, reason: &str) -> Change {
    Change::Remove {
        node: node.to_string(),
        container: container.clone(),
        reason: reason.to_string(),
    }
}

/// The lowest replica numbers not in use.
fn free_replicas(kept: &[(String, OwnedContainer)], count: usize) -> Vec<u32> {
    let used: BTreeSet<u32> = kept.iter().map(|(_, c)| c.replica).collect();
    (1..).filter(|r| !used.contains(r)).take(count).collect()
}

#[allow(clippy::too_many_arguments)]
fn every_node(
    desired: &Desired,
    service: &DesiredService,
    matching: &[&Node],
    observed: &Observed,
    kept: &mut Vec<(String, OwnedContainer)>,
    result: &mut ServicePlan,
    load: &mut Load,
) {
    // One per matching node: extras on a node go, highest replica first.
    let mut per_node: BTreeMap<String, Vec<OwnedContainer>> = BTreeMap::new();
    for (node, container) in kept.drain(..) {
        per_node.entry(node).or_default().push(container);
    }
    for (node, containers) in per_node.iter_mut() {
        containers.sort_by_key(|c| c.replica);
        let reachable = observed
            .nodes
            .get(node)
            .is_some_and(|o| o.unreachable.is_none());
        while containers.len() > 1 && reachable {
            let extra = containers.pop().expect("more than one");
            result.changes.push(remove(
                node,
                &extra,
                "every_node runs one container per node",
            ));
            load.add(node, -1);
        }
    }
    for (node, containers) in &per_node {
        kept.extend(containers.iter().map(|c| (node.clone(), c.clone())));
    }
    let missing: Vec<&&Node> = matching
        .iter()
        .filter(|n| !per_node.contains_key(&n.name))
        .collect();
    let replicas = free_replicas(kept, missing.len());
    for (node, replica) in missing.into_iter().zip(replicas) {
        match observed
            .nodes
            .get(&node.name)
            .and_then(|o| o.unreachable.clone())
        {
            Some(reason) => result.blocked.push(Blocked {
                replica: Some(replica),
                node: Some(node.name.clone()),
                reason: format!("node unreachable: {reason}"),
            }),
            None => {
                result.changes.push(Change::Create {
                    node: node.name.clone(),
                    replica,
                    name: service.replica_name(&desired.stack, replica),
                });
                load.add(&node.name, 1);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn scaled(
    desired: &Desired,
    service: &DesiredService,
    matching: &Matching,
    observed: &Observed,
    options: &Options,
    silent: &[&str],
    kept: &mut Vec<(String, OwnedContainer)>,
    result: &mut ServicePlan,
    load: &mut Load,
) {
    let slots = &matching.slots;
    let wanted = service.replicas.unwrap_or(1) as usize;
    // Scale down: highest replica numbers first, only where the node answers.
    while kept.len() > wanted {
        let Some(index) = kept
            .iter()
            .enumerate()
            .filter(|(_, (node, _))| {
                observed
                    .nodes
                    .get(node)
                    .is_some_and(|o| o.unreachable.is_none())
            })
            .max_by_key(|(_, (_, c))| c.replica)
            .map(|(i, _)| i)
        else {
            result.blocked.push(Blocked {
                replica: None,
                node: None,
                reason: "cannot scale down: the remaining replicas are on unreachable nodes".into(),
            });
            break;
        };
        let (node, container) = kept.remove(index);
        result
            .changes
            .push(remove(&node, &container, "scaled down"));
        load.add(&node, -1);
    }
    if kept.len() >= wanted {
        return;
    }
    if let Some(reason) = missing_may_run_elsewhere(service, matching, observed, options, silent) {
        for replica in free_replicas(kept, wanted - kept.len()) {
            result.blocked.push(Blocked {
                replica: Some(replica),
                node: None,
                reason: reason.clone(),
            });
        }
        return;
    }
    let fixed_port = service.has_fixed_host_port();
    // Nodes by position in `matching` (name order, so the lowest position
    // breaks ties by name) with their slot in `load`: placing compares numbers,
    // never names.
    let mut of_service = vec![0i64; matching.nodes.len()];
    for (node, _) in kept.iter() {
        if let Some(position) = matching.position(node) {
            of_service[position] += 1;
        }
    }
    // How the strategy ranks a node, lowest first.
    let rank = |p: usize, of_service: &[i64], total: &[i64]| {
        let spread = match service.strategy {
            Strategy::HighAvailability => of_service[p],
            _ => 0,
        };
        (spread, total[slots[p]], p)
    };
    // While this service's replicas are placed, only a chosen node's rank
    // changes, and only upwards: the best node is always among the `needed`
    // best-ranked at the start or the ones chosen since. So one pass keeps
    // those few, and a heap of them picks each replica.
    let needed = wanted - kept.len();
    let mut best: BinaryHeap<(i64, i64, usize)> = BinaryHeap::with_capacity(needed + 1);
    for p in (0..matching.nodes.len())
        .filter(|&p| load.reachable[slots[p]])
        .filter(|&p| !fixed_port || of_service[p] == 0)
    {
        let candidate = rank(p, &of_service, &load.total);
        if best.len() < needed {
            best.push(candidate);
        } else if best.peek().is_some_and(|worst| candidate < *worst) {
            best.pop();
            best.push(candidate);
        }
    }
    let mut candidates: BinaryHeap<Reverse<(i64, i64, usize)>> =
        best.into_iter().map(Reverse).collect();
    for replica in free_replicas(kept, needed) {
        let Some(Reverse((_, _, position))) = candidates.pop() else {
            result.blocked.push(Blocked {
                replica: Some(replica),
                node: None,
                reason: no_node_reason(desired, service, &matching.nodes, observed, fixed_port),
            });
            continue;
        };
        let node = matching.nodes[position].name.clone();
        result.changes.push(Change::Create {
            node: node.clone(),
            replica,
            name: service.replica_name(&desired.stack, replica),
        });
        of_service[position] += 1;
        load.total[slots[position]] += 1;
        // A fixed host port allows one replica per node.
        if !fixed_port {
            candidates.push(Reverse(rank(position, &of_service, &load.total)));
        }
        kept.push((node, placeholder(&service.name, replica)));
    }
    // Placeholders only reserved replica numbers and nodes; they are not replicas to check.
    kept.retain(|(_, c)| !c.id.is_empty());
}

/// Why the replicas a service lacks must not be started now, if they must
/// not: an unreachable node the service may run on could still run them
/// (unknown is not empty), and a node given up as down holds the data of a
/// service that cannot move.
///
/// `silent` lists the nodes that did not answer, in name order: usually
/// none, so this costs nothing per service on a healthy fleet.
fn missing_may_run_elsewhere(
    service: &DesiredService,
    matching: &Matching,
    observed: &Observed,
    options: &Options,
    silent: &[&str],
) -> Option<String> {
    let (down, unknown): (Vec<&str>, Vec<&str>) = silent
        .iter()
        .copied()
        .filter(|name| matching.position(name).is_some())
        .partition(|name| options.down.contains(*name));
    if let Some(node) = unknown.first() {
        return Some(format!(
            "waiting on node {node}: it is unreachable ({}) and may still run this replica",
            unreachable_reason(observed, node)
        ));
    }
    // A node being drained after it left the manifests, not answering.
    if let Some(name) = silent.iter().find(|name| {
        observed.nodes.get(**name).is_some_and(|o| o.draining) && !options.down.contains(**name)
    }) {
        return Some(format!(
            "waiting on node {name}: it left the manifests and is unreachable ({}), and may still run this replica",
            unreachable_reason(observed, name)
        ));
    }
    match down.first() {
        Some(node) if !service.movable => Some(format!(
            "waiting for node {node}: it is down, and {} cannot move (it has volumes or host folders, or is pinned to the node by name)",
            service.name
        )),
        _ => None,
    }
}

/// The nodes that did not answer (or were not observed), in name order.
fn silent_nodes<'a>(desired: &'a Desired, observed: &'a Observed) -> Vec<&'a str> {
    let mut silent: BTreeSet<&str> = desired
        .nodes
        .keys()
        .filter(|name| {
            observed
                .nodes
                .get(*name)
                .is_none_or(|o| o.unreachable.is_some())
        })
        .map(String::as_str)
        .collect();
    silent.extend(
        observed
            .nodes
            .iter()
            .filter(|(_, o)| o.unreachable.is_some())
            .map(|(name, _)| name.as_str()),
    );
    silent.into_iter().collect()
}

fn placeholder(service: &str, replica: u32) -> OwnedContainer {
    OwnedContainer {
        id: String::new(),
        name: String::new(),
        service: service.to_string(),
        replica,
        spec_hash: String::new(),
        image_digest: String::new(),
        commit: String::new(),
        running: true,
        created: 0,
        healthy: true,
        source: SourceId::default(),
        exit_code: None,
        spec_fields: String::new(),
        files_hash: None,
        in_rotation: false,
        replaces: None,
    }
}

fn no_node_reason(
    desired: &Desired,
    service: &DesiredService,
    matching: &[&Node],
    observed: &Observed,
    fixed_port: bool,
) -> String {
    if desired.nodes.is_empty() {
        return "the manifests declare no nodes".into();
    }
    if matching.is_empty() {
        let tags: Vec<&str> = service.tags.iter().map(String::as_str).collect();
        return format!(
            "no node carries all of the tags [{}] and meets the constraints",
            tags.join(", ")
        );
    }
    let down: Vec<&str> = matching
        .iter()
        .filter(|n| {
            observed
                .nodes
                .get(&n.name)
                .is_none_or(|o| o.unreachable.is_some())
        })
        .map(|n| n.name.as_str())
        .collect();
    if fixed_port {
        return format!(
            "every matching node already runs a replica publishing the same host port{}",
            if down.is_empty() {
                String::new()
            } else {
                format!(" (unreachable: {})", down.join(", "))
            }
        );
    }
    format!("every matching node is unreachable ({})", down.join(", "))
}

/// A name pier would create that a container it does not own already has is
/// an error for that replica, never a removal.
fn check_names(desired: &Desired, observed: &Observed, result: &mut ServicePlan) {
    let mut clashes = Vec::new();
    result.changes.retain(|change| {
        let (node, name, replica) = match change {
            Change::Create { node, name, replica } => (node, name.clone(), *replica),
            // A replacement sets the old container aside (stop-first) or
            // starts the new one beside it (start-first) under these names.
            Change::Replace { node, name, replica, old, start_first, .. } => {
                let temporary = if *start_first {
                    successor_name(name, &old.name)
                } else {
                    format!("{name}-pier-old")
                };
                if old.name == temporary {
                    return true;
                }
                (node, temporary, *replica)
            }
            _ => return true,
        };
        let name = &name;
        let clash = observed.nodes.get(node).is_some_and(|o| o.foreign_names.contains(name));
        if clash {
            clashes.push(Blocked {
                replica: Some(replica),
                node: Some(node.clone()),
                reason: format!(
                    "a container named `{name}` exists on {node} and is not pier's (no `{}={}` label); rename or remove it",
                    container::LABEL_STACK,
                    desired.stack
                ),
            });
        }
        !clash
    });
    result.blocked.extend(clashes);
}

/// Owned containers of services no longer declared.
fn prune(desired: &Desired, observed: &Observed) -> Vec<ServicePlan> {
    let mut by_service: BTreeMap<String, ServicePlan> = BTreeMap::new();
    for (node, observation) in &observed.nodes {
        for container in observation.owned.iter().filter(|c| {
            !desired.services.contains_key(&c.service) && !desired.frozen.contains_key(&c.service)
        }) {
            let entry = by_service
                .entry(container.service.clone())
                .or_insert_with(|| ServicePlan {
                    service: container.service.clone(),
                    declared: false,
                    changes: Vec::new(),
                    blocked: Vec::new(),
                    unchanged: 0,
                    parallelism: u32::MAX,
                    current: Vec::new(),
                    replicas: Vec::new(),
                    batches: Vec::new(),
                });
            match &observation.unreachable {
                None => entry.changes.push(remove(
                    node,
                    container,
                    "service no longer in the manifests",
                )),
                Some(reason) => entry.blocked.push(Blocked {
                    replica: Some(container.replica),
                    node: Some(node.clone()),
                    reason: format!("cannot remove, node unreachable: {reason}"),
                }),
            }
        }
    }
    by_service.into_values().collect()
}

#[cfg(test)]
mod tests;
