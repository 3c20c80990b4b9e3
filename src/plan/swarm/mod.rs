//! The cluster a stack's overlay network needs: which nodes must form or
//! join a Docker Swarm, and whether the overlay network itself exists.
//!
//! Docker's overlay driver carries containers' traffic between hosts once
//! the engines form a swarm; pier uses it for plain containers (attachable
//! networks), never for swarm services. Pure: observation in, steps out.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// One engine's place in a swarm, as `docker info` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwarmMembership {
    /// `inactive`, `pending`, `active`, `error` or `locked`.
    pub state: String,
    /// The swarm's id, when active.
    pub cluster: Option<String>,
    /// Whether this engine is a manager.
    pub manager: bool,
    /// `host:port` managers listen on, as this engine knows them.
    pub managers: Vec<String>,
    /// The address the engine gives the swarm.
    pub address: Option<String>,
    /// This engine's node id in its swarm.
    pub node_id: Option<String>,
    /// A worker its managers have promoted already: it counts as a
    /// manager, though it takes a while (the engine's next certificate
    /// renewal) to act as one.
    pub promoted: bool,
}

/// What the stack needs of the cluster: its overlay networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overlay {
    /// The stack's overlay networks: its own and its rotation network when
    /// they are overlays, and the named overlay networks its services join.
    pub networks: Vec<OverlayNetwork>,
}

/// One overlay network pier makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverlayNetwork {
    /// Its name on the engines.
    pub name: String,
    /// IPsec between hosts (`driver_opts: {encrypted: …}`).
    pub encrypted: bool,
    /// No route out of it.
    pub internal: bool,
}

/// A step towards one swarm across the stack's nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum SwarmStep {
    /// Start a new swarm, with `node` its first manager.
    Init { node: String },
    /// `node` joins the swarm through `via`, a manager among the stack's nodes.
    Join {
        node: String,
        via: String,
        manager: bool,
    },
    /// `node`, a worker of the swarm, becomes a manager: `via`, a manager,
    /// promotes it.
    Promote { node: String, via: String },
    /// `node`, a manager, becomes a worker: one that left the manifests
    /// first, so it can leave without costing the swarm a manager's vote,
    /// or one of an even number of managers (see `keep_managers_odd`).
    Demote { node: String, via: String },
    /// `node` left the manifests and is drained: it leaves the swarm, and
    /// `via`, a manager, forgets it. Done after the pass's other changes.
    Leave { node: String, via: String },
    /// Create the overlay network on `node`, a manager.
    CreateNetwork {
        node: String,
        network: String,
        encrypted: bool,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        internal: bool,
    },
}

/// The swarm steps of a pass, and the nodes that cannot take part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SwarmPlan {
    pub steps: Vec<SwarmStep>,
    /// Nodes left out, with why (already in another swarm, in a bad state).
    pub blocked: BTreeMap<String, String>,
    /// Nodes that left the manifests and stay in the swarm, with why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub staying: BTreeMap<String, String>,
    /// A step waits for the engines to settle (a promotion under way):
    /// worth another pass soon.
    #[serde(skip)]
    pub settling: bool,
}

impl SwarmStep {
    /// Whether the step runs after the pass's other changes (a node leaves
    /// once its replicas are gone), not before them.
    pub fn runs_last(&self) -> bool {
        matches!(self, SwarmStep::Demote { .. } | SwarmStep::Leave { .. })
    }
}

/// How many managers a swarm of `nodes` engines gets: 1, or 3 from 3 on
/// (a majority survives one lost manager).
pub fn managers_wanted(nodes: usize) -> usize {
    if nodes >= 3 { 3 } else { 1 }
}

/// Plan the swarm for `nodes` (every node of the stack, by name) from what
/// the reachable ones said (`observed`; unreachable nodes are absent and
/// wait). `existing`: the overlay networks the managers hold already.
/// `leaving`: the reachable nodes that left the manifests.
pub fn plan(
    nodes: &BTreeSet<String>,
    observed: &BTreeMap<String, SwarmMembership>,
    overlay: &Overlay,
    existing: &BTreeSet<String>,
    leaving: &BTreeMap<String, Leaving>,
) -> SwarmPlan {
    let mut plan = SwarmPlan::default();
    let observed = &with_worker_clusters(observed);
    let reachable: Vec<&String> = nodes.iter().filter(|n| observed.contains_key(*n)).collect();
    for node in &reachable {
        let state = observed[*node].state.as_str();
        if !matches!(state, "inactive" | "active") {
            plan.blocked.insert(
                (*node).clone(),
                format!("its swarm state is `{state}`; fix it on the node (docker info shows why), then pier goes on"),
            );
        }
    }
    // The swarm to keep: the one most of the stack's nodes are in (ties go
    // to the one of the first node by name). Others' nodes are never moved.
    let mut sizes: BTreeMap<&str, (usize, &String)> = BTreeMap::new();
    for node in &reachable {
        let membership = &observed[*node];
        if let (Some(cluster), "active") =
            (membership.cluster.as_deref(), membership.state.as_str())
        {
            let entry = sizes.entry(cluster).or_insert((0, node));
            entry.0 += 1;
        }
    }
    let kept = sizes
        .iter()
        .max_by(|a, b| a.1.0.cmp(&b.1.0).then(b.1.1.cmp(a.1.1)))
        .map(|(cluster, _)| cluster.to_string());
    let in_kept = |node: &str| {
        observed
            .get(node)
            .is_some_and(|m| m.state == "active" && m.cluster == kept)
    };
    for node in &reachable {
        let membership = &observed[*node];
        if membership.state == "active" && membership.cluster != kept {
            plan.blocked.insert(
                (*node).clone(),
                format!(
                    "it is in another swarm ({}); pier never leaves or joins a swarm on its own: run `docker swarm leave` there if it should join this stack's",
                    match membership.cluster.as_deref() {
                        Some(cluster) => short(cluster).to_string(),
                        None => format!("managed from {}", membership.managers.join(", ")),
                    }
                ),
            );
        }
    }
    let wanted = managers_wanted(nodes.len());
    let mut managers: Vec<String> = reachable
        .iter()
        .filter(|n| in_kept(n) && observed[**n].manager)
        .map(|n| (*n).clone())
        .collect();
    let promoted = reachable
        .iter()
        .filter(|n| in_kept(n) && !observed[**n].manager && observed[**n].promoted)
        .count();
    let joining: Vec<&String> = reachable
        .iter()
        .copied()
        .filter(|n| observed[*n].state == "inactive" && !plan.blocked.contains_key(*n))
        .collect();
    let mut joining = joining.into_iter();
    if kept.is_none() {
        let Some(first) = joining.next() else {
            return plan;
        };
        plan.steps.push(SwarmStep::Init {
            node: first.clone(),
        });
        managers.push(first.clone());
    }
    let Some(via) = managers.first().cloned() else {
        // A swarm whose managers are none of the stack's nodes: joining
        // it would need a manager pier cannot reach through the manifests.
        for node in joining {
            plan.blocked.insert(
                node.clone(),
                "the swarm the other nodes are in has no manager among this stack's nodes".into(),
            );
        }
        return plan;
    };
    // Managers come in odd numbers: two can lose neither (a majority of two
    // is both), so a joiner becomes a manager only when the joiners make
    // up the count wanted; otherwise they join as workers.
    // Workers already in the swarm count too: a stack that grew from two
    // nodes to three gets its three managers by promoting one.
    let workers: Vec<&String> = reachable
        .iter()
        .copied()
        .filter(|n| {
            in_kept(n)
                && !observed[*n].manager
                && !observed[*n].promoted
                && !plan.blocked.contains_key(*n)
        })
        .collect();
    let joiners: Vec<&String> = joining.collect();
    let counted = managers.len() + promoted;
    let target = if counted + workers.len() + joiners.len() >= wanted {
        wanted
    } else {
        counted
    };
    let mut count = counted;
    for node in workers {
        if count >= target {
            break;
        }
        count += 1;
        plan.steps.push(SwarmStep::Promote {
            node: node.clone(),
            via: via.clone(),
        });
    }
    for node in joiners {
        let manager = count < target;
        if manager {
            count += 1;
        }
        plan.steps.push(SwarmStep::Join {
            node: node.clone(),
            via: via.clone(),
            manager,
        });
    }
    for network in &overlay.networks {
        if !existing.contains(&network.name) {
            plan.steps.push(SwarmStep::CreateNetwork {
                node: via.clone(),
                network: network.name.clone(),
                encrypted: network.encrypted,
                internal: network.internal,
            });
        }
    }
    plan_leaving(&mut plan, observed, leaving, kept.as_deref(), &via);
    if kept.is_some() && promoted == 0 && count == counted && reachable.len() == nodes.len() {
        keep_managers_odd(&mut plan, &observed[&via], &managers);
    }
    plan
}

/// An even number of managers survives no more lost managers than one
/// fewer (a majority of two is both), and has one more to lose: a stack
/// that shrank from three nodes to two keeps one manager, not two. The
/// last by name is demoted, never `managers[0]`, the one steps go through.
///
/// Only when the swarm's own list of managers (as `via` knows it, less
/// those leaving in this pass) is exactly `managers`, the stack's
/// reachable ones: a manager pier cannot see still has a vote.
fn keep_managers_odd(plan: &mut SwarmPlan, via: &SwarmMembership, managers: &[String]) {
    let leaving_managers = plan
        .steps
        .iter()
        .filter(|step| matches!(step, SwarmStep::Demote { .. }))
        .count();
    let in_swarm = via.managers.len().saturating_sub(leaving_managers);
    if managers.len() < 2 || managers.len() % 2 == 1 || in_swarm != managers.len() {
        return;
    }
    let (first, last) = (&managers[0], &managers[managers.len() - 1]);
    plan.steps.push(SwarmStep::Demote {
        node: last.clone(),
        via: first.clone(),
    });
}

/// Nodes that left the manifests, are drained and are in the stack's swarm
/// leave it through `via`; a manager is demoted first. The swarm's last
/// manager among them stays.
fn plan_leaving(
    plan: &mut SwarmPlan,
    stack_nodes: &BTreeMap<String, SwarmMembership>,
    leaving: &BTreeMap<String, Leaving>,
    kept: Option<&str>,
    via: &str,
) {
    // A worker's swarm is known through the managers it knows, which may
    // be among the stack's nodes.
    let mut all = stack_nodes.clone();
    all.extend(
        leaving
            .iter()
            .map(|(node, l)| (node.clone(), l.membership.clone())),
    );
    let all = with_worker_clusters(&all);
    for node in leaving.keys() {
        let (node, membership) = (node.clone(), &all[node]);
        if membership.state != "active" || membership.cluster.as_deref() != kept {
            continue;
        }
        let others = &leaving[&node].overlay_containers;
        if let Some(first) = others.first() {
            let more = if others.len() > 1 { ", …" } else { "" };
            plan.staying.insert(
                node,
                format!("it still has containers on overlay networks ({first}{more}); it leaves once they are gone"),
            );
            continue;
        }
        if !membership.manager && membership.promoted {
            // Promoted, not acting as a manager yet: the swarm can neither
            // demote it nor let it go without a vote until it does.
            plan.staying.insert(
                node,
                "it was just promoted to manager; it is demoted and leaves once the engine acts as one (within a minute)".into(),
            );
            plan.settling = true;
            continue;
        }
        if membership.manager {
            plan.steps.push(SwarmStep::Demote {
                node: node.clone(),
                via: via.to_string(),
            });
        }
        plan.steps.push(SwarmStep::Leave {
            node,
            via: via.to_string(),
        });
    }
}

/// A node that left the manifests, as the swarm plan needs it.
#[derive(Debug, Clone, Default)]
pub struct Leaving {
    pub membership: SwarmMembership,
    /// Containers on it attached to an overlay network, other than the
    /// stack's own being drained: while any is, the node stays.
    pub overlay_containers: Vec<String>,
}

/// Only managers know their swarm's id; a worker is in the swarm of the
/// manager it knows, when that manager is one of the observed nodes.
fn with_worker_clusters(
    observed: &BTreeMap<String, SwarmMembership>,
) -> BTreeMap<String, SwarmMembership> {
    let host = |address: &str| {
        address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .trim_matches(['[', ']'])
            .to_string()
    };
    let clusters: BTreeMap<String, String> = observed
        .values()
        .filter(|m| m.manager)
        .filter_map(|m| Some((host(m.address.as_deref()?), m.cluster.clone()?)))
        .collect();
    observed
        .iter()
        .map(|(name, membership)| {
            let mut membership = membership.clone();
            if membership.state == "active" && membership.cluster.is_none() {
                membership.cluster = membership
                    .managers
                    .iter()
                    .find_map(|manager| clusters.get(&host(manager)).cloned());
            }
            (name.clone(), membership)
        })
        .collect()
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests;
