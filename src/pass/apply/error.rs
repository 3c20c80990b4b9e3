//! Why a rollout stopped, as values: each way a service's rollout, a
//! replica's replacement or a swarm step can fail is a variant, and its
//! text (what the report, the status, the history and notifications say)
//! is written here once.

use std::time::Duration;

use super::Action;
use crate::docker::RuntimeError;
use crate::manifest::model::DependsOnCondition;

/// Why a rollout, or a step of one, stopped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RolloutError {
    /// An engine call failed.
    #[error("{service}: {action} {target} on {node} failed: {cause}")]
    Step {
        service: String,
        action: Action,
        target: String,
        node: String,
        cause: RuntimeError,
    },
    /// The node did not answer when the pass connected.
    #[error("no engine for node {node}")]
    NoEngine { node: String },
    /// The plan changes a service the desired state does not have.
    #[error("{service}: not declared")]
    Undeclared { service: String },
    /// A new replica did not come up: it was removed again.
    #[error(
        "{service}: replica {replica} on {node} did not become healthy: {reason}{}",
        removal_text(removal)
    )]
    NeverHealthy {
        service: String,
        replica: u32,
        node: String,
        reason: Box<RolloutError>,
        /// How removing it went.
        removal: Result<(), Box<RolloutError>>,
    },
    /// A replacement failed and the previous container was put back, or
    /// kept running beside (start-first).
    #[error("{service}: replica {replica} on {node} failed ({reason}); {restored}")]
    Replaced {
        service: String,
        replica: u32,
        node: String,
        reason: Box<RolloutError>,
        restored: Restored,
    },
    /// What a health wait saw.
    #[error(transparent)]
    Health(#[from] HealthError),
    /// The `pre_deploy` hook failed: nothing was replaced.
    #[error("{service}: the pre_deploy hook failed, so nothing was replaced: {why}")]
    PreDeploy {
        service: String,
        why: Box<RolloutError>,
    },
    /// A hook has no node to run on.
    #[error("no node to run it on")]
    HookWithoutNode,
    /// A container mounts the volumes of a service with no replica on its node.
    #[error("{0}")]
    VolumesFrom(String),
    /// A service this one runs after failed in this pass.
    #[error("{service}: not rolled out because `{dependency}` failed")]
    DependencyFailed { service: String, dependency: String },
    /// A service this one waits for is not ready.
    #[error("{service}: not rolled out: `{dependency}` on {node}{problem}")]
    DependencyNotReady {
        service: String,
        dependency: String,
        node: String,
        problem: DependencyProblem,
    },
    /// `pier restart` names a service the pass does not deploy.
    #[error("{service}: not restarted: it is not deployed now")]
    NotDeployed { service: String },
}

fn removal_text(removal: &Result<(), Box<RolloutError>>) -> String {
    match removal {
        Ok(()) => "; removed it".to_string(),
        Err(e) => format!("; removing it failed too: {e}"),
    }
}

/// What became of the previous container after its replacement failed.
#[derive(Debug, Clone)]
pub enum Restored {
    /// Back under its name, running as before.
    RolledBack,
    /// Putting it back failed too.
    RollbackFailed(Box<RolloutError>),
    /// Start-first: it never stopped.
    KeptRunning,
}

impl std::fmt::Display for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Restored::RolledBack => f.write_str("rolled back to the previous container"),
            Restored::RollbackFailed(e) => write!(f, "rollback failed too: {e}"),
            Restored::KeptRunning => f.write_str("the previous container keeps running"),
        }
    }
}

impl From<Result<(), RolloutError>> for Restored {
    fn from(result: Result<(), RolloutError>) -> Restored {
        match result {
            Ok(()) => Restored::RolledBack,
            Err(e) => Restored::RollbackFailed(Box::new(e)),
        }
    }
}

/// Why a replica is not healthy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HealthError {
    #[error("health check failed")]
    Unhealthy,
    #[error("exited{}", code_text(*.0))]
    Exited(Option<i64>),
    #[error("still starting after {0:?}")]
    StillStarting(Duration),
    /// A job others wait on to complete had not exited by the deadline.
    #[error(
        "still running after {0:?}; `depends_on: service_completed_successfully` waits for it to exit"
    )]
    StillRunning(Duration),
    #[error("health check failed within the monitor period of {0:?}")]
    UnhealthyWithin(Duration),
    #[error("exited{} within the monitor period of {:?}", code_text(*.0), .1)]
    ExitedWithin(Option<i64>, Duration),
    /// The engine could not say.
    #[error(transparent)]
    Engine(#[from] RuntimeError),
}

fn code_text(code: Option<i64>) -> String {
    code.map(|c| format!(" with code {c}")).unwrap_or_default()
}

/// Why a dependency is not ready for a service to roll out.
#[derive(Debug, Clone)]
pub enum DependencyProblem {
    Exited {
        code: Option<i64>,
        condition: DependsOnCondition,
    },
    Unknown(RuntimeError),
    NotReadyWithin {
        condition: DependsOnCondition,
        bound: Duration,
    },
}

impl std::fmt::Display for DependencyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let completes =
            |c: &DependsOnCondition| matches!(c, DependsOnCondition::ServiceCompletedSuccessfully);
        match self {
            DependencyProblem::Exited { code, condition } => write!(
                f,
                " exited{}, and it waits for {}",
                code_text(*code),
                if completes(condition) {
                    "an exit with 0"
                } else {
                    "it to be healthy"
                }
            ),
            DependencyProblem::Unknown(e) => write!(f, ": {e}"),
            DependencyProblem::NotReadyWithin { condition, bound } => write!(
                f,
                " did not become {} within {bound:?}",
                if completes(condition) {
                    "complete"
                } else {
                    "healthy"
                }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Users read these in the status, the history and notifications: a
    /// nested failure reads as one sentence, naming the replica and what
    /// became of the container it replaced.
    #[test]
    fn a_failed_replacement_reads_as_one_sentence() {
        let step = RolloutError::Step {
            service: "web".into(),
            action: Action::Start,
            target: "s-web-1".into(),
            node: "n1".into(),
            cause: RuntimeError::Failed("port is taken".into()),
        };
        let failed = RolloutError::Replaced {
            service: "web".into(),
            replica: 1,
            node: "n1".into(),
            reason: Box::new(HealthError::Exited(Some(3)).into()),
            restored: Ok(()).into(),
        };
        assert_eq!(
            failed.to_string(),
            "web: replica 1 on n1 failed (exited with code 3); rolled back to the previous container"
        );
        let never = RolloutError::NeverHealthy {
            service: "web".into(),
            replica: 2,
            node: "n1".into(),
            reason: Box::new(HealthError::StillStarting(Duration::from_secs(5)).into()),
            removal: Err(Box::new(step.clone())),
        };
        assert_eq!(
            never.to_string(),
            "web: replica 2 on n1 did not become healthy: still starting after 5s; removing it failed too: web: start s-web-1 on n1 failed: port is taken"
        );
        let waiting = RolloutError::DependencyNotReady {
            service: "web".into(),
            dependency: "migrate".into(),
            node: "n1".into(),
            problem: DependencyProblem::Exited {
                code: Some(1),
                condition: DependsOnCondition::ServiceCompletedSuccessfully,
            },
        };
        assert_eq!(
            waiting.to_string(),
            "web: not rolled out: `migrate` on n1 exited with code 1, and it waits for an exit with 0"
        );
    }
}
