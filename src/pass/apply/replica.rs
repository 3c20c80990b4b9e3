//! One change to one replica: create, remove, reload live configuration;
//! the service's rollout in batches, and the specification a new replica
//! is created with.

#[allow(unused_imports)]
use super::*;

/// Roll out one service's changes: removals and creations at once, then
/// replacements in batches of `parallelism`. Stops at the first failed batch.
pub(super) async fn rollout<R: Runtime>(
    ctx: &Context<'_, R>,
    service_plan: &ServicePlan,
) -> Result<(), RolloutError> {
    let name = &service_plan.service;
    let desired = ctx.desired.services.get(name);
    // The planner's batches, in order; a batch of replacements has at most
    // `parallelism` changes, the others may be many.
    for batch in &service_plan.batches {
        let changes: Vec<&Change> = batch
            .iter()
            .filter_map(|&i| service_plan.changes.get(i))
            .collect();
        // Changes are started as earlier ones finish, a bounded number at a
        // time: far more than the engine operations in flight (health waits
        // hold none), yet not one waiting future per replica of a fleet.
        let results: Vec<Result<(), RolloutError>> = stream::iter(&changes)
            .map(|change| run_change(ctx, name, desired, change))
            .buffer_unordered(ctx.settings.total.max(1) * CHANGES_PER_OPERATION)
            .collect()
            .await;
        if let Some(error) = results.into_iter().find_map(Result::err) {
            return Err(error);
        }
        let replaced = changes.iter().any(|c| matches!(c, Change::Replace { .. }));
        if replaced
            && let Some(d) = desired
            && !d.update.delay.is_zero()
        {
            tokio::time::sleep(d.update.delay).await;
        }
    }
    Ok(())
}

pub(super) async fn vanished(
    call: impl std::future::Future<Output = Result<(), RuntimeError>>,
) -> Result<Vanished, RuntimeError> {
    match call.await {
        Ok(()) => Ok(Vanished::No),
        Err(RuntimeError::NotFound(_)) => Ok(Vanished::Yes),
        Err(e) => Err(e),
    }
}

/// Stopping or removing a container that is gone already has done its job.
pub(super) async fn already_gone_is_done(
    call: impl std::future::Future<Output = Result<(), RuntimeError>>,
) -> Result<(), RuntimeError> {
    vanished(call).await.map(drop)
}

pub(super) fn stop_timeout(
    ctx: &Context<'_, impl Runtime>,
    desired: Option<&DesiredService>,
) -> Duration {
    desired
        .and_then(|d| d.spec.stop_timeout)
        .unwrap_or(ctx.settings.stop_timeout)
}

pub(super) async fn run_change<R: Runtime>(
    ctx: &Context<'_, R>,
    service: &str,
    desired: Option<&DesiredService>,
    change: &Change,
) -> Result<(), RolloutError> {
    let node = change.node();
    let engine = ctx.engine(node)?;
    match change {
        Change::Remove { container, .. } => {
            let volumes = if ctx.settings.prune_volumes {
                Volumes::Remove
            } else {
                Volumes::Keep
            };
            lifecycle::pre_stop(ctx, engine, desired, node, &container.name, &container.id).await;
            ctx.step(
                service,
                node,
                Action::Stop,
                &container.name,
                already_gone_is_done(engine.stop(&container.id, stop_timeout(ctx, desired))),
            )
            .await?;
            ctx.step(
                service,
                node,
                Action::Remove,
                &container.name,
                already_gone_is_done(engine.remove(&container.id, volumes)),
            )
            .await
        }
        Change::Create { replica, name, .. } => {
            let desired = desired.ok_or_else(|| undeclared(service))?;
            create_healthy(ctx, engine, desired, node, name, *replica, &[]).await
        }
        Change::Reload { container, .. } => {
            let desired = desired.ok_or_else(|| undeclared(service))?;
            reload(ctx, engine, desired, node, container).await
        }
        Change::Rotate {
            container, into, ..
        } => {
            let desired = desired.ok_or_else(|| undeclared(service))?;
            rotate(
                ctx,
                engine,
                desired,
                node,
                &container.id,
                &container.name,
                *into,
            )
            .await
        }
        Change::Replace {
            replica,
            name,
            old,
            start_first,
            ..
        } => {
            let desired = desired.ok_or_else(|| undeclared(service))?;
            if *start_first {
                replace_start_first(ctx, engine, desired, node, name, *replica, old).await
            } else {
                replace_stop_first(ctx, engine, desired, node, name, *replica, old).await
            }
        }
    }
}

/// Rewrite a running replica's live configuration and run its `reload`
/// command. A reload that fails leaves the container running as it was
/// (Caddy keeps its previous configuration when the new one is refused).
pub(super) async fn reload<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    container: &OwnedContainer,
) -> Result<(), RolloutError> {
    let service = &desired.name;
    let name = &container.name;
    ctx.step(
        service,
        node,
        Action::Configure,
        name,
        engine.write_files(&container.id, &desired.spec.files),
    )
    .await?;
    let Some(command) = desired.spec.reload.as_ref() else {
        return Ok(());
    };
    let run = async {
        match engine.exec(&container.id, command).await? {
            (0, _) => Ok(()),
            (code, output) => Err(RuntimeError::Failed(format!(
                "`{}` exited with {code}: {}",
                command.join(" "),
                output.trim()
            ))),
        }
    };
    ctx.step(service, node, Action::Reload, name, run).await
}

/// A new replica, started and waited for until healthy.
pub(super) async fn create_healthy<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    name: &str,
    replica: u32,
    inherited: &[AnonymousVolume],
) -> Result<(), RolloutError> {
    let predecessor = Predecessor {
        running_beside: None,
        volumes: inherited,
    };
    let id = start_new(ctx, engine, desired, node, name, replica, predecessor).await?;
    let Err(reason) = wait_healthy(ctx, engine, desired, node, name, &id).await else {
        return Ok(());
    };
    // A replica that never became healthy is not left behind, restarting or
    // holding its name; its volumes stay (they may be inherited ones).
    let removed = ctx
        .step(
            &desired.name,
            node,
            Action::Remove,
            name,
            engine.remove(&id, Volumes::Keep),
        )
        .await;
    Err(RolloutError::NeverHealthy {
        service: desired.name.clone(),
        replica,
        node: node.to_string(),
        reason: Box::new(reason),
        removal: removed.map_err(Box::new),
    })
}

fn undeclared(service: &str) -> RolloutError {
    RolloutError::Undeclared {
        service: service.to_string(),
    }
}

/// Create and start a replica under `name`, taking over from its
/// `predecessor`; returns its id. A container that was created but could
/// not start is removed again.
pub(super) async fn start_new<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    name: &str,
    replica: u32,
    predecessor: Predecessor<'_>,
) -> Result<String, RolloutError> {
    let service = &desired.name;
    // The replica's configuration is built once its turn on the node came:
    // a rollout holds a change per replica waiting for that, and each
    // would otherwise hold a copy of the whole configuration meanwhile.
    let create = async {
        let spec = replica_spec(ctx, desired, node, name, replica, predecessor)
            .map_err(|e| RuntimeError::Failed(e.to_string()))?;
        // The engine would create a missing volume on use: an external one
        // must be there already.
        for mount in spec.mounts.iter().filter(|m| m.external) {
            if !engine.volume_exists(&mount.source).await? {
                return Err(RuntimeError::Failed(format!(
                    "the external volume `{}` does not exist on {node}; create it there first (docker volume create {})",
                    mount.source, mount.source
                )));
            }
        }
        engine.create(name, &spec).await
    };
    let id = ctx
        .step(service, node, Action::Create, name, create)
        .await?;
    crate::fault::point("create:created");
    let files = &desired.spec.files;
    let provided = &desired.spec.provided;
    let configured = async {
        if !provided.is_empty() {
            ctx.step(
                service,
                node,
                Action::Configure,
                name,
                engine.provide_files(&id, provided),
            )
            .await?;
        }
        if !files.is_empty() {
            ctx.step(
                service,
                node,
                Action::Configure,
                name,
                engine.write_files(&id, files),
            )
            .await?;
        }
        ctx.step(service, node, Action::Start, name, engine.start(&id))
            .await?;
        lifecycle::post_start(ctx, engine, desired, node, name, &id).await
    };
    if let Err(e) = configured.await {
        let _ = ctx
            .step(
                service,
                node,
                Action::Remove,
                name,
                engine.remove(&id, Volumes::Keep),
            )
            .await;
        return Err(e);
    }
    Ok(id)
}

/// The configuration of one replica created as `name`: the service's,
/// with the replica's labels and its predecessor's anonymous volumes. Under
/// a name other than the replica's (a start-first successor), it answers
/// to the replica's name too on each of its networks, which per-replica
/// link variables address it by.
pub(super) fn replica_spec<R: Runtime>(
    ctx: &Context<'_, R>,
    desired: &DesiredService,
    node: &str,
    name: &str,
    replica: u32,
    predecessor: Predecessor<'_>,
) -> Result<docker::ContainerSpec, RolloutError> {
    let mut spec = (*desired.spec).clone();
    let replica_name = desired.replica_name(&ctx.desired.stack, replica);
    if name != replica_name {
        spec.aliases.push(replica_name.clone());
        for (_, aliases) in &mut spec.more_networks {
            aliases.push(replica_name.clone());
        }
    }
    if let Some(old) = predecessor.running_beside {
        spec.labels
            .insert(docker::LABEL_REPLACES.into(), old.to_string());
    }
    for entry in &mut spec.volumes_from {
        let (source, mode) = entry.split_once(':').unwrap_or((entry.as_str(), ""));
        let container = ctx
            .replicas_on
            .get(&(source.to_string(), node.to_string()))
            .ok_or_else(|| {
                RolloutError::VolumesFrom(format!(
                    "no replica of `{source}` on {node} to take volumes from"
                ))
            })?;
        *entry = if mode.is_empty() {
            container.clone()
        } else {
            format!("{container}:{mode}")
        };
    }
    inherit_volumes(&mut spec, predecessor.volumes);
    let per_replica = crate::plan::spec::replica_link_env(
        &spec.replica_links,
        &ctx.replicas,
        &desired.name,
        &spec.env,
    );
    spec.env.extend(per_replica);
    spec.labels
        .insert(docker::LABEL_REPLICA.into(), replica.to_string());
    spec.labels
        .insert(docker::LABEL_SPEC_HASH.into(), desired.hash.clone());
    spec.labels
        .insert(docker::LABEL_COMMIT.into(), ctx.desired.commit.clone());
    spec.labels
        .insert(docker::LABEL_IMAGE_DIGEST.into(), desired.digest.clone());
    if !ctx.desired.source.hash.is_empty() {
        spec.labels
            .insert(docker::LABEL_SOURCE.into(), ctx.desired.source.hash.clone());
        spec.labels.insert(
            docker::LABEL_SOURCE_NAME.into(),
            ctx.desired.source.name.clone(),
        );
    }
    let fields = serde_json::to_string(&desired.fields()).expect("fingerprints serialise");
    spec.labels.insert(docker::LABEL_SPEC_FIELDS.into(), fields);
    Ok(spec)
}

/// Mount the old container's anonymous volumes at the same paths, as Compose
/// does: a bare `volumes: ["/data"]` entry or an image's `VOLUME` keeps its
/// data across a replacement. A path the new configuration mounts a named
/// volume or a host folder at keeps that mount instead.
pub(super) fn inherit_volumes(spec: &mut docker::ContainerSpec, inherited: &[AnonymousVolume]) {
    for volume in inherited {
        match spec.mounts.iter_mut().find(|m| m.target == volume.target) {
            Some(mount) if mount.kind == "volume" && mount.source.is_empty() => {
                mount.source = volume.name.clone();
            }
            Some(_) => {}
            None => spec.mounts.push(docker::MountSpec {
                kind: "volume".into(),
                source: volume.name.clone(),
                target: volume.target.clone(),
                read_only: false,
                ..Default::default()
            }),
        }
    }
}

/// The anonymous volumes of the container being replaced, read before it is
/// touched: an engine that cannot say fails the replacement (retried later)
/// rather than start the new replica with empty volumes.
pub(super) async fn volumes_of<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    service: &str,
    node: &str,
    old: &OwnedContainer,
) -> Result<Option<Vec<AnonymousVolume>>, RolloutError> {
    let lookup = async {
        match engine.anonymous_volumes(&old.id).await {
            Ok(volumes) => Ok(Some(volumes)),
            Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    };
    ctx.step(service, node, Action::Volumes, &old.name, lookup)
        .await
}
