//! How the operator confines the stages of a branch under test: memory,
//! processes, CPU and time bounds, and a network of their own.

use std::time::Duration;

use super::{Context, DEFAULT_STAGE_TIMEOUT};
use crate::docker::jobs::JobLimits;

/// How the operator confines the stages of a branch under test (the
/// daemon's `--untrusted-*` flags): whoever pushed the branch chose what
/// runs, so it gets bounded memory, processes, CPU and time, a network of
/// its own, and only images pulled for it. The branch can lower none of
/// these bounds' reach: its own `timeout` applies only when shorter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    pub memory_bytes: i64,
    pub pids: i64,
    /// Billionths of a CPU.
    pub nano_cpus: i64,
    /// The longest a stage may run, whatever its `timeout` says.
    pub max_timeout: Duration,
}

impl Default for Confinement {
    fn default() -> Confinement {
        Confinement {
            memory_bytes: 2 << 30,
            pids: 1024,
            nano_cpus: 1_000_000_000,
            max_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// The network a stack's untrusted stages join: theirs alone, so they
/// reach neither the default bridge's containers nor the stack's.
pub fn untrusted_network(stack: &str) -> String {
    format!("pier-{stack}-untrusted")
}

impl Context<'_> {
    /// A stage's bound: its own `timeout` (or the default), and for a
    /// branch under test no longer than the operator allows.
    pub(super) fn stage_timeout(&self, written: Option<Duration>) -> Duration {
        let timeout = written.unwrap_or(DEFAULT_STAGE_TIMEOUT);
        if self.trusted {
            timeout
        } else {
            timeout.min(self.confinement.max_timeout)
        }
    }

    /// The limits of this run's jobs and builds: `None` for a trusted run.
    pub(super) fn job_limits(&self) -> Option<JobLimits> {
        (!self.trusted).then(|| JobLimits {
            memory_bytes: self.confinement.memory_bytes,
            pids: self.confinement.pids,
            nano_cpus: self.confinement.nano_cpus,
            network: untrusted_network(self.stack),
        })
    }
}
