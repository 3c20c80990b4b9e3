//! Running a plan against the engines: bounded parallelism per node and in
//! total, services in dependency order, replicas replaced in rolling batches
//! behind health gates, and per-replica rollback.
//!
//! Every engine call yields a [`StepRecord`]; one failure never loses the
//! bookkeeping of the others. A stop-first replacement keeps the old
//! container (stopped and renamed) until its successor is healthy, so a bad
//! release is undone by renaming the old one back and starting it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::join_all;
use futures_util::{StreamExt, stream};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::docker::{self, AnonymousVolume, Credentials, Health, Runtime, RuntimeError, Volumes};
use crate::manifest::model::{Autodestroy, DependsOnCondition};
use crate::plan::{Change, Desired, DesiredService, OwnedContainer, Plan, ServicePlan};

/// Tuning for one apply.
#[derive(Debug, Clone)]
pub struct ApplySettings {
    /// How long a new container may take to become healthy.
    pub health_timeout: Duration,
    /// How often health is polled while waiting.
    pub health_poll: Duration,
    /// Engine operations in flight per node; engines serialise much of their
    /// work, so more than a few only queues.
    pub per_node: usize,
    /// Engine operations in flight across all nodes.
    pub total: usize,
    /// Default time to wait after SIGTERM (a service's `stop_grace_period` wins).
    pub stop_timeout: Duration,
    /// Whether removing a replica for good (pruned, scaled down, moved off a
    /// node) also removes its anonymous volumes. Replacements never do: the
    /// new container takes them over.
    pub prune_volumes: bool,
}

impl Default for ApplySettings {
    fn default() -> Self {
        ApplySettings {
            health_timeout: Duration::from_secs(120),
            health_poll: Duration::from_millis(250),
            per_node: 4,
            total: 32,
            stop_timeout: Duration::from_secs(10),
            prune_volumes: false,
        }
    }
}

/// One engine call and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub service: String,
    pub node: String,
    /// `pull`, `network`, `create`, `configure`, `start`, `wait-healthy`, `stop`, `rename`, `remove`, `rollback`.
    pub action: String,
    /// Container name, image or network the step acted on.
    pub target: String,
    pub ok: bool,
    pub message: String,
    pub started: SystemTime,
    pub ended: SystemTime,
}

/// The outcome of an apply.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub records: Vec<StepRecord>,
    /// One line per service whose rollout stopped: service, node and reason.
    pub failures: Vec<String>,
    /// The same, by service name.
    pub failed: BTreeMap<String, String>,
    /// Services that met an engine that did not answer or a container that
    /// vanished mid-step: their failure says nothing about the release, and
    /// a retry may well succeed.
    pub transient: BTreeSet<String>,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Images are pulled with these credentials.
pub trait CredentialLookup: Sync {
    fn for_image(&self, image: &str) -> Option<Credentials>;
}

impl CredentialLookup for crate::registry::CredentialStore {
    fn for_image(&self, image: &str) -> Option<Credentials> {
        crate::registry::CredentialStore::for_image(self, image).cloned()
    }
}

struct Context<'a, R> {
    desired: &'a Desired,
    engines: &'a BTreeMap<String, R>,
    settings: &'a ApplySettings,
    credentials: &'a dyn CredentialLookup,
    per_node: BTreeMap<String, Arc<Semaphore>>,
    total: Arc<Semaphore>,
    records: Mutex<Vec<StepRecord>>,
    transient: Mutex<BTreeSet<String>>,
    on_step: &'a (dyn Fn(&StepRecord) + Sync),
    /// `(service, node)` → a replica's container (name or id), for
    /// `volumes_from`.
    replicas_on: BTreeMap<(String, String), String>,
    /// Service → its replicas once the plan is carried out, for the
    /// services others link to (per-replica link variables).
    replicas: BTreeMap<String, Vec<(u32, String)>>,
}

/// Where each service's replicas are once the plan is carried out, by
/// container name (or id, for the kept ones the plan lists).
fn replicas_on(desired: &Desired, plan: &Plan) -> BTreeMap<(String, String), String> {
    let mut found = BTreeMap::new();
    for service_plan in &plan.services {
        let service = &service_plan.service;
        for (node, id) in &service_plan.current {
            found
                .entry((service.clone(), node.clone()))
                .or_insert_with(|| id.clone());
        }
        let keeps_successor_name = desired
            .services
            .get(service)
            .is_some_and(|s| s.keeps_successor_name);
        for change in &service_plan.changes {
            let (node, container) = match change {
                Change::Create { node, name, .. } => (node, name.clone()),
                Change::Replace {
                    node,
                    name,
                    old,
                    start_first: true,
                    ..
                } if keeps_successor_name => (node, crate::plan::successor_name(name, &old.name)),
                Change::Replace { node, name, .. } => (node, name.clone()),
                _ => continue,
            };
            found
                .entry((service.clone(), node.clone()))
                .or_insert(container);
        }
    }
    found
}

/// Apply `plan`. Services run in dependency order (independent ones at the
/// same time); the changes of one service follow its update settings.
pub async fn apply<R: Runtime>(
    desired: &Desired,
    plan: &Plan,
    engines: &BTreeMap<String, R>,
    credentials: &dyn CredentialLookup,
    settings: &ApplySettings,
    on_step: &(dyn Fn(&StepRecord) + Sync),
) -> ApplyReport {
    let ctx = Context {
        desired,
        engines,
        settings,
        credentials,
        per_node: engines
            .keys()
            .map(|n| {
                (
                    n.clone(),
                    Arc::new(Semaphore::new(settings.per_node.max(1))),
                )
            })
            .collect(),
        total: Arc::new(Semaphore::new(settings.total.max(1))),
        records: Mutex::new(Vec::new()),
        transient: Mutex::new(BTreeSet::new()),
        on_step,
        replicas_on: replicas_on(desired, plan),
        replicas: plan
            .services
            .iter()
            .filter(|s| !s.replicas.is_empty())
            .map(|s| (s.service.clone(), s.replicas.clone()))
            .collect(),
    };
    let mut failures = Vec::new();
    let mut failed = BTreeMap::new();
    let mut failed_services = BTreeSet::new();
    let (first, last): (Vec<_>, Vec<_>) = plan.swarm.steps.iter().partition(|s| !s.runs_last());
    if let Err(failure) = form_swarm(&ctx, &first).await {
        failures.push(failure);
    }
    let by_name: BTreeMap<&str, &ServicePlan> = plan
        .services
        .iter()
        .map(|s| (s.service.as_str(), s))
        .collect();
    for level in levels(desired, plan) {
        prepare_nodes(&ctx, &level).await;
        let outcomes = join_all(level.iter().map(|service_plan| {
            // A service whose dependency failed is not rolled out on top of it.
            let blocked_by = desired.services.get(&service_plan.service).and_then(|d| {
                d.after
                    .iter()
                    .find(|a| failed_services.contains(*a))
                    .cloned()
            });
            let (ctx, by_name) = (&ctx, &by_name);
            async move {
                match blocked_by {
                    Some(dependency) => Err(format!(
                        "{}: not rolled out because `{dependency}` failed",
                        service_plan.service
                    )),
                    None => {
                        if let Err(reason) =
                            wait_for_dependencies(ctx, &service_plan.service, by_name).await
                        {
                            // Waiting says nothing about this release: retried, never frozen.
                            ctx.transient
                                .lock()
                                .expect("transient lock")
                                .insert(service_plan.service.clone());
                            return Err(reason);
                        }
                        rollout(ctx, service_plan).await
                    }
                }
            }
        }))
        .await;
        for (service_plan, outcome) in level.iter().zip(outcomes) {
            if let Err(message) = outcome {
                failed_services.insert(service_plan.service.clone());
                failed.insert(service_plan.service.clone(), message.clone());
                failures.push(message);
            }
        }
    }
    // Nodes leave the swarm once the pass drained them, and only then.
    if failures.is_empty()
        && let Err(failure) = form_swarm(&ctx, &last).await
    {
        failures.push(failure);
    }
    let records = ctx.records.into_inner().expect("records lock");
    let transient = ctx.transient.into_inner().expect("transient lock");
    ApplyReport {
        records,
        failures,
        failed,
        transient,
    }
}

/// Services grouped so each group only depends on earlier ones; services
/// being pruned go last.
fn levels<'p>(desired: &Desired, plan: &'p Plan) -> Vec<Vec<&'p ServicePlan>> {
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    // The plan lists services in dependency order already, so one pass suffices.
    for service_plan in &plan.services {
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
    let mut by_depth: BTreeMap<usize, Vec<&ServicePlan>> = BTreeMap::new();
    for service_plan in plan.services.iter().filter(|s| !s.changes.is_empty()) {
        by_depth
            .entry(depth[service_plan.service.as_str()])
            .or_default()
            .push(service_plan);
    }
    by_depth.into_values().collect()
}

impl<R: Runtime> Context<'_, R> {
    fn engine(&self, node: &str) -> Result<&R, String> {
        self.engines
            .get(node)
            .ok_or_else(|| format!("no engine for node {node}"))
    }

    fn record(
        &self,
        service: &str,
        node: &str,
        action: &str,
        target: &str,
        started: SystemTime,
        result: &Result<(), String>,
    ) {
        let record = StepRecord {
            service: service.into(),
            node: node.into(),
            action: action.into(),
            target: target.into(),
            ok: result.is_ok(),
            message: result.as_ref().err().cloned().unwrap_or_default(),
            started,
            ended: SystemTime::now(),
        };
        (self.on_step)(&record);
        self.records.lock().expect("records lock").push(record);
    }

    /// Run one engine call under the node's and the global limits, and record it.
    async fn step<T, F>(
        &self,
        service: &str,
        node: &str,
        action: &str,
        target: &str,
        call: F,
    ) -> Result<T, String>
    where
        F: std::future::Future<Output = Result<T, RuntimeError>>,
    {
        let _global = self.total.acquire().await.expect("semaphore open");
        let _local = match self.per_node.get(node) {
            Some(s) => Some(s.acquire().await.expect("semaphore open")),
            None => None,
        };
        let started = SystemTime::now();
        let result = call.await.map_err(|e| {
            if matches!(
                e,
                RuntimeError::Unreachable(_)
                    | RuntimeError::NotFound(_)
                    | RuntimeError::Conflict(_)
            ) {
                self.transient
                    .lock()
                    .expect("transient lock")
                    .insert(service.to_string());
            }
            e.to_string()
        });
        self.record(
            service,
            node,
            action,
            target,
            started,
            &result.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        result.map_err(|e| format!("{service}: {action} {target} on {node} failed: {e}"))
    }
}

/// The plan's swarm steps, in order: the stack's overlay network needs its
/// nodes in one swarm, and the network on a manager. A join token goes from
/// the manager to the joining engine and nowhere else.
async fn form_swarm<R: Runtime>(
    ctx: &Context<'_, R>,
    steps: &[&crate::plan::swarm::SwarmStep],
) -> Result<(), String> {
    use crate::plan::swarm::SwarmStep;
    for step in steps {
        match step {
            SwarmStep::Init { node } => {
                let engine = ctx.engine(node)?;
                let advertise = advertise_address(ctx.desired, node);
                ctx.step(
                    "",
                    node,
                    "swarm init",
                    node,
                    engine.swarm_init(advertise.as_deref()),
                )
                .await?;
            }
            SwarmStep::Join { node, via, manager } => {
                let (engine, through) = (ctx.engine(node)?, ctx.engine(via)?);
                let advertise = advertise_address(ctx.desired, node);
                let join = async {
                    let (worker_token, manager_token) = through.swarm_tokens().await?;
                    let address = through.swarm().await?.address.ok_or_else(|| {
                        RuntimeError::Failed(format!("{via} gives no address for its swarm"))
                    })?;
                    let token = if *manager {
                        manager_token
                    } else {
                        worker_token
                    };
                    engine
                        .swarm_join(advertise.as_deref(), &format!("{address}:2377"), &token)
                        .await
                };
                let action = if *manager {
                    "swarm join (manager)"
                } else {
                    "swarm join"
                };
                ctx.step("", node, action, via, join).await?;
            }
            SwarmStep::Promote { node, via } | SwarmStep::Demote { node, via } => {
                let manager = matches!(step, SwarmStep::Promote { .. });
                let (engine, through) = (ctx.engine(node)?, ctx.engine(via)?);
                let set_role = async {
                    let id = swarm_node_id(engine, node).await?;
                    through.swarm_set_role(&id, manager).await
                };
                let action = if manager {
                    "swarm promote"
                } else {
                    "swarm demote"
                };
                ctx.step("", node, action, via, set_role).await?;
            }
            SwarmStep::Leave { node, via } => {
                let (engine, through) = (ctx.engine(node)?, ctx.engine(via)?);
                let leave = async {
                    let id = swarm_node_id(engine, node).await?;
                    until_worker(engine, node, ctx.settings.health_timeout).await?;
                    engine.swarm_leave().await?;
                    through.swarm_forget(&id).await
                };
                ctx.step("", node, "swarm leave", via, leave).await?;
            }
            SwarmStep::CreateNetwork {
                node,
                network,
                encrypted,
                internal,
            } => {
                let engine = ctx.engine(node)?;
                let labels =
                    BTreeMap::from([(docker::LABEL_STACK.to_string(), ctx.desired.stack.clone())]);
                ctx.step(
                    "",
                    node,
                    "network",
                    network,
                    engine.create_overlay(network, &labels, *encrypted, *internal),
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// The id `node`'s engine has in its swarm.
async fn swarm_node_id<R: Runtime>(engine: &R, node: &str) -> Result<String, RuntimeError> {
    engine
        .swarm()
        .await?
        .node_id
        .ok_or_else(|| RuntimeError::Failed(format!("{node} gives no swarm node id")))
}

/// Wait, up to `bound`, until a demoted engine stops acting as a manager:
/// only a worker leaves a swarm without taking a vote with it.
async fn until_worker<R: Runtime>(
    engine: &R,
    node: &str,
    bound: Duration,
) -> Result<(), RuntimeError> {
    let deadline = Instant::now() + bound;
    while engine.swarm().await?.manager {
        if Instant::now() >= deadline {
            return Err(RuntimeError::Failed(format!(
                "{node} still acts as a swarm manager after {bound:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// The address a node gives the swarm: its endpoint's, when that is an IP
/// address; otherwise the engine chooses (and says so when it cannot).
fn advertise_address(desired: &Desired, node: &str) -> Option<String> {
    use crate::manifest::model::Endpoint;
    let host = match &desired.nodes.get(node)?.endpoint {
        Endpoint::Tcp { host, .. } | Endpoint::Ssh { host, .. } => host,
        Endpoint::Unix { .. } => return None,
    };
    host.trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

/// Networks on every node a level touches, and the images its new containers need.
async fn prepare_nodes<R: Runtime>(ctx: &Context<'_, R>, level: &[&ServicePlan]) {
    let network = ctx.desired.network.name(&ctx.desired.stack);
    // An overlay network is the swarm's: made once on a manager (a swarm
    // step), and found by every engine that attaches a container to it.
    let overlay = ctx.desired.network.overlay;
    let labels = BTreeMap::from([(docker::LABEL_STACK.to_string(), ctx.desired.stack.clone())]);
    // One pull per node and image, whichever services share it.
    let mut pulls: BTreeMap<(String, String), String> = BTreeMap::new();
    // The bridge networks each node needs, with whether each is internal:
    // the stack's own (and, with routes, its rotation network) unless it is
    // an overlay, and each named bridge network a new container there
    // joins. Overlay networks are the swarm's to make; external ones are
    // never made.
    let named = ctx.desired.named_networks();
    let routes = ctx
        .desired
        .has_routes()
        .then(|| ctx.desired.network.routes_name(&ctx.desired.stack));
    let mut bridges: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for service_plan in level {
        let Some(service) = ctx.desired.services.get(&service_plan.service) else {
            continue;
        };
        for change in &service_plan.changes {
            if matches!(change, Change::Remove { .. }) {
                continue;
            }
            let node = bridges.entry(change.node().to_string()).or_default();
            if !overlay {
                node.insert(network.clone(), false);
                node.extend(routes.iter().map(|r| (r.clone(), false)));
            }
            let joined = std::iter::once(&service.spec.network)
                .chain(service.spec.more_networks.iter().map(|(n, _)| n));
            for name in joined {
                if let Some(decl) = named.get(name).filter(|d| !d.overlay && !d.external) {
                    node.insert(name.clone(), decl.internal);
                }
            }
            pulls
                .entry((change.node().to_string(), service.spec.image.clone()))
                .or_insert_with(|| service.name.clone());
        }
    }
    join_all(bridges.iter().map(|(node, networks)| {
        let labels = &labels;
        async move {
            if let Ok(engine) = ctx.engine(node) {
                for (network, internal) in networks {
                    let _ = ctx
                        .step(
                            "",
                            node,
                            "network",
                            network,
                            engine.ensure_network(network, labels, *internal),
                        )
                        .await;
                }
            }
        }
    }))
    .await;
    join_all(pulls.iter().map(|((node, image), service)| async move {
        let Ok(engine) = ctx.engine(node) else { return };
        // Pinned by digest: present locally means exactly these bits.
        let present = engine.image_id(image).await;
        if matches!(present, Ok(Some(_))) {
            return;
        }
        let never = ctx
            .desired
            .services
            .get(service.as_str())
            .is_some_and(|d| d.never_pull);
        let credentials = ctx.credentials.for_image(image);
        let pull = async {
            // An engine that cannot say what it holds is not asked to pull.
            present?;
            if never {
                return Err(RuntimeError::Failed(
                    "the node does not have it, and `pull_policy: never` forbids pulling".into(),
                ));
            }
            engine.pull(image, credentials.as_ref()).await
        };
        let _ = ctx.step(service, node, "pull", image, pull).await;
    }))
    .await;
}

/// Roll out one service's changes: removals and creations at once, then
/// replacements in batches of `parallelism`. Stops at the first failed batch.
async fn rollout<R: Runtime>(
    ctx: &Context<'_, R>,
    service_plan: &ServicePlan,
) -> Result<(), String> {
    let name = &service_plan.service;
    let desired = ctx.desired.services.get(name);
    let (replaces, others): (Vec<&Change>, Vec<&Change>) = service_plan
        .changes
        .iter()
        .partition(|c| matches!(c, Change::Replace { .. }));
    let (removes, creates): (Vec<&Change>, Vec<&Change>) = others
        .into_iter()
        .partition(|c| matches!(c, Change::Remove { .. }));
    for batch in [removes, creates] {
        // Changes are started as earlier ones finish, a bounded number at a
        // time: far more than the engine operations in flight (health waits
        // hold none), yet not one waiting future per replica of a fleet.
        let results: Vec<Result<(), String>> = stream::iter(&batch)
            .map(|change| run_change(ctx, name, desired, change))
            .buffer_unordered(ctx.settings.total.max(1) * CHANGES_PER_OPERATION)
            .collect()
            .await;
        if let Some(error) = results.into_iter().find_map(Result::err) {
            return Err(error);
        }
    }
    for batch in replaces.chunks(service_plan.parallelism.max(1) as usize) {
        let results = join_all(
            batch
                .iter()
                .map(|change| run_change(ctx, name, desired, change)),
        )
        .await;
        if let Some(error) = results.into_iter().find_map(Result::err) {
            return Err(error);
        }
        if let Some(d) = desired
            && !d.update.delay.is_zero()
        {
            tokio::time::sleep(d.update.delay).await;
        }
    }
    Ok(())
}

/// Changes of one batch under way per engine operation allowed in flight
/// (`ApplySettings::total`).
const CHANGES_PER_OPERATION: usize = 8;

/// Whether the container a step acted on had vanished already.
#[derive(Debug, PartialEq, Eq)]
enum Vanished {
    Yes,
    No,
}

async fn vanished(
    call: impl std::future::Future<Output = Result<(), RuntimeError>>,
) -> Result<Vanished, RuntimeError> {
    match call.await {
        Ok(()) => Ok(Vanished::No),
        Err(RuntimeError::NotFound(_)) => Ok(Vanished::Yes),
        Err(e) => Err(e),
    }
}

/// Stopping or removing a container that is gone already has done its job.
async fn already_gone_is_done(
    call: impl std::future::Future<Output = Result<(), RuntimeError>>,
) -> Result<(), RuntimeError> {
    vanished(call).await.map(drop)
}

fn stop_timeout(ctx: &Context<'_, impl Runtime>, desired: Option<&DesiredService>) -> Duration {
    desired
        .and_then(|d| d.spec.stop_timeout)
        .unwrap_or(ctx.settings.stop_timeout)
}

async fn run_change<R: Runtime>(
    ctx: &Context<'_, R>,
    service: &str,
    desired: Option<&DesiredService>,
    change: &Change,
) -> Result<(), String> {
    let node = change.node();
    let engine = ctx.engine(node)?;
    match change {
        Change::Remove { container, .. } => {
            let volumes = if ctx.settings.prune_volumes {
                Volumes::Remove
            } else {
                Volumes::Keep
            };
            ctx.step(
                service,
                node,
                "stop",
                &container.name,
                already_gone_is_done(engine.stop(&container.id, stop_timeout(ctx, desired))),
            )
            .await?;
            ctx.step(
                service,
                node,
                "remove",
                &container.name,
                already_gone_is_done(engine.remove(&container.id, volumes)),
            )
            .await
        }
        Change::Create { replica, name, .. } => {
            let desired = desired.ok_or_else(|| format!("{service}: not declared"))?;
            create_healthy(ctx, engine, desired, node, name, *replica, &[]).await
        }
        Change::Reload { container, .. } => {
            let desired = desired.ok_or_else(|| format!("{service}: not declared"))?;
            reload(ctx, engine, desired, node, container).await
        }
        Change::Rotate {
            container, into, ..
        } => {
            let desired = desired.ok_or_else(|| format!("{service}: not declared"))?;
            rotate(
                ctx,
                engine,
                desired,
                node,
                &container.id,
                &container.name,
                *into,
            )
            .await
        }
        Change::Replace {
            replica,
            name,
            old,
            start_first,
            ..
        } => {
            let desired = desired.ok_or_else(|| format!("{service}: not declared"))?;
            if *start_first {
                replace_start_first(ctx, engine, desired, node, name, *replica, old).await
            } else {
                replace_stop_first(ctx, engine, desired, node, name, *replica, old).await
            }
        }
    }
}

/// Rewrite a running replica's live configuration and run its `reload`
/// command. A reload that fails leaves the container running as it was
/// (Caddy keeps its previous configuration when the new one is refused).
async fn reload<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    container: &OwnedContainer,
) -> Result<(), String> {
    let service = &desired.name;
    let name = &container.name;
    ctx.step(
        service,
        node,
        "configure",
        name,
        engine.write_files(&container.id, &desired.spec.files),
    )
    .await?;
    let Some(command) = desired.spec.reload.as_ref() else {
        return Ok(());
    };
    let run = async {
        match engine.exec(&container.id, command).await? {
            (0, _) => Ok(()),
            (code, output) => Err(RuntimeError::Failed(format!(
                "`{}` exited with {code}: {}",
                command.join(" "),
                output.trim()
            ))),
        }
    };
    ctx.step(service, node, "reload", name, run).await
}

/// A new replica, started and waited for until healthy.
async fn create_healthy<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    name: &str,
    replica: u32,
    inherited: &[AnonymousVolume],
) -> Result<(), String> {
    let predecessor = Predecessor {
        running_beside: None,
        volumes: inherited,
    };
    let id = start_new(ctx, engine, desired, node, name, replica, predecessor).await?;
    let Err(reason) = wait_healthy(ctx, engine, desired, node, name, &id).await else {
        return Ok(());
    };
    // A replica that never became healthy is not left behind, restarting or
    // holding its name; its volumes stay (they may be inherited ones).
    let removed = ctx
        .step(
            &desired.name,
            node,
            "remove",
            name,
            engine.remove(&id, Volumes::Keep),
        )
        .await;
    Err(format!(
        "{}: replica {replica} on {node} did not become healthy: {reason}{}",
        desired.name,
        match removed {
            Ok(()) => "; removed it".to_string(),
            Err(e) => format!("; removing it failed too: {e}"),
        }
    ))
}

/// What a new replica takes over from the container it replaces, if any.
#[derive(Clone, Copy)]
struct Predecessor<'a> {
    /// Its id, when it keeps running beside the new replica until that one
    /// is healthy (start-first): recorded as `pier.replaces`, so a
    /// replacement cut short is recognised as unfinished.
    running_beside: Option<&'a str>,
    /// Its anonymous volumes, mounted at the same paths.
    volumes: &'a [AnonymousVolume],
}

/// Create and start a replica under `name`, taking over from its
/// `predecessor`; returns its id. A container that was created but could
/// not start is removed again.
async fn start_new<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    name: &str,
    replica: u32,
    predecessor: Predecessor<'_>,
) -> Result<String, String> {
    let service = &desired.name;
    // The replica's configuration is built once its turn on the node came:
    // a rollout holds a change per replica waiting for that, and each
    // would otherwise hold a copy of the whole configuration meanwhile.
    let create = async {
        let spec = replica_spec(ctx, desired, node, name, replica, predecessor)
            .map_err(RuntimeError::Failed)?;
        // The engine would create a missing volume on use: an external one
        // must be there already.
        for mount in spec.mounts.iter().filter(|m| m.external) {
            if !engine.volume_exists(&mount.source).await? {
                return Err(RuntimeError::Failed(format!(
                    "the external volume `{}` does not exist on {node}; create it there first (docker volume create {})",
                    mount.source, mount.source
                )));
            }
        }
        engine.create(name, &spec).await
    };
    let id = ctx.step(service, node, "create", name, create).await?;
    crate::fault::point("create:created");
    let files = &desired.spec.files;
    let configured = async {
        if !files.is_empty() {
            ctx.step(
                service,
                node,
                "configure",
                name,
                engine.write_files(&id, files),
            )
            .await?;
        }
        ctx.step(service, node, "start", name, engine.start(&id))
            .await
    };
    if let Err(e) = configured.await {
        let _ = ctx
            .step(
                service,
                node,
                "remove",
                name,
                engine.remove(&id, Volumes::Keep),
            )
            .await;
        return Err(e);
    }
    Ok(id)
}

/// The configuration of one replica created as `name`: the service's,
/// with the replica's labels and its predecessor's anonymous volumes. Under
/// a name other than the replica's (a start-first successor), it answers
/// to the replica's name too on each of its networks, which per-replica
/// link variables address it by.
fn replica_spec<R: Runtime>(
    ctx: &Context<'_, R>,
    desired: &DesiredService,
    node: &str,
    name: &str,
    replica: u32,
    predecessor: Predecessor<'_>,
) -> Result<docker::ContainerSpec, String> {
    let mut spec = (*desired.spec).clone();
    let replica_name = desired.replica_name(&ctx.desired.stack, replica);
    if name != replica_name {
        spec.aliases.push(replica_name.clone());
        for (_, aliases) in &mut spec.more_networks {
            aliases.push(replica_name.clone());
        }
    }
    if let Some(old) = predecessor.running_beside {
        spec.labels
            .insert(docker::LABEL_REPLACES.into(), old.to_string());
    }
    for entry in &mut spec.volumes_from {
        let (source, mode) = entry.split_once(':').unwrap_or((entry.as_str(), ""));
        let container = ctx
            .replicas_on
            .get(&(source.to_string(), node.to_string()))
            .ok_or_else(|| format!("no replica of `{source}` on {node} to take volumes from"))?;
        *entry = if mode.is_empty() {
            container.clone()
        } else {
            format!("{container}:{mode}")
        };
    }
    inherit_volumes(&mut spec, predecessor.volumes);
    let per_replica = crate::plan::spec::replica_link_env(
        &spec.replica_links,
        &ctx.replicas,
        &desired.name,
        &spec.env,
    );
    spec.env.extend(per_replica);
    spec.labels
        .insert(docker::LABEL_REPLICA.into(), replica.to_string());
    spec.labels
        .insert(docker::LABEL_SPEC_HASH.into(), desired.hash.clone());
    spec.labels
        .insert(docker::LABEL_COMMIT.into(), ctx.desired.commit.clone());
    spec.labels
        .insert(docker::LABEL_IMAGE_DIGEST.into(), desired.digest.clone());
    if !ctx.desired.source.hash.is_empty() {
        spec.labels
            .insert(docker::LABEL_SOURCE.into(), ctx.desired.source.hash.clone());
        spec.labels.insert(
            docker::LABEL_SOURCE_NAME.into(),
            ctx.desired.source.name.clone(),
        );
    }
    let fields = serde_json::to_string(&desired.fields()).expect("fingerprints serialise");
    spec.labels.insert(docker::LABEL_SPEC_FIELDS.into(), fields);
    Ok(spec)
}

/// Mount the old container's anonymous volumes at the same paths, as Compose
/// does: a bare `volumes: ["/data"]` entry or an image's `VOLUME` keeps its
/// data across a replacement. A path the new configuration mounts a named
/// volume or a host folder at keeps that mount instead.
fn inherit_volumes(spec: &mut docker::ContainerSpec, inherited: &[AnonymousVolume]) {
    for volume in inherited {
        match spec.mounts.iter_mut().find(|m| m.target == volume.target) {
            Some(mount) if mount.kind == "volume" && mount.source.is_empty() => {
                mount.source = volume.name.clone();
            }
            Some(_) => {}
            None => spec.mounts.push(docker::MountSpec {
                kind: "volume".into(),
                source: volume.name.clone(),
                target: volume.target.clone(),
                read_only: false,
                ..Default::default()
            }),
        }
    }
}

/// The anonymous volumes of the container being replaced, read before it is
/// touched: an engine that cannot say fails the replacement (retried later)
/// rather than start the new replica with empty volumes.
async fn volumes_of<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    service: &str,
    node: &str,
    old: &OwnedContainer,
) -> Result<Option<Vec<AnonymousVolume>>, String> {
    let lookup = async {
        match engine.anonymous_volumes(&old.id).await {
            Ok(volumes) => Ok(Some(volumes)),
            Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    };
    ctx.step(service, node, "volumes", &old.name, lookup).await
}

/// Before a service rolls out, the replicas of the services it waits for
/// (`depends_on` with `service_healthy` or `service_completed_successfully`)
/// that this apply did not replace must be healthy, or have exited with 0;
/// replicas it did start were waited for already. Bounded by the health timeout.
async fn wait_for_dependencies<R: Runtime>(
    ctx: &Context<'_, R>,
    service: &str,
    plans: &BTreeMap<&str, &ServicePlan>,
) -> Result<(), String> {
    let Some(desired) = ctx.desired.services.get(service) else {
        return Ok(());
    };
    for (dependency, condition) in &desired.waits_for {
        let Some(plan) = plans.get(dependency.as_str()) else {
            continue;
        };
        for (node, id) in &plan.current {
            let engine = ctx.engine(node)?;
            let deadline = Instant::now() + ctx.settings.health_timeout;
            loop {
                let health = engine.health(id).await.map_err(|e| e.to_string());
                let done = match (condition, &health) {
                    (DependsOnCondition::ServiceHealthy, Ok(Health::Healthy)) => true,
                    (
                        DependsOnCondition::ServiceCompletedSuccessfully,
                        Ok(Health::Exited(Some(0))),
                    ) => true,
                    (_, Ok(Health::Exited(code))) => {
                        return Err(format!(
                            "{service}: not rolled out: `{dependency}` on {node} exited{}, and it waits for {}",
                            code.map(|c| format!(" with code {c}")).unwrap_or_default(),
                            match condition {
                                DependsOnCondition::ServiceCompletedSuccessfully =>
                                    "an exit with 0",
                                _ => "it to be healthy",
                            }
                        ));
                    }
                    (_, Err(e)) => {
                        return Err(format!(
                            "{service}: not rolled out: `{dependency}` on {node}: {e}"
                        ));
                    }
                    _ => false,
                };
                if done {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{service}: not rolled out: `{dependency}` on {node} did not become {} within {:?}",
                        match condition {
                            DependsOnCondition::ServiceCompletedSuccessfully => "complete",
                            _ => "healthy",
                        },
                        ctx.settings.health_timeout
                    ));
                }
                tokio::time::sleep(ctx.settings.health_poll).await;
            }
        }
    }
    Ok(())
}

/// Wait for the container to be healthy (or, without a health check, running).
/// A job another service waits for must run to completion: it is waited for
/// until it exits, and only an exit with 0 counts; an `autodestroy` job may
/// have exited with 0 already.
async fn wait_healthy<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    name: &str,
    id: &str,
) -> Result<(), String> {
    let started = SystemTime::now();
    let has_check = desired
        .spec
        .healthcheck
        .as_ref()
        .is_some_and(|h| h.test.first().is_some_and(|t| t != "NONE"));
    let deadline = Instant::now() + ctx.settings.health_timeout;
    let job = desired.run_to_completion;
    let may_exit = job || desired.autodestroy != Autodestroy::Off;
    let result = loop {
        match engine.health(id).await {
            Ok(Health::Exited(Some(0))) if may_exit => break Ok(()),
            Ok(Health::Healthy | Health::Starting) if job && Instant::now() < deadline => {}
            Ok(Health::Healthy) if job => {
                break Err(format!(
                    "still running after {:?}; `depends_on: service_completed_successfully` waits for it to exit",
                    ctx.settings.health_timeout
                ));
            }
            Ok(Health::Healthy) => break Ok(()),
            Ok(Health::Starting) if Instant::now() < deadline => {}
            Ok(Health::Starting) => {
                break Err(format!(
                    "still starting after {:?}",
                    ctx.settings.health_timeout
                ));
            }
            Ok(Health::Unhealthy) => break Err("health check failed".to_string()),
            Ok(Health::Exited(code)) => {
                break Err(format!(
                    "exited{}",
                    code.map(|c| format!(" with code {c}")).unwrap_or_default()
                ));
            }
            Err(e) => break Err(e.to_string()),
        }
        tokio::time::sleep(ctx.settings.health_poll).await;
    };
    let result = match result {
        Ok(()) if !job && !desired.update.monitor.is_zero() => {
            stays_up(engine, id, desired.update.monitor, may_exit).await
        }
        other => other,
    };
    if has_check || result.is_err() || !desired.update.monitor.is_zero() {
        ctx.record(&desired.name, node, "wait-healthy", name, started, &result);
    }
    if result.is_ok() && desired.routed {
        return rotate(ctx, engine, desired, node, id, name, true).await;
    }
    result
}

/// Put a routed replica in rotation, or take it out: it joins the stack's
/// rotation network under its service's name (the name the router asks
/// DNS for), or leaves it. Its own network stays as it is, so the replica
/// still reaches the services it needs while out of rotation.
async fn rotate<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    id: &str,
    name: &str,
    into: bool,
) -> Result<(), String> {
    let network = ctx.desired.network.routes_name(&ctx.desired.stack);
    if into {
        let aliases = [desired.name.clone()];
        ctx.step(
            &desired.name,
            node,
            "into rotation",
            name,
            engine.connect(id, &network, &aliases),
        )
        .await
    } else {
        ctx.step(
            &desired.name,
            node,
            "out of rotation",
            name,
            already_gone_is_done(engine.disconnect(id, &network)),
        )
        .await
    }
}

/// `update_config.monitor`: a replica that was up must still be up (and
/// healthy) after `monitor`, or the rollout counts it as failed.
async fn stays_up<R: Runtime>(
    engine: &R,
    id: &str,
    monitor: Duration,
    may_exit: bool,
) -> Result<(), String> {
    tokio::time::sleep(monitor).await;
    match engine.health(id).await {
        Ok(Health::Healthy | Health::Starting) => Ok(()),
        Ok(Health::Exited(Some(0))) if may_exit => Ok(()),
        Ok(Health::Unhealthy) => Err(format!(
            "health check failed within the monitor period of {monitor:?}"
        )),
        Ok(Health::Exited(code)) => Err(format!(
            "exited{} within the monitor period of {monitor:?}",
            code.map(|c| format!(" with code {c}")).unwrap_or_default()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Stop the old replica and keep it aside; start the new one; remove the old
/// one only once the new one is healthy, else put the old one back.
#[allow(clippy::too_many_arguments)]
async fn replace_stop_first<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    name: &str,
    replica: u32,
    old: &OwnedContainer,
) -> Result<(), String> {
    let service = &desired.name;
    let aside = format!("{name}-pier-old");
    let Some(inherited) = volumes_of(ctx, engine, service, node, old).await? else {
        // The old container went away by itself: nothing to keep aside.
        return create_healthy(ctx, engine, desired, node, name, replica, &[]).await;
    };
    let stopped = ctx
        .step(
            service,
            node,
            "stop",
            &old.name,
            vanished(engine.stop(&old.id, stop_timeout(ctx, Some(desired)))),
        )
        .await?;
    if stopped == Vanished::Yes {
        return create_healthy(ctx, engine, desired, node, name, replica, &inherited).await;
    }
    crate::fault::point("replace:stopped");
    // An old container already aside (an interrupted replacement) stays there.
    if old.name != aside
        && let Err(reason) = ctx
            .step(
                service,
                node,
                "rename",
                &aside,
                engine.rename(&old.id, &aside),
            )
            .await
    {
        // Stopped but still under its own name: start it again as it was.
        return Err(restart_after_failure(ctx, engine, service, node, replica, old, reason).await);
    }
    crate::fault::point("replace:set-aside");
    let predecessor = Predecessor {
        running_beside: None,
        volumes: &inherited,
    };
    let outcome = match start_new(ctx, engine, desired, node, name, replica, predecessor).await {
        Ok(id) => match wait_healthy(ctx, engine, desired, node, name, &id).await {
            Ok(()) => Ok(()),
            Err(reason) => Err((Some(id), reason)),
        },
        Err(reason) => Err((None, reason)),
    };
    match outcome {
        Ok(_) => {
            crate::fault::point("replace:healthy");
            ctx.step(
                service,
                node,
                "remove",
                &aside,
                engine.remove(&old.id, Volumes::Keep),
            )
            .await
        }
        Err((new_id, reason)) => {
            if let Some(new_id) = new_id {
                let _ = ctx
                    .step(
                        service,
                        node,
                        "remove",
                        name,
                        engine.remove(&new_id, Volumes::Keep),
                    )
                    .await;
            }
            // Back under the replica's name; one found aside was running
            // before the interrupted replacement stopped it.
            let start = old.running || old.name != name;
            let back = async {
                engine.rename(&old.id, name).await?;
                if start {
                    engine.start(&old.id).await
                } else {
                    Ok(())
                }
            };
            let restored = ctx.step(service, node, "rollback", name, back).await;
            Err(rollback_message(service, node, replica, &reason, restored))
        }
    }
}

/// After a failure between stopping the old container and renaming it
/// aside, start it again under its own name.
async fn restart_after_failure<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    service: &str,
    node: &str,
    replica: u32,
    old: &OwnedContainer,
    reason: String,
) -> String {
    let restored = if old.running {
        ctx.step(service, node, "rollback", &old.name, engine.start(&old.id))
            .await
    } else {
        Ok(())
    };
    rollback_message(service, node, replica, &reason, restored)
}

fn rollback_message(
    service: &str,
    node: &str,
    replica: u32,
    reason: &str,
    restored: Result<(), String>,
) -> String {
    format!(
        "{service}: replica {replica} on {node} failed ({reason}); {}",
        match restored {
            Ok(()) => "rolled back to the previous container".to_string(),
            Err(e) => format!("rollback failed too: {e}"),
        }
    )
}

/// Start the new replica beside the old one; swap them once it is healthy.
/// The successor takes the replica's name, unless the engine cannot rename
/// it there and it keeps its own (see [`crate::plan::successor_name`]).
#[allow(clippy::too_many_arguments)]
async fn replace_start_first<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    name: &str,
    replica: u32,
    old: &OwnedContainer,
) -> Result<(), String> {
    let service = &desired.name;
    let next = crate::plan::successor_name(name, &old.name);
    let inherited = volumes_of(ctx, engine, service, node, old)
        .await?
        .unwrap_or_default();
    let predecessor = Predecessor {
        running_beside: Some(&old.id),
        volumes: &inherited,
    };
    let id = start_new(ctx, engine, desired, node, &next, replica, predecessor).await?;
    if let Err(reason) = wait_healthy(ctx, engine, desired, node, &next, &id).await {
        let _ = ctx
            .step(
                service,
                node,
                "remove",
                &next,
                engine.remove(&id, Volumes::Keep),
            )
            .await;
        return Err(format!(
            "{service}: replica {replica} on {node} failed ({reason}); the previous container keeps running"
        ));
    }
    crate::fault::point("replace:beside");
    ctx.step(
        service,
        node,
        "stop",
        &old.name,
        engine.stop(&old.id, stop_timeout(ctx, Some(desired))),
    )
    .await?;
    ctx.step(
        service,
        node,
        "remove",
        &old.name,
        engine.remove(&old.id, Volumes::Keep),
    )
    .await?;
    if next == name || desired.keeps_successor_name {
        return Ok(());
    }
    ctx.step(service, node, "rename", name, engine.rename(&id, name))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::fake::FakeRuntime;
    use crate::manifest::{self, MemoryTree, SourceFile, Vars};
    use crate::registry::CredentialStore;

    /// A bare path takes the old volume; a path without a declaration is
    /// added (an image `VOLUME`); a named volume or bind mount keeps its source.
    #[test]
    fn a_replacement_mounts_the_old_anonymous_volumes() {
        let mount = |kind: &str, source: &str, target: &str| docker::MountSpec {
            kind: kind.into(),
            source: source.into(),
            target: target.into(),
            read_only: false,
            ..Default::default()
        };
        let mut spec = docker::ContainerSpec {
            mounts: vec![
                mount("volume", "", "/data"),
                mount("volume", "s_named", "/named"),
                mount("bind", "/srv", "/srv"),
            ],
            ..Default::default()
        };
        let old = |name: &str, target: &str| AnonymousVolume {
            name: name.into(),
            target: target.into(),
        };
        inherit_volumes(
            &mut spec,
            &[
                old("a", "/data"),
                old("b", "/image-data"),
                old("c", "/named"),
                old("d", "/srv"),
            ],
        );
        assert_eq!(
            spec.mounts,
            [
                mount("volume", "a", "/data"),
                mount("volume", "s_named", "/named"),
                mount("bind", "/srv", "/srv"),
                mount("volume", "b", "/image-data"),
            ]
        );
    }

    /// Load `text`, plan against the fake engine on n1 and apply it, which
    /// must succeed; the plan and what the apply did.
    async fn converge_once(text: &str, engine: &FakeRuntime) -> (crate::plan::Plan, ApplyReport) {
        let files = [SourceFile {
            path: "pier/s.yml".into(),
            text: text.into(),
        }];
        let loaded = manifest::load_and_validate(&files, &Vars::new(), &MemoryTree::default());
        assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
        let digest = format!("sha256:{}", "1".repeat(64));
        let images = loaded
            .manifest
            .services
            .values()
            .map(|service| {
                let image = service.image.clone().unwrap_or_default();
                let pinned = crate::plan::desired::PinnedImage {
                    pinned: format!("{image}@{digest}"),
                    digest: digest.clone(),
                };
                (
                    service.name.clone(),
                    crate::plan::desired::ImageChoice::Pinned(pinned),
                )
            })
            .collect();
        let desired = crate::plan::desired::desired_state(&loaded.manifest, "s", "c0ffee", &images);
        let observed = crate::pass::observe::observe(
            "s",
            &BTreeMap::from([("n1".to_string(), Ok(engine.clone()))]),
            Duration::from_secs(1),
        )
        .await;
        let plan = crate::plan::plan(&desired, &observed, &Default::default());
        let engines = BTreeMap::from([("n1".to_string(), engine.clone())]);
        let report = apply(
            &desired,
            &plan,
            &engines,
            &CredentialStore::default(),
            &ApplySettings::default(),
            &|_| {},
        )
        .await;
        assert!(report.ok(), "{:?}", report.failures);
        (plan, report)
    }

    /// The router's configuration is live: written before it starts, read
    /// back to see it is current, and rewritten and reloaded in place when
    /// the routes change, never replacing the container.
    #[tokio::test]
    async fn a_route_change_reloads_the_router_in_place() {
        let manifest = |host: &str| {
            format!(
                "nodes:\n  n1: {{ endpoint: \"unix:///run/n1.sock\" }}\nrouter: {{ ports: [\"80:80\"] }}\nservices:\n  a: {{ image: \"r.example/app:1\", route: {{ host: {host}, port: 80 }} }}\n"
            )
        };
        let engine = FakeRuntime::new();
        let first = converge_once(&manifest("a.example.com"), &engine).await.0;
        assert_eq!(first.count(|c| matches!(c, Change::Create { .. })), 2);
        let router = |engine: &FakeRuntime| {
            engine
                .containers()
                .into_iter()
                .find(|c| c.name == "s-pier-router-1")
                .expect("the router runs")
        };
        let router_id = router(&engine).id;

        let again = converge_once(&manifest("a.example.com"), &engine).await.0;
        assert!(
            again.is_empty(),
            "the router's files are current: {again:?}"
        );
        assert!(engine.execs().is_empty());

        let changed = converge_once(&manifest("b.example.com"), &engine).await.0;
        assert_eq!(changed.count(|_| true), 1, "{changed:?}");
        assert_eq!(changed.count(|c| matches!(c, Change::Reload { .. })), 1);
        assert_eq!(router(&engine).id, router_id, "the same container");
        let execs = engine.execs();
        assert_eq!(execs.len(), 1);
        assert_eq!(execs[0].0, router_id);
        assert_eq!(execs[0].1[..2], ["caddy", "reload"]);
        let config = router_config_of(&engine, &router_id).await;
        assert!(config.contains("http://b.example.com:80"), "{config}");
        assert!(
            converge_once(&manifest("b.example.com"), &engine)
                .await
                .0
                .is_empty()
        );
    }

    /// On an overlay network the engine cannot rename a running container,
    /// so a start-first successor keeps the name it started under: a
    /// replica's name alternates between two, it answers to the replica's
    /// name on its networks all along, and the plan is empty afterwards.
    #[tokio::test]
    async fn a_start_first_successor_on_an_overlay_keeps_its_own_name() {
        let manifest = |version: &str| {
            format!(
                "nodes:\n  n1: {{ endpoint: \"unix:///run/n1.sock\" }}\nnetworks:\n  shared: {{ external: true }}\nservices:\n  a:\n    image: \"r.example/app:1\"\n    environment: {{ V: \"{version}\" }}\n    networks: [shared]\n    deploy: {{ update_config: {{ order: start-first }} }}\n"
            )
        };
        let engine = FakeRuntime::new();
        engine.add_network("shared", true);
        converge_once(&manifest("1"), &engine).await;
        let replica = |engine: &FakeRuntime| {
            let running: Vec<_> = engine
                .containers()
                .into_iter()
                .filter(|c| c.running)
                .collect();
            assert_eq!(running.len(), 1, "{running:?}");
            running[0].clone()
        };
        let first = replica(&engine);
        assert_eq!(first.name, "s-a-1");

        converge_once(&manifest("2"), &engine).await;
        let second = replica(&engine);
        assert_eq!(second.name, "s-a-1-pier-next", "it kept its name");
        assert_eq!(second.labels[docker::LABEL_REPLACES], first.id);
        let spec = engine.spec_of(&second.id).expect("its configuration");
        let aliases: Vec<&Vec<String>> = std::iter::once(&spec.aliases)
            .chain(spec.more_networks.iter().map(|(_, a)| a))
            .collect();
        assert!(
            aliases.iter().all(|a| a.contains(&"s-a-1".to_string())),
            "it answers to the replica's name on every network: {spec:?}"
        );
        assert!(
            converge_once(&manifest("2"), &engine).await.0.is_empty(),
            "a successor under its own name is the replica"
        );

        converge_once(&manifest("3"), &engine).await;
        let third = replica(&engine);
        assert_eq!(third.name, "s-a-1", "the name alternates back");
        assert_eq!(third.labels[docker::LABEL_REPLACES], second.id);
        assert!(converge_once(&manifest("3"), &engine).await.0.is_empty());
    }

    async fn router_config_of(engine: &FakeRuntime, id: &str) -> String {
        engine
            .read_file(id, manifest::router::CONFIG_PATH)
            .await
            .expect("read")
            .expect("the file is there")
    }

    /// Two services of one image on one node: one pull, both created and started.
    #[tokio::test]
    async fn one_pull_per_node_and_image() {
        let text = "nodes:\n  n1: { endpoint: \"unix:///run/n1.sock\" }\nservices:\n  a: { image: \"r.example/app:1\" }\n  b: { image: \"r.example/app:1\" }\n";
        let engine = FakeRuntime::new();
        let (_, report) = converge_once(text, &engine).await;
        let pulls = report.records.iter().filter(|r| r.action == "pull").count();
        assert_eq!(pulls, 1);
        let running: Vec<String> = engine
            .containers()
            .into_iter()
            .filter(|c| c.running)
            .map(|c| c.name)
            .collect();
        assert_eq!(running, ["s-a-1", "s-b-1"]);
    }
}
