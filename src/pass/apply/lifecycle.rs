//! Compose's lifecycle hooks, run in the containers themselves: each
//! `post_start` command right after a new replica starts (one that fails
//! fails the replica, which is then removed like one that never became
//! healthy), each `pre_stop` command before a replica is stopped (a
//! failure is recorded and the stop goes on: the container is going away).

#[allow(unused_imports)]
use super::*;
use crate::docker::ExecRequest;
use crate::manifest::model::LifecycleHook;

fn request(hook: &LifecycleHook) -> ExecRequest {
    ExecRequest {
        command: hook.command.clone(),
        user: hook.user.clone(),
        privileged: hook.privileged,
        working_dir: hook.working_dir.clone(),
        env: hook.env.clone(),
    }
}

/// Run one hook; an exit other than 0 is an error with its output.
async fn run<R: Runtime>(engine: &R, id: &str, hook: &LifecycleHook) -> Result<(), RuntimeError> {
    let (code, output) = engine.exec_with(id, &request(hook)).await?;
    if code == 0 {
        return Ok(());
    }
    Err(RuntimeError::Failed(format!(
        "`{}` exited with {code}: {}",
        hook.command.join(" "),
        output.trim()
    )))
}

/// The service's `post_start` commands, in order, in the new container.
pub(super) async fn post_start<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    name: &str,
    id: &str,
) -> Result<(), RolloutError> {
    for hook in &desired.lifecycle.post_start {
        ctx.step(
            &desired.name,
            node,
            Action::PostStart,
            name,
            run(engine, id, hook),
        )
        .await?;
    }
    Ok(())
}

/// The service's `pre_stop` commands, in order, in a container about to
/// stop. Failures are recorded, not returned.
pub(super) async fn pre_stop<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: Option<&DesiredService>,
    node: &str,
    name: &str,
    id: &str,
) {
    let Some(desired) = desired else { return };
    for hook in &desired.lifecycle.pre_stop {
        let _ = ctx
            .step(
                &desired.name,
                node,
                Action::PreStop,
                name,
                run(engine, id, hook),
            )
            .await;
    }
}
