//! What an operator steers beside git, through the API and the dashboard
//! alike: hold the stack at a revision (`pier rollback --hold`), let it
//! follow its branch again (`pier resume`), freeze and unfreeze services.
//!
//! Each writes the store (so it survives a restart), tells the people
//! notified, and asks for a pass; the reconciler reads the store at the
//! start of every pass and does the rest.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::info;

use super::notify::EventKind;
use super::shared::{Shared, Trigger};
use super::store::{Freeze, Hold};
use crate::source::git::short_commit as short;

/// Why a control request was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "{0} was never applied here, so there are no digests to hold it with; `pier history` lists the revisions you can hold"
    )]
    NeverApplied(String),
    #[error("`{0}` is not a commit id (give the full or a 7+ digit prefix from `pier history`)")]
    BadCommit(String),
    #[error("name at least one service, or `*` for every service")]
    NoService,
    #[error("no service `{0}` is deployed")]
    UnknownService(String),
    #[error("the state store failed: {0}")]
    Store(String),
}

impl ControlError {
    /// Whether the caller asked for something impossible (4xx), rather
    /// than the daemon failing (5xx).
    pub fn is_request(&self) -> bool {
        !matches!(self, ControlError::Store(_))
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn store_error(e: rusqlite::Error) -> ControlError {
    ControlError::Store(e.to_string())
}

/// Hold the stack at an applied revision: history entry `revision`, or
/// the newest applied entry of `commit` (a full id or a 7+ digit prefix).
/// The daemon converges to it with the digests it ran and moves to no new
/// commit or digest until [`resume`]. The hold made.
pub async fn hold(
    shared: &Shared,
    commit: &str,
    revision: Option<i64>,
    by: &str,
    reason: &str,
) -> Result<Hold, ControlError> {
    let wanted = commit.trim().to_ascii_lowercase();
    if revision.is_none() && (wanted.len() < 7 || !wanted.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(ControlError::BadCommit(commit.to_string()));
    }
    let (who, why) = (by.to_string(), reason.to_string());
    let hold = shared
        .store
        .call(move |store| -> Result<Hold, ControlError> {
            let applied = |r: &super::store::Revision| r.verdict == super::store::Verdict::Applied;
            let found = match revision {
                Some(id) => store.revision(id).map_err(store_error)?.filter(applied),
                None => store
                    .history(usize::MAX >> 1)
                    .map_err(store_error)?
                    .into_iter()
                    .filter(applied)
                    .find(|r| r.commit.starts_with(&wanted)),
            }
            .ok_or_else(|| {
                ControlError::NeverApplied(
                    revision.map_or(wanted.clone(), |id| format!("revision {id}")),
                )
            })?;
            let hold = Hold {
                commit: found.commit.clone(),
                revision: found.id,
                by: who,
                reason: why,
                at: unix_now(),
                images: found.services.clone(),
            };
            store.set_hold(Some(&hold)).map_err(store_error)?;
            Ok(hold)
        })
        .await?;
    let held = hold.commit.clone();
    info!(commit = %short(&held), by, "stack held");
    shared.notifier.tell(
        EventKind::StackHeld,
        format!("the stack is held at {} by {by}", short(&held)),
        Some(&held),
        None,
        reason,
    );
    publish(shared).await;
    shared.triggers.send(Trigger::Api);
    Ok(hold)
}

/// Let the stack follow its branch again; whether it was held.
pub async fn resume(shared: &Shared, by: &str) -> Result<bool, ControlError> {
    let was = shared
        .store
        .call(|store| -> rusqlite::Result<Option<Hold>> {
            let hold = store.hold()?;
            store.set_hold(None)?;
            Ok(hold)
        })
        .await
        .map_err(store_error)?;
    if let Some(hold) = &was {
        info!(by, "stack resumed");
        shared.notifier.tell(
            EventKind::StackResumed,
            format!(
                "the stack follows its branch again (resumed by {by}; it was held at {})",
                short(&hold.commit)
            ),
            None,
            None,
            "",
        );
        publish(shared).await;
        shared.triggers.send(Trigger::Api);
    }
    Ok(was.is_some())
}

/// Freeze `services` (`*`: every service) for `duration` (`None`: until
/// unfrozen): no new commit or digest reaches them meanwhile.
pub async fn freeze(
    shared: &Shared,
    services: &[String],
    by: &str,
    reason: &str,
    duration: Option<Duration>,
) -> Result<Vec<Freeze>, ControlError> {
    if services.is_empty() {
        return Err(ControlError::NoService);
    }
    let at = unix_now();
    let until = duration.map(|d| at.saturating_add(d.as_secs().max(1) as i64));
    let freezes: Vec<Freeze> = services
        .iter()
        .map(|service| Freeze {
            service: service.clone(),
            by: by.to_string(),
            reason: reason.to_string(),
            at,
            until,
        })
        .collect();
    let written = freezes.clone();
    shared
        .store
        .call(move |store| written.iter().try_for_each(|f| store.freeze(f)))
        .await
        .map_err(store_error)?;
    for freeze in &freezes {
        info!(service = %freeze.service, by, "service frozen");
        let until = match freeze.until {
            Some(until) => format!(
                " for {}",
                humantime::format_duration(Duration::from_secs((until - at).max(0) as u64))
            ),
            None => String::new(),
        };
        shared.notifier.tell(
            EventKind::ServiceFrozen,
            format!("{} is frozen{until} by {by}", describe(&freeze.service)),
            None,
            Some(&freeze.service),
            reason,
        );
    }
    publish(shared).await;
    shared.triggers.send(Trigger::Api);
    Ok(freezes)
}

/// Lift the freezes of `services`; the ones that were frozen.
pub async fn unfreeze(
    shared: &Shared,
    services: &[String],
    by: &str,
) -> Result<Vec<String>, ControlError> {
    if services.is_empty() {
        return Err(ControlError::NoService);
    }
    let wanted = services.to_vec();
    let lifted = shared
        .store
        .call(move |store| -> rusqlite::Result<Vec<String>> {
            let mut lifted = Vec::new();
            // `*` lifts every freeze, the one of every service included.
            let wanted: Vec<String> = if wanted.iter().any(|s| s == "*") {
                store.freezes()?.into_iter().map(|f| f.service).collect()
            } else {
                wanted
            };
            for service in wanted {
                if store.unfreeze(&service)? {
                    lifted.push(service);
                }
            }
            Ok(lifted)
        })
        .await
        .map_err(store_error)?;
    for service in &lifted {
        info!(service, by, "service unfrozen");
        thawed(shared, service, &format!("unfrozen by {by}"));
    }
    if !lifted.is_empty() {
        publish(shared).await;
        shared.triggers.send(Trigger::Api);
    }
    Ok(lifted)
}

/// Show the hold and freezes as the store has them now, at once: the
/// status and metrics need not wait for the pass each action asks for.
async fn publish(shared: &Shared) {
    let read = shared
        .store
        .call(|store| -> rusqlite::Result<_> { Ok((store.hold()?, store.freezes()?)) })
        .await;
    if let Ok((hold, freezes)) = read {
        shared
            .metrics
            .set_control(hold.is_some(), freezes.iter().map(|f| f.service.as_str()));
        let mut status = shared.status.write().expect("status lock");
        status.held = hold;
        status.frozen = freezes;
    }
    shared.changed();
}

/// Ask for a rolling restart of `services` (their running replicas, in
/// place, health-gated): the next pass does it, holding the deploy slot.
pub fn restart(
    shared: &Shared,
    services: &[String],
    by: &str,
) -> Result<Vec<String>, ControlError> {
    if services.is_empty() {
        return Err(ControlError::NoService);
    }
    let known: Vec<String> = shared
        .status
        .read()
        .expect("status lock")
        .services
        .iter()
        .map(|s| s.name.clone())
        .collect();
    if let Some(unknown) = services.iter().find(|s| !known.contains(s)) {
        return Err(ControlError::UnknownService(unknown.clone()));
    }
    shared
        .restarts
        .lock()
        .expect("restarts lock")
        .extend(services.iter().map(|s| (s.clone(), by.to_string())));
    info!(?services, by, "restart asked for");
    shared.triggers.send(Trigger::Api);
    Ok(services.to_vec())
}

/// Tell the people notified that `service` thawed, and why.
pub(super) fn thawed(shared: &Shared, service: &str, why: &str) {
    shared.notifier.tell(
        EventKind::ServiceUnfrozen,
        format!("{} follows the branch again ({why})", describe(service)),
        None,
        Some(service),
        "",
    );
}

fn describe(service: &str) -> String {
    if service == "*" {
        "every service".to_string()
    } else {
        format!("service {service}")
    }
}
