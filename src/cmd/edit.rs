//! What `pier scale`, `pier node …` and `pier set …` share: commit an
//! [`Edit`], and report the diff (and, for `--dry-run`, the plan).

use std::process::ExitCode;

use pier::edit::commit::{self, CommitError, Outcome, Request};
use pier::edit::{Edit, Refused};
use pier::manifest::{self, SourceFile, Vars};
use pier::pass::{self, Loaded, PassInput};
use pier::plan::render::{self, Style};
use pier::source::git::GitSource;

use crate::cli::CommitArgs;

pub(super) fn usage(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

pub(super) async fn run(edit: Edit, args: CommitArgs) -> ExitCode {
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
    let outcome = {
        let (request, edit, vars) = (request.clone(), edit.clone(), vars.clone());
        tokio::task::spawn_blocking(move || commit::run(&request, &edit, &vars))
            .await
            .expect("the edit does not panic")
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => return report_error(&error),
    };
    print!("{}", outcome.diff);
    if args.dry_run {
        show_plan(&args, &outcome, &vars).await;
        println!("\nDry run: nothing was committed.");
        return ExitCode::SUCCESS;
    }
    let commit = outcome.commit.as_deref().unwrap_or_default();
    println!(
        "\nCommitted {} on {}: {}{}",
        pier::source::git::short_commit(commit),
        outcome.branch,
        request.message.unwrap_or_else(|| edit.message()),
        if outcome.retried {
            " (the branch had moved; the edit was made again on its new tip)"
        } else {
            ""
        }
    );
    if outcome.pushed {
        println!("Pushed.");
    }
    ExitCode::SUCCESS
}

fn report_error(error: &CommitError) -> ExitCode {
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
    let mut files: Vec<SourceFile> = snapshot
        .files
        .iter()
        .map(|f| SourceFile {
            path: f.path.clone(),
            text: outcome
                .changed
                .iter()
                .find(|c| c.path == f.path)
                .map_or_else(|| f.text.clone(), |c| c.after.clone()),
        })
        .collect();
    files.extend(
        outcome
            .changed
            .iter()
            .filter(|c| c.before.is_none())
            .map(|c| SourceFile {
                path: c.path.clone(),
                text: c.after.clone(),
            }),
    );
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
    let planned = pass::plan_loaded(&loaded, &settings, &registry, &PassInput::default()).await;
    println!("\nThe plan after this change:");
    print!(
        "{}",
        render::human(&planned.plan, &planned.desired, Style::for_stdout())
    );
}
