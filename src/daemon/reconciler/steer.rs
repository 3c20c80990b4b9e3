//! What steers a pass besides the branch: the operator's hold and freezes
//! (read from the store at the start of every pass), rollback commits
//! (deployed without testing again code that already passed), and the
//! history of revisions each pass records.

use super::*;
use crate::daemon::store::{Cause, Freeze, Hold, Revision, ServiceImage, Verdict};
#[allow(unused_imports)]
use crate::pass::Connect;

/// The operator's decisions, as last read from the store.
#[derive(Debug, Clone, Default)]
pub(super) struct Control {
    pub(super) hold: Option<Hold>,
    /// Freezes in force (expired ones are lifted as they are read).
    pub(super) freezes: Vec<Freeze>,
}

impl Control {
    /// The freeze that holds `service`, if one does.
    pub(super) fn freeze_of(&self, service: &str) -> Option<&Freeze> {
        self.freezes
            .iter()
            .find(|f| f.service == service)
            .or_else(|| self.freezes.iter().find(|f| f.service == "*"))
    }
}

/// A commit made by `pier rollback`, as the reconciler checked it.
#[derive(Debug, Clone)]
pub(super) struct RollbackMark {
    pub(super) commit: String,
    /// The revision it restores.
    pub(super) restored: Option<String>,
    /// The revision restored and the commit it was made on were both
    /// deployed (or passed their pipeline) here: its code needs no new run.
    pub(super) vouched: bool,
}

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The image every service ran in a pass: what the history records.
pub(super) fn images<R>(loaded: &Loaded, planned: &Planned<R>) -> BTreeMap<String, ServiceImage> {
    planned
        .desired
        .services
        .values()
        .filter_map(|desired| {
            let service = loaded.manifest.services.get(&desired.name)?;
            Some((
                desired.name.clone(),
                ServiceImage {
                    image: service.image.clone()?,
                    pinned: desired.spec.image.clone(),
                    digest: desired.digest.clone(),
                },
            ))
        })
        .collect()
}

impl<C: Connect> Reconciler<C> {
    /// Read the hold and the freezes, lifting those that ran out. When the
    /// store cannot be read, the last known decisions stay: a failed read
    /// never lifts a hold.
    pub(super) async fn read_control(&mut self) {
        let now = unix_now();
        let read = self
            .shared
            .store
            .call(move |store| -> rusqlite::Result<_> {
                let thawed = store.thaw_expired(now)?;
                Ok((store.hold()?, store.freezes()?, thawed))
            })
            .await;
        match read {
            Ok((hold, freezes, thawed)) => {
                for freeze in thawed {
                    info!(service = %freeze.service, "freeze ran out");
                    crate::daemon::control::thawed(
                        &self.shared,
                        &freeze.service,
                        "its freeze ran out",
                    );
                }
                self.control = Control { hold, freezes };
            }
            Err(e) => warn!(error = %e, "cannot read the hold and freezes; keeping the last known"),
        }
        self.shared.metrics.set_control(
            self.control.hold.is_some(),
            self.control.freezes.iter().map(|f| f.service.as_str()),
        );
        let mut status = self.shared.status.write().expect("status lock");
        status.held = self.control.hold.clone();
        status.frozen = self.control.freezes.clone();
    }

    /// When the next freeze runs out, if one has an end.
    pub fn next_thaw_at(&self) -> Option<Instant> {
        let now = unix_now();
        self.control
            .freezes
            .iter()
            .filter_map(|f| f.until)
            .min()
            // At least a second on: a freeze the store failed to lift is
            // tried again then, not in a busy loop.
            .map(|until| {
                Instant::now() + std::time::Duration::from_secs((until - now).max(1) as u64)
            })
    }

    /// Steer the frozen services of a pass at `loaded`: at the revision they
    /// run (same commit) they keep their digests and are healed; a new
    /// commit leaves them as they are. The services left as they are, with
    /// why.
    pub(super) fn freeze_services(
        &self,
        loaded: &Loaded,
        pins: &mut pass::Pins,
    ) -> BTreeMap<String, String> {
        let mut left = BTreeMap::new();
        let running = self
            .last_recorded
            .as_ref()
            .filter(|r| r.commit == loaded.commit);
        for service in loaded.manifest.services.keys() {
            let Some(freeze) = self.control.freeze_of(service) else {
                continue;
            };
            match running.and_then(|r| r.services.get(service)) {
                Some(image) => {
                    pins.insert(
                        service.clone(),
                        Resolved {
                            pinned: image.pinned.clone(),
                            digest: image.digest.clone(),
                        },
                    );
                }
                None => {
                    left.insert(
                        service.clone(),
                        format!(
                            "{}; {} waits until it is unfrozen",
                            crate::daemon::status::describe_freeze(freeze),
                            short(&loaded.commit)
                        ),
                    );
                }
            }
        }
        left
    }

    /// The digests a held revision ran with, every service's (those that
    /// follow a tag too: a hold moves to no new digest).
    /// A failed read is an error, never a hold without digests.
    pub(super) async fn held_pins(&self, hold: &Hold) -> Result<pass::Pins, String> {
        let id = hold.revision;
        let services = if !hold.images.is_empty() {
            hold.images.clone()
        } else {
            self
            .shared
            .store
            .call(move |store| store.revision(id))
            .await
            .map_err(|e| format!("cannot read the held revision from the state store: {e}"))?
            .ok_or_else(|| format!("the held revision {id} is no longer in the history; `pier resume`, then hold another"))?
            .services
        };
        Ok(services
            .into_iter()
            .map(|(name, image)| {
                (
                    name,
                    Resolved {
                        pinned: image.pinned,
                        digest: image.digest,
                    },
                )
            })
            .collect())
    }

    /// Whether `loaded` is a rollback commit, checked once per commit. A
    /// vouched one takes its parent's recorded digests for the services it
    /// does not pin, so they keep running the bits they ran.
    pub(super) async fn rollback_mark(&mut self, loaded: &Loaded) -> RollbackMark {
        if let Some(mark) = self.rollback.as_ref().filter(|m| m.commit == loaded.commit) {
            return mark.clone();
        }
        let (repo, commit, folder) = (
            self.repo.clone(),
            loaded.commit.clone(),
            self.config.settings.source.path.clone(),
        );
        let found = tokio::task::spawn_blocking(move || {
            let repo = repo.lock().expect("repository lock");
            Some((
                repo.rollback_of(&commit, &folder)?,
                repo.parent_of(&commit)?,
            ))
        })
        .await
        .ok()
        .flatten();
        let mut mark = RollbackMark {
            commit: loaded.commit.clone(),
            restored: None,
            vouched: false,
        };
        if let Some((restored, parent)) = found {
            let (commit, last_good) = (loaded.commit.clone(), self.last_good.clone());
            let (rev, base) = (restored.clone(), parent.clone());
            mark.vouched = self
                .shared
                .store
                .call(move |store| {
                    let vouched = |c: &str| {
                        last_good.as_deref() == Some(c)
                            || store.pipeline_passed(c).unwrap_or(false)
                            || store.applied_revision(c).ok().flatten().is_some()
                    };
                    let vouched = vouched(&rev) && vouched(&base);
                    if vouched && let Err(e) = store.copy_digests(&base, &commit) {
                        warn!(error = %e, "cannot carry the digests over to the rollback commit");
                    }
                    vouched
                })
                .await;
            info!(commit = %short(&loaded.commit), restores = %short(&restored), vouched = mark.vouched, "rollback commit");
            mark.restored = Some(restored);
        }
        self.rollback = Some(mark.clone());
        mark
    }

    /// Remember which cause brought the branch's head, the first time a
    /// pass sees it.
    pub(super) fn note_head(&mut self, head: &str, triggers: &BTreeSet<Trigger>) {
        if self.head_cause.as_ref().is_some_and(|(c, _)| c == head) {
            return;
        }
        let cause = if triggers.contains(&Trigger::Webhook) {
            Cause::Webhook
        } else {
            Cause::Commit
        };
        self.head_cause = Some((head.to_string(), cause));
    }

    /// What brings `commit` to the nodes in this pass.
    pub(super) fn cause_of(&self, commit: &str, held: bool) -> Cause {
        let rollback = self
            .rollback
            .as_ref()
            .is_some_and(|m| m.commit == commit && m.restored.is_some());
        if held {
            Cause::Hold
        } else if rollback {
            Cause::Rollback
        } else if self
            .last_recorded
            .as_ref()
            .is_some_and(|r| r.commit == commit)
        {
            Cause::Autoredeploy
        } else {
            self.head_cause
                .as_ref()
                .filter(|(c, _)| c == commit)
                .map_or(Cause::Commit, |(_, cause)| *cause)
        }
    }

    /// The rollout settings of a pass at `loaded`: what brought it (hooks
    /// see it), and the `pre_deploy` hooks that ran already. Unknown is not
    /// none: when the store cannot say which hooks ran, the pass does not
    /// deploy (it is retried), so no hook runs twice.
    pub(super) async fn apply_settings(
        &self,
        loaded: &Loaded,
        held: bool,
    ) -> Result<crate::pass::apply::ApplySettings, String> {
        let mut apply = self.config.apply.clone();
        apply.trigger = self.cause_of(&loaded.commit, held).as_str().to_string();
        apply.hooks_done = self
            .shared
            .store
            .call(|store| store.hooks_done())
            .await
            .map_err(|e| format!("cannot read which deploy hooks ran from the state store: {e}"))?;
        Ok(apply)
    }

    /// Restart the services `pier restart` asked for, once this pass's
    /// rollout is done: in place, in update order, health-gated. Recorded
    /// in the history as a restart; a replica that does not come back is
    /// an alert, not a failed revision.
    pub(super) async fn restart_asked(
        &mut self,
        loaded: &Loaded,
        planned: &Planned<C::Runtime>,
        apply: &crate::pass::apply::ApplySettings,
        report: &mut ApplyReport,
    ) {
        let asked: Vec<(String, String)> =
            std::mem::take(&mut *self.shared.restarts.lock().expect("restarts lock"));
        if asked.is_empty() {
            return;
        }
        let mut services: Vec<String> = asked.iter().map(|(s, _)| s.clone()).collect();
        services.sort();
        services.dedup();
        let by: Vec<&str> = asked.iter().map(|(_, by)| by.as_str()).collect();
        info!(?services, by = %by.join(", "), "restarting");
        let registry = crate::pass::registry(&self.config.settings);
        let restarted = crate::pass::apply::restart(
            planned,
            registry.credentials(),
            apply,
            &services,
            &|record: &apply::StepRecord| {
                info!(service = %record.service, node = %record.node, action = %record.action, target = %record.target, ok = record.ok, "restart step");
            },
        )
        .await;
        let revision = Revision {
            id: 0,
            commit: loaded.commit.clone(),
            at: unix_now(),
            cause: Cause::Restart,
            verdict: if restarted.failures.is_empty() {
                Verdict::Applied
            } else {
                Verdict::Failed
            },
            reason: if restarted.failures.is_empty() {
                format!(
                    "{} restarted, asked by {}",
                    services.join(", "),
                    by.join(", ")
                )
            } else {
                restarted.failures.join("; ")
            },
            services: images(loaded, planned),
        };
        // Every restart is recorded: it is an event, not a state.
        self.shared.store.write(move |store| {
            if let Err(e) = store.record_revision(&revision) {
                warn!(error = %e, "cannot record the restart in the history");
            }
        });
        report.records.extend(restarted.records);
        report.alerts.extend(restarted.failures);
    }

    /// Record the `pre_deploy` hooks that succeeded, and tell people about
    /// the `post_deploy` hooks that failed.
    pub(super) fn remember_hooks(&self, report: &ApplyReport) {
        let ran = report.hooks_ran.clone();
        if !ran.is_empty() {
            self.shared.store.write(move |store| {
                for (service, hash) in &ran {
                    if let Err(e) = store.record_hook(service, hash) {
                        warn!(error = %e, "cannot record a deploy hook that ran");
                    }
                }
            });
        }
        for alert in &report.alerts {
            warn!("{alert}");
            let service = alert.split(':').next().map(str::to_string);
            self.shared.notifier.tell(
                crate::daemon::notify::EventKind::HookFailed,
                alert.lines().next().unwrap_or_default().to_string(),
                None,
                service.as_deref(),
                alert,
            );
        }
    }

    /// Add `loaded` as applied to the history, unless it is the revision
    /// (commit and digests) recorded last; whether it was added.
    pub(super) fn record_applied(
        &mut self,
        loaded: &Loaded,
        planned: &Planned<C::Runtime>,
        held: bool,
    ) -> bool {
        let services = images(loaded, planned);
        if self
            .last_recorded
            .as_ref()
            .is_some_and(|r| r.commit == loaded.commit && r.services == services)
        {
            return false;
        }
        let cause = self.cause_of(&loaded.commit, held);
        let revision = Revision {
            id: 0,
            commit: loaded.commit.clone(),
            at: unix_now(),
            cause,
            verdict: Verdict::Applied,
            reason: String::new(),
            services,
        };
        self.last_recorded = Some(revision.clone());
        self.shared.store.write(move |store| {
            if let Err(e) = store.record_revision(&revision) {
                warn!(error = %e, "cannot record the revision in the history");
            }
        });
        true
    }

    /// Add `commit` to the history as refused or rolled back, once.
    pub(super) fn record_verdict(
        &self,
        commit: &str,
        verdict: Verdict,
        reason: &str,
        services: BTreeMap<String, ServiceImage>,
    ) {
        let cause = self
            .head_cause
            .as_ref()
            .filter(|(c, _)| c == commit)
            .map_or(Cause::Commit, |(_, cause)| *cause);
        record_verdict(&self.shared, commit, cause, verdict, reason, services);
    }
}

/// Add `commit` to the history with `verdict`, unless the newest entry of
/// the history already says so.
pub(super) fn record_verdict(
    shared: &Shared,
    commit: &str,
    cause: Cause,
    verdict: Verdict,
    reason: &str,
    services: BTreeMap<String, ServiceImage>,
) {
    let revision = Revision {
        id: 0,
        commit: commit.to_string(),
        at: unix_now(),
        cause,
        verdict,
        reason: reason.to_string(),
        services,
    };
    shared.store.write(move |store| {
        let said = store.history(20).is_ok_and(|recent| {
            recent
                .iter()
                .any(|r| r.commit == revision.commit && r.verdict == revision.verdict)
        });
        if !said && let Err(e) = store.record_revision(&revision) {
            warn!(error = %e, "cannot record the revision in the history");
        }
    });
}
