//! `pier scale`, `pier node …`, `pier set …`: parse the arguments into an
//! [`Edit`], commit it, and report the diff (and, for `--dry-run`, the plan).

use std::process::ExitCode;

use pier::edit::commit::{self, CommitError, Outcome, Request};
use pier::edit::{Edit, Refused};
use pier::manifest::{self, SourceFile, Vars};
use pier::plan::render::{self, Style};
use pier::prepare::{self, Loaded, PassInput, Settings};
use pier::source::git::GitSource;

use crate::cli::{CommitArgs, NodeCommand, ScaleArgs, SetCommand};

fn usage(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

pub async fn scale(args: ScaleArgs) -> ExitCode {
    let mut targets = Vec::new();
    for target in &args.targets {
        let parsed = target
            .split_once('=')
            .and_then(|(service, count)| Some((service.to_string(), count.parse::<u32>().ok()?)));
        match parsed {
            Some(pair) => targets.push(pair),
            None => return usage(format!("`{target}`: expected SERVICE=COUNT, e.g. web=3")),
        }
    }
    run(Edit::Scale(targets), args.commit).await
}

pub async fn node(command: NodeCommand) -> ExitCode {
    match command {
        NodeCommand::Add {
            name,
            endpoint,
            tags,
            commit,
        } => {
            run(
                Edit::NodeAdd {
                    name,
                    endpoint,
                    tags,
                },
                commit,
            )
            .await
        }
        NodeCommand::Rm { name, commit } => run(Edit::NodeRemove(name), commit).await,
        NodeCommand::Tag {
            name,
            changes,
            commit,
        } => {
            let (mut add, mut remove) = (Vec::new(), Vec::new());
            for change in changes {
                match change.split_at_checked(1) {
                    Some(("+", tag)) if !tag.is_empty() => add.push(tag.to_string()),
                    Some(("-", tag)) if !tag.is_empty() => remove.push(tag.to_string()),
                    _ if change.starts_with("--") => {
                        return usage(format!(
                            "`{change}`: put options before the tag changes, e.g. `pier node tag --repo R {name} +ssd -hdd`"
                        ));
                    }
                    _ => return usage(format!("`{change}`: expected +TAG or -TAG")),
                }
            }
            run(Edit::NodeTag { name, add, remove }, commit).await
        }
    }
}

pub async fn set(command: SetCommand) -> ExitCode {
    match command {
        SetCommand::Image {
            service,
            image,
            commit,
        } => run(Edit::SetImage { service, image }, commit).await,
        SetCommand::Env {
            service,
            vars,
            commit,
        } => {
            let mut parsed = Vec::new();
            for var in vars {
                if let Some((key, value)) = var.split_once('=') {
                    parsed.push((key.to_string(), Some(value.to_string())));
                } else if let Some(key) = var.strip_suffix('-') {
                    parsed.push((key.to_string(), None));
                } else {
                    return usage(format!(
                        "`{var}`: expected KEY=VALUE to set or KEY- to remove"
                    ));
                }
            }
            run(
                Edit::SetEnv {
                    service,
                    vars: parsed,
                },
                commit,
            )
            .await
        }
    }
}

async fn run(edit: Edit, args: CommitArgs) -> ExitCode {
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
    let settings = Settings {
        source: pier::validate::Source {
            repo: args.repo.clone(),
            reference: outcome.base.clone(),
            path: args.path.clone(),
            cache_dir: args.cache_dir.clone(),
        },
        stack: args.nodes.stack.clone(),
        insecure_registries: args
            .nodes
            .insecure_registries
            .iter()
            .filter(|r| !r.is_empty())
            .cloned()
            .collect(),
        engine_timeout: args.nodes.engine_timeout,
        registry_timeout: args.nodes.registry_timeout,
        allow_empty: args.nodes.allow_empty,
        adopt: args.nodes.adopt,
        policy: args.nodes.policy.file.clone().unwrap_or_default(),
        allow_env: args.nodes.policy.allow_env(),
    };
    let registry = pier::registry::Registry::with_timeout(
        settings.insecure_registries.clone(),
        pier::registry::CredentialStore::from_environment(),
        settings.registry_timeout,
    );
    let planned = prepare::plan_loaded(&loaded, &settings, &registry, &PassInput::default()).await;
    println!("\nThe plan after this change:");
    print!(
        "{}",
        render::human(&planned.plan, &planned.desired, Style::for_stdout())
    );
}
