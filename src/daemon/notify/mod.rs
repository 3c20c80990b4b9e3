//! Notifications: the daemon tells people when something needs them, or
//! when something they waited for happened.
//!
//! This module owns the events (what happened, to which commit, node or
//! service), the [`Notifier`] that the loop, the pipeline runner and the
//! pass hand them to, and the small state that turns what a pass saw into
//! events (a node going down and coming back, a service Degraded for too
//! long). Delivery is in [`deliver`]: a queue and a task per target, so a
//! slow or failing target never holds up a pass; it is retried with
//! backoff, and what it failed to deliver shows in the status and metrics.

pub mod config;
pub mod deliver;

use crate::pipeline::RunStatus;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use config::NotifyConfig;

use crate::source::git::short_commit as short;

use super::metrics::Metrics;
use super::status::{Condition, Status, TargetStatus};

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A pipeline run failed (any branch).
    PipelineFailed,
    /// A run passed where the branch's run before it failed.
    PipelinePassedAfterFailure,
    /// A rollout began: a new revision, or a new digest of a followed tag.
    DeployStarted,
    /// The rollout converged: every node runs the revision.
    DeployFinished,
    /// A rollout failed its health checks and was rolled back.
    DeployRolledBack,
    /// A commit is refused: invalid manifests, the container policy, or a
    /// plan pier will not apply.
    CommitRefused,
    /// A node stayed unreachable past `--node-down-after`.
    NodeDown,
    /// A node that was down answers again.
    NodeBack,
    /// A service stayed Degraded past `degraded_after`.
    ServiceDegraded,
    /// A service reported Degraded is Ready again.
    ServiceRecovered,
    /// A rollback began: a commit made by `pier rollback`, or a hold.
    RollbackStarted,
    /// Every node runs the revision rolled back to.
    RollbackFinished,
    /// `pier rollback --hold`: the stack stays at a revision.
    StackHeld,
    /// `pier resume`: the stack follows its branch again.
    StackResumed,
    /// `pier freeze`: services wait for new commits and digests.
    ServiceFrozen,
    /// A freeze was lifted, or ran out.
    ServiceUnfrozen,
    /// A `post_deploy` hook failed; the rollout stands.
    HookFailed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::PipelineFailed => "pipeline_failed",
            EventKind::PipelinePassedAfterFailure => "pipeline_passed_after_failure",
            EventKind::DeployStarted => "deploy_started",
            EventKind::DeployFinished => "deploy_finished",
            EventKind::DeployRolledBack => "deploy_rolled_back",
            EventKind::CommitRefused => "commit_refused",
            EventKind::NodeDown => "node_down",
            EventKind::NodeBack => "node_back",
            EventKind::ServiceDegraded => "service_degraded",
            EventKind::ServiceRecovered => "service_recovered",
            EventKind::RollbackStarted => "rollback_started",
            EventKind::RollbackFinished => "rollback_finished",
            EventKind::StackHeld => "stack_held",
            EventKind::StackResumed => "stack_resumed",
            EventKind::ServiceFrozen => "service_frozen",
            EventKind::ServiceUnfrozen => "service_unfrozen",
            EventKind::HookFailed => "hook_failed",
        }
    }
}

/// One notification, as every target receives it (the webhook as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event: EventKind,
    pub stack: String,
    pub branch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// One line for people: a chat message, a mail's subject.
    pub summary: String,
    /// More, when there is more: why it failed, the last lines of a log.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
    /// Seconds since the epoch.
    pub at: u64,
}

impl Event {
    fn new(kind: EventKind, summary: String) -> Event {
        Event {
            event: kind,
            stack: String::new(),
            branch: String::new(),
            commit: None,
            node: None,
            service: None,
            summary,
            details: String::new(),
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    fn commit(mut self, commit: &str) -> Event {
        self.commit = Some(commit.to_string());
        self
    }

    fn details(mut self, details: &str) -> Event {
        self.details = details.to_string();
        self
    }
}

/// Takes events from the daemon and hands each to the targets that hear it.
pub struct Notifier {
    stack: String,
    branch: String,
    degraded_after: std::sync::RwLock<Duration>,
    /// Replaced whole on SIGHUP; a replaced target's queue still delivers
    /// what it holds.
    targets: std::sync::RwLock<Vec<deliver::Queue>>,
    state: Mutex<Transitions>,
}

/// What the notifier remembers between passes, to tell transitions.
#[derive(Default)]
struct Transitions {
    /// Nodes last seen down.
    down: BTreeSet<String>,
    /// Since when each service has been Degraded, and whether that was said.
    degraded: BTreeMap<String, (Instant, bool)>,
    /// The commit whose rollout was announced and has not ended, and
    /// whether it rolls back.
    deploying: Option<(String, bool)>,
    /// The last refusal announced: (commit, reason).
    refused: Option<(String, String)>,
}

impl Notifier {
    /// Start a delivery task per target (on the current Tokio runtime).
    pub fn start(config: &NotifyConfig, stack: &str, branch: &str, metrics: &Metrics) -> Notifier {
        Notifier {
            stack: stack.to_string(),
            branch: branch.to_string(),
            degraded_after: std::sync::RwLock::new(config.degraded_after),
            targets: std::sync::RwLock::new(Self::queues(config, metrics)),
            state: Mutex::new(Transitions::default()),
        }
    }

    /// A notifier with no target: events go nowhere.
    pub fn none() -> Notifier {
        Notifier {
            stack: String::new(),
            branch: String::new(),
            degraded_after: std::sync::RwLock::new(Duration::MAX),
            targets: std::sync::RwLock::new(Vec::new()),
            state: Mutex::new(Transitions::default()),
        }
    }

    fn queues(config: &NotifyConfig, metrics: &Metrics) -> Vec<deliver::Queue> {
        config
            .targets
            .iter()
            .map(|target| deliver::Queue::start(target.clone(), config, metrics.clone()))
            .collect()
    }

    /// Use `config`'s targets from now on (SIGHUP). Events already queued
    /// for the old ones are still delivered.
    pub fn reload(&self, config: &NotifyConfig, metrics: &Metrics) {
        let queues = Self::queues(config, metrics);
        *self.targets.write().expect("targets lock") = queues;
        *self.degraded_after.write().expect("degraded_after lock") = config.degraded_after;
    }

    pub fn targets(&self) -> Vec<TargetStatus> {
        self.targets
            .read()
            .expect("targets lock")
            .iter()
            .map(|t| t.status())
            .collect()
    }

    fn send(&self, mut event: Event) {
        if event.stack.is_empty() {
            event.stack = self.stack.clone();
        }
        if event.branch.is_empty() {
            event.branch = self.branch.clone();
        }
        for target in self.targets.read().expect("targets lock").iter() {
            target.offer(&event);
        }
    }

    /// A pipeline run ended with `state`; `before` is the state of the
    /// branch's run before it, if there was one.
    pub fn pipeline_finished(
        &self,
        branch: &str,
        commit: &str,
        state: RunStatus,
        before: Option<RunStatus>,
        summary: &str,
    ) {
        if let Some(event) = pipeline_event(branch, commit, state, before, summary) {
            self.send(event);
        }
    }

    /// A pass is about to roll `commit` out (said once per rollout).
    pub fn deploy_started(&self, commit: &str, changes: usize) {
        let event = self
            .state
            .lock()
            .expect("notify state")
            .deploy_started(commit, changes, false);
        event.into_iter().for_each(|e| self.send(e));
    }

    /// A rollout to `commit` began that rolls back (a rollback commit, or
    /// a hold): said as a rollback, never as a deploy.
    pub fn rollback_started(&self, commit: &str, changes: usize) {
        let event = self
            .state
            .lock()
            .expect("notify state")
            .deploy_started(commit, changes, true);
        event.into_iter().for_each(|e| self.send(e));
    }

    /// `commit` is applied in full: ends a rollout (or rollback) announced.
    pub fn deploy_finished(&self, commit: &str) {
        let event = self
            .state
            .lock()
            .expect("notify state")
            .deploy_finished(commit);
        event.into_iter().for_each(|e| self.send(e));
    }

    /// An event outside a rollout's own course: an operator's decision (a
    /// hold, a freeze, and their end, with who in `summary` and why in
    /// `details`), or a `post_deploy` hook that failed.
    pub fn tell(
        &self,
        kind: EventKind,
        summary: String,
        commit: Option<&str>,
        service: Option<&str>,
        details: &str,
    ) {
        let mut event = Event::new(kind, summary).details(details);
        event.commit = commit.map(str::to_string);
        event.service = service.map(str::to_string);
        self.send(event);
    }

    /// The rollout of `commit` was rolled back for `services` (with why).
    pub fn deploy_rolled_back(&self, commit: &str, services: &BTreeMap<String, String>) {
        let event = self
            .state
            .lock()
            .expect("notify state")
            .rolled_back(commit, services);
        self.send(event);
    }

    /// `commit` is refused for `reason` (said once per commit and reason).
    pub fn commit_refused(&self, commit: &str, reason: &str) {
        let event = self
            .state
            .lock()
            .expect("notify state")
            .refused(commit, reason);
        event.into_iter().for_each(|e| self.send(e));
    }

    /// Compare what a pass published with what the passes before it did.
    pub fn pass_published(&self, status: &Status, now: Instant) {
        let events = self.state.lock().expect("notify state").observe(
            status,
            now,
            *self.degraded_after.read().expect("degraded_after lock"),
        );
        for event in events {
            self.send(event);
        }
    }
}

/// The event a finished pipeline run makes, if any.
fn pipeline_event(
    branch: &str,
    commit: &str,
    state: RunStatus,
    before: Option<RunStatus>,
    summary: &str,
) -> Option<Event> {
    let event = match (state, before) {
        (RunStatus::Failed, _) => Event::new(
            EventKind::PipelineFailed,
            format!("the pipeline of {} on {branch} failed", short(commit)),
        )
        .details(summary),
        (RunStatus::Passed, Some(RunStatus::Failed)) => Event::new(
            EventKind::PipelinePassedAfterFailure,
            format!("the pipeline of {} on {branch} passed again", short(commit)),
        ),
        _ => return None,
    };
    let mut event = event.commit(commit);
    event.branch = branch.to_string();
    Some(event)
}

impl Transitions {
    fn deploy_started(&mut self, commit: &str, changes: usize, rollback: bool) -> Option<Event> {
        if self.deploying.as_ref().map(|(c, _)| c.as_str()) == Some(commit) {
            return None;
        }
        self.deploying = Some((commit.to_string(), rollback));
        let (kind, verb) = if rollback {
            (EventKind::RollbackStarted, "rolling back to")
        } else {
            (EventKind::DeployStarted, "rolling out")
        };
        Some(
            Event::new(
                kind,
                format!("{verb} {} ({changes} change(s))", short(commit)),
            )
            .commit(commit),
        )
    }

    fn deploy_finished(&mut self, commit: &str) -> Option<Event> {
        let (_, rollback) = self.deploying.take()?;
        let (kind, summary) = if rollback {
            (
                EventKind::RollbackFinished,
                format!("rolled back: every node runs {} again", short(commit)),
            )
        } else {
            (
                EventKind::DeployFinished,
                format!("{} is deployed", short(commit)),
            )
        };
        Some(Event::new(kind, summary).commit(commit))
    }

    fn rolled_back(&mut self, commit: &str, services: &BTreeMap<String, String>) -> Event {
        self.deploying = None;
        let names: Vec<&str> = services.keys().map(String::as_str).collect();
        let why: Vec<String> = services.iter().map(|(s, r)| format!("{s}: {r}")).collect();
        Event::new(
            EventKind::DeployRolledBack,
            format!(
                "the rollout of {} was rolled back ({})",
                short(commit),
                names.join(", ")
            ),
        )
        .commit(commit)
        .details(&why.join("\n"))
    }

    fn refused(&mut self, commit: &str, reason: &str) -> Option<Event> {
        let key = (commit.to_string(), reason.to_string());
        if self.refused.as_ref() == Some(&key) {
            return None;
        }
        self.refused = Some(key);
        Some(
            Event::new(
                EventKind::CommitRefused,
                format!("{} is refused; the nodes stay as they are", short(commit)),
            )
            .commit(commit)
            .details(reason),
        )
    }

    fn observe(&mut self, status: &Status, now: Instant, degraded_after: Duration) -> Vec<Event> {
        let mut events = Vec::new();
        let down: BTreeSet<String> = status
            .nodes
            .iter()
            .filter(|n| n.down)
            .map(|n| n.name.clone())
            .collect();
        for node in status
            .nodes
            .iter()
            .filter(|n| n.down && !self.down.contains(&n.name))
        {
            let mut event = Event::new(EventKind::NodeDown, format!("node {} is down", node.name))
                .details(&node.reason);
            event.node = Some(node.name.clone());
            events.push(event);
        }
        for node in status
            .nodes
            .iter()
            .filter(|n| n.reachable && self.down.contains(&n.name))
        {
            let mut event = Event::new(
                EventKind::NodeBack,
                format!("node {} answers again", node.name),
            );
            event.node = Some(node.name.clone());
            events.push(event);
        }
        // A node that left the manifests while down is no longer watched.
        let listed: BTreeSet<&str> = status.nodes.iter().map(|n| n.name.as_str()).collect();
        self.down = down
            .into_iter()
            .chain(
                self.down
                    .iter()
                    .filter(|n| {
                        listed.contains(n.as_str())
                            && status.nodes.iter().any(|s| s.name == **n && !s.reachable)
                    })
                    .cloned(),
            )
            .collect();

        let mut degraded = BTreeMap::new();
        for service in &status.services {
            let was = self.degraded.get(&service.name).copied();
            if service.condition == Condition::Degraded {
                let (since, mut said) = was.unwrap_or((now, false));
                if !said && now.duration_since(since) >= degraded_after {
                    said = true;
                    let mut event = Event::new(
                        EventKind::ServiceDegraded,
                        format!(
                            "{} has been Degraded for {}",
                            service.name,
                            humantime::format_duration(round_seconds(now.duration_since(since)))
                        ),
                    )
                    .details(&service.reason);
                    event.service = Some(service.name.clone());
                    events.push(event);
                }
                degraded.insert(service.name.clone(), (since, said));
            } else if service.condition == Condition::Ready && was.is_some_and(|(_, said)| said) {
                let mut event = Event::new(
                    EventKind::ServiceRecovered,
                    format!("{} is Ready again", service.name),
                );
                event.service = Some(service.name.clone());
                events.push(event);
            } else if service.condition != Condition::Ready
                && let Some(was) = was
            {
                // Progressing or Stalled on the way: the clock keeps running.
                degraded.insert(service.name.clone(), was);
            }
        }
        self.degraded = degraded;
        let commit = status.revision.clone().or(status.head.clone());
        for event in &mut events {
            event.commit = event.commit.take().or(commit.clone());
        }
        events
    }
}

fn round_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::status::{NodeStatus, ServiceStatus};

    fn node(name: &str, reachable: bool, down: bool) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            reachable,
            down,
            reason: if reachable {
                String::new()
            } else {
                "connection refused".into()
            },
            containers: 0,
            tags: Vec::new(),
            engine: String::new(),
        }
    }

    fn service(name: &str, condition: Condition) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            desired: 1,
            running: 0,
            image: "app".into(),
            digest: String::new(),
            autoredeploy: false,
            condition,
            reason: "registry unreachable".into(),
            route: None,
            nodes: Default::default(),
        }
    }

    fn kinds(events: &[Event]) -> Vec<(EventKind, String)> {
        events
            .iter()
            .map(|e| {
                let subject = e.node.clone().or(e.service.clone()).unwrap_or_default();
                (e.event, subject)
            })
            .collect()
    }

    #[test]
    fn a_node_is_reported_down_once_and_back_once() {
        let mut t = Transitions::default();
        let now = Instant::now();
        let status = |nodes: Vec<NodeStatus>| Status {
            nodes,
            ..Default::default()
        };
        // Unreachable but not yet down: nothing.
        assert!(
            t.observe(&status(vec![node("n1", false, false)]), now, Duration::MAX)
                .is_empty()
        );
        let down = t.observe(&status(vec![node("n1", false, true)]), now, Duration::MAX);
        assert_eq!(kinds(&down), [(EventKind::NodeDown, "n1".into())]);
        assert_eq!(down[0].details, "connection refused");
        assert!(
            t.observe(&status(vec![node("n1", false, true)]), now, Duration::MAX)
                .is_empty()
        );
        let back = t.observe(&status(vec![node("n1", true, false)]), now, Duration::MAX);
        assert_eq!(kinds(&back), [(EventKind::NodeBack, "n1".into())]);
        assert!(
            t.observe(&status(vec![node("n1", true, false)]), now, Duration::MAX)
                .is_empty()
        );
    }

    #[test]
    fn a_service_is_reported_after_it_stays_degraded_and_again_when_ready() {
        let mut t = Transitions::default();
        let start = Instant::now();
        let after = Duration::from_secs(60);
        let status = |c: Condition| Status {
            services: vec![service("web", c)],
            revision: Some("abcdef0123456789".into()),
            ..Default::default()
        };
        assert!(
            t.observe(&status(Condition::Degraded), start, after)
                .is_empty()
        );
        let early = start + Duration::from_secs(30);
        assert!(
            t.observe(&status(Condition::Progressing), early, after)
                .is_empty()
        );
        let late = start + Duration::from_secs(61);
        let said = t.observe(&status(Condition::Degraded), late, after);
        assert_eq!(kinds(&said), [(EventKind::ServiceDegraded, "web".into())]);
        assert_eq!(said[0].commit.as_deref(), Some("abcdef0123456789"));
        assert!(said[0].summary.contains("1m 1s"), "{}", said[0].summary);
        assert!(
            t.observe(&status(Condition::Degraded), late + after, after)
                .is_empty()
        );
        let ready = t.observe(&status(Condition::Ready), late + after, after);
        assert_eq!(kinds(&ready), [(EventKind::ServiceRecovered, "web".into())]);
        // A short spell of Degraded after that says nothing.
        let again = late + after * 3;
        assert!(
            t.observe(&status(Condition::Degraded), again, after)
                .is_empty()
        );
        assert!(
            t.observe(&status(Condition::Ready), again, after)
                .is_empty()
        );
    }

    #[test]
    fn pipeline_events_follow_the_run_before() {
        let failed = pipeline_event(
            "dev",
            "abc",
            RunStatus::Failed,
            Some(RunStatus::Passed),
            "test: exit 1",
        )
        .unwrap();
        assert_eq!(
            (failed.event, failed.branch.as_str()),
            (EventKind::PipelineFailed, "dev")
        );
        assert_eq!(failed.details, "test: exit 1");
        let again =
            pipeline_event("dev", "abd", RunStatus::Passed, Some(RunStatus::Failed), "").unwrap();
        assert_eq!(again.event, EventKind::PipelinePassedAfterFailure);
        assert!(
            pipeline_event("dev", "abe", RunStatus::Passed, Some(RunStatus::Passed), "").is_none()
        );
        assert!(pipeline_event("dev", "abe", RunStatus::Passed, None, "").is_none());
        assert!(
            pipeline_event(
                "dev",
                "abe",
                RunStatus::Cancelled,
                Some(RunStatus::Failed),
                ""
            )
            .is_none()
        );
    }

    #[test]
    fn a_rollout_is_announced_once_and_ends_once() {
        let mut t = Transitions::default();
        assert!(
            t.deploy_finished("a").is_none(),
            "healing announces nothing"
        );
        assert_eq!(
            t.deploy_started("a", 2, false).map(|e| e.event),
            Some(EventKind::DeployStarted)
        );
        assert!(
            t.deploy_started("a", 1, false).is_none(),
            "a retried pass says nothing new"
        );
        assert_eq!(
            t.deploy_finished("a").map(|e| e.event),
            Some(EventKind::DeployFinished)
        );
        assert!(t.deploy_finished("a").is_none());
        t.deploy_started("b", 1, false);
        let failed = BTreeMap::from([("web".to_string(), "unhealthy".to_string())]);
        assert_eq!(t.rolled_back("b", &failed).details, "web: unhealthy");
        assert!(t.deploy_finished("b").is_none());
        assert!(t.refused("c", "invalid").is_some());
        assert!(t.refused("c", "invalid").is_none());
        assert!(t.refused("d", "invalid").is_some());
    }

    /// A rollback is said as a rollback from start to end, never as a deploy.
    #[test]
    fn a_rollback_is_announced_as_one() {
        let mut t = Transitions::default();
        assert_eq!(
            t.deploy_started("old", 2, true).map(|e| e.event),
            Some(EventKind::RollbackStarted)
        );
        let finished = t.deploy_finished("old").expect("the rollback ends");
        assert_eq!(finished.event, EventKind::RollbackFinished);
        assert!(
            finished.summary.contains("rolled back"),
            "{}",
            finished.summary
        );
        assert_eq!(
            t.deploy_started("new", 1, false).map(|e| e.event),
            Some(EventKind::DeployStarted)
        );
        assert_eq!(
            t.deploy_finished("new").map(|e| e.event),
            Some(EventKind::DeployFinished)
        );
    }
}
