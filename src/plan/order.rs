//! The rollout order as data: which services go together (waves) and, in
//! each service, which changes go together (batches). The planner decides
//! it, `apply` walks it, and `diff` shows it, so what a diff promises is
//! the order that runs.
//!
//! A wave starts once the one before it is done: a service comes after
//! every service it links to, depends on or mounts volumes from. In a
//! service, removals go first, then creations (and reloads, rotations), all
//! at once within the engine's bounds; then replacements, `parallelism` at
//! a time, each batch healthy before the next starts.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Change, Desired, Plan, ServicePlan};

/// Services rolled out together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Wave {
    pub services: Vec<String>,
}

impl Plan {
    /// Decide the order: waves over the services with changes, batches in
    /// each. Called once the changes are final.
    pub(super) fn order(&mut self, desired: &Desired) {
        for service in &mut self.services {
            service.batches = batches(service);
        }
        self.waves = waves(desired, &self.services);
    }

    /// Drop from the order what no longer has changes, and batch again
    /// what changed (replicas held back after the plan was made).
    pub(super) fn reorder(&mut self) {
        let mut with_changes = std::collections::BTreeSet::new();
        for service in &mut self.services {
            service.batches = batches(service);
            if !service.changes.is_empty() {
                with_changes.insert(service.service.clone());
            }
        }
        for wave in &mut self.waves {
            wave.services.retain(|s| with_changes.contains(s));
        }
        self.waves.retain(|w| !w.services.is_empty());
    }
}

/// The services with changes, in waves by dependency depth. Services the
/// desired state does not know (being pruned) go in a last wave.
fn waves(desired: &Desired, services: &[ServicePlan]) -> Vec<Wave> {
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    // The plan lists services in dependency order already, so one pass suffices.
    for service_plan in services {
        let d = desired
            .services
            .get(&service_plan.service)
            .map(|s| {
                s.after
                    .iter()
                    .filter_map(|a| depth.get(a.as_str()))
                    .map(|d| d.saturating_add(1))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(usize::MAX);
        depth.insert(&service_plan.service, d);
    }
    let mut by_depth: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for service_plan in services.iter().filter(|s| !s.changes.is_empty()) {
        by_depth
            .entry(depth[service_plan.service.as_str()])
            .or_default()
            .push(service_plan.service.clone());
    }
    by_depth
        .into_values()
        .map(|services| Wave { services })
        .collect()
}

/// A service's changes in the batches they run in, as indices into its
/// `changes`: removals, then creations, reloads and rotations, then
/// replacements `parallelism` at a time.
fn batches(service: &ServicePlan) -> Vec<Vec<usize>> {
    if service.changes.is_empty() {
        return Vec::new();
    }
    // One pass over the changes: most services have one kind of change.
    let (mut removes, mut creates, mut replaces) = (Vec::new(), Vec::new(), Vec::new());
    for (i, change) in service.changes.iter().enumerate() {
        match change {
            Change::Remove { .. } => removes.push(i),
            Change::Replace { .. } => replaces.push(i),
            _ => creates.push(i),
        }
    }
    let mut batches: Vec<Vec<usize>> = [removes, creates]
        .into_iter()
        .filter(|b| !b.is_empty())
        .collect();
    batches.extend(
        replaces
            .chunks(service.parallelism.max(1) as usize)
            .map(<[usize]>::to_vec),
    );
    batches
}
