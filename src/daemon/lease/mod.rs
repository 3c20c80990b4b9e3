//! `pier daemon --ha`: several daemons follow one stack and exactly one,
//! the holder of the lease, acts. The others (standbys) keep their caches
//! warm, serve status and the dashboard read-only, and take over when the
//! holder stops renewing.
//!
//! The lease is a record in a consensus store written with
//! compare-and-swap ([`LeaseStore`]; on the nodes' Swarm Raft store in
//! [`swarm`]). The rules ([`Elector`]) are those of Kubernetes' leader
//! election, which needs no synchronised clocks: each daemon measures time
//! on its own monotonic clock only.
//! - A standby takes over only once the record has not changed for a whole
//!   lease, as measured from when it first saw that version; or at once
//!   when the holder released it on its way out.
//! - A holder's term runs for `lease - renew` from the moment it *sent* its
//!   last successful write, so it ends before any standby can have seen the
//!   record unchanged for a whole lease. The fence
//!   (`crate::docker::fence`) refuses the holder's own engine calls from
//!   that instant on, renewed or not.
//! - Every new term has a higher epoch; containers created under it carry
//!   it, and so do commits the daemon writes. A new leader's first pass
//!   observes every node afresh, so nothing an older term left is acted
//!   on unobserved.
//!
//! The holder also writes the operator's hold and freezes into the record,
//! and standbys copy them into their own store: a takeover keeps them.

pub mod swarm;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How long a lease lasts unrenewed, and how often it is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub lease: Duration,
    pub renew: Duration,
}

impl Timing {
    pub const DEFAULT: Timing = Timing {
        lease: Duration::from_secs(15),
        renew: Duration::from_secs(5),
    };

    /// The flags' values, or why they cannot work together.
    pub fn new(lease: Duration, renew: Duration) -> Result<Timing, String> {
        if renew.is_zero() || renew * 2 >= lease {
            return Err(format!(
                "--ha-renew ({renew:?}) must be more than zero and less than half of --ha-lease ({lease:?}): a holder must get a second try at renewing before its term ends"
            ));
        }
        Ok(Timing { lease, renew })
    }

    /// How long a successful write keeps the writer's term: it ends one
    /// renew interval before any standby may take over.
    fn term(&self) -> Duration {
        self.lease - self.renew
    }
}

/// What the lease record says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Who holds it; empty when its last holder released it.
    pub holder: String,
    /// The term: one more with every change of holder.
    pub epoch: u64,
    /// Where the holder's API and dashboard answer.
    pub url: String,
    /// The operator's hold and freezes, as JSON ([`Control`]).
    pub control: String,
}

const LABEL_HOLDER: &str = "pier.lease.holder";
const LABEL_EPOCH: &str = "pier.lease.epoch";
const LABEL_URL: &str = "pier.lease.url";
const LABEL_CONTROL: &str = "pier.lease.control";

impl Record {
    fn to_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_HOLDER.into(), self.holder.clone()),
            (LABEL_EPOCH.into(), self.epoch.to_string()),
            (LABEL_URL.into(), self.url.clone()),
            (LABEL_CONTROL.into(), self.control.clone()),
        ])
    }

    fn from_labels(labels: &BTreeMap<String, String>) -> Record {
        let text = |key: &str| labels.get(key).cloned().unwrap_or_default();
        Record {
            holder: text(LABEL_HOLDER),
            epoch: text(LABEL_EPOCH).parse().unwrap_or(0),
            url: text(LABEL_URL),
            control: text(LABEL_CONTROL),
        }
    }
}

/// The operator's decisions the holder hands on with the lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    #[serde(default)]
    pub hold: Option<super::store::Hold>,
    #[serde(default)]
    pub freezes: Vec<super::store::Freeze>,
}

/// A record and the version a write must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub version: u64,
    pub record: Record,
}

/// Why a lease operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("another daemon wrote the lease first")]
    Conflict,
    #[error("the lease store cannot be reached: {0}")]
    Unavailable(String),
}

/// A record kept with compare-and-swap.
pub trait LeaseStore: Send + Sync {
    /// The record; `None` when there is none yet.
    fn read(&self) -> impl Future<Output = Result<Option<Versioned>, LeaseError>> + Send;
    /// Create it; [`LeaseError::Conflict`] if another writer did first.
    fn create(&self, record: &Record) -> impl Future<Output = Result<(), LeaseError>> + Send;
    /// Replace it if still at `version`; [`LeaseError::Conflict`] if not.
    fn update(
        &self,
        version: u64,
        record: &Record,
    ) -> impl Future<Output = Result<(), LeaseError>> + Send;
}

/// A term this daemon holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub epoch: u64,
    /// When it ends unless renewed.
    pub until: Instant,
}

/// One daemon's side of the election.
#[derive(Debug)]
pub struct Elector {
    identity: String,
    url: String,
    timing: Timing,
    /// The version of another holder's record, and when it was first seen.
    observed: Option<(u64, Instant)>,
    term: Option<Term>,
    /// The record as last read or written.
    last: Option<Record>,
}

impl Elector {
    pub fn new(identity: String, url: String, timing: Timing) -> Elector {
        Elector {
            identity,
            url,
            timing,
            observed: None,
            term: None,
            last: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The term held at `now`, if one is.
    pub fn term(&self, now: Instant) -> Option<Term> {
        self.term.filter(|term| now < term.until)
    }

    /// The record as last read or written.
    pub fn record(&self) -> Option<&Record> {
        self.last.as_ref()
    }

    /// Read the record, and renew, take or create the lease as the rules
    /// allow; `control` goes into what this daemon writes.
    pub async fn step(&mut self, store: &impl LeaseStore, control: &str) -> Result<(), LeaseError> {
        let started = Instant::now();
        let current = store.read().await?;
        // Later than the read itself: a standby errs towards waiting.
        let seen = Instant::now();
        let Some(current) = current else {
            let record = self.claim(1, control);
            return self.write(store, None, record, started).await;
        };
        self.last = Some(current.record.clone());
        if current.record.holder == self.identity {
            self.observed = None;
            let epoch = match self.term(started) {
                Some(term) if term.epoch == current.record.epoch => term.epoch,
                // A term of ours that ended, or one from before a restart:
                // a new term, so what was made meanwhile is told apart.
                _ => current.record.epoch + 1,
            };
            let record = self.claim(epoch, control);
            return self
                .write(store, Some(current.version), record, started)
                .await;
        }
        // Another daemon's record (or a released one): never ours to act on.
        self.term = None;
        if self.observed.map(|(version, _)| version) != Some(current.version) {
            self.observed = Some((current.version, seen));
        }
        let unchanged_since = self.observed.map_or(seen, |(_, at)| at);
        let lapsed = seen.saturating_duration_since(unchanged_since) >= self.timing.lease;
        if current.record.holder.is_empty() || lapsed {
            let record = self.claim(current.record.epoch + 1, control);
            return self
                .write(store, Some(current.version), record, started)
                .await;
        }
        Ok(())
    }

    fn claim(&self, epoch: u64, control: &str) -> Record {
        Record {
            holder: self.identity.clone(),
            epoch,
            url: self.url.clone(),
            control: control.to_string(),
        }
    }

    async fn write(
        &mut self,
        store: &impl LeaseStore,
        version: Option<u64>,
        record: Record,
        started: Instant,
    ) -> Result<(), LeaseError> {
        let written = match version {
            None => store.create(&record).await,
            Some(version) => store.update(version, &record).await,
        };
        match written {
            Ok(()) => {
                self.term = Some(Term {
                    epoch: record.epoch,
                    until: started + self.timing.term(),
                });
                self.last = Some(record);
                Ok(())
            }
            Err(LeaseError::Conflict) => {
                // Someone else wrote: whatever our term said, it is over.
                self.term = None;
                Err(LeaseError::Conflict)
            }
            // Unknown whether it was written: the term runs out as it would.
            Err(unavailable) => Err(unavailable),
        }
    }

    /// How long until the next step is due at `now`: a renewal while
    /// holding, otherwise the sooner of a renew interval and the moment
    /// the holder's lease would lapse.
    pub fn next_step_in(&self, now: Instant) -> Duration {
        if self.term(now).is_some() {
            return self.timing.renew;
        }
        match self.observed {
            Some((_, since)) => (since + self.timing.lease)
                .saturating_duration_since(now)
                .clamp(Duration::from_millis(50), self.timing.renew),
            None => self.timing.renew,
        }
    }

    /// Give the lease up (shutting down): a standby takes over at its next
    /// step instead of waiting a whole lease. The term ends first.
    pub async fn release(&mut self, store: &impl LeaseStore) -> Result<(), LeaseError> {
        let Some(term) = self.term.take() else {
            return Ok(());
        };
        let Some(current) = store.read().await? else {
            return Ok(());
        };
        if current.record.holder != self.identity {
            return Ok(());
        }
        let released = Record {
            holder: String::new(),
            epoch: term.epoch,
            url: String::new(),
            control: current.record.control.clone(),
        };
        store.update(current.version, &released).await
    }
}

/// What the status document says of the election.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// `leader`, `standby`, or `unknown` (the lease cannot be read).
    pub role: String,
    /// This daemon's name in the election (`--ha-id`).
    pub identity: String,
    /// The current term, as last read.
    pub epoch: u64,
    /// Who holds the lease, if anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Where the holder answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_url: Option<String>,
    /// The node whose swarm keeps the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Why the lease could not be read or written at the last step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl LeaseStatus {
    pub fn leads(&self) -> bool {
        self.role == "leader"
    }

    /// One line for people: who acts, and where to go to act.
    pub fn describe(&self) -> String {
        match (self.role.as_str(), &self.leader) {
            ("leader", _) => format!("this daemon ({}) leads, term {}", self.identity, self.epoch),
            (_, Some(leader)) if !self.leader_url.as_deref().unwrap_or("").is_empty() => format!(
                "standby: {leader} leads (term {}) at {}; make changes there",
                self.epoch,
                self.leader_url.as_deref().unwrap_or_default()
            ),
            (_, Some(leader)) => {
                format!(
                    "standby: {leader} leads (term {}); make changes there",
                    self.epoch
                )
            }
            _ => format!(
                "standby: no daemon leads yet{}",
                self.problem
                    .as_deref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests;
