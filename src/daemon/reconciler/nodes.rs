//! The nodes a pass converges beyond those the manifests name: nodes that
//! left the manifests are drained until nothing of the stack is left on
//! them, and `autodestroy` jobs that ran are remembered.

use super::*;
#[allow(unused_imports)]
use crate::pass::Connect;

impl<C: Connect> Reconciler<C> {
    /// Nodes of the manifests converged to before that `loaded` no longer
    /// declares are drained from now on; a node declared again is not.
    pub(super) fn retire_nodes(
        &mut self,
        loaded: &Loaded,
    ) -> BTreeMap<String, crate::manifest::model::Node> {
        let nodes = &loaded.manifest.nodes;
        for (name, node) in &self.last_nodes {
            if !nodes.contains_key(name) {
                self.retired.insert(name.clone(), node.clone());
            }
        }
        self.retired.retain(|name, _| !nodes.contains_key(name));
        self.last_nodes = nodes.clone();
        self.retired.clone()
    }

    /// A retired node that answered with nothing of the stack left is forgotten.
    /// Forget the retired nodes that hold nothing of the stack any more and
    /// are out of its swarm (or were never in it): kept, a node whose
    /// leave failed or waits for others' overlay containers is retried.
    pub(super) fn forget_drained(
        &mut self,
        observed: &Observed,
        swarm: &crate::plan::swarm::SwarmPlan,
        applied: bool,
    ) {
        use crate::plan::swarm::SwarmStep;
        let in_swarm = |name: &str| {
            swarm.staying.contains_key(name)
                || (!applied
                    && swarm
                        .steps
                        .iter()
                        .any(|s| matches!(s, SwarmStep::Leave { node, .. } if node == name)))
        };
        self.retired.retain(|name, _| {
            in_swarm(name)
                || observed
                    .nodes
                    .get(name)
                    .is_none_or(|o| o.unreachable.is_some() || !o.owned.is_empty())
        });
    }

    /// Remember the `autodestroy` replicas this plan removes, so their job
    /// is not started again for the same configuration.
    pub(super) fn remember_destroyed(&mut self, plan: &crate::plan::Plan) {
        for service in &plan.services {
            for change in &service.changes {
                if let crate::plan::Change::Remove {
                    container, reason, ..
                } = change
                    && reason == crate::plan::AUTODESTROYED
                {
                    self.destroyed
                        .insert((service.service.clone(), container.spec_hash.clone()));
                }
            }
        }
    }
}
