//! `pier rollback` and `pier resume`: put back an earlier revision, as a
//! commit (it stays until the next commit) or, with `--hold`, as the
//! daemon's state (it stays until `pier resume`).

use std::process::ExitCode;

use pier::daemon::api::{ControlRequest, HistoryDocument};
use pier::daemon::store::{Hold, Revision, Verdict};
use pier::edit::rollback::{Rollback, pinned_reference};
use pier::source::git::short_commit as short;

use super::client;
use crate::cli::{ControlArgs, RollbackArgs};

/// How far back `pier rollback` looks for revisions.
const HISTORY_READ: usize = 1000;

pub async fn rollback(args: RollbackArgs) -> ExitCode {
    let document = match super::history::document(&args.control.reach, HISTORY_READ).await {
        Ok(document) => document,
        Err(e) => {
            eprintln!(
                "error: {e}\n`pier rollback` needs the daemon's history: it holds the digest each revision ran"
            );
            return ExitCode::from(2);
        }
    };
    let (current, target) = match choose(&document, args.to.as_deref()) {
        Ok(chosen) => chosen,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.hold {
        if !args.services.is_empty() {
            eprintln!(
                "error: --hold holds the whole stack at a revision; to put back only some services, roll back without --hold"
            );
            return ExitCode::from(2);
        }
        return hold(&args.control, target).await;
    }
    let known: Vec<&String> = target.services.keys().collect();
    if let Some(unknown) = args
        .services
        .iter()
        .find(|s| !target.services.contains_key(*s))
    {
        eprintln!(
            "error: `{unknown}` did not run at {} (its services: {})",
            short(&target.commit),
            known
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(2);
    }
    let images = target
        .services
        .iter()
        .filter(|(name, _)| args.services.is_empty() || args.services.contains(name))
        // A local image by id (no registry) is not a reference to pin.
        .filter(|(_, image)| image.pinned.contains("@sha256:"))
        .map(|(name, image)| (name.clone(), pinned_reference(&image.image, &image.digest)))
        .collect();
    let rollback = Rollback {
        to: target.commit.clone(),
        from: current.commit.clone(),
        services: args.services.clone(),
        images,
    };
    let (request, vars) = super::edit::request(&args.commit);
    let outcome = {
        let rollback = rollback.clone();
        tokio::task::spawn_blocking(move || {
            pier::edit::commit::rollback(&request, &rollback, &vars)
        })
        .await
        .expect("the rollback does not panic")
    };
    match outcome {
        Ok(outcome) => {
            super::edit::report_commit(&args.commit, &outcome, &rollback.message()).await;
            if !args.commit.dry_run {
                let pinned: Vec<&str> = rollback.images.keys().map(String::as_str).collect();
                println!(
                    "\nThe daemon deploys it like any commit, without running the pipeline again, and keeps it until the next commit.\nPinned now: {}. `pier unpin SERVICE` lets a service follow its tag again.",
                    pinned.join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => super::edit::report_error(&error),
    }
}

/// The revision running now (the newest applied) and the one to put back:
/// `--to` (a commit prefix or a history number), else the newest applied
/// revision before it that ran something else.
fn choose<'d>(
    document: &'d HistoryDocument,
    to: Option<&str>,
) -> Result<(&'d Revision, &'d Revision), String> {
    let applied: Vec<&Revision> = document
        .revisions
        .iter()
        .filter(|r| r.verdict == Verdict::Applied)
        .collect();
    let Some(current) = applied.first().copied() else {
        return Err(
            "the daemon has applied no revision yet: there is nothing to roll back to".into(),
        );
    };
    let target = match to {
        Some(spec) => {
            let spec = spec.trim().trim_start_matches('#').to_ascii_lowercase();
            let by_number = spec.parse::<i64>().ok().filter(|_| spec.len() < 7);
            applied
                .iter()
                .copied()
                .find(|r| match by_number {
                    Some(id) => r.id == id,
                    None => spec.len() >= 7 && r.commit.starts_with(&spec),
                })
                .ok_or_else(|| {
                    format!("no applied revision `{spec}` in the history; `pier history` lists them (a commit needs 7+ digits)")
                })?
        }
        None => applied
            .iter()
            .copied()
            .skip(1)
            .find(|r| r.commit != current.commit || r.services != current.services)
            .ok_or("no earlier revision in the history to roll back to")?,
    };
    Ok((current, target))
}

async fn hold(control: &ControlArgs, target: &Revision) -> ExitCode {
    let request = ControlRequest {
        commit: target.commit.clone(),
        revision: Some(target.id),
        ..Default::default()
    };
    match client::control::<Hold>(control, "/api/v1/hold", request).await {
        Ok(hold) => {
            println!(
                "Held at {} (#{}): the daemon converges to it with the digests it ran, and moves to no new commit or digest until `pier resume`.",
                short(&hold.commit),
                hold.revision
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

pub async fn resume(args: ControlArgs) -> ExitCode {
    match client::control::<bool>(&args, "/api/v1/resume", ControlRequest::default()).await {
        Ok(true) => {
            println!("Resumed: the daemon follows its branch again.");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("The stack was not held; nothing changed.");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
