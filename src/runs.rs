//! `pier logs` (a recorded pipeline run, from the daemon's store) and
//! `pier pipeline run` (a run on demand, printed as it goes).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use pier::daemon::store::Store;
use pier::pipeline::{self, RunState, archive};
use pier::prepare::{self, PassInput};
use pier::registry::CredentialStore;
use pier::source::git::GitSource;

use crate::cli::{LogsArgs, PipelineCommand};

/// `== NAME STATE on NODE in N ms, exit code C: MESSAGE`, a stage's last line.
fn stage_result(
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
        if !args.follow || run.state != "running" {
            let _ = writeln!(out, "== run {}: {}", run.id, run.state);
            return if run.state == "passed" || run.state == "running" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        drop(out);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub async fn pipeline(command: PipelineCommand) -> ExitCode {
    let PipelineCommand::Run {
        deploy,
        deploy_after,
        rollout,
    } = command;
    let settings = crate::commands::settings(deploy);
    let vars = settings.manifest_vars();
    let repo = match GitSource::open(&settings.source.repo, &settings.source.cache_dir) {
        Ok(repo) => repo,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let loaded = match prepare::load(
        &repo,
        &settings.source.reference,
        &settings.source.path,
        settings.stack.as_deref(),
        &vars,
        &settings.policy,
    )
    .and_then(|loaded| {
        // Only a deploy needs the router's certificate.
        if deploy_after {
            prepare::with_router_certificate(loaded)
        } else {
            Ok(loaded)
        }
    }) {
        Ok(loaded) => loaded,
        Err(e) => {
            crate::commands::report_pass_error(&e);
            return ExitCode::from(2);
        }
    };
    if loaded.manifest.pipeline.is_none() {
        eprintln!("error: the manifests declare no `pipeline:`");
        return ExitCode::from(2);
    }
    let archive::Archives {
        workspace,
        contexts,
    } = match archive::for_pipeline(repo.repository(), &loaded.commit, &loaded.manifest) {
        Ok(archives) => archives,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let engines =
        prepare::reachable(prepare::connect_all(&loaded.manifest, settings.engine_timeout).await);
    let credentials = CredentialStore::from_environment();
    let secrets = match pipeline::pipeline_secrets(
        &loaded.manifest,
        &loaded.interpolated,
        &vars,
        credentials.passwords(),
    ) {
        Ok(secrets) => secrets,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let (_tip, tip) = tokio::sync::watch::channel(None);
    let last_stage = std::sync::Mutex::new(String::new());
    let on_output = |stage: &str, text: &str| {
        let mut last = last_stage.lock().expect("stage lock");
        if *last != stage {
            println!("== stage {stage}");
            *last = stage.to_string();
        }
        print!("{text}");
        let _ = std::io::stdout().flush();
    };
    let ctx = pipeline::Context {
        stack: &loaded.stack,
        commit: &loaded.commit,
        manifest: &loaded.manifest,
        engines: &engines,
        credentials: &credentials,
        workspace,
        contexts,
        secrets,
        environment: &vars,
        tip,
        on_output: &on_output,
        trusted: true,
        confinement: Default::default(),
    };
    let outcome = pipeline::run(&ctx).await;
    for stage in &outcome.stages {
        let state = if stage.ok { "passed" } else { "FAILED" };
        let line = stage_result(
            &stage.name,
            state,
            &stage.node,
            stage.duration_ms,
            stage.exit_code,
            &stage.message,
        );
        println!("{line}");
    }
    for (service, (_, resolved)) in &outcome.built {
        println!("built {service}: {}", resolved.pinned);
    }
    if outcome.state != RunState::Passed {
        println!("Pipeline {}.", outcome.state.as_str());
        return ExitCode::FAILURE;
    }
    println!("Pipeline passed.");
    if !deploy_after {
        return ExitCode::SUCCESS;
    }
    let registry = prepare::registry(&settings);
    let input = PassInput {
        pins: outcome
            .built
            .iter()
            .map(|(service, (_, resolved))| (service.clone(), resolved.clone()))
            .collect(),
        frozen: BTreeMap::new(),
        node_loss: None,
        destroyed: Default::default(),
        retired: Default::default(),
        resolver: None,
    };
    crate::commands::deploy(
        &loaded,
        &settings,
        &registry,
        &input,
        &crate::commands::apply_settings(&rollout),
    )
    .await
}
