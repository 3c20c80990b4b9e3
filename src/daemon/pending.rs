//! What the daemon has been asked to do and not done yet, kept as sets, not
//! queues: a flood of container events or webhooks while a pass runs
//! makes one more pass, and a branch pushed ten times while a run goes on
//! is tested once, at its newest commit. Memory is bounded by the number of
//! kinds of trigger and of branches, whatever arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;

use super::shared::Trigger;

/// Pending reasons for a pass.
pub struct Triggers {
    pending: Mutex<BTreeSet<Trigger>>,
    wake: Notify,
    /// Counts triggers that arrived while one of their kind was pending.
    coalesced: Counter,
}

impl Triggers {
    pub fn new(coalesced: Counter) -> Triggers {
        Triggers {
            pending: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
            coalesced,
        }
    }

    /// Ask for a pass.
    pub fn send(&self, trigger: Trigger) {
        if !self.pending.lock().expect("triggers lock").insert(trigger) {
            self.coalesced.inc();
        }
        // Stores a permit when nobody waits, so no request is lost.
        self.wake.notify_one();
    }

    /// Wait until a pass is asked for; every pending reason, taken.
    pub async fn next(&self) -> BTreeSet<Trigger> {
        loop {
            let taken = self.take();
            if !taken.is_empty() {
                return taken;
            }
            self.wake.notified().await;
        }
    }

    /// Every pending reason, taken (empty when there is none).
    pub fn take(&self) -> BTreeSet<Trigger> {
        std::mem::take(&mut *self.pending.lock().expect("triggers lock"))
    }
}

/// Commits of other branches waiting to be tested: the newest per branch.
#[derive(Default)]
pub struct BranchRuns {
    pending: Mutex<BTreeMap<String, String>>,
    wake: Notify,
}

impl BranchRuns {
    /// Test `commit` of `branch`, instead of any commit of it still waiting.
    pub fn send(&self, branch: String, commit: String) {
        self.pending
            .lock()
            .expect("branch runs lock")
            .insert(branch, commit);
        self.wake.notify_one();
    }

    /// Wait for a commit to test: `(branch, commit)`.
    pub async fn next(&self) -> (String, String) {
        loop {
            if let Some(run) = self.pending.lock().expect("branch runs lock").pop_first() {
                return run;
            }
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_of_triggers_is_one_pending_set() {
        let counter = Counter::default();
        let triggers = Triggers::new(counter.clone());
        for _ in 0..10_000 {
            triggers.send(Trigger::Event);
        }
        triggers.send(Trigger::Git);
        assert_eq!(
            triggers.next().await,
            BTreeSet::from([Trigger::Git, Trigger::Event])
        );
        assert_eq!(counter.get(), 9_999);
        assert!(triggers.take().is_empty());
    }

    #[tokio::test]
    async fn a_branch_pushed_again_is_tested_once_at_its_newest_commit() {
        let runs = BranchRuns::default();
        for commit in ["a1", "a2", "a3"] {
            runs.send("feature".into(), commit.into());
        }
        runs.send("fix".into(), "f1".into());
        assert_eq!(runs.next().await, ("feature".into(), "a3".into()));
        assert_eq!(runs.next().await, ("fix".into(), "f1".into()));
        assert!(runs.pending.lock().unwrap().is_empty());
    }
}
