//! `pier logs`: the output of a service's replicas across the nodes,
//! merged and marked; with `--run`, a recorded pipeline run from the
//! daemon's store.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use std::collections::HashMap;

use pier::daemon::store::Store;
use pier::ops::logs::{Event, Line};
use pier::ops::{self, Reach, Replica, Selection};
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
    match args.run.clone() {
        Some(run) => run_logs(&run, &args).await,
        None => service_logs(args).await,
    }
}

/// Prints replicas' lines: `web.1@n1 | text`, the mark coloured per
/// replica on a terminal (unless `NO_COLOR`), with the time when asked.
struct Printer {
    width: usize,
    timestamps: bool,
    colour: bool,
}

impl Printer {
    fn new(replicas: &[Replica], timestamps: bool) -> Printer {
        use std::io::IsTerminal as _;
        Printer {
            width: replicas.iter().map(|r| r.label().len()).max().unwrap_or(0),
            timestamps,
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn print(&self, line: &Line) {
        let mark = format!("{:width$}", line.replica, width = self.width);
        let mark = if self.colour {
            // One of six colours, the same for a replica every time.
            let hash = line
                .replica
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
            format!("\x1b[{}m{mark}\x1b[0m", 31 + hash % 6)
        } else {
            mark
        };
        let stamp = if self.timestamps {
            format!(" {}", line.stamp)
        } else {
            String::new()
        };
        let text = format!("{mark}{stamp} | {}", line.text);
        if line.stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
}

async fn service_logs(args: LogsArgs) -> ExitCode {
    let selection = Selection {
        services: args.services.clone(),
        replica: args.replica,
        node: args.node.clone(),
    };
    let settings = super::settings(args.deploy);
    let reach = match Reach::connect(&settings).await {
        Ok(reach) => reach,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = reach.check_services(&selection.services) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let read_at = std::time::SystemTime::now();
    let (replicas, unreachable) = reach.replicas(&selection).await;
    for (node, why) in &unreachable {
        eprintln!("warning: node {node} is unreachable ({why}): its replicas' output is missing");
    }
    let since = args.since.unwrap_or(0);
    let (lines, missing) = ops::logs::backlog(&reach, &replicas, since, args.tail).await;
    for (replica, why) in &missing {
        eprintln!("warning: the output of {replica} is missing: {why}");
    }
    let printer = Printer::new(&replicas, args.timestamps);
    for line in &lines {
        printer.print(line);
    }
    let complete = unreachable.is_empty() && missing.is_empty();
    if !args.follow {
        return if complete {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    // Each replica is followed from its last line printed, or from now.
    let mut seen: HashMap<String, std::time::SystemTime> = HashMap::new();
    for replica in &replicas {
        let last = lines
            .iter()
            .rev()
            .find(|l| l.replica == replica.label())
            .map_or(read_at, |l| l.at);
        seen.insert(replica.id.clone(), last);
    }
    let (events, mut received) = tokio::sync::mpsc::channel(1024);
    let following = tokio::spawn(ops::logs::follow(
        std::sync::Arc::new(reach),
        selection,
        seen,
        events,
    ));
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            event = received.recv() => match event {
                Some(Event::Line(line)) => printer.print(&line),
                Some(Event::Note(note)) => eprintln!("pier: {note}"),
                None => break,
            },
            _ = &mut interrupted => break,
        }
    }
    drop(received);
    following.abort();
    ExitCode::SUCCESS
}

async fn run_logs(run_ref: &str, args: &LogsArgs) -> ExitCode {
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
        let run = match store.find_run(run_ref) {
            Ok(Some(run)) => run,
            Ok(None) => {
                eprintln!("error: no pipeline run `{}` in {}", run_ref, path.display());
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
