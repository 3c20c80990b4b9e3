//! Planning a loaded commit: connect, observe, resolve, lower to the
//! desired state and plan, touching nothing; `diff` is this and a render.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::future::join_all;

use super::connect::{Connect, Engines, connect_nodes, reachable};
use super::load::load_for_deploy;
use super::resolve::{ImageResolution, ask_registries, image_choices, with_local_images};
use super::{Loaded, PassError, PassInput, Planned, Prepared, Settings};
use crate::docker::Runtime;
use crate::manifest::{self, Manifest, Vars};
use crate::plan::desired::desired_state;
use crate::plan::{self, Desired, Observed};
use crate::registry::Registry;

/// Load, observe, resolve and plan. Touches nothing.
pub async fn prepare(settings: &Settings, vars: &Vars) -> Result<Prepared, PassError> {
    let registry = super::load::registry_in_background(settings);
    let loaded = load_for_deploy(settings, vars).await?;
    let registry = registry.await;
    let planned = plan_loaded(
        &Engines,
        &loaded,
        settings,
        &registry,
        &PassInput::default(),
    )
    .await;
    Ok(Prepared {
        manifest: loaded.manifest,
        desired: planned.desired,
        observed: planned.observed,
        plan: planned.plan,
        engines: planned.engines,
        registry,
        diagnostics: loaded.diagnostics,
        interpolated: loaded.interpolated,
    })
}

/// Connect, observe, resolve the images not pinned yet, and plan.
pub async fn plan_loaded<C: Connect>(
    connector: &C,
    loaded: &Loaded,
    settings: &Settings,
    registry: &Registry,
    input: &PassInput,
) -> Planned<C::Runtime> {
    let (manifest, pins) = (&loaded.manifest, &input.pins);
    let observation = async {
        let mut connections =
            connect_nodes(connector, manifest.nodes.values(), settings.engine_timeout).await;
        let retired: Vec<&manifest::model::Node> = input
            .retired
            .values()
            .filter(|n| !manifest.nodes.contains_key(&n.name))
            .collect();
        connections.extend(connect_nodes(connector, retired, settings.engine_timeout).await);
        let observed =
            crate::pass::observe::observe(&loaded.stack, &connections, settings.engine_timeout)
                .await;
        (connections, observed)
    };
    // The registries are asked while the nodes are observed: neither
    // waits for the other.
    let asking = ask_registries(manifest, registry, input.resolver.as_ref(), pins);
    let ((connections, mut observed), asked) = tokio::join!(observation, asking);
    for (name, observation) in observed.nodes.iter_mut() {
        observation.draining = !manifest.nodes.contains_key(name);
    }
    let engines = reachable(connections);
    let images = with_local_images(asked, &engines).await;
    let choices = image_choices(manifest, &images, pins);
    let mut desired = desired_state(manifest, &loaded.stack, &loaded.commit, &choices);
    desired.source = loaded.source.clone();
    for (service, reason) in &input.frozen {
        if desired.services.remove(service).is_some() {
            desired.frozen.insert(service.clone(), reason.clone());
        }
    }
    let transient = transient_reason(&images, &observed);
    let down = input
        .node_loss
        .as_ref()
        .map(|loss| loss.down(&observed, tokio::time::Instant::now().into_std()))
        .unwrap_or_default();
    let mut plan = plan::plan(
        &desired,
        &observed,
        &plan::Options {
            allow_empty: settings.allow_empty,
            down: down.clone(),
            adopt: settings.adopt,
            destroyed: input.destroyed.clone(),
        },
    );
    plan.refused
        .extend(platform_refusals(manifest, &engines).await);
    let mut transient = transient;
    if !desired.overlay_networks().is_empty() && plan.refused.is_empty() {
        plan = plan.with_swarm(plan_swarm(manifest, &desired, &engines, &observed).await);
        if plan.swarm.settling && transient.is_none() {
            transient = Some("a swarm change waits for the engines to settle".into());
        }
    }
    Planned {
        desired,
        observed,
        plan,
        engines,
        transient,
        down,
    }
}

/// A service with `platform` may run only on nodes of that platform:
/// each reachable node it may be placed on is asked its own, and one of
/// another platform (or one that cannot say) refuses the plan, naming
/// both. Nodes are asked only when a service names a platform.
async fn platform_refusals<R: Runtime>(
    manifest: &Manifest,
    engines: &BTreeMap<String, R>,
) -> Vec<String> {
    let wanted: Vec<&manifest::model::Service> = manifest
        .services
        .values()
        .filter(|s| s.platform.is_some())
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let asked = join_all(
        engines
            .iter()
            .map(|(name, engine)| async move { (name.clone(), engine.platform().await) }),
    )
    .await;
    let platforms: BTreeMap<String, _> = asked.into_iter().collect();
    let mut refusals = Vec::new();
    for service in wanted {
        let want = service.platform.as_deref().unwrap_or_default();
        for node in manifest.nodes.values().filter(|n| service.admits(n)) {
            match platforms.get(&node.name) {
                // Unreachable: observed as such; nothing is placed there.
                None => {}
                Some(Ok(have)) if platform_matches(want, have) => {}
                Some(Ok(have)) => refusals.push(format!(
                    "service `{}` asks for platform {want}, but node `{}`, where it may run, is {have}: give the service tags only {want} nodes carry, or change `platform`",
                    service.name, node.name
                )),
                Some(Err(e)) => refusals.push(format!(
                    "service `{}` asks for platform {want}, and node `{}` cannot say its own: {e}",
                    service.name, node.name
                )),
            }
        }
    }
    refusals
}

/// `linux/arm/v7` runs on a `linux/arm/v7` node; `linux/arm` on any arm
/// variant; the OS and architecture must be the same.
fn platform_matches(want: &str, have: &str) -> bool {
    let (want, have): (Vec<&str>, Vec<&str>) =
        (want.split('/').collect(), have.split('/').collect());
    want.len() >= 2
        && have.len() >= 2
        && want[..2] == have[..2]
        && (want.len() < 3 || have.get(2) == want.get(2))
}

/// Ask every reachable node of the stack where it stands in a swarm, and
/// the managers whether the overlay network exists, then plan the steps.
/// A node that does not answer is left out this pass, never taken as "not
/// in a swarm".
async fn plan_swarm<R: Runtime>(
    manifest: &Manifest,
    desired: &Desired,
    engines: &BTreeMap<String, R>,
    stack_containers: &Observed,
) -> plan::swarm::SwarmPlan {
    let nodes: BTreeSet<String> = manifest.nodes.keys().cloned().collect();
    let overlay = plan::swarm::Overlay {
        networks: desired.overlay_networks(),
    };
    let networks: Vec<String> = overlay.networks.iter().map(|n| n.name.clone()).collect();
    let asked = futures_util::future::join_all(
        engines
            .iter()
            .filter(|(name, _)| nodes.contains(*name))
            .map(|(name, engine)| {
                let networks = &networks;
                async move {
                    let membership = engine.swarm().await.ok()?;
                    let mut held = Vec::new();
                    for network in networks.iter().filter(|_| membership.manager) {
                        if engine.network_exists(network).await.unwrap_or(false) {
                            held.push(network.clone());
                        }
                    }
                    Some((name.clone(), membership, held))
                }
            }),
    )
    .await;
    let mut observed = BTreeMap::new();
    let mut existing = BTreeSet::new();
    for (name, membership, held) in asked.into_iter().flatten() {
        existing.extend(held);
        observed.insert(name, membership);
    }
    // Workers promoted already count as managers: an engine acts as one
    // only at its next certificate renewal, half a minute later.
    let manager = observed
        .iter()
        .find(|(_, m)| m.manager)
        .and_then(|(name, _)| engines.get(name));
    let manager_ids = match manager {
        Some(engine) => engine.swarm_manager_ids().await.unwrap_or_default(),
        None => BTreeSet::new(),
    };
    let promoted = |m: &plan::swarm::SwarmMembership| {
        m.node_id
            .as_ref()
            .is_some_and(|id| manager_ids.contains(id))
    };
    for membership in observed.values_mut() {
        membership.promoted = promoted(membership);
    }
    let mut leaving = leaving_nodes(&nodes, engines, stack_containers).await;
    for node in leaving.values_mut() {
        node.membership.promoted = promoted(&node.membership);
    }
    plan::swarm::plan(&nodes, &observed, &overlay, &existing, &leaving)
}

/// The reachable nodes that left the manifests (the daemon drains them),
/// with their place in a swarm and the containers on overlay networks
/// there other than the stack's own, which this pass removes.
async fn leaving_nodes<R: Runtime>(
    nodes: &BTreeSet<String>,
    engines: &BTreeMap<String, R>,
    stack_containers: &Observed,
) -> BTreeMap<String, plan::swarm::Leaving> {
    let asked = join_all(
        engines
            .iter()
            .filter(|(name, _)| !nodes.contains(*name))
            .map(|(name, engine)| async move {
                let membership = engine.swarm().await.ok()?;
                let ours: BTreeSet<&str> = stack_containers
                    .nodes
                    .get(name)
                    .map(|o| o.owned.iter().map(|c| c.name.as_str()).collect())
                    .unwrap_or_default();
                // Unknown is not empty: a node that cannot say stays.
                let overlay_containers = engine
                    .overlay_containers()
                    .await
                    .ok()?
                    .into_iter()
                    .filter(|c| !ours.contains(c.as_str()))
                    .collect();
                Some((
                    name.clone(),
                    plan::swarm::Leaving {
                        membership,
                        overlay_containers,
                    },
                ))
            }),
    )
    .await;
    asked.into_iter().flatten().collect()
}

fn transient_reason(
    images: &BTreeMap<String, ImageResolution>,
    observed: &Observed,
) -> Option<String> {
    let registry = images.values().find_map(|r| match r {
        Err(error) if error.is_transient() => Some(error.to_string()),
        _ => None,
    });
    let node = observed.nodes.iter().find_map(|(name, o)| {
        o.unreachable
            .as_ref()
            .map(|reason| format!("node {name} is unreachable: {reason}"))
    });
    registry.or(node)
}
