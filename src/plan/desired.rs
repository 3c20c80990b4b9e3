//! Lowering the manifests to the desired state: every service with its
//! image pinned, its container specification, networks and the order it
//! waits in. Pure: the pass hands in how each image was pinned, in the
//! planner's own terms.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::manifest::model::DependsOnCondition;
use crate::manifest::{self, Manifest};
use crate::plan::{self, Desired, DesiredService};

/// How a service's image was pinned for this pass, as the pass found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageChoice {
    Pinned(PinnedImage),
    /// Not pinned: the service is left as it is, for this reason.
    Unavailable(String),
}

/// An image by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedImage {
    /// `registry/repository@sha256:…` (or a local image id), what
    /// containers are created from.
    pub pinned: String,
    pub digest: String,
}

/// The networks a service's replicas join, by engine name, each with the
/// names they answer to there: their own (the service's name and link
/// aliases) and the aliases the service gives that network. The first is
/// the one a replica is created on.
fn service_networks(
    manifest: &Manifest,
    stack: &str,
    service: &manifest::model::Service,
    own_aliases: &[String],
) -> Vec<(String, Vec<String>)> {
    manifest
        .service_networks(service)
        .into_iter()
        .map(|(key, extra)| {
            let mut aliases: Vec<String> = own_aliases.iter().chain(extra).cloned().collect();
            // On a network shared with other stacks, `<service>.<stack>`
            // tells this stack's service from theirs (their links use it).
            if manifest.networks.get(key).is_some_and(|n| n.external) {
                aliases.push(format!("{}.{stack}", service.name));
            }
            aliases.sort();
            aliases.dedup();
            (manifest.network_engine_name(stack, key).0, aliases)
        })
        .collect()
}

/// A service's links to other stacks' services, as each network shared
/// with other stacks takes them: `db.other:alias`, so `alias` resolves to
/// the replicas answering to `db.other` there.
fn other_stack_links(
    manifest: &Manifest,
    stack: &str,
    service: &manifest::model::Service,
) -> BTreeMap<String, Vec<String>> {
    let links: Vec<String> = service
        .links
        .iter()
        .filter_map(|link| {
            let (name, _) = manifest.other_stack_link(link)?;
            Some(format!("{}:{}", link.service, link.other_stack_alias(name)))
        })
        .collect();
    if links.is_empty() {
        return BTreeMap::new();
    }
    manifest
        .external_networks(service)
        .into_iter()
        .map(|key| (manifest.network_engine_name(stack, key).0, links.clone()))
        .collect()
}

/// Whether a service's replicas may start on another node when theirs is
/// down: no volume or host folder holds data there, and no constraint pins
/// it to that node by name.
fn movable(
    service: &manifest::model::Service,
    spec: &crate::plan::container::ContainerSpec,
) -> bool {
    use manifest::model::ConstraintSubject;
    spec.mounts.is_empty()
        && !service
            .constraints
            .iter()
            .any(|c| c.equal && c.subject == ConstraintSubject::NodeName)
}

/// The desired state: services with pinned images; services whose image
/// could not be resolved are frozen with the reason.
pub fn desired_state(
    manifest: &Manifest,
    stack: &str,
    commit: &str,
    images: &BTreeMap<String, ImageChoice>,
) -> Desired {
    let mut desired = Desired {
        stack: stack.to_string(),
        commit: commit.to_string(),
        nodes: manifest.nodes.clone(),
        services: BTreeMap::new(),
        frozen: BTreeMap::new(),
        source: Default::default(),
        network: manifest.network.clone(),
        networks: manifest.networks.clone(),
    };
    // What other services wait for of each service, found once (not per
    // service, which would be quadratic in the number of services).
    let mut awaited: BTreeMap<&str, BTreeSet<DependsOnCondition>> = BTreeMap::new();
    for other in manifest.services.values() {
        for (dependency, condition) in &other.depends_on {
            if *condition != DependsOnCondition::ServiceStarted {
                awaited.entry(dependency).or_default().insert(*condition);
            }
        }
    }
    for service in manifest.services.values() {
        let Some(image) = service.image.as_deref() else {
            desired.frozen.insert(
                service.name.clone(),
                "no image yet: it is built by the pipeline".into(),
            );
            continue;
        };
        let resolved = match images.get(&service.name) {
            Some(ImageChoice::Pinned(pinned)) => pinned,
            Some(ImageChoice::Unavailable(reason)) => {
                desired.frozen.insert(service.name.clone(), reason.clone());
                continue;
            }
            None => continue,
        };
        let own_aliases = plan::spec::aliases(manifest, &service.name);
        let mut networks = service_networks(manifest, stack, service, &own_aliases);
        // The router is on the rotation network alone: it reaches the
        // routed replicas in rotation, and nothing else.
        if service.name == manifest::router::SERVICE {
            networks = vec![(manifest.network.routes_name(stack), own_aliases.clone())];
        }
        let (network, aliases) = networks
            .first()
            .cloned()
            .unwrap_or_else(|| (manifest.network.name(stack), own_aliases.clone()));
        let mut spec = plan::spec::container_spec(
            stack,
            service,
            &resolved.pinned,
            aliases,
            &manifest.volumes,
            &network,
        );
        spec.more_networks = networks.into_iter().skip(1).collect();
        spec.network_links = other_stack_links(manifest, stack, service);
        spec.env.extend(plan::spec::link_env(manifest, service));
        spec.replica_links = plan::spec::replica_links(manifest, service);
        let mut after: Vec<String> = service.links.iter().map(|l| l.service.clone()).collect();
        after.extend(service.depends_on.keys().cloned());
        after.extend(service.volumes_from.iter().cloned());
        after.sort();
        after.dedup();
        desired.services.insert(
            service.name.clone(),
            DesiredService {
                name: service.name.clone(),
                hash: plan::spec::spec_hash(&spec),
                movable: movable(service, &spec),
                spec: Arc::new(spec),
                image_display: image.to_string(),
                digest: resolved.digest.clone(),
                replicas: service.replicas,
                hooks: service.hooks.clone(),
                lifecycle: service.lifecycle.clone(),
                strategy: service.strategy,
                tags: service.tags.clone(),
                constraints: service.constraints.clone(),
                update: service.update.clone(),
                sequential: service.sequential_deployment,
                after,
                waits_for: service
                    .depends_on
                    .iter()
                    .filter(|(_, c)| **c != DependsOnCondition::ServiceStarted)
                    .map(|(dependency, c)| (dependency.clone(), *c))
                    .collect(),
                run_to_completion: awaited
                    .get(service.name.as_str())
                    .is_some_and(|c| c.contains(&DependsOnCondition::ServiceCompletedSuccessfully)),
                // Services whose volumes others mount are listed like
                // awaited ones: the plan says where their replicas stay.
                awaited: awaited.contains_key(service.name.as_str())
                    || manifest
                        .services
                        .values()
                        .any(|other| other.volumes_from.contains(&service.name)),
                autodestroy: service.autodestroy,
                never_pull: service.pull_policy == manifest::model::PullPolicy::Never,
                volumes_from: service.volumes_from.clone(),
                container_name: service.container_name.clone(),
                routed: service.route.is_some(),
                // An external network may be an overlay one too.
                keeps_successor_name: manifest.on_overlay(service)
                    || !manifest.external_networks(service).is_empty(),
            },
        );
    }
    freeze_volume_users(&mut desired);
    let mut done = BTreeSet::new();
    for service in manifest.services.values() {
        restart_with_dependencies(manifest, &mut desired, &service.name, &mut done);
    }
    desired
}

/// `depends_on.<svc>.restart: true`: the dependencies' spec hashes become
/// part of the dependent's spec (a label), so a replaced dependency replaces
/// the dependent after it. Dependencies are settled first, so a chain passes
/// a change along. A dependent of a service left as it is stays as it is.
fn restart_with_dependencies(
    manifest: &Manifest,
    desired: &mut Desired,
    name: &str,
    done: &mut BTreeSet<String>,
) {
    let Some(service) = manifest.services.get(name) else {
        return;
    };
    if service.restart_with.is_empty() || !done.insert(name.to_string()) {
        return;
    }
    for dependency in &service.restart_with {
        restart_with_dependencies(manifest, desired, dependency, done);
    }
    let mut hashes = Vec::new();
    for dependency in &service.restart_with {
        match desired.services.get(dependency) {
            Some(settled) => hashes.push(format!("{dependency}={}", settled.hash)),
            None => {
                if desired.services.remove(name).is_some() {
                    desired.frozen.insert(
                        name.to_string(),
                        format!("restarts with `{dependency}`, which is left as it is this pass"),
                    );
                }
                return;
            }
        }
    }
    if let Some(dependent) = desired.services.get_mut(name) {
        let spec = Arc::make_mut(&mut dependent.spec);
        spec.labels.insert(
            crate::plan::container::LABEL_RESTARTS_WITH.into(),
            hashes.join(","),
        );
        dependent.hash = plan::spec::spec_hash(spec);
    }
}

/// A service that mounts the volumes of a frozen one (`volumes_from`) is
/// left as it is too: where its source runs is not planned this pass, and
/// placing it without that would move its replicas away from their data.
fn freeze_volume_users(desired: &mut Desired) {
    loop {
        let frozen: Vec<(String, String)> = desired
            .services
            .values()
            .filter_map(|service| {
                let source = service
                    .volumes_from
                    .iter()
                    .find(|source| desired.frozen.contains_key(source.as_str()))?;
                Some((
                    service.name.clone(),
                    format!("mounts the volumes of `{source}`, which is left as it is this pass"),
                ))
            })
            .collect();
        if frozen.is_empty() {
            return;
        }
        for (name, reason) in frozen {
            desired.services.remove(&name);
            desired.frozen.insert(name, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::DesiredService;

    fn service(name: &str, volumes_from: &[&str]) -> DesiredService {
        DesiredService {
            name: name.into(),
            hooks: Default::default(),
            lifecycle: Default::default(),
            spec: Arc::default(),
            hash: String::new(),
            image_display: String::new(),
            digest: String::new(),
            replicas: Some(1),
            strategy: manifest::model::Strategy::EmptiestNode,
            tags: BTreeSet::new(),
            constraints: Vec::new(),
            update: Default::default(),
            sequential: false,
            after: Vec::new(),
            movable: true,
            waits_for: Vec::new(),
            run_to_completion: false,
            awaited: false,
            autodestroy: Default::default(),
            never_pull: false,
            volumes_from: volumes_from.iter().map(|s| s.to_string()).collect(),
            container_name: None,
            routed: false,
            keeps_successor_name: false,
        }
    }

    /// A frozen service freezes those that mount its volumes, and theirs.
    #[test]
    fn users_of_a_frozen_services_volumes_are_frozen_too() {
        let mut desired = Desired::default();
        for s in [
            service("web", &["data"]),
            service("backup", &["web"]),
            service("other", &[]),
        ] {
            desired.services.insert(s.name.clone(), s);
        }
        desired
            .frozen
            .insert("data".into(), "registry unreachable".into());
        freeze_volume_users(&mut desired);
        assert_eq!(desired.services.keys().collect::<Vec<_>>(), ["other"]);
        assert!(desired.frozen["web"].contains("`data`"));
        assert!(desired.frozen["backup"].contains("`web`"));
    }
}
