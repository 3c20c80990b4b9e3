//! The planner: pair desired and observed replicas per service, in
//! dependency order, into creations, replacements and removals; prune
//! what no longer is declared; refuse what must not run at all.

#[allow(unused_imports)]
use super::*;

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
pub(super) fn nodes_after(service_plan: &ServicePlan) -> BTreeSet<String> {
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
pub(super) fn from_other_source(desired: &Desired, container: &OwnedContainer) -> bool {
    !container.source.hash.is_empty()
        && !desired.source.hash.is_empty()
        && container.source.hash != desired.source.hash
}

/// A refusal naming both sources, when containers of this stack come from
/// another repository or folder: two deployments share the stack name.
pub(super) fn other_source(desired: &Desired, observed: &Observed) -> Option<String> {
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

/// Services ordered so each comes after the ones it links to or depends on;
/// ties (and cycles, which validation rejects) by name.
pub(super) fn dependency_order(desired: &Desired) -> Vec<String> {
    let mut order = Vec::new();
    let mut placed = BTreeSet::new();
    let mut visiting = BTreeSet::new();
    pub(super) fn visit(
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

/// The name a stop-first replacement keeps the old container under until
/// its successor is healthy.
pub(super) fn is_set_aside(name: &str) -> bool {
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
pub(super) fn is_unfinished_successor(
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
pub(super) fn copy_rank(
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

pub(super) fn plan_service<'a>(
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
pub(super) fn replicas_after(
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

pub(super) fn unreachable_reason(observed: &Observed, node: &str) -> String {
    observed
        .nodes
        .get(node)
        .and_then(|o| o.unreachable.clone())
        .unwrap_or_else(|| "not observed".into())
}

pub(super) fn remove(node: &str, container: &OwnedContainer, reason: &str) -> Change {
    Change::Remove {
        node: node.to_string(),
        container: container.clone(),
        reason: reason.to_string(),
    }
}

/// The lowest replica numbers not in use.
pub(super) fn free_replicas(kept: &[(String, OwnedContainer)], count: usize) -> Vec<u32> {
    let used: BTreeSet<u32> = kept.iter().map(|(_, c)| c.replica).collect();
    (1..).filter(|r| !used.contains(r)).take(count).collect()
}

pub(super) fn placeholder(service: &str, replica: u32) -> OwnedContainer {
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
        spec_fields: Default::default(),
        files_hash: None,
        in_rotation: false,
        replaces: None,
    }
}

/// A name pier would create that a container it does not own already has is
/// an error for that replica, never a removal.
pub(super) fn check_names(desired: &Desired, observed: &Observed, result: &mut ServicePlan) {
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
pub(super) fn prune(desired: &Desired, observed: &Observed) -> Vec<ServicePlan> {
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
