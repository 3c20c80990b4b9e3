//! `pier logs`: a recorded pipeline run, from the daemon's store.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use pier::daemon::store::Store;
use pier::pipeline::RunStatus;

use crate::cli::LogsArgs;

/// `== NAME STATE on NODE in N ms, exit code C: MESSAGE`, a stage's last line.
pub(super) fn stage_result(
    name: &str,
    state: &str,
    node: &str,
    duration_ms: u64,
    exit_code: Option<i64>,
    message: &str,
) -> String {
    let code = exit_code
        .map(|c| format!(", exit code {c}"))
        .unwrap_or_default();
    let message = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    format!("== {name} {state} on {node} in {duration_ms} ms{code}{message}")
}

pub async fn logs(args: LogsArgs) -> ExitCode {
    let path = args.state_dir.join("pier.db");
    let store = match Store::open_existing(&path) {
        Ok(store) => store,
        Err(e) => {
            eprintln!(
                "error: cannot read {}: {e}; pass the daemon's --state-dir",
                path.display()
            );
            return ExitCode::from(2);
        }
    };
    // What was printed so far, for --follow: the last log chunk per stage,
    // and which stages got their heading and their result line.
    let mut printed: BTreeMap<String, i64> = BTreeMap::new();
    let mut headed = std::collections::BTreeSet::new();
    let mut ended = std::collections::BTreeSet::new();
    loop {
        let run = match store.find_run(&args.run) {
            Ok(Some(run)) => run,
            Ok(None) => {
                eprintln!(
                    "error: no pipeline run `{}` in {}",
                    args.run,
                    path.display()
                );
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("error: reading {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let stages = store.stage_rows(run.id).unwrap_or_default();
        let mut out = std::io::stdout().lock();
        for stage in stages
            .iter()
            .filter(|s| args.stage.as_ref().is_none_or(|name| *name == s.name))
        {
            if headed.insert(stage.name.clone()) {
                let _ = writeln!(
                    out,
                    "== stage {} (run {}, {})",
                    stage.name,
                    run.id,
                    pier::source::git::short_commit(&run.commit)
                );
            }
            let done = printed.entry(stage.name.clone()).or_insert_with(|| {
                // A log kept by an older version, in the row itself.
                let _ = write!(out, "{}", stage.log);
                0
            });
            // Chunks are whole pieces of text, numbered as they were added:
            // no character is ever split, and a dropped front is skipped.
            for (chunk, text) in store
                .stage_log_after(run.id, &stage.name, *done)
                .unwrap_or_default()
            {
                let _ = write!(out, "{text}");
                *done = chunk;
            }
            if stage.state != "running" && ended.insert(stage.name.clone()) {
                let line = stage_result(
                    &stage.name,
                    &stage.state,
                    &stage.node,
                    stage.duration_ms,
                    stage.exit_code,
                    &stage.message,
                );
                let _ = writeln!(out, "{line}");
            }
        }
        if !args.follow || run.state != RunStatus::Running {
            let _ = writeln!(out, "== run {}: {}", run.id, run.state);
            return if matches!(run.state, RunStatus::Passed | RunStatus::Running) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        drop(out);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
