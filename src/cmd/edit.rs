//! What `pier scale`, `pier node …` and `pier set …` share: commit an
//! [`Edit`], and report the diff (and, for `--dry-run`, the plan).

use std::process::ExitCode;

use pier::edit::commit::{self, CommitError, Outcome, Request};
use pier::edit::{Edit, Refused};
use pier::manifest::{self, Vars};
use pier::pass::{self, Loaded, PassInput};
use pier::plan::render::{self, Style};
use pier::source::git::GitSource;

use crate::cli::CommitArgs;

pub(super) fn usage(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Where and how to commit, from the flags, and the variables manifests
/// may interpolate (to check the edited manifests).
pub(super) fn request(args: &CommitArgs) -> (Request, Vars) {
    let request = Request {
        repo: args.repo.clone(),
        cache_dir: args.cache_dir.clone(),
        branch: args.branch.clone(),
        folder: args.path.clone(),
        message: args.message.clone(),
        author: args.author.clone(),
        push: if args.no_push {
            Some(false)
        } else if args.push {
            Some(true)
        } else {
            None
        },
        dry_run: args.dry_run,
    };
    let vars = pier::manifest::interpolate::admitted_from_process(&args.nodes.policy.allow_env());
    (request, vars)
}

pub(super) async fn run(edit: Edit, args: CommitArgs) -> ExitCode {
    let (request, vars) = request(&args);
    let outcome = {
        let edit = edit.clone();
        tokio::task::spawn_blocking(move || commit::run(&request, &edit, &vars))
            .await
            .expect("the edit does not panic")
    };
    match outcome {
        Ok(outcome) => {
            report_commit(&args, &outcome, &edit.message()).await;
            ExitCode::SUCCESS
        }
        Err(error) => report_error(&error),
    }
}

/// Print what a commit changed, and then what was committed (or, for
/// `--dry-run`, the plan it leads to).
pub(super) async fn report_commit(args: &CommitArgs, outcome: &Outcome, default_message: &str) {
    print!("{}", outcome.diff);
    if args.dry_run {
        let (_, vars) = request(args);
        show_plan(args, outcome, &vars).await;
        println!("\nDry run: nothing was committed.");
        return;
    }
    let commit = outcome.commit.as_deref().unwrap_or_default();
    let message = args
        .message
        .clone()
        .unwrap_or_else(|| default_message.to_string());
    println!(
        "\nCommitted {} on {}: {}{}",
        pier::source::git::short_commit(commit),
        outcome.branch,
        message.lines().next().unwrap_or_default(),
        if outcome.retried {
            " (the branch had moved; the edit was made again on its new tip)"
        } else {
            ""
        }
    );
    if outcome.pushed {
        println!("Pushed.");
    }
}

pub(super) fn report_error(error: &CommitError) -> ExitCode {
    match error {
        CommitError::Refused(refused) => {
            if let Refused::WouldBeInvalid(diagnostics) | Refused::AlreadyInvalid(diagnostics) =
                refused
            {
                for diagnostic in diagnostics.iter().filter(|d| d.is_error()) {
                    eprintln!("{diagnostic}");
                }
            }
            eprintln!("error: {refused}");
            ExitCode::FAILURE
        }
        other => {
            eprintln!("error: {other}");
            ExitCode::from(2)
        }
    }
}

/// The plan the edited manifests lead to, against the nodes as they are.
async fn show_plan(args: &CommitArgs, outcome: &Outcome, vars: &Vars) {
    let repo = match GitSource::open(&args.repo, &args.cache_dir) {
        Ok(repo) => repo,
        Err(e) => return eprintln!("(no plan: {e})"),
    };
    let snapshot = match repo.manifests(&outcome.base, &args.path) {
        Ok(snapshot) => snapshot,
        Err(e) => return eprintln!("(no plan: {e})"),
    };
    let files = pier::edit::apply_changes(&snapshot.files, &outcome.changed);
    let loaded = manifest::load_and_validate(&files, vars, &snapshot.tree);
    let loaded = Loaded {
        commit: "(dry run)".into(),
        stack: args.nodes.stack.clone().unwrap_or_else(|| repo.name()),
        source: pier::plan::SourceId::new(&repo.identity(), &args.path),
        interpolated: loaded.interpolated,
        manifest: loaded.manifest,
        diagnostics: loaded.diagnostics,
    };
    let source = pier::validate::Source {
        repo: args.repo.clone(),
        reference: outcome.base.clone(),
        path: args.path.clone(),
        cache_dir: args.cache_dir.clone(),
    };
    let settings = super::nodes_settings(source, args.nodes.clone());
    let registry = pass::registry(&settings);
    let planned = pass::plan_loaded(
        &pass::Engines,
        &loaded,
        &settings,
        &registry,
        &PassInput::default(),
    )
    .await;
    println!("\nThe plan after this change:");
    print!(
        "{}",
        render::human(&planned.plan, &planned.desired, Style::for_stdout())
    );
}
