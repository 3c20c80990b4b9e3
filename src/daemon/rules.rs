//! The reconciler's rules as plain functions of what it knows: which
//! commit a pass converges to, and which services a pass only heals. The
//! reconciler asks them with what it read from the store and the plan;
//! the tests ask them with plain values, no engine and no clock. (When an
//! unreachable node counts as down is `pass::NodeLoss`, tested the same way.)

use std::collections::{BTreeMap, BTreeSet};

use super::store::Failure;
use crate::plan::{Change, Plan};

/// Which commit a pass converges to, and why it is not the head if it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) head: String,
    pub(super) commit: String,
    /// Why the head is refused, when it is.
    pub(super) refused: Option<String>,
    /// Services whose rollout of the head was rolled back, with the reason.
    pub(super) frozen: BTreeMap<String, String>,
}

/// The head, unless it was refused: a head refused as a whole (invalid
/// manifests, a failed pipeline) leaves the pass healing the last good
/// revision, or deploying nothing when there is none; a head whose rollout
/// was rolled back for some services stays the target with those frozen.
pub(super) fn target(head: &str, failure: Option<Failure>, last_good: Option<&str>) -> Target {
    let (commit, refused, frozen) = match failure {
        Some(Failure { reason, services }) if services.is_empty() => (
            last_good.unwrap_or(head).to_string(),
            Some(reason),
            BTreeMap::new(),
        ),
        Some(Failure { services, .. }) => (head.to_string(), None, services),
        None => (head.to_string(), None, BTreeMap::new()),
    };
    Target {
        head: head.to_string(),
        commit,
        refused,
        frozen,
    }
}

/// The services a pass at `commit` only heals: at the revision applied
/// already (`last_good`), those whose plan creates or removes replicas but
/// replaces none (a replacement there is a new image digest, rolled out
/// like a commit). A failure to heal them is retried, never frozen.
pub(super) fn healing(last_good: Option<&str>, commit: &str, plan: &Plan) -> BTreeSet<String> {
    if last_good != Some(commit) {
        return BTreeSet::new();
    }
    plan.services
        .iter()
        .filter(|s| {
            !s.changes
                .iter()
                .any(|c| matches!(c, Change::Replace { .. }))
        })
        .map(|s| s.service.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pass::NodeLoss;
    use crate::plan::{NodeObservation, Observed, ServicePlan};
    use std::time::{Duration, Instant};

    fn failure(reason: &str, services: &[(&str, &str)]) -> Failure {
        Failure {
            reason: reason.into(),
            services: services
                .iter()
                .map(|(s, r)| (s.to_string(), r.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_head_refused_as_a_whole_heals_towards_the_last_good_revision() {
        let t = target("head", Some(failure("invalid", &[])), Some("good"));
        assert_eq!(
            (t.commit.as_str(), t.refused.as_deref()),
            ("good", Some("invalid"))
        );
        assert!(t.frozen.is_empty());
        // No good revision yet: the target stays the refused head, which
        // the pass then deploys nothing of.
        let t = target("head", Some(failure("invalid", &[])), None);
        assert_eq!(
            (t.commit.as_str(), t.refused.as_deref()),
            ("head", Some("invalid"))
        );
    }

    #[test]
    fn a_rolled_back_service_stays_frozen_at_the_head() {
        let t = target(
            "head",
            Some(failure("rolled back", &[("web", "unhealthy")])),
            Some("good"),
        );
        assert_eq!((t.commit.as_str(), t.refused), ("head", None));
        assert_eq!(t.frozen["web"], "unhealthy");
        let t = target("head", None, Some("good"));
        assert_eq!(
            (t.commit.as_str(), t.refused, t.frozen.len()),
            ("head", None, 0)
        );
    }

    fn plan_of(services: &[(&str, Vec<Change>)]) -> Plan {
        Plan {
            services: services
                .iter()
                .map(|(name, changes)| ServicePlan {
                    service: name.to_string(),
                    declared: true,
                    changes: changes.clone(),
                    blocked: Vec::new(),
                    unchanged: 0,
                    parallelism: 1,
                    current: Vec::new(),
                    replicas: Vec::new(),
                    batches: Vec::new(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_pass_at_the_applied_revision_heals_and_a_replacement_is_a_rollout() {
        let create = Change::Create {
            node: "n1".into(),
            replica: 1,
            name: "s-web-1".into(),
        };
        let plan = plan_of(&[("web", vec![create]), ("db", Vec::new())]);
        assert_eq!(
            healing(Some("good"), "good", &plan),
            BTreeSet::from(["web".to_string(), "db".to_string()])
        );
        assert!(
            healing(Some("good"), "new", &plan).is_empty(),
            "a new commit rolls out"
        );
        assert!(healing(None, "good", &plan).is_empty());
    }

    /// An unreachable node is down once the grace period has passed since
    /// it was first seen so, and no longer once it answers.
    #[test]
    fn a_node_is_down_only_after_the_grace_period() {
        let observed = |unreachable: bool| Observed {
            nodes: [(
                "n1".to_string(),
                NodeObservation {
                    unreachable: unreachable.then(|| "timed out".to_string()),
                    ..Default::default()
                },
            )]
            .into(),
        };
        let mut loss = NodeLoss {
            down_after: Duration::from_secs(60),
            ..Default::default()
        };
        let start = Instant::now();
        loss.observe(&observed(true), start);
        // Seen unreachable again later: the first sighting counts.
        loss.observe(&observed(true), start + Duration::from_secs(30));
        assert!(
            loss.down(&observed(true), start + Duration::from_secs(59))
                .is_empty()
        );
        assert_eq!(
            loss.down(&observed(true), start + Duration::from_secs(60)),
            BTreeSet::from(["n1".to_string()])
        );
        loss.observe(&observed(false), start + Duration::from_secs(61));
        assert!(
            loss.down(&observed(true), start + Duration::from_secs(120))
                .is_empty()
        );
    }
}
