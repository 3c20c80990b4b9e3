//! The pipeline gate of a pass: a new commit is deployed once its own
//! pipeline passed (or it is a rollback commit whose code passed); the
//! run goes on in a task of its own, while passes heal the last good
//! revision, and its result is recorded and asks for a pass.

use super::*;
#[allow(unused_imports)]
use crate::pass::Connect;

/// What the pipeline gate says of a new commit.
pub(super) enum Gate {
    /// Deploy it.
    Open,
    /// The pass ends here, with this outcome.
    Closed(Outcome),
    /// Its run goes on: heal the last good revision meanwhile.
    Running,
}

/// Record the digests a passed run built for `commit`, so the deploy pins
/// them, and tell the registry watcher's map the tags moved.
fn record_built(shared: &Shared, commit: &str, outcome: &pipeline::RunOutcome) {
    for (service, (reference, resolved)) in &outcome.built {
        let (commit, service, followed, built) = (
            commit.to_string(),
            service.clone(),
            reference.clone(),
            resolved.clone(),
        );
        shared.store.write(move |store| {
            if let Err(e) = store.save_digest(&commit, &service, &followed, &built) {
                warn!(error = %e, "cannot record a built digest");
            }
        });
        shared
            .followed
            .lock()
            .expect("followed lock")
            .insert(reference.clone(), resolved.clone());
    }
}

impl<C: Connect> Reconciler<C> {
    /// Whether `loaded` (a new commit) may be deployed: yes when it has no
    /// pipeline or its run passed; while its run goes on (started here, in
    /// a task of its own, if it is not yet), the pass heals the last good
    /// revision instead.
    pub(super) async fn pipeline_gate(&mut self, loaded: &Loaded, vouched_rollback: bool) -> Gate {
        let Some(pipeline) = loaded.manifest.pipeline.as_ref() else {
            return Gate::Open;
        };
        // A branch not listed in `pipeline.branches` is tested, never deployed.
        let deploys = pipeline.branches.contains(&self.config.branch);
        // A rollback commit carries its parent's code, which passed, and
        // restores images by digest: nothing to test or build again.
        if vouched_rollback && deploys {
            return Gate::Open;
        }
        let commit = loaded.commit.clone();
        let passed = self
            .shared
            .store
            .call(move |store| store.pipeline_passed(&commit))
            .await
            .unwrap_or(false);
        match (passed, deploys) {
            (true, true) => Gate::Open,
            (true, false) => Gate::Closed(Outcome::Done),
            (false, _) => {
                self.start_pipeline(loaded, deploys);
                Gate::Running
            }
        }
    }

    /// Run the pipeline of `loaded` in a task, unless it runs already. When
    /// it ends, its result is recorded and a pass is asked for: it deploys a
    /// commit that passed, or refuses one that failed.
    fn start_pipeline(&mut self, loaded: &Loaded, deploys: bool) {
        if let Some((commit, handle)) = &self.pipeline
            && *commit == loaded.commit
            && !handle.is_finished()
        {
            return;
        }
        let (runner, shared, loaded_commit) = (
            self.runner.clone(),
            self.shared.clone(),
            loaded.commit.clone(),
        );
        let (loaded, branch, tip) = (
            loaded.clone(),
            self.config.branch.clone(),
            self.shared.tip.subscribe(),
        );
        let handle = tokio::spawn(async move {
            let outcome = runner.run(&loaded, &branch, tip).await;
            match outcome.state {
                RunState::Passed if deploys => record_built(&shared, &loaded.commit, &outcome),
                RunState::Passed | RunState::Cancelled => {}
                RunState::Failed => {
                    let reason = format!(
                        "the pipeline of {} failed; the nodes stay at the last good revision: {}",
                        short(&loaded.commit),
                        outcome.failure_summary(10).unwrap_or_default()
                    );
                    let (commit, why) = (loaded.commit.clone(), reason.clone());
                    shared.store.write(move |store| {
                        if let Err(e) = store.mark_failed(&commit, &why, &BTreeMap::new()) {
                            warn!(error = %e, "cannot record the failed pipeline");
                        }
                    });
                    steer::record_verdict(
                        &shared,
                        &loaded.commit,
                        crate::daemon::store::Cause::Commit,
                        crate::daemon::store::Verdict::Refused,
                        &reason,
                        BTreeMap::new(),
                    );
                    shared.status.write().expect("status lock").stalled = Some(reason);
                }
            }
            if outcome.state != RunState::Cancelled {
                shared
                    .triggers
                    .send(crate::daemon::shared::Trigger::Pipeline);
            }
        });
        self.pipeline = Some((loaded_commit, handle));
    }
}
