//! One pass of the daemon: decide which commit to converge to, pin its
//! images, plan, apply, and record what happened.
//!
//! The rules that make the daemon safe to leave alone (the first two are
//! plain functions in `daemon/rules.rs`, unit-tested there):
//! - a commit whose manifests are invalid is refused; the nodes stay at (and
//!   are healed towards) the last commit applied in full;
//! - a rollout that was rolled back freezes that service at this commit
//!   until a new commit arrives; the other services keep being healed;
//! - services without `autoredeploy` keep the digests resolved when their
//!   commit was first applied; services with it follow the registry watcher;
//! - a failed fetch, an unreadable tree or an unreachable registry is a
//!   transient failure, never an empty desired state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::{Instrument, error, info, info_span, warn};

use super::rules::{self, Target};
use super::shared::{Config, Shared, Trigger, Watched};
use super::status::{Condition, NodeStatus, PassStatus, ServiceStatus};
use super::store::PassRecord;
use crate::manifest::Severity;
use crate::pass::apply::{self, ApplyReport};
use crate::pass::{self, Connect, Engines, Loaded, PassError, PassInput, Planned};
use crate::pipeline::{self, RunState};
use crate::plan::Observed;
use crate::registry::{Registry, Resolved};
use crate::source::git::{GitSource, short_commit as short};

mod gate;
mod images;
mod nodes;
mod pins;
mod publish;
mod steer;

use gate::Gate;
#[allow(unused_imports)]
use publish::*;

/// How a pass ended, for the loop's retry decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Converged, or nothing left that a retry could fix.
    Done,
    /// May succeed later by itself (fetch failed, node or registry unreachable).
    Transient(String),
    /// Will not succeed at this commit; wait for a new one.
    Permanent(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Done => "ok",
            Outcome::Transient(_) => "retry",
            Outcome::Permanent(_) => "failed",
        }
    }
}

/// The digest a service without `autoredeploy` was pinned to at a commit.
#[derive(Debug, Clone)]
struct Pin {
    commit: String,
    reference: String,
    resolved: Resolved,
}

/// The loop's memory between passes; it reaches the nodes through `C`
/// (the real engines, or in-memory ones in the rules' unit tests).
pub struct Reconciler<C: Connect = Engines> {
    connector: C,
    config: Config,
    stack: String,
    repo: Arc<Mutex<GitSource>>,
    pub(super) shared: Arc<Shared>,
    /// Shared with the registry watcher, so bearer tokens are fetched once.
    registry: Arc<Registry>,
    /// Resolves the images of passes in the background: a tag seen for the
    /// first time holds its pass at most `--registry-timeout`, and a hung
    /// registry holds no pass after that.
    resolver: Arc<crate::pass::resolver::Resolver>,
    pins: BTreeMap<String, Pin>,
    last_good: Option<String>,
    runner: super::runner::PipelineRunner,
    /// Since when each unreachable node has been so.
    node_loss: pass::NodeLoss,
    /// `autodestroy` jobs that ran (service, spec hash): not run again. Kept
    /// in memory: a restarted daemon runs such a job once more.
    destroyed: BTreeSet<(String, String)>,
    /// The pipeline run of a deploy-branch commit, going on in a task of
    /// its own so passes keep healing meanwhile.
    pipeline: Option<(String, tokio::task::JoinHandle<()>)>,
    /// The nodes of the manifests last converged to.
    last_nodes: BTreeMap<String, crate::manifest::model::Node>,
    /// Nodes that left the manifests and may still hold containers of the
    /// stack: drained (observed, their containers removed) until empty.
    retired: BTreeMap<String, crate::manifest::model::Node>,
    /// The engine steps of the pass under way, recorded with it.
    steps: Vec<super::store::StepRow>,
    /// The hold and freezes, as last read from the store.
    control: steer::Control,
    /// The newest applied revision in the history.
    last_recorded: Option<super::store::Revision>,
    /// What brought the branch's head, when a pass first saw it.
    head_cause: Option<(String, super::store::Cause)>,
    /// The last new commit checked for being a rollback commit.
    rollback: Option<steer::RollbackMark>,
    /// The held revision, once the nodes converged to it.
    held_applied: Option<String>,
    /// Services a freeze leaves as they are this pass.
    user_frozen: BTreeSet<String>,
}

/// How soon an image whose resolution failed is tried again (in the
/// background: no pass waits for it). Short, so a pushed image or a
/// registry back up is seen at the next pass after it.
const RESOLVE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

impl<C: Connect> Reconciler<C> {
    pub async fn new(
        connector: C,
        config: Config,
        stack: String,
        registry: Arc<Registry>,
        runner: super::runner::PipelineRunner,
    ) -> Reconciler<C> {
        let (repo, shared) = (runner.repo.clone(), runner.shared.clone());
        let last_good = shared
            .store
            .call(|store| store.last_good())
            .await
            .unwrap_or_else(|e| {
                warn!(error = %e, "cannot read the last good revision; starting without it");
                None
            });
        let last_recorded = shared
            .store
            .call(|store| store.latest_applied())
            .await
            .unwrap_or_else(|e| {
                warn!(error = %e, "cannot read the history; starting without it");
                None
            });
        let resolver = {
            let shared = shared.clone();
            crate::pass::resolver::Resolver::new(
                registry.clone(),
                config.settings.registry_timeout,
                RESOLVE_RETRY_AFTER,
                Arc::new(move || shared.triggers.send(super::shared::Trigger::Registry)),
            )
        };
        Reconciler {
            connector,
            stack,
            repo,
            shared,
            registry,
            resolver,
            pins: BTreeMap::new(),
            last_good,
            node_loss: pass::NodeLoss {
                down_after: config.node_down_after,
                ..Default::default()
            },
            config,
            runner,
            destroyed: BTreeSet::new(),
            last_nodes: BTreeMap::new(),
            pipeline: None,
            retired: BTreeMap::new(),
            steps: Vec::new(),
            control: steer::Control::default(),
            last_recorded,
            head_cause: None,
            rollback: None,
            held_applied: None,
            user_frozen: BTreeSet::new(),
        }
    }

    /// When an unreachable node will count as down, if one is on its way.
    pub fn next_down_at(&self) -> Option<Instant> {
        self.node_loss
            .next_down_at(tokio::time::Instant::now().into_std())
    }

    /// Run one pass for `triggers` and record it.
    pub async fn pass(&mut self, triggers: &BTreeSet<Trigger>) -> Outcome {
        let trigger: Vec<&str> = triggers.iter().map(|t| t.as_str()).collect();
        let trigger = trigger.join("+");
        let span = info_span!("pass", trigger = %trigger, revision = tracing::field::Empty);
        let started = (Instant::now(), SystemTime::now());
        let (outcome, commit, steps) = self.run(&span, triggers).instrument(span.clone()).await;
        let took = started.0.elapsed();
        let message = match &outcome {
            Outcome::Done => String::new(),
            Outcome::Transient(m) | Outcome::Permanent(m) => m.clone(),
        };
        self.shared
            .metrics
            .pass(&trigger, outcome.label(), took.as_secs_f64());
        let record = PassRecord {
            started: started.1,
            duration_ms: took.as_millis() as u64,
            trigger: trigger.clone(),
            commit: commit.clone(),
            result: outcome.label().into(),
            steps,
            message: message.clone(),
            records: std::mem::take(&mut self.steps),
            ..Default::default()
        };
        self.shared.store.write(move |store| {
            if let Err(e) = store.record_pass(&record) {
                warn!(error = %e, "cannot record the pass in the state store");
            }
        });
        self.shared.status.write().expect("status lock").last_pass = Some(PassStatus {
            trigger,
            commit,
            result: outcome.label().into(),
            message,
            finished_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            duration_ms: took.as_millis() as u64,
        });
        self.shared.notifier.pass_published(
            &self.shared.status.read().expect("status lock"),
            std::time::Instant::now(),
        );
        self.shared.changed();
        self.shared.ready.store(true, Ordering::Relaxed);
        outcome
    }

    /// The pass proper: returns the outcome, the commit converged to and the
    /// number of engine steps taken.
    async fn run(
        &mut self,
        span: &tracing::Span,
        triggers: &BTreeSet<Trigger>,
    ) -> (Outcome, String, usize) {
        let head = match self.head().await {
            Ok(head) => head,
            Err(reason) => return (Outcome::Transient(reason), String::new(), 0),
        };
        self.shared.status.write().expect("status lock").head = Some(head.clone());
        self.note_head(&head, triggers);
        self.read_control().await;
        if let Some(hold) = self.control.hold.clone() {
            return self.run_held(span, head, hold).await;
        }
        self.held_applied = None;
        let mut target = self.target(&head).await;
        if let Some(reason) = target.refused.clone().filter(|_| target.commit == head) {
            // The head was refused and nothing was ever applied: there is no
            // revision to deploy or heal towards, so the stack stays as it is.
            self.publish_stalled(&reason);
            return (Outcome::Permanent(reason), head, 0);
        }
        let loaded = match self.load(&target.commit).await {
            Ok(loaded) => loaded,
            Err(PassError::Invalid { diagnostics, .. }) => {
                let reason = invalid_reason(&target.commit, &diagnostics);
                if target.refused.is_none() {
                    // Said once per commit, not on every pass that meets it again.
                    error!(commit = %target.commit, "{reason}");
                    self.shared.notifier.commit_refused(&target.commit, &reason);
                }
                let (commit, why) = (target.commit.clone(), reason.clone());
                self.shared.store.write(move |store| {
                    if let Err(e) = store.mark_failed(&commit, &why, &BTreeMap::new()) {
                        warn!(error = %e, "cannot record the refused revision");
                    }
                });
                self.record_verdict(
                    &target.commit,
                    super::store::Verdict::Refused,
                    &reason,
                    BTreeMap::new(),
                );
                match self.last_good.clone().filter(|good| *good != target.commit) {
                    Some(good) => {
                        target.commit = good;
                        target.refused = Some(reason);
                        match self.load(&target.commit).await {
                            Ok(loaded) => loaded,
                            Err(e) => return (Outcome::Transient(e.to_string()), target.commit, 0),
                        }
                    }
                    None => {
                        self.publish_stalled(&reason);
                        return (Outcome::Permanent(reason), head, 0);
                    }
                }
            }
            Err(error) => return (Outcome::Transient(error.to_string()), target.commit, 0),
        };
        // Every commit but the last one applied in full (which passed its
        // pipeline then) goes through the gate: a pass never deploys a
        // commit on the strength of how it was triggered.
        let mut loaded = loaded;
        if self.last_good.as_deref() != Some(loaded.commit.as_str()) {
            let vouched = self.rollback_mark(&loaded).await.vouched;
            match self.pipeline_gate(&loaded, vouched).await {
                Gate::Open => {}
                Gate::Closed(outcome) => return (outcome, loaded.commit, 0),
                Gate::Running => {
                    // Heal towards the last good revision while the run goes on.
                    let Some(good) = self.last_good.clone() else {
                        self.publish_watched(&loaded);
                        return (Outcome::Done, loaded.commit, 0);
                    };
                    loaded = match self.load(&good).await {
                        Ok(good) => good,
                        Err(e) => return (Outcome::Transient(e.to_string()), good, 0),
                    };
                    target.commit = good;
                }
            }
        }
        span.record("revision", short(&loaded.commit));
        let (outcome, steps) = self.converge(&loaded, &target, None).await;
        (outcome, loaded.commit, steps)
    }

    /// A pass while the stack is held: converge to the held revision with
    /// the digests it ran, whatever the branch and the registry say.
    async fn run_held(
        &mut self,
        span: &tracing::Span,
        head: String,
        hold: super::store::Hold,
    ) -> (Outcome, String, usize) {
        let loaded = match self.load(&hold.commit).await {
            Ok(loaded) => loaded,
            Err(e) => return (Outcome::Transient(e.to_string()), hold.commit, 0),
        };
        span.record("revision", short(&loaded.commit));
        let target = Target {
            head,
            commit: hold.commit.clone(),
            refused: None,
            frozen: BTreeMap::new(),
        };
        let (outcome, steps) = self.converge(&loaded, &target, Some(&hold)).await;
        (outcome, loaded.commit, steps)
    }

    /// Where the branch points now.
    async fn head(&self) -> Result<String, String> {
        let repo = self.repo.clone();
        let branch = self.config.branch.clone();
        tokio::task::spawn_blocking(move || {
            let repo = repo.lock().expect("repository lock");
            repo.resolve(&branch).map(|oid| oid.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }

    /// Read and validate the manifests at `commit`.
    async fn load(&self, commit: &str) -> Result<Loaded, PassError> {
        self.runner
            .load(commit, &self.config.settings.source.path, &self.stack)
            .await
    }

    /// What the pass converges to ([`rules::target`]), from the store's
    /// record of the head.
    async fn target(&self, head: &str) -> Target {
        let commit = head.to_string();
        let failure = self
            .shared
            .store
            .call(move |store| store.failure(&commit))
            .await
            .unwrap_or_else(|e| {
                warn!(error = %e, "cannot read the state store; treating the head as new");
                None
            });
        rules::target(head, failure, self.last_good.as_deref())
    }

    /// Plan and apply `loaded` (held there when `hold` is given), then
    /// record conditions, status and history.
    async fn converge(
        &mut self,
        loaded: &Loaded,
        target: &Target,
        hold: Option<&super::store::Hold>,
    ) -> (Outcome, usize) {
        if target.refused.is_some() && loaded.commit != target.head {
            info!(head = %short(&target.head), at = %short(&loaded.commit), "head refused; healing towards the last good revision");
        }
        self.publish_watched(loaded);
        if self.last_good.as_deref() == Some(loaded.commit.as_str()) {
            self.trust_runners_of(loaded);
        }
        let mut pins = match hold {
            Some(hold) => match self.held_pins(hold).await {
                Ok(pins) => pins,
                Err(reason) => return (Outcome::Transient(reason), 0),
            },
            None => self.pins_for(loaded).await,
        };
        let left = match hold {
            Some(_) => BTreeMap::new(),
            None => self.freeze_services(loaded, &mut pins),
        };
        self.user_frozen = left.keys().cloned().collect();
        // The revision this pass only heals at, unless it replaces.
        let settled = match hold {
            Some(_) => self.held_applied.clone(),
            None => self.last_good.clone(),
        };
        let rolling_back = hold.is_some()
            || self
                .rollback
                .as_ref()
                .is_some_and(|m| m.commit == loaded.commit && m.restored.is_some());
        let input = PassInput {
            pins,
            frozen: target
                .frozen
                .iter()
                .map(|(service, reason)| {
                    (
                        service.clone(),
                        format!("its rollout of {} was rolled back ({reason}); waiting for a new commit", short(&loaded.commit)),
                    )
                })
                .chain(left.clone())
                .collect(),
            node_loss: Some(self.node_loss.clone()),
            destroyed: self.destroyed.clone(),
            retired: self.retire_nodes(loaded),
            resolver: Some(self.resolver.clone()),
        };
        let watch = PassWatch {
            shared: &self.shared,
            commit: &loaded.commit,
            last_good: settled.as_deref(),
            rollback: rolling_back,
        };
        let apply = match self.apply_settings(loaded, hold.is_some()).await {
            Ok(apply) => apply,
            Err(reason) => return (Outcome::Transient(reason), 0),
        };
        let deployment = crate::pass::deploy::deploy(
            &self.connector,
            loaded,
            &self.config.settings,
            &self.registry,
            &input,
            &apply,
            &watch,
        )
        .await;
        let (mut planned, mut report) = (deployment.planned, deployment.report);
        self.restart_asked(loaded, &planned, &apply, &mut report)
            .await;
        self.remember_destroyed(&planned.plan);
        self.remember_pulls(&report);
        self.remember_hooks(&report);
        self.node_loss
            .observe(&planned.observed, tokio::time::Instant::now().into_std());
        self.remember_pins(loaded, &planned);
        if !planned.plan.refused.is_empty() {
            let reason = planned.plan.refused.join("; ");
            self.shared.notifier.commit_refused(&loaded.commit, &reason);
            self.record_verdict(
                &loaded.commit,
                super::store::Verdict::Refused,
                &reason,
                BTreeMap::new(),
            );
            self.publish(loaded, &planned, &planned.observed, &report, target);
            return (Outcome::Permanent(reason), 0);
        }
        // Healing the revision already applied is retried with backoff,
        // whatever failed: freezing it would leave a lost replica down until
        // the next commit.
        report.transient.extend(rules::healing(
            settled.as_deref(),
            &loaded.commit,
            &planned.plan,
        ));
        // Taken, not copied: a fleet's observation is the largest thing a
        // pass holds, and one stale after an apply is dropped before the
        // nodes are observed again, so two are never held at once.
        let observed = std::mem::take(&mut planned.observed);
        let observed = if planned.plan.is_empty() {
            observed
        } else {
            drop(observed);
            crate::pass::observe::observe(
                &loaded.stack,
                &planned
                    .engines
                    .iter()
                    .map(|(name, engine)| (name.clone(), Ok(engine.clone())))
                    .collect(),
                self.config.settings.engine_timeout,
            )
            .await
        };
        self.publish(loaded, &planned, &observed, &report, target);
        self.forget_drained(&observed, &planned.plan.swarm, report.ok());
        let steps = report.records.len();
        self.steps = std::mem::take(&mut report.records)
            .into_iter()
            .map(Into::into)
            .collect();
        // Services rolled back stay frozen at this commit, also when another
        // service of the same pass failed only transiently.
        let rolled_back: BTreeMap<String, String> = report
            .failed
            .iter()
            .filter(|(service, _)| !report.transient.contains(*service))
            .map(|(service, reason)| (service.clone(), reason.clone()))
            .collect();
        if !rolled_back.is_empty() {
            self.shared
                .notifier
                .deploy_rolled_back(&loaded.commit, &rolled_back);
            let mut frozen = target.frozen.clone();
            frozen.extend(rolled_back.clone());
            let reason: Vec<&str> = rolled_back.values().map(String::as_str).collect();
            let (commit, why) = (loaded.commit.clone(), reason.join("; "));
            self.record_verdict(
                &loaded.commit,
                super::store::Verdict::RolledBack,
                &why,
                steer::images(loaded, &planned),
            );
            self.shared.store.write(move |store| {
                if let Err(e) = store.mark_failed(&commit, &why, &frozen) {
                    warn!(error = %e, "cannot record the failed rollout");
                }
            });
        }
        if report.failed.keys().any(|s| report.transient.contains(s)) {
            return (Outcome::Transient(report.failures.join("; ")), steps);
        }
        if !rolled_back.is_empty() {
            return (Outcome::Permanent(report.failures.join("; ")), steps);
        }
        // A swarm step that failed (a join, a leave) concerns no service's
        // release: retried with backoff.
        if report.failed.is_empty() && !report.failures.is_empty() {
            return (Outcome::Transient(report.failures.join("; ")), steps);
        }
        if let Some(reason) = planned.transient {
            return (Outcome::Transient(reason), steps);
        }
        if target.refused.is_none() && target.frozen.is_empty() && left.is_empty() {
            match hold {
                Some(_) => self.held_applied(loaded),
                None => self.applied(loaded),
            }
            if self.record_applied(loaded, &planned, hold.is_some()) {
                self.prune_images(&planned.engines);
            }
        }
        match &target.refused {
            Some(reason) => (Outcome::Permanent(reason.clone()), steps),
            None => (Outcome::Done, steps),
        }
    }

    fn applied(&mut self, loaded: &Loaded) {
        let commit = loaded.commit.as_str();
        self.trust_runners_of(loaded);
        if self.last_good.as_deref() != Some(commit) {
            info!(commit = %short(commit), "revision applied");
            // What `pier validate` warns about (a runner node on plain
            // tcp://, among others), said once per revision.
            for warning in loaded
                .diagnostics
                .iter()
                .filter(|d| d.severity == crate::manifest::Severity::Warning)
            {
                warn!(commit = %short(commit), "{warning}");
            }
        }
        self.last_good = Some(commit.to_string());
        self.shared.notifier.deploy_finished(commit);
        let applied = commit.to_string();
        self.shared.store.write(move |store| {
            if let Err(e) = store.mark_applied(&applied) {
                warn!(error = %e, "cannot record the applied revision");
            }
        });
        self.shared.metrics.set_revision(commit);
        self.shared.status.write().expect("status lock").revision = Some(commit.to_string());
        // Other branches' runs that waited for a first revision go on.
        self.shared.trusted_runners_known.notify_waiters();
    }

    /// The held revision converged: said once, and shown as the revision,
    /// while the last good revision of the branch stays what it was.
    fn held_applied(&mut self, loaded: &Loaded) {
        let commit = loaded.commit.as_str();
        if self.held_applied.as_deref() != Some(commit) {
            info!(commit = %short(commit), "held revision applied");
        }
        self.held_applied = Some(commit.to_string());
        self.shared.notifier.deploy_finished(commit);
        self.shared.metrics.set_revision(commit);
        self.shared.status.write().expect("status lock").revision = Some(commit.to_string());
        self.shared.trusted_runners_known.notify_waiters();
    }

    /// Other branches' stages run on the runner nodes of the last revision
    /// applied (the deploy branch's, reviewed), never on their own.
    fn trust_runners_of(&self, loaded: &Loaded) {
        if let Some(runners) = super::runner::TrustedRunners::of(&loaded.manifest) {
            *self
                .shared
                .trusted_runners
                .lock()
                .expect("trusted runners lock") = Some(runners);
        }
    }

    /// Tell the watchers which tags to follow and which nodes to watch.
    /// A standby's pass (`--ha`): follow the branch and read its manifests,
    /// so the watchers follow the current nodes and tags and a takeover
    /// starts warm. Nothing is changed, tested or recorded.
    pub async fn standby_pass(&mut self) {
        let head = match self.head().await {
            Ok(head) => head,
            Err(reason) => {
                warn!(%reason, "standing by: cannot read the branch");
                return;
            }
        };
        self.shared.status.write().expect("status lock").head = Some(head.clone());
        let loaded = match self.load(&head).await {
            Ok(loaded) => Some(loaded),
            Err(_) => match self.last_good.clone() {
                Some(good) => self.load(&good).await.ok(),
                None => None,
            },
        };
        if let Some(loaded) = loaded {
            self.publish_watched(&loaded);
        }
        // The leader's hold and freezes reach the status as the lease
        // hands them on (`lease::swarm`); their running out is the leader's
        // to tell.
        self.shared.changed();
        self.shared.ready.store(true, Ordering::Relaxed);
    }

    fn publish_watched(&self, loaded: &Loaded) {
        let watched = Watched {
            stack: loaded.stack.clone(),
            followed: loaded
                .manifest
                .services
                .values()
                .filter(|s| s.autoredeploy)
                .filter_map(|s| s.image.clone())
                .collect(),
            nodes: loaded.manifest.nodes.values().cloned().collect(),
        };
        self.shared.watched.send_if_modified(|current| {
            let changed = *current != watched;
            if changed {
                *current = watched.clone();
            }
            changed
        });
    }
}

/// Every error of invalid manifests, one `file:line:col: message` per line.
fn invalid_reason(commit: &str, diagnostics: &[crate::manifest::Diagnostic]) -> String {
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    format!(
        "the manifests at {} are invalid; the nodes stay at the last good revision:\n{}",
        short(commit),
        errors.join("\n")
    )
}

#[cfg(test)]
mod tests;
