//! Everything a pass does before it acts, shared by `pier diff`, `pier
//! apply` and the daemon: load the manifests at a commit → connect to the
//! nodes → observe → resolve images → build the desired state → plan.
//! `diff` renders the plan; `apply` (`crate::apply`) carries it out.
//!
//! A manifest that does not validate stops the pass before any engine is
//! touched: a bad commit never causes a partial apply.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use crate::docker::Runtime;
use crate::docker::engine::Engine;
use crate::manifest::model::DependsOnCondition;
use crate::manifest::{self, Diagnostic, Location, Manifest, Vars};
use crate::plan::{self, Desired, DesiredService, Observed, Plan};
use crate::registry::{Registry, ResolveError};
use crate::source::git::{GitSource, SourceError};
use crate::validate::Source;

/// Everything a pass needs besides the manifests.
#[derive(Debug, Clone)]
pub struct Settings {
    pub source: Source,
    /// Names this deployment; containers carry it as `pier.stack`
    /// (default: the repository's folder name).
    pub stack: Option<String>,
    /// Registries served over plain HTTP (`host:port`).
    pub insecure_registries: Vec<String>,
    /// How long an engine may take to answer before its node counts as unreachable.
    pub engine_timeout: Duration,
    /// How long the registry may take to connect or answer a read.
    pub registry_timeout: Duration,
    pub allow_empty: bool,
    /// Take over containers of the stack deployed from another repository.
    pub adopt: bool,
    /// What manifests may ask of the hosts.
    pub policy: crate::policy::Policy,
    /// The variables of pier's environment manifests may use (`--allow-env`).
    pub allow_env: Vec<String>,
}

impl Settings {
    /// The variables of this process's environment the manifests may use.
    pub fn manifest_vars(&self) -> Vars {
        crate::manifest::interpolate::admitted_from_process(&self.allow_env)
    }
}

/// Why a pass could not produce a plan.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the manifests at {commit} are invalid; nothing was changed")]
    Invalid {
        commit: String,
        diagnostics: Vec<Diagnostic>,
    },
}

/// The manifests at one commit, validated.
#[derive(Clone)]
pub struct Loaded {
    pub commit: String,
    pub stack: String,
    /// Where the manifests come from, recorded on every container.
    pub source: plan::SourceId,
    /// The variables the manifest files interpolate, by name.
    pub interpolated: BTreeSet<String>,
    pub manifest: Manifest,
    /// Warnings and notices from validation.
    pub diagnostics: Vec<Diagnostic>,
}

/// The outcome of the read-only half of a pass.
pub struct Prepared {
    pub manifest: Manifest,
    pub desired: Desired,
    pub observed: Observed,
    pub plan: Plan,
    pub engines: BTreeMap<String, Engine>,
    pub registry: Registry,
    /// Warnings and notices from validation.
    pub diagnostics: Vec<Diagnostic>,
    /// The variables the manifest files interpolate, by name.
    pub interpolated: BTreeSet<String>,
}

/// What was observed and planned for one loaded commit.
pub struct Planned {
    pub desired: Desired,
    pub observed: Observed,
    pub plan: Plan,
    pub engines: BTreeMap<String, Engine>,
    /// Why this pass could not do everything, when the cause may pass by
    /// itself (an unreachable node or registry): worth retrying.
    pub transient: Option<String>,
    /// Unreachable nodes given up as down this pass.
    pub down: BTreeSet<String>,
}

/// Images a caller has already pinned, by service name: these services are
/// not resolved again (the daemon keeps a commit's digests until it changes).
pub type Pins = BTreeMap<String, crate::registry::Resolved>;

/// What a caller decided before planning.
#[derive(Debug, Clone, Default)]
pub struct PassInput {
    pub pins: Pins,
    /// Services to leave as they are, with the reason (the daemon freezes a
    /// service whose rollout of this commit was rolled back).
    pub frozen: BTreeMap<String, String>,
    /// The daemon's view of node loss; `None` (one-shot commands): an
    /// unreachable node is never given up on.
    pub node_loss: Option<NodeLoss>,
    /// `autodestroy` jobs that ran and were removed, by service and spec
    /// hash: the daemon does not start them again for that configuration.
    pub destroyed: BTreeSet<(String, String)>,
    /// Nodes that left the manifests and still hold containers of the
    /// stack, as the daemon remembers them: observed too, and drained.
    pub retired: BTreeMap<String, manifest::model::Node>,
    /// Where the daemon resolves images off the pass's path; `None`
    /// (one-shot commands): each image is resolved before planning.
    pub resolver: Option<std::sync::Arc<crate::resolver::Resolver>>,
}

/// Since when each node has been unreachable, and how long that may last
/// before the node counts as down and its movable replicas start elsewhere.
#[derive(Debug, Clone, Default)]
pub struct NodeLoss {
    pub unreachable_since: BTreeMap<String, std::time::Instant>,
    pub down_after: Duration,
}

impl NodeLoss {
    /// The unreachable nodes of `observed` that have been so for long enough.
    pub fn down(&self, observed: &Observed, now: std::time::Instant) -> BTreeSet<String> {
        observed
            .nodes
            .iter()
            .filter(|(_, o)| o.unreachable.is_some())
            .filter(|(name, _)| {
                self.unreachable_since
                    .get(*name)
                    .is_some_and(|since| now.saturating_duration_since(*since) >= self.down_after)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Remember which nodes answered in `observed`.
    pub fn observe(&mut self, observed: &Observed, now: std::time::Instant) {
        for (name, o) in &observed.nodes {
            if o.unreachable.is_some() {
                self.unreachable_since.entry(name.clone()).or_insert(now);
            } else {
                self.unreachable_since.remove(name);
            }
        }
        self.unreachable_since
            .retain(|name, _| observed.nodes.contains_key(name));
    }

    /// When the next node will count as down, if one is on its way.
    pub fn next_down_at(&self, now: std::time::Instant) -> Option<std::time::Instant> {
        self.unreachable_since
            .values()
            .map(|since| *since + self.down_after)
            .filter(|at| *at > now)
            .min()
    }
}

/// Load, observe, resolve and plan. Touches nothing.
pub async fn prepare(settings: &Settings, vars: &Vars) -> Result<Prepared, PassError> {
    let loaded = load_for_deploy(settings, vars).await?;
    let registry = registry(settings);
    let planned = plan_loaded(&loaded, settings, &registry, &PassInput::default()).await;
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

/// A registry client with the settings' timeout, insecure registries and
/// the credentials of pier's own environment.
pub fn registry(settings: &Settings) -> Registry {
    Registry::with_timeout(
        settings.insecure_registries.clone(),
        crate::registry::CredentialStore::from_environment(),
        settings.registry_timeout,
    )
}

/// The manifests at the settings' reference, validated, with the router's
/// certificate: what `diff` and `apply` deploy.
pub async fn load_for_deploy(settings: &Settings, vars: &Vars) -> Result<Loaded, PassError> {
    // Two one-off costs of some 40 ms each sit on the path of every `diff`
    // and `apply`: libgit2 loading the system's CA bundle on first use, and
    // the image reference parser compiling its pattern. The second runs on
    // another core while this one opens the repository.
    std::thread::spawn(crate::registry::prepare_reference_parser);
    // libgit2 and the loader block: they run off the async runtime.
    let (source, stack, vars, policy) = (
        settings.source.clone(),
        settings.stack.clone(),
        vars.clone(),
        settings.policy.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let repo = GitSource::open(&source.repo, &source.cache_dir)?;
        load(
            &repo,
            &source.reference,
            &source.path,
            stack.as_deref(),
            &vars,
            &policy,
        )
        .and_then(with_router_certificate)
    })
    .await
    .expect("loading the manifests does not panic")
}

/// `loaded`, to be deployed, with the router's certificate for its HTTPS
/// routes. Only for the deploy branch and `pier apply`/`diff`: a branch
/// under test never gets it.
pub fn with_router_certificate(mut loaded: Loaded) -> Result<Loaded, PassError> {
    let Some(at) = manifest::router::tls_route_at(&loaded.manifest) else {
        return Ok(loaded);
    };
    let operator_image = std::env::var(manifest::router::IMAGE_VAR)
        .ok()
        .filter(|image| !image.is_empty())
        .unwrap_or_else(|| manifest::router::DEFAULT_IMAGE.to_string());
    if let Err(refused) =
        manifest::router::use_operator_image(&mut loaded.manifest, &operator_image)
    {
        return Err(PassError::Invalid {
            commit: loaded.commit,
            diagnostics: vec![*refused],
        });
    }
    if manifest::router::uses_acme(&loaded.manifest) {
        return with_acme_root(loaded, at);
    }
    match router_certificate() {
        Ok((cert, key)) => {
            manifest::router::attach_tls(&mut loaded.manifest, cert, key);
            Ok(loaded)
        }
        Err(message) => Err(PassError::Invalid {
            commit: loaded.commit,
            diagnostics: vec![Diagnostic::error(at, message).help(format!(
                "set {} in pier's environment to a folder holding cert.pem (the chain) and key.pem",
                manifest::router::TLS_FOLDER_VAR
            ))],
        }),
    }
}

/// With `router.acme` the router obtains its certificates itself; it only
/// gets the root its CA's directory is served under, when pier's
/// environment names one (a private CA).
fn with_acme_root(mut loaded: Loaded, at: Location) -> Result<Loaded, PassError> {
    let var = manifest::router::ACME_CA_ROOT_VAR;
    let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) else {
        return Ok(loaded);
    };
    match std::fs::read_to_string(&path) {
        Ok(root) => {
            manifest::router::attach_acme_root(&mut loaded.manifest, root);
            Ok(loaded)
        }
        Err(e) => Err(PassError::Invalid {
            commit: loaded.commit,
            diagnostics: vec![Diagnostic::error(
                at,
                format!("cannot read {} (from {var}): {e}", std::path::Path::new(&path).display()),
            )
            .help(format!("set {var} to a PEM file with the CA's root certificate, or unset it to trust the system's roots"))],
        }),
    }
}

/// The router's certificate chain and key, from the folder the daemon's own
/// environment names: never from the repository or its `.env`.
fn router_certificate() -> Result<(String, String), String> {
    let var = manifest::router::TLS_FOLDER_VAR;
    let folder = std::env::var(var)
        .ok()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| format!("a route has `tls: true`, but {var} is not set"))?;
    let read = |name: &str| {
        let path = std::path::Path::new(&folder).join(name);
        std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {} (from {var}): {e}", path.display()))
    };
    Ok((read("cert.pem")?, read("key.pem")?))
}

/// Read and validate the manifests at `reference`.
pub fn load(
    repo: &GitSource,
    reference: &str,
    folder: &str,
    stack: Option<&str>,
    vars: &Vars,
    policy: &crate::policy::Policy,
) -> Result<Loaded, PassError> {
    let snapshot = repo.manifests(reference, folder)?;
    let stack = stack.map(str::to_string).unwrap_or_else(|| repo.name());
    let loaded = crate::validate::load_checked(&snapshot, folder, vars, policy);
    if !loaded.is_valid() {
        return Err(PassError::Invalid {
            commit: snapshot.commit,
            diagnostics: loaded.diagnostics,
        });
    }
    Ok(Loaded {
        commit: snapshot.commit,
        stack,
        source: plan::SourceId::new(&repo.identity(), folder),
        interpolated: loaded.interpolated,
        manifest: loaded.manifest,
        diagnostics: loaded.diagnostics,
    })
}

/// Connect, observe, resolve the images not pinned yet, and plan.
pub async fn plan_loaded(
    loaded: &Loaded,
    settings: &Settings,
    registry: &Registry,
    input: &PassInput,
) -> Planned {
    let (manifest, pins) = (&loaded.manifest, &input.pins);
    let mut connections = connect_all(manifest, settings.engine_timeout).await;
    let retired: Vec<&manifest::model::Node> = input
        .retired
        .values()
        .filter(|n| !manifest.nodes.contains_key(&n.name))
        .collect();
    connections.extend(connect_nodes(retired, settings.engine_timeout).await);
    let mut observed =
        crate::observe::observe(&loaded.stack, &connections, settings.engine_timeout).await;
    for (name, observation) in observed.nodes.iter_mut() {
        observation.draining = !manifest.nodes.contains_key(name);
    }
    let engines = reachable(connections);
    let images = resolve_images(manifest, registry, input.resolver.as_ref(), &engines, pins).await;
    let mut desired = desired_state(manifest, &loaded.stack, &loaded.commit, &images, pins);
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
        .map(|loss| loss.down(&observed, std::time::Instant::now()))
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

/// Ask every reachable node of the stack where it stands in a swarm, and
/// the managers whether the overlay network exists, then plan the steps.
/// A node that does not answer is left out this pass, never taken as "not
/// in a swarm".
async fn plan_swarm(
    manifest: &Manifest,
    desired: &Desired,
    engines: &BTreeMap<String, Engine>,
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
async fn leaving_nodes(
    nodes: &BTreeSet<String>,
    engines: &BTreeMap<String, Engine>,
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

/// A client per node, connected in parallel; a node that does not answer
/// carries the reason instead.
pub async fn connect_all(
    manifest: &Manifest,
    timeout: Duration,
) -> BTreeMap<String, Result<Engine, String>> {
    connect_nodes(manifest.nodes.values(), timeout).await
}

async fn connect_nodes(
    nodes: impl IntoIterator<Item = &manifest::model::Node>,
    timeout: Duration,
) -> BTreeMap<String, Result<Engine, String>> {
    let attempts = nodes.into_iter().map(|node| async move {
        (
            node.name.clone(),
            Engine::connect(node, timeout)
                .await
                .map_err(|e| e.to_string()),
        )
    });
    join_all(attempts).await.into_iter().collect()
}

/// The engines that answered, by node.
pub fn reachable(
    connections: BTreeMap<String, Result<Engine, String>>,
) -> BTreeMap<String, Engine> {
    connections
        .into_iter()
        .filter_map(|(name, engine)| engine.ok().map(|e| (name, e)))
        .collect()
}

/// How an image reference was pinned, or why it could not be.
pub type ImageResolution = Result<crate::registry::Resolved, ResolveError>;

/// Resolve every distinct image reference of the services not pinned, once. When the registry does not
/// have the image, an image every reachable engine already holds under the
/// same id is used by that id (a single-node setup without a registry).
pub async fn resolve_images<R: Runtime>(
    manifest: &Manifest,
    registry: &Registry,
    resolver: Option<&std::sync::Arc<crate::resolver::Resolver>>,
    engines: &BTreeMap<String, R>,
    pins: &Pins,
) -> BTreeMap<String, ImageResolution> {
    let references: BTreeSet<&str> = manifest
        .services
        .values()
        .filter(|s| !pins.contains_key(&s.name))
        .filter_map(|s| s.image.as_deref())
        .collect();
    let lookups = references.into_iter().map(|image| async move {
        let answer = match resolver {
            Some(resolver) => resolver.lookup(image).await,
            None => registry.resolve(image).await,
        };
        let resolved = match answer {
            Ok(resolved) => Ok(resolved),
            // Only an image the registry does not have may come from the nodes'
            // own stores; an unreachable registry or rejected credentials
            // freeze the service instead, so neither an outage nor an expired
            // password ever swaps running digests for local ids. (Anonymous
            // access refused is how Docker Hub answers for a repository it
            // does not have, so it counts as not found.)
            Err(error @ (ResolveError::NotFound { .. } | ResolveError::Unauthorized { .. })) => {
                local_image(image, engines).await.ok_or(error)
            }
            Err(error) => Err(error),
        };
        (image.to_string(), resolved)
    });
    join_all(lookups).await.into_iter().collect()
}

async fn local_image<R: Runtime>(
    image: &str,
    engines: &BTreeMap<String, R>,
) -> Option<crate::registry::Resolved> {
    let ids: Vec<Option<String>> = join_all(
        engines
            .values()
            .map(|e| async move { e.image_id(image).await.ok().flatten() }),
    )
    .await;
    let first = ids.first().cloned().flatten()?;
    ids.iter()
        .all(|id| id.as_deref() == Some(first.as_str()))
        .then(|| crate::registry::Resolved {
            pinned: first.clone(),
            digest: first,
        })
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
fn movable(service: &manifest::model::Service, spec: &crate::docker::ContainerSpec) -> bool {
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
    images: &BTreeMap<String, ImageResolution>,
    pins: &Pins,
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
        let resolution = pins
            .get(&service.name)
            .map(Ok)
            .or_else(|| images.get(image).map(Result::as_ref));
        let resolved = match resolution {
            Some(Ok(resolved)) => resolved,
            Some(Err(error)) => {
                let what = if error.is_transient() {
                    "will retry"
                } else {
                    "fix the image reference or push it"
                };
                desired.frozen.insert(
                    service.name.clone(),
                    format!("{error} ({what}; its containers are left as they are)"),
                );
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
        spec.labels
            .insert(crate::docker::LABEL_RESTARTS_WITH.into(), hashes.join(","));
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

    fn service(name: &str, volumes_from: &[&str]) -> DesiredService {
        DesiredService {
            name: name.into(),
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
