//! Named fault points, so tests reach a crash window on purpose instead of
//! hoping a `kill -9` lands in it: with `PIER_FAULT_AT=<name>` in its
//! environment, the process aborts (as a crash would: no cleanup, no
//! unwinding) the moment execution reaches the point of that name. Unset,
//! a point costs one comparison.
//!
//! Points: `replace:stopped` (a stop-first replacement stopped the old
//! container), `replace:set-aside` (renamed it `-pier-old`),
//! `replace:healthy` (the new one is healthy, the old one not yet removed),
//! `create:created` (a new container exists and is not started),
//! `replace:beside` (a start-first successor is healthy beside the old
//! container, which still runs).

use std::sync::OnceLock;

/// The environment variable that arms a fault point.
pub const FAULT_AT: &str = "PIER_FAULT_AT";

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(FAULT_AT).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Abort the process here if `name` is the armed point.
pub fn point(name: &str) {
    if armed() == Some(name) {
        eprintln!("{FAULT_AT}={name}: aborting here");
        std::process::abort();
    }
}
