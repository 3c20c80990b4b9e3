//! `pier pipeline run`: the pipeline for a commit, on demand, and with
//! `--deploy` the deploy of what it built.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;

use pier::pass::{self, PassInput};
use pier::pipeline::{self, RunState, archive};
use pier::registry::CredentialStore;
use pier::source::git::GitSource;

use super::logs::stage_result;
use crate::cli::PipelineCommand;

pub async fn pipeline(command: PipelineCommand) -> ExitCode {
    let PipelineCommand::Run {
        deploy,
        deploy_after,
        rollout,
    } = command;
    let settings = super::settings(deploy);
    let vars = settings.manifest_vars();
    let repo = match GitSource::open(&settings.source.repo, &settings.source.cache_dir) {
        Ok(repo) => repo,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let loaded = match pass::load(
        &repo,
        &settings.source.reference,
        &settings.source.path,
        settings.stack.as_deref(),
        &vars,
        &settings.policy,
        pier::manifest::Decrypt::With(&settings.keys),
    )
    .and_then(|loaded| {
        // Only a deploy needs the router's certificate.
        if deploy_after {
            pass::with_router_certificate(loaded)
        } else {
            Ok(loaded)
        }
    }) {
        Ok(loaded) => loaded,
        Err(e) => {
            super::report_pass_error(&e);
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
        pass::reachable(pass::connect_all(&loaded.manifest, settings.engine_timeout).await);
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
    let registry = pass::registry(&settings);
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
    super::apply::deploy(
        &loaded,
        &settings,
        &registry,
        &input,
        &super::apply_settings(&rollout),
    )
    .await
}
