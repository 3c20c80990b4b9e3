//! `pier run SERVICE -- CMD…`: a one-off container from the service's
//! current spec on one node, joined to this terminal, removed when it ends
//! (with its anonymous volumes) unless `--keep`. Its exit code is pier's.

use std::process::ExitCode;

use futures_util::FutureExt;
use pier::docker::{Runtime, Volumes};
use pier::ops::run::{one_off_name, one_off_spec};
use pier::pass;

use super::terminal;
use crate::cli::RunArgs;

pub async fn run(args: RunArgs) -> ExitCode {
    match one_off(args).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

async fn one_off(args: RunArgs) -> Result<ExitCode, String> {
    let settings = super::settings(args.deploy);
    let vars = settings.manifest_vars();
    let prepared = pass::prepare(&settings, &vars).await.map_err(|e| {
        super::report_pass_error(&e);
        "the manifests cannot be deployed, so neither can a one-off of them".to_string()
    })?;
    let service = &args.service;
    let Some(desired) = prepared.desired.services.get(service) else {
        return Err(match prepared.desired.frozen.get(service) {
            Some(why) => format!("`{service}` cannot run now: {why}"),
            None => format!("no service `{service}` in the manifests"),
        });
    };
    // Where the service's data is: the node of its lowest-numbered replica.
    let node = match &args.node {
        Some(node) => node.clone(),
        None => prepared
            .observed
            .nodes
            .iter()
            .flat_map(|(node, o)| o.owned.iter().map(move |c| (node, c)))
            .filter(|(_, c)| c.service == *service && c.running)
            .min_by_key(|(_, c)| c.replica)
            .map(|(node, _)| node.clone())
            .ok_or_else(|| format!("no replica of `{service}` runs; say where with --node"))?,
    };
    let engine = prepared
        .engines
        .get(&node)
        .ok_or_else(|| format!("node `{node}` is unreachable or not in the manifests"))?;
    let tty = terminal::wants_tty(args.no_tty);
    let command = (!args.command.is_empty()).then(|| args.command.clone());
    let mut spec = one_off_spec(
        &desired.spec,
        &prepared.desired.stack,
        service,
        &prepared.desired.commit,
        command,
        tty,
    );
    // `volumes_from` names services: the one-off mounts those of their
    // replica on this node, as a replica would.
    let owned = prepared
        .observed
        .nodes
        .get(&node)
        .map(|o| o.owned.as_slice())
        .unwrap_or(&[]);
    for entry in spec.volumes_from.iter_mut() {
        let (from, mode) = entry.split_once(':').unwrap_or((entry.as_str(), ""));
        let container = owned.iter().find(|c| c.service == from).ok_or_else(|| {
            format!("`{service}` mounts the volumes of `{from}`, which has no replica on {node}")
        })?;
        *entry = if mode.is_empty() {
            container.name.clone()
        } else {
            format!("{}:{mode}", container.name)
        };
    }
    if !matches!(engine.image_id(&spec.image).await, Ok(Some(_))) {
        let credentials = prepared
            .registry
            .credentials()
            .for_image(&spec.image)
            .cloned();
        engine
            .pull(&spec.image, credentials.as_ref(), spec.platform.as_deref())
            .await
            .map_err(|e| format!("pulling {}: {e}", spec.image))?;
    }
    let name = one_off_name(&prepared.desired.stack, service);
    let id = engine
        .create(&name, &spec)
        .await
        .map_err(|e| format!("creating {name}: {e}"))?;
    let cleanup = |keep: bool| {
        let (engine, id, name, node) = (engine.clone(), id.clone(), name.clone(), node.clone());
        async move {
            if keep {
                eprintln!("kept {name} on {node}");
            } else if let Err(e) = engine.remove(&id, Volumes::Remove).await {
                eprintln!("warning: {name} on {node} could not be removed: {e}");
            }
        }
    };
    let started = async {
        if !spec.provided.is_empty() {
            engine.provide_files(&id, &spec.provided).await?;
        }
        if !spec.files.is_empty() {
            engine.write_files(&id, &spec.files).await?;
        }
        let attached = engine.attach(&id, true).await?;
        engine.start(&id).await?;
        Ok::<_, pier::docker::RuntimeError>(attached)
    };
    let attached = match started.await {
        Ok(attached) => attached,
        Err(e) => {
            cleanup(args.keep).await;
            return Err(format!("starting {name}: {e}"));
        }
    };
    let (resizer, resized) = (engine.clone(), id.clone());
    let joined = terminal::join(attached, tty, move |width, height| {
        let (engine, id) = (resizer.clone(), resized.clone());
        async move {
            let _ = engine.resize_container(&id, width, height).await;
        }
        .boxed()
    });
    tokio::select! {
        _ = joined => {}
        _ = tokio::signal::ctrl_c() => {
            let _ = engine.stop(&id, std::time::Duration::from_secs(10)).await;
        }
    }
    let code = engine.wait_exit(&id).await;
    cleanup(args.keep).await;
    code.map(terminal::exit_code)
        .map_err(|e| format!("waiting for {name}: {e}"))
}
