//! Replacing a stale replica, stop-first or start-first, and putting the
//! old one back when its successor fails.

#[allow(unused_imports)]
use super::*;

/// Stop the old replica and keep it aside; start the new one; remove the old
/// one only once the new one is healthy, else put the old one back.
#[allow(clippy::too_many_arguments)]
pub(super) async fn replace_stop_first<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    name: &str,
    replica: u32,
    old: &OwnedContainer,
) -> Result<(), RolloutError> {
    let service = &desired.name;
    let aside = format!("{name}-pier-old");
    let Some(inherited) = volumes_of(ctx, engine, service, node, old).await? else {
        // The old container went away by itself: nothing to keep aside.
        return create_healthy(ctx, engine, desired, node, name, replica, &[]).await;
    };
    lifecycle::pre_stop(ctx, engine, Some(desired), node, &old.name, &old.id).await;
    let stopped = ctx
        .step(
            service,
            node,
            Action::Stop,
            &old.name,
            vanished(engine.stop(&old.id, stop_timeout(ctx, Some(desired)))),
        )
        .await?;
    if stopped == Vanished::Yes {
        return create_healthy(ctx, engine, desired, node, name, replica, &inherited).await;
    }
    crate::fault::point("replace:stopped");
    // An old container already aside (an interrupted replacement) stays there.
    if old.name != aside
        && let Err(reason) = ctx
            .step(
                service,
                node,
                Action::Rename,
                &aside,
                engine.rename(&old.id, &aside),
            )
            .await
    {
        // Stopped but still under its own name: start it again as it was.
        return Err(restart_after_failure(ctx, engine, service, node, replica, old, reason).await);
    }
    crate::fault::point("replace:set-aside");
    let predecessor = Predecessor {
        running_beside: None,
        volumes: &inherited,
    };
    let outcome = match start_new(ctx, engine, desired, node, name, replica, predecessor).await {
        Ok(id) => match wait_healthy(ctx, engine, desired, node, name, &id).await {
            Ok(()) => Ok(()),
            Err(reason) => Err((Some(id), reason)),
        },
        Err(reason) => Err((None, reason)),
    };
    match outcome {
        Ok(_) => {
            crate::fault::point("replace:healthy");
            ctx.step(
                service,
                node,
                Action::Remove,
                &aside,
                engine.remove(&old.id, Volumes::Keep),
            )
            .await
        }
        Err((new_id, reason)) => {
            if let Some(new_id) = new_id {
                let _ = ctx
                    .step(
                        service,
                        node,
                        Action::Remove,
                        name,
                        engine.remove(&new_id, Volumes::Keep),
                    )
                    .await;
            }
            // Back under the replica's name; one found aside was running
            // before the interrupted replacement stopped it.
            let start = old.running || old.name != name;
            let back = async {
                engine.rename(&old.id, name).await?;
                if start {
                    engine.start(&old.id).await
                } else {
                    Ok(())
                }
            };
            let restored = ctx.step(service, node, Action::Rollback, name, back).await;
            Err(replaced(service, node, replica, reason, restored.into()))
        }
    }
}

/// After a failure between stopping the old container and renaming it
/// aside, start it again under its own name.
pub(super) async fn restart_after_failure<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    service: &str,
    node: &str,
    replica: u32,
    old: &OwnedContainer,
    reason: RolloutError,
) -> RolloutError {
    let restored = if old.running {
        ctx.step(
            service,
            node,
            Action::Rollback,
            &old.name,
            engine.start(&old.id),
        )
        .await
    } else {
        Ok(())
    };
    replaced(service, node, replica, reason, restored.into())
}

/// A replacement of `replica` that failed for `reason`.
pub(super) fn replaced(
    service: &str,
    node: &str,
    replica: u32,
    reason: RolloutError,
    restored: Restored,
) -> RolloutError {
    RolloutError::Replaced {
        service: service.to_string(),
        replica,
        node: node.to_string(),
        reason: Box::new(reason),
        restored,
    }
}

/// Start the new replica beside the old one; swap them once it is healthy.
/// The successor takes the replica's name, unless the engine cannot rename
/// it there and it keeps its own (see [`crate::plan::successor_name`]).
#[allow(clippy::too_many_arguments)]
pub(super) async fn replace_start_first<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    name: &str,
    replica: u32,
    old: &OwnedContainer,
) -> Result<(), RolloutError> {
    let service = &desired.name;
    let next = crate::plan::successor_name(name, &old.name);
    let inherited = volumes_of(ctx, engine, service, node, old)
        .await?
        .unwrap_or_default();
    let predecessor = Predecessor {
        running_beside: Some(&old.id),
        volumes: &inherited,
    };
    let id = start_new(ctx, engine, desired, node, &next, replica, predecessor).await?;
    if let Err(reason) = wait_healthy(ctx, engine, desired, node, &next, &id).await {
        let _ = ctx
            .step(
                service,
                node,
                Action::Remove,
                &next,
                engine.remove(&id, Volumes::Keep),
            )
            .await;
        return Err(replaced(
            service,
            node,
            replica,
            reason,
            Restored::KeptRunning,
        ));
    }
    crate::fault::point("replace:beside");
    lifecycle::pre_stop(ctx, engine, Some(desired), node, &old.name, &old.id).await;
    ctx.step(
        service,
        node,
        Action::Stop,
        &old.name,
        engine.stop(&old.id, stop_timeout(ctx, Some(desired))),
    )
    .await?;
    ctx.step(
        service,
        node,
        Action::Remove,
        &old.name,
        engine.remove(&old.id, Volumes::Keep),
    )
    .await?;
    if next == name || desired.keeps_successor_name {
        return Ok(());
    }
    ctx.step(
        service,
        node,
        Action::Rename,
        name,
        engine.rename(&id, name),
    )
    .await
}
