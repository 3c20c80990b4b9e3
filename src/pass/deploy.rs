//! One deploy, the only way pier changes the nodes: observe them, plan a
//! loaded commit against what they run, and carry the plan out.
//!
//! `pier apply`, `pier pipeline run --deploy` and every daemon pass
//! call [`deploy`]. They differ only in what they decided before
//! ([`PassInput`]: pinned digests, frozen services, node loss) and in how
//! they watch it go ([`Watch`]: a terminal's plan and progress bar, or the
//! daemon's status and log). A plan the planner refused, or one with
//! nothing to do, never reaches the engines.

use crate::docker::engine::Engine;
use crate::pass::apply::{self, ApplyReport, ApplySettings, StepRecord};
use crate::pass::{self, Connect, Loaded, PassInput, Planned, Settings};
use crate::registry::Registry;

/// What a caller sees of a deploy while it runs.
pub trait Watch<R = Engine>: Sync {
    /// The plan is made, before any engine is asked to change anything.
    fn planned(&self, planned: &Planned<R>);
    /// One engine call ended.
    fn step(&self, record: &StepRecord);
}

/// A deploy's plan and what carrying it out did.
pub struct Deployment<R = Engine> {
    pub planned: Planned<R>,
    /// Empty when the plan was refused or had nothing to do.
    pub report: ApplyReport,
}

/// How a deploy ended, for an exit status or a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The planner refused the commit; nothing was changed.
    Refused,
    /// A rollout stopped (and was rolled back where it could be).
    Failed,
    /// Done, but some replicas wait on something (an unreachable node, a
    /// dependency): this many.
    Blocked(usize),
    /// Everything declared runs as declared.
    Converged,
}

impl<R> Deployment<R> {
    /// Whether the planner refused the commit.
    pub fn refused(&self) -> bool {
        !self.planned.plan.refused.is_empty()
    }

    /// Whether the engines were asked to change anything.
    pub fn acted(&self) -> bool {
        !self.refused() && !self.planned.plan.is_empty()
    }

    pub fn verdict(&self) -> Verdict {
        if self.refused() {
            return Verdict::Refused;
        }
        if !self.report.ok() {
            return Verdict::Failed;
        }
        match self.planned.plan.blocked_count() {
            0 => Verdict::Converged,
            blocked => Verdict::Blocked(blocked),
        }
    }
}

/// Observe, plan and apply `loaded` on the nodes `connector` reaches.
pub async fn deploy<C: Connect>(
    connector: &C,
    loaded: &Loaded,
    settings: &Settings,
    registry: &Registry,
    input: &PassInput,
    apply_settings: &ApplySettings,
    watch: &dyn Watch<C::Runtime>,
) -> Deployment<C::Runtime> {
    let planned = pass::plan_loaded(connector, loaded, settings, registry, input).await;
    watch.planned(&planned);
    let mut deployment = Deployment {
        planned,
        report: ApplyReport::default(),
    };
    if deployment.acted() {
        let planned = &deployment.planned;
        deployment.report = apply::apply(
            &planned.desired,
            &planned.plan,
            &planned.engines,
            registry.credentials(),
            apply_settings,
            &|record: &StepRecord| watch.step(record),
        )
        .await;
    }
    deployment
}
