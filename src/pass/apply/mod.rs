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
use std::time::{Duration, SystemTime};

// tokio's clock, so the waits of a rollout run on paused time in tests.
use tokio::time::Instant;

use futures_util::future::join_all;
use futures_util::{StreamExt, stream};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::docker::{self, AnonymousVolume, Credentials, Health, Runtime, RuntimeError, Volumes};
use crate::manifest::model::{Autodestroy, DependsOnCondition};
use crate::plan::{Change, Desired, DesiredService, OwnedContainer, Plan, ServicePlan};

mod context;
mod error;
mod health;
mod hooks;
mod lifecycle;
mod nodes;
mod replace;
mod replica;
mod restart;
mod swarm;
pub use error::{DependencyProblem, HealthError, Restored, RolloutError};
pub use restart::restart;
pub use swarm::advertise_of;
#[cfg(test)]
mod tests;

use context::*;
use health::*;
use nodes::*;
use replace::*;
use replica::*;
use swarm::*;

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
    /// What brought the pass (`apply`, `commit`, `rollback`, …): a deploy
    /// hook sees it as `PIER_TRIGGER`.
    pub trigger: String,
    /// `(service, spec hash)` whose `pre_deploy` hook succeeded already
    /// (the daemon's record): not run again.
    pub hooks_done: BTreeSet<(String, String)>,
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
            trigger: "apply".into(),
            hooks_done: BTreeSet::new(),
        }
    }
}

/// What one step of an apply does; shown (in logs, the store, the
/// dashboard and `apply`'s output) as its lower-case words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Network,
    Volumes,
    Create,
    Configure,
    Start,
    WaitHealthy,
    IntoRotation,
    OutOfRotation,
    Reload,
    Stop,
    Rename,
    Remove,
    Rollback,
    SwarmInit,
    SwarmJoin,
    SwarmJoinManager,
    SwarmPromote,
    SwarmDemote,
    SwarmLeave,
    /// A deploy hook's one-off container, from creation to removal.
    Hook,
    /// A `post_start` command in a new container.
    PostStart,
    /// A `pre_stop` command in a container about to stop.
    PreStop,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Hook => "hook",
            Action::PostStart => "post-start",
            Action::PreStop => "pre-stop",
            Action::Network => "network",
            Action::Volumes => "volumes",
            Action::Create => "create",
            Action::Configure => "configure",
            Action::Start => "start",
            Action::WaitHealthy => "wait-healthy",
            Action::IntoRotation => "into rotation",
            Action::OutOfRotation => "out of rotation",
            Action::Reload => "reload",
            Action::Stop => "stop",
            Action::Rename => "rename",
            Action::Remove => "remove",
            Action::Rollback => "rollback",
            Action::SwarmInit => "swarm init",
            Action::SwarmJoin => "swarm join",
            Action::SwarmJoinManager => "swarm join (manager)",
            Action::SwarmPromote => "swarm promote",
            Action::SwarmDemote => "swarm demote",
            Action::SwarmLeave => "swarm leave",
        }
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One engine call and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub service: String,
    pub node: String,
    pub action: Action,
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
    /// `(service, spec hash)` whose `pre_deploy` hook succeeded this pass.
    pub hooks_ran: Vec<(String, String)>,
    /// What went wrong and did not stop a rollout (a `post_deploy` hook
    /// that failed): for people to hear.
    pub alerts: Vec<String>,
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
    /// What the deploy hooks did (see [`ApplyReport`]).
    hooks_ran: Mutex<Vec<(String, String)>>,
    alerts: Mutex<Vec<String>>,
}

impl<'a, R: Runtime> Context<'a, R> {
    fn new(
        desired: &'a Desired,
        plan: &Plan,
        engines: &'a BTreeMap<String, R>,
        credentials: &'a dyn CredentialLookup,
        settings: &'a ApplySettings,
        on_step: &'a (dyn Fn(&StepRecord) + Sync),
    ) -> Context<'a, R> {
        Context {
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
            hooks_ran: Mutex::new(Vec::new()),
            alerts: Mutex::new(Vec::new()),
        }
    }

    /// The report of what was done, with these failures.
    fn report(self, failures: Vec<String>, failed: BTreeMap<String, String>) -> ApplyReport {
        ApplyReport {
            records: self.records.into_inner().expect("records lock"),
            failures,
            failed,
            transient: self.transient.into_inner().expect("transient lock"),
            hooks_ran: self.hooks_ran.into_inner().expect("hooks lock"),
            alerts: self.alerts.into_inner().expect("alerts lock"),
        }
    }
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
    let ctx = Context::new(desired, plan, engines, credentials, settings, on_step);
    let mut failures = Vec::new();
    let mut failed = BTreeMap::new();
    let mut failed_services = BTreeSet::new();
    let (first, last): (Vec<_>, Vec<_>) = plan.swarm.steps.iter().partition(|s| !s.runs_last());
    if let Err(failure) = form_swarm(&ctx, &first).await {
        failures.push(failure.to_string());
    }
    let by_name: BTreeMap<&str, &ServicePlan> = plan
        .services
        .iter()
        .map(|s| (s.service.as_str(), s))
        .collect();
    // The planner's order: a wave once the one before it is done.
    for wave in &plan.waves {
        let level: Vec<&ServicePlan> = wave
            .services
            .iter()
            .filter_map(|name| by_name.get(name.as_str()).copied())
            .collect();
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
                    Some(dependency) => Err(RolloutError::DependencyFailed {
                        service: service_plan.service.clone(),
                        dependency,
                    }),
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
                        hooks::rollout_with_hooks(ctx, service_plan).await
                    }
                }
            }
        }))
        .await;
        for (service_plan, outcome) in level.iter().zip(outcomes) {
            if let Err(error) = outcome {
                let message = error.to_string();
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
        failures.push(failure.to_string());
    }
    ctx.report(failures, failed)
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
