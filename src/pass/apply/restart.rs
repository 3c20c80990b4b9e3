//! `pier restart`: a service's running replicas restarted in place, in its
//! update order (`parallelism` at a time, by replica number), each batch
//! waited for to be healthy before the next; the containers and their
//! specs stay. Not a revision: nothing is replaced or created.

#[allow(unused_imports)]
use super::*;
use crate::plan::Observed;

/// Restart the running replicas of `services` as the pass observed them.
/// A service stops at its first replica that does not come back healthy.
pub async fn restart<R: Runtime>(
    planned: &crate::pass::Planned<R>,
    credentials: &dyn CredentialLookup,
    settings: &ApplySettings,
    services: &[String],
    on_step: &(dyn Fn(&StepRecord) + Sync),
) -> ApplyReport {
    let (desired, observed) = (&planned.desired, &planned.observed);
    let ctx = Context::new(
        desired,
        &planned.plan,
        &planned.engines,
        credentials,
        settings,
        on_step,
    );
    let mut failures = Vec::new();
    let mut failed = BTreeMap::new();
    for service in services {
        let outcome = match desired.services.get(service) {
            Some(d) => restart_service(&ctx, d, observed).await,
            None => Err(RolloutError::NotDeployed {
                service: service.clone(),
            }),
        };
        if let Err(error) = outcome {
            let message = error.to_string();
            failed.insert(service.clone(), message.clone());
            failures.push(message);
        }
    }
    ctx.report(failures, failed)
}

async fn restart_service<R: Runtime>(
    ctx: &Context<'_, R>,
    desired: &DesiredService,
    observed: &Observed,
) -> Result<(), RolloutError> {
    let mut replicas: Vec<(&String, &OwnedContainer)> = observed
        .nodes
        .iter()
        .flat_map(|(node, o)| o.owned.iter().map(move |c| (node, c)))
        .filter(|(_, c)| c.service == desired.name && c.running)
        .collect();
    replicas.sort_by_key(|(_, c)| c.replica);
    let parallelism = (desired.update.parallelism as usize).max(1);
    for batch in replicas.chunks(parallelism) {
        let results = join_all(batch.iter().map(|(node, container)| async move {
            let engine = ctx.engine(node)?;
            let grace = stop_timeout(ctx, Some(desired));
            let name = &container.name;
            super::lifecycle::pre_stop(ctx, engine, Some(desired), node, name, &container.id).await;
            ctx.step(
                &desired.name,
                node,
                Action::Stop,
                name,
                engine.stop(&container.id, grace),
            )
            .await?;
            ctx.step(
                &desired.name,
                node,
                Action::Start,
                name,
                engine.start(&container.id),
            )
            .await?;
            super::lifecycle::post_start(ctx, engine, desired, node, name, &container.id).await?;
            wait_healthy(ctx, engine, desired, node, name, &container.id).await
        }))
        .await;
        if let Some(error) = results.into_iter().find_map(Result::err) {
            return Err(error);
        }
    }
    Ok(())
}
