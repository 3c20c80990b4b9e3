//! `pier history`: the revisions deployed, newest first. From the daemon
//! (its API, else its store file); with `--offline`, from git and the
//! labels on the containers that run now.

use std::collections::BTreeMap;
use std::process::ExitCode;

use pier::daemon::api::HistoryDocument;
use pier::daemon::status::describe_freeze;
use pier::daemon::store::{Revision, Store, Verdict};
use pier::source::git::{GitSource, short_commit as short};

use super::client;
use crate::cli::{HistoryArgs, Output, ReachArgs};

pub async fn history(args: HistoryArgs) -> ExitCode {
    if args.offline {
        return offline(args).await;
    }
    let document = match document(&args.reach, args.limit).await {
        Ok(document) => document,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&document).expect("the history serialises")
        ),
        Output::Human => print!("{}", render(&document)),
    }
    ExitCode::SUCCESS
}

/// The daemon's history: from its API, else from the store in its state
/// folder (read-only; a daemon may be writing it).
pub(super) async fn document(reach: &ReachArgs, limit: usize) -> Result<HistoryDocument, String> {
    let api_error = match client::address(reach) {
        Ok(address) => {
            match client::read(&address, &format!("/api/v1/history?limit={limit}")).await {
                Ok(document) => return Ok(document),
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    let path = reach.state_dir.join("pier.db");
    if !path.exists() {
        return Err(format!(
            "{api_error}; and there is no state store at {}. `pier history --offline` reads the history from git and the nodes",
            path.display()
        ));
    }
    let read = || -> rusqlite::Result<HistoryDocument> {
        let store = Store::open_existing(&path)?;
        Ok(HistoryDocument {
            revisions: store.history(limit)?,
            hold: store.hold()?,
            freezes: store.freezes()?,
        })
    };
    read().map_err(|e| format!("cannot read the history in {}: {e}", path.display()))
}

fn when(seconds: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64),
    )
    .to_string()
}

/// `web sha256:0123456789ab, db sha256:…`
fn images(revision: &Revision) -> String {
    let list: Vec<String> = revision
        .services
        .iter()
        .map(|(name, image)| {
            format!(
                "{name} {}",
                &image.digest[..image.digest.len().min("sha256:".len() + 12)]
            )
        })
        .collect();
    list.join(", ")
}

/// The history as a table for a terminal.
pub fn render(document: &HistoryDocument) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(hold) = &document.hold {
        let _ = writeln!(
            out,
            "Held at {} (#{}) by {} since {}: new commits and digests wait until `pier resume`\n",
            short(&hold.commit),
            hold.revision,
            hold.by,
            when(hold.at)
        );
    }
    for freeze in &document.freezes {
        let _ = writeln!(out, "{}\n", describe_freeze(freeze));
    }
    if document.revisions.is_empty() {
        let _ = writeln!(out, "No revision recorded yet.");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>5}  {:12}  {:20}  {:12}  {:11}  IMAGES",
        "#", "COMMIT", "WHEN", "CAUSE", "VERDICT"
    );
    for revision in &document.revisions {
        let _ = writeln!(
            out,
            "{:>5}  {:12}  {:20}  {:12}  {:11}  {}",
            revision.id,
            short(&revision.commit),
            when(revision.at),
            revision.cause.as_str(),
            revision.verdict.as_str(),
            images(revision)
        );
        if revision.verdict != Verdict::Applied
            && let Some(line) = revision.reason.lines().find(|l| !l.trim().is_empty())
        {
            let _ = writeln!(out, "{:>5}  {line}", "");
        }
    }
    out
}

/// Without a daemon: the commits that changed the manifests, and which of
/// them the containers run now (with their digests), from their labels.
async fn offline(args: HistoryArgs) -> ExitCode {
    let limit = args.limit;
    let settings = super::settings(args.deploy);
    let vars = settings.manifest_vars();
    let loaded = match pier::pass::load_for_deploy(&settings, &vars).await {
        Ok(loaded) => loaded,
        Err(e) => {
            super::report_pass_error(&e);
            return ExitCode::from(2);
        }
    };
    let source = settings.source.clone();
    let log = tokio::task::spawn_blocking(move || {
        let repo = GitSource::open(&source.repo, &source.cache_dir)?;
        repo.folder_log(&source.reference, &source.path, limit)
    })
    .await
    .expect("reading git does not panic");
    let log = match log {
        Ok(log) => log,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let engines = pier::pass::connect::connect_all(&loaded.manifest, settings.engine_timeout).await;
    let observed =
        pier::pass::observe::observe(&loaded.stack, &engines, settings.engine_timeout).await;
    // (commit → service → (digest, containers)) from the labels.
    let mut running: BTreeMap<String, BTreeMap<String, (String, usize)>> = BTreeMap::new();
    for (node, observation) in &observed.nodes {
        if let Some(reason) = &observation.unreachable {
            eprintln!("warning: node {node} is unreachable ({reason}); what it runs is not shown");
        }
        for container in &observation.owned {
            let entry = running
                .entry(container.commit.clone())
                .or_default()
                .entry(container.service.clone())
                .or_insert_with(|| (container.image_digest.clone(), 0));
            entry.1 += 1;
        }
    }
    println!(
        "{:12}  {:20}  {:40}  RUNNING NOW",
        "COMMIT", "WHEN", "SUBJECT"
    );
    for entry in &log {
        let now: Vec<String> = running
            .get(&entry.commit)
            .map(|services| {
                services
                    .iter()
                    .map(|(service, (digest, count))| {
                        format!(
                            "{service}×{count} {}",
                            &digest[..digest.len().min("sha256:".len() + 12)]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let subject: String = entry.subject.chars().take(40).collect();
        println!(
            "{:12}  {:20}  {subject:40}  {}",
            short(&entry.commit),
            when(entry.time),
            now.join(", ")
        );
    }
    let listed: Vec<&String> = running
        .keys()
        .filter(|c| !log.iter().any(|e| e.commit == **c))
        .collect();
    for commit in listed {
        println!(
            "(containers also run {}, which is not among these {limit} commits)",
            short(commit)
        );
    }
    ExitCode::SUCCESS
}
