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

/// The environment variable naming a file of failing points: while the file
/// lists a point's name (one per line), [`failing`] says it fails. Unlike
/// [`FAULT_AT`] it can be turned on and off while the process runs, as a
/// network partition would come and go.
pub const FAULT_FILE: &str = "PIER_FAULT_FILE";

/// Failing points: `lease:unreachable` (every request to the `--ha` lease
/// store fails, as if the network to the swarm managers were cut).
pub fn failing(name: &str) -> Result<(), String> {
    static FILE: OnceLock<Option<String>> = OnceLock::new();
    let Some(path) = FILE
        .get_or_init(|| std::env::var(FAULT_FILE).ok().filter(|v| !v.is_empty()))
        .as_deref()
    else {
        return Ok(());
    };
    let listed = std::fs::read_to_string(path)
        .is_ok_and(|text| text.lines().any(|line| line.trim() == name));
    match listed {
        true => Err(format!("{FAULT_FILE} lists {name}: failing here")),
        false => Ok(()),
    }
}
