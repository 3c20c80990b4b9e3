//! Deploy hooks around one service's rollout: `pre_deploy` before the
//! first replica of a new revision is created or replaced (a failure stops
//! the rollout with nothing replaced), `post_deploy` after the last (a
//! failure is an alert; the rollout stands).
//!
//! Each runs as a one-off container of the new spec (the new image digest,
//! the service's environment, networks and volumes) on the node it names,
//! else the first node the rollout changes, bounded by its timeout, and is
//! removed afterwards. A new revision is a rollout that creates or replaces
//! replicas while none runs the new spec yet; the daemon also remembers
//! each `pre_deploy` that succeeded, so a restart never runs one twice.

#[allow(unused_imports)]
use super::*;
use crate::manifest::model::Hook;
use crate::source::git::short_commit as short;

/// Lines of a failed hook's output kept in the reason.
const FAILED_HOOK_LINES: usize = 20;

/// [`rollout`] with the service's hooks around it.
pub(super) async fn rollout_with_hooks<R: Runtime>(
    ctx: &Context<'_, R>,
    service_plan: &ServicePlan,
) -> Result<(), RolloutError> {
    let service = &service_plan.service;
    let Some(desired) = ctx.desired.services.get(service) else {
        return rollout(ctx, service_plan).await;
    };
    let new_revision = service_plan.unchanged == 0
        && service_plan
            .changes
            .iter()
            .any(|c| matches!(c, Change::Create { .. } | Change::Replace { .. }));
    if desired.hooks.is_empty() || !new_revision {
        return rollout(ctx, service_plan).await;
    }
    let done = (service.clone(), desired.hash.clone());
    if let Some(hook) = &desired.hooks.pre_deploy
        && !ctx.settings.hooks_done.contains(&done)
    {
        run_hook(ctx, service_plan, hook, "pre_deploy")
            .await
            .map_err(|why| RolloutError::PreDeploy {
                service: service.clone(),
                why: Box::new(why),
            })?;
        ctx.hooks_ran.lock().expect("hooks lock").push(done);
    }
    rollout(ctx, service_plan).await?;
    if let Some(hook) = &desired.hooks.post_deploy
        && let Err(why) = run_hook(ctx, service_plan, hook, "post_deploy").await
    {
        ctx.alerts.lock().expect("alerts lock").push(format!(
            "{service}: the post_deploy hook failed (the rollout stands): {why}"
        ));
    }
    Ok(())
}

/// The revision the rollout replaces, as the old containers' labels say.
fn previous_revision(service_plan: &ServicePlan) -> String {
    service_plan
        .changes
        .iter()
        .find_map(|c| match c {
            Change::Replace { old, .. } => Some(old.commit.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Run one hook to its end; why it failed, with the end of its output.
async fn run_hook<R: Runtime>(
    ctx: &Context<'_, R>,
    service_plan: &ServicePlan,
    hook: &Hook,
    phase: &str,
) -> Result<(), RolloutError> {
    let service = &service_plan.service;
    let desired = &ctx.desired.services[service];
    let node = hook
        .node
        .clone()
        .or_else(|| {
            service_plan
                .changes
                .iter()
                .find(|c| matches!(c, Change::Create { .. } | Change::Replace { .. }))
                .map(|c| c.node().to_string())
        })
        .ok_or(RolloutError::HookWithoutNode)?;
    let engine = ctx.engine(&node)?;
    let mut spec = crate::ops::run::one_off_spec(
        &desired.spec,
        &ctx.desired.stack,
        service,
        &ctx.desired.commit,
        Some(hook.command.clone()),
        false,
    );
    spec.stdin_open = false;
    spec.labels.insert("pier.hook".into(), phase.into());
    spec.env.extend([
        format!("PIER_REVISION={}", ctx.desired.commit),
        format!("PIER_PREVIOUS_REVISION={}", previous_revision(service_plan)),
        format!("PIER_TRIGGER={}", ctx.settings.trigger),
        format!("PIER_HOOK={phase}"),
    ]);
    spec.env.sort();
    for entry in spec.volumes_from.iter_mut() {
        let (from, mode) = entry.split_once(':').unwrap_or((entry.as_str(), ""));
        let container = ctx
            .replicas_on
            .get(&(from.to_string(), node.clone()))
            .ok_or_else(|| {
                RolloutError::VolumesFrom(format!(
                    "`{from}`, whose volumes it mounts, has no replica on {node}"
                ))
            })?;
        *entry = if mode.is_empty() {
            container.clone()
        } else {
            format!("{container}:{mode}")
        };
    }
    let name = format!(
        "{}-{service}-{}-{}",
        ctx.desired.stack,
        phase.replace('_', "-"),
        short(&ctx.desired.commit)
    );
    let image = spec.image.clone();
    let credentials = ctx.credentials.for_image(&image);
    let run = async {
        // A leftover of a run cut short (a crash) is not this run's.
        let _ = engine.remove(&name, crate::docker::Volumes::Remove).await;
        if !matches!(engine.image_id(&image).await, Ok(Some(_))) {
            engine
                .pull(&image, credentials.as_ref(), spec.platform.as_deref())
                .await?;
        }
        let id = engine.create(&name, &spec).await?;
        let ended = async {
            if !spec.provided.is_empty() {
                engine.provide_files(&id, &spec.provided).await?;
            }
            if !spec.files.is_empty() {
                engine.write_files(&id, &spec.files).await?;
            }
            engine.start(&id).await?;
            match tokio::time::timeout(hook.timeout, engine.wait(&id)).await {
                Ok(code) => Ok(Some(code?)),
                Err(_) => Ok(None),
            }
        }
        .await;
        let tail = engine
            .log_tail(&id, FAILED_HOOK_LINES)
            .await
            .unwrap_or_default();
        let _ = engine.remove(&id, crate::docker::Volumes::Remove).await;
        match ended? {
            Some(0) => Ok(()),
            Some(code) => Err(RuntimeError::Failed(format!(
                "it exited with {code}; its last lines:\n{}",
                tail.trim_end()
            ))),
            None => Err(RuntimeError::Failed(format!(
                "it did not finish within {:?}; its last lines:\n{}",
                hook.timeout,
                tail.trim_end()
            ))),
        }
    };
    ctx.step(service, &node, Action::Hook, &name, run).await
}
