//! The process's permission to change engines, for `pier daemon --ha`.
//!
//! Several daemons may follow one stack; only the holder of the lease
//! (`crate::daemon::lease`) may change its nodes. Docker engines take no
//! fencing token, so the fence is kept on this side, in one place every
//! engine call that changes something passes through: each such call of
//! [`super::engine::Engine`] and of the pipeline's jobs asks [`check`]
//! first, and a daemon whose term ran out (it could not renew in time)
//! refuses its own calls from that instant on, before another daemon can
//! have taken the lease. It is process-wide on purpose: no engine client
//! made anywhere in the process can forget to carry it.
//!
//! A call that began inside the term may end after it; the lease's margin
//! (the renew interval) is what such a call has.
//!
//! Without `--ha` the fence is never armed and every call passes. Every
//! container created under a term is labelled with its epoch
//! ([`LABEL_EPOCH`]), so what an older leader made can be told apart.

use std::sync::Mutex;
use std::time::Instant;

use super::RuntimeError;

/// The term (epoch) of the leader that created a container, under `--ha`.
pub const LABEL_EPOCH: &str = "pier.epoch";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No `--ha`: the daemon (or command) is the only one acting.
    Unarmed,
    /// `--ha`, and no term is held.
    Standby,
    /// `--ha`, and this term is held until the instant given.
    Held { epoch: u64, until: Instant },
}

static STATE: Mutex<State> = Mutex::new(State::Unarmed);

fn state() -> State {
    *STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn set(state: State) {
    *STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = state;
}

/// From now on, changes need a held term (`pier daemon --ha`).
pub fn arm() {
    set(State::Standby);
}

/// This process holds term `epoch` until `until` (a renewal moves it on).
pub fn hold(epoch: u64, until: Instant) {
    set(State::Held { epoch, until });
}

/// This process holds no term: it lost or gave up the lease.
pub fn release() {
    if state() != State::Unarmed {
        set(State::Standby);
    }
}

/// The epoch of the term held now, if the fence is armed and one is.
pub fn epoch() -> Option<u64> {
    match state() {
        State::Held { epoch, until } if Instant::now() < until => Some(epoch),
        _ => None,
    }
}

/// `labels`, with the epoch of the term held ([`LABEL_EPOCH`]) when there
/// is one: what every container created under a term carries.
pub fn with_epoch<M>(mut labels: M) -> M
where
    M: Extend<(String, String)>,
{
    labels.extend(epoch().map(|epoch| (LABEL_EPOCH.to_string(), epoch.to_string())));
    labels
}

/// Whether the process may change engines now; `what` names the call for
/// the error. Refused calls are reported as an unreachable engine: the
/// pass ends as a transient failure and changes nothing more, and no
/// rollout counts as failed because of it.
pub fn check(what: &str) -> Result<(), RuntimeError> {
    match state() {
        State::Unarmed => Ok(()),
        State::Held { until, .. } if Instant::now() < until => Ok(()),
        State::Held { .. } | State::Standby => Err(RuntimeError::Unreachable(format!(
            "{what} not made: this daemon does not hold the lease (--ha); the leader acts"
        ))),
    }
}

/// The fence is process-wide: its tests take turns.
#[cfg(test)]
pub(crate) static TEST_TURN: Mutex<()> = Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn calls_pass_unarmed_and_only_within_a_held_term_once_armed() {
        let _turn = TEST_TURN.lock().unwrap_or_else(|p| p.into_inner());
        set(State::Unarmed);
        assert!(check("a container start").is_ok(), "no --ha: never fenced");
        assert_eq!(epoch(), None);

        arm();
        let refused = check("a container start").unwrap_err().to_string();
        assert!(
            refused.contains("a container start not made") && refused.contains("lease"),
            "{refused}"
        );

        hold(3, Instant::now() + Duration::from_secs(60));
        assert!(check("a container start").is_ok());
        assert_eq!(epoch(), Some(3));

        hold(3, Instant::now() - Duration::from_millis(1));
        assert!(
            check("a container start").is_err(),
            "a term that ran out fences by itself, renewed or not"
        );
        assert_eq!(epoch(), None);

        hold(4, Instant::now() + Duration::from_secs(60));
        release();
        assert!(check("a container start").is_err());
        set(State::Unarmed);
    }
}
