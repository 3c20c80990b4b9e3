//! What a pass tells the world: the status document (services with their
//! conditions, nodes, routes), the metrics, and the notifications the
//! change of either calls for.

use super::*;
#[allow(unused_imports)]
use crate::pass::Connect;

/// A pass's deploy as the daemon shows it: services about to change are
/// `Progressing` in the status, and every engine call is logged.
pub(super) struct PassWatch<'a> {
    pub(super) shared: &'a Shared,
    pub(super) commit: &'a str,
    /// The revision applied last: a plan towards it only heals, unless it
    /// replaces a container (a new digest of a followed tag).
    pub(super) last_good: Option<&'a str>,
    /// The rollout goes back to an earlier revision (a rollback commit, a hold).
    pub(super) rollback: bool,
}

impl<R> crate::pass::deploy::Watch<R> for PassWatch<'_> {
    fn planned(&self, planned: &Planned<R>) {
        let plan = &planned.plan;
        if !plan.refused.is_empty() || plan.is_empty() {
            return;
        }
        let changing: BTreeSet<&str> = plan
            .services
            .iter()
            .filter(|s| !s.changes.is_empty())
            .map(|s| s.service.as_str())
            .collect();
        let changes = plan.count(|_| true);
        let replaces = plan.count(|c| matches!(c, crate::plan::Change::Replace { .. }));
        let rollout = self.last_good != Some(self.commit) || replaces > 0;
        {
            let mut status = self.shared.status.write().expect("status lock");
            for service in status.services.iter_mut() {
                if changing.contains(service.name.as_str()) {
                    service.condition = Condition::Progressing;
                    service.reason = if rollout {
                        format!("rolling out {}", short(self.commit))
                    } else {
                        format!("healing towards {}", short(self.commit))
                    };
                }
            }
        }
        self.shared.changed();
        if rollout && self.rollback {
            self.shared.notifier.rollback_started(self.commit, changes);
        } else if rollout {
            self.shared.notifier.deploy_started(self.commit, changes);
        }
        info!(commit = %short(self.commit), changes, "applying");
    }

    fn step(&self, record: &apply::StepRecord) {
        if record.ok {
            info!(service = %record.service, node = %record.node, action = %record.action, target = %record.target, "step ok");
        } else {
            warn!(service = %record.service, node = %record.node, action = %record.action, target = %record.target, message = %record.message, "step failed");
        }
    }
}

impl<C: Connect> Reconciler<C> {
    pub(super) fn publish_stalled(&self, reason: &str) {
        let mut status = self.shared.status.write().expect("status lock");
        status.stalled = Some(reason.to_string());
        for service in status.services.iter_mut() {
            service.condition = Condition::Stalled;
            service.reason = reason.to_string();
        }
    }

    /// Conditions, status document and metrics after a pass.
    pub(super) fn publish(
        &self,
        loaded: &Loaded,
        planned: &Planned<C::Runtime>,
        observed: &Observed,
        report: &ApplyReport,
        target: &Target,
    ) {
        let running = running_by_service(observed);
        let mut services = Vec::new();
        for service in loaded.manifest.services.values() {
            let desired = loaded.manifest.desired_replicas(service);
            let desired_service = planned.desired.services.get(&service.name);
            let service_plan = planned
                .plan
                .services
                .iter()
                .find(|p| p.service == service.name);
            let (condition, reason) = if let Some(failure) = report.failed.get(&service.name) {
                let condition = if report.transient.contains(&service.name) {
                    Condition::Degraded
                } else {
                    Condition::Stalled
                };
                (condition, failure.clone())
            } else if let Some(reason) = target.refused.as_ref() {
                (Condition::Stalled, reason.clone())
            } else if let Some(reason) = planned.desired.frozen.get(&service.name) {
                // Left as it is on purpose (its rollout was rolled back, or
                // someone froze it): waiting for a person, not for a cause
                // that passes by itself.
                let condition = if target.frozen.contains_key(&service.name)
                    || self.user_frozen.contains(&service.name)
                {
                    Condition::Stalled
                } else {
                    Condition::Degraded
                };
                (condition, reason.clone())
            } else if let Some(blocked) = service_plan.and_then(|p| p.blocked.first()) {
                (Condition::Degraded, blocked.reason.clone())
            } else {
                (Condition::Ready, String::new())
            };
            let (name, recorded, why) = (service.name.clone(), condition, reason.clone());
            self.shared.store.write(move |store| {
                if let Err(e) = store.set_condition(&name, recorded.as_str(), &why) {
                    warn!(error = %e, "cannot record a condition");
                }
            });
            services.push(ServiceStatus {
                name: service.name.clone(),
                desired,
                running: running.get(service.name.as_str()).copied().unwrap_or(0),
                image: service.image.clone().unwrap_or_default(),
                // A service left as it is (frozen) shows what it runs.
                digest: desired_service
                    .map(|d| d.digest.clone())
                    .or_else(|| running_digest(observed, &service.name))
                    .unwrap_or_default(),
                autoredeploy: service.autoredeploy,
                condition,
                reason,
                route: service
                    .route
                    .as_ref()
                    .map(|r| crate::daemon::status::RouteStatus {
                        hosts: r.hosts.clone(),
                        path: r.path.clone(),
                        port: r.port,
                        backends: in_rotation_of(observed, &service.name),
                    }),
                nodes: observed
                    .nodes
                    .iter()
                    .map(|(node, o)| {
                        let running = o
                            .owned
                            .iter()
                            .filter(|c| c.running && c.service == service.name)
                            .count();
                        (node.clone(), running)
                    })
                    .filter(|(_, running)| *running > 0)
                    .collect(),
            });
        }
        let engines = self
            .shared
            .engine_versions
            .lock()
            .expect("engine versions lock")
            .clone();
        let nodes = observed
            .nodes
            .iter()
            .map(|(name, o)| NodeStatus {
                name: name.clone(),
                reachable: o.unreachable.is_none(),
                down: o.unreachable.is_some() && planned.down.contains(name),
                reason: o.unreachable.clone().unwrap_or_default(),
                containers: o.owned.iter().filter(|c| c.running).count(),
                tags: loaded
                    .manifest
                    .nodes
                    .get(name)
                    .map(|n| n.tags.iter().cloned().collect())
                    .unwrap_or_default(),
                engine: engines.get(name).cloned().unwrap_or_default(),
            })
            .collect();
        self.shared
            .metrics
            .set_containers(observed.nodes.iter().flat_map(|(node, o)| {
                let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
                for c in &o.owned {
                    let state = if c.running { "running" } else { "stopped" };
                    *counts.entry((c.service.as_str(), state)).or_default() += 1;
                }
                counts
                    .into_iter()
                    .map(move |((service, state), n)| (service, node.as_str(), state, n))
                    .collect::<Vec<_>>()
            }));
        self.shared.metrics.set_routes(route_backends(&services));
        let mut status = self.shared.status.write().expect("status lock");
        status.services = services;
        status.nodes = nodes;
        status.stalled = target.refused.clone();
        if status.revision.is_none() && target.refused.is_some() {
            status.revision = Some(loaded.commit.clone());
        }
    }
}

/// Each routed host (and path) with its service, its backends in rotation
/// and its desired replicas.
pub(super) fn route_backends(services: &[ServiceStatus]) -> Vec<(String, &str, i64, i64)> {
    services
        .iter()
        .filter_map(|s| s.route.as_ref().map(|r| (s, r)))
        .flat_map(|(s, r)| {
            r.addresses()
                .map(move |route| (route, s.name.as_str(), r.backends as i64, s.desired as i64))
        })
        .collect()
}

/// Replicas of `service` the router sends requests to.
pub(super) fn in_rotation_of(observed: &Observed, service: &str) -> usize {
    observed
        .nodes
        .values()
        .flat_map(|node| &node.owned)
        .filter(|c| c.service == service && c.running && c.in_rotation)
        .count()
}

/// The digest a running replica of `service` was created from.
fn running_digest(observed: &Observed, service: &str) -> Option<String> {
    observed
        .nodes
        .values()
        .flat_map(|node| &node.owned)
        .find(|c| c.running && c.service == service && !c.image_digest.is_empty())
        .map(|c| c.image_digest.clone())
}

pub(super) fn running_by_service(observed: &Observed) -> BTreeMap<&str, usize> {
    let mut running = BTreeMap::new();
    for node in observed.nodes.values() {
        for c in node.owned.iter().filter(|c| c.running) {
            *running.entry(c.service.as_str()).or_default() += 1;
        }
    }
    running
}
