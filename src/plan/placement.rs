//! Where replicas go: the nodes a service may run on, how loaded each is,
//! and Tutum's strategies (`emptiest_node`, `high_availability`,
//! `every_node`) over them.

#[allow(unused_imports)]
use super::*;

impl Load {
    pub(super) fn new(desired: &Desired, observed: &Observed) -> Self {
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
    pub(super) fn slot(&mut self, node: &str) -> usize {
        if let Some(&slot) = self.slots.get(node) {
            return slot;
        }
        self.slots.insert(node.to_string(), self.total.len());
        self.total.push(0);
        self.reachable.push(false);
        self.total.len() - 1
    }
    pub(super) fn add(&mut self, node: &str, delta: i64) {
        let slot = self.slot(node);
        self.total[slot] += delta;
    }
}

impl Matching<'_> {
    pub(super) fn position(&self, node: &str) -> Option<usize> {
        self.positions.get(node).copied()
    }
}

impl<'a> Index<'a> {
    pub(super) fn new(desired: &'a Desired, observed: &'a Observed) -> Self {
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
    pub(super) fn matching(
        &mut self,
        desired: &'a Desired,
        service: &DesiredService,
    ) -> Rc<Matching<'a>> {
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

#[allow(clippy::too_many_arguments)]
pub(super) fn every_node(
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
pub(super) fn scaled(
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
pub(super) fn missing_may_run_elsewhere(
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
pub(super) fn silent_nodes<'a>(desired: &'a Desired, observed: &'a Observed) -> Vec<&'a str> {
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

pub(super) fn no_node_reason(
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
