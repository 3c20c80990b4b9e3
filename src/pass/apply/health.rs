//! Waiting on replicas: dependencies met, health checks passing, staying
//! up through the monitor period, and joining or leaving the rotation.

#[allow(unused_imports)]
use super::*;

/// Before a service rolls out, the replicas of the services it waits for
/// (`depends_on` with `service_healthy` or `service_completed_successfully`)
/// that this apply did not replace must be healthy, or have exited with 0;
/// replicas it did start were waited for already. Bounded by the health timeout.
pub(super) async fn wait_for_dependencies<R: Runtime>(
    ctx: &Context<'_, R>,
    service: &str,
    plans: &BTreeMap<&str, &ServicePlan>,
) -> Result<(), RolloutError> {
    let Some(desired) = ctx.desired.services.get(service) else {
        return Ok(());
    };
    for (dependency, condition) in &desired.waits_for {
        let Some(plan) = plans.get(dependency.as_str()) else {
            continue;
        };
        for (node, id) in &plan.current {
            let engine = ctx.engine(node)?;
            let deadline = Instant::now() + ctx.settings.health_timeout;
            let not_ready = |problem| RolloutError::DependencyNotReady {
                service: service.to_string(),
                dependency: dependency.clone(),
                node: node.clone(),
                problem,
            };
            loop {
                let health = engine.health(id).await;
                let done = match (condition, health) {
                    (DependsOnCondition::ServiceHealthy, Ok(Health::Healthy)) => true,
                    (
                        DependsOnCondition::ServiceCompletedSuccessfully,
                        Ok(Health::Exited(Some(0))),
                    ) => true,
                    (_, Ok(Health::Exited(code))) => {
                        return Err(not_ready(DependencyProblem::Exited {
                            code,
                            condition: *condition,
                        }));
                    }
                    (_, Err(e)) => return Err(not_ready(DependencyProblem::Unknown(e))),
                    _ => false,
                };
                if done {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(not_ready(DependencyProblem::NotReadyWithin {
                        condition: *condition,
                        bound: ctx.settings.health_timeout,
                    }));
                }
                tokio::time::sleep(ctx.settings.health_poll).await;
            }
        }
    }
    Ok(())
}

/// Wait for the container to be healthy (or, without a health check, running).
/// A job another service waits for must run to completion: it is waited for
/// until it exits, and only an exit with 0 counts; an `autodestroy` job may
/// have exited with 0 already.
pub(super) async fn wait_healthy<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    name: &str,
    id: &str,
) -> Result<(), RolloutError> {
    let started = SystemTime::now();
    let has_check = desired
        .spec
        .healthcheck
        .as_ref()
        .is_some_and(|h| h.test.first().is_some_and(|t| t != "NONE"));
    let deadline = Instant::now() + ctx.settings.health_timeout;
    let job = desired.run_to_completion;
    let may_exit = job || desired.autodestroy != Autodestroy::Off;
    let bound = ctx.settings.health_timeout;
    let result = loop {
        match engine.health(id).await {
            Ok(Health::Exited(Some(0))) if may_exit => break Ok(()),
            Ok(Health::Healthy | Health::Starting) if job && Instant::now() < deadline => {}
            Ok(Health::Healthy) if job => break Err(HealthError::StillRunning(bound)),
            Ok(Health::Healthy) => break Ok(()),
            Ok(Health::Starting) if Instant::now() < deadline => {}
            Ok(Health::Starting) => break Err(HealthError::StillStarting(bound)),
            Ok(Health::Unhealthy) => break Err(HealthError::Unhealthy),
            Ok(Health::Exited(code)) => break Err(HealthError::Exited(code)),
            Err(e) => break Err(HealthError::Engine(e)),
        }
        tokio::time::sleep(ctx.settings.health_poll).await;
    };
    let result = match result {
        Ok(()) if !job && !desired.update.monitor.is_zero() => {
            stays_up(engine, id, desired.update.monitor, may_exit).await
        }
        other => other,
    };
    if has_check || result.is_err() || !desired.update.monitor.is_zero() {
        ctx.record(
            &desired.name,
            node,
            Action::WaitHealthy,
            name,
            started,
            result.as_ref().err().map(ToString::to_string),
        );
    }
    result?;
    if desired.routed {
        return rotate(ctx, engine, desired, node, id, name, true).await;
    }
    Ok(())
}

/// Put a routed replica in rotation, or take it out: it joins the stack's
/// rotation network under its service's name (the name the router asks
/// DNS for), or leaves it. Its own network stays as it is, so the replica
/// still reaches the services it needs while out of rotation.
pub(super) async fn rotate<R: Runtime>(
    ctx: &Context<'_, R>,
    engine: &R,
    desired: &DesiredService,
    node: &str,
    id: &str,
    name: &str,
    into: bool,
) -> Result<(), RolloutError> {
    let network = ctx.desired.network.routes_name(&ctx.desired.stack);
    if into {
        let aliases = [desired.name.clone()];
        ctx.step(
            &desired.name,
            node,
            Action::IntoRotation,
            name,
            engine.connect(id, &network, &aliases),
        )
        .await
    } else {
        ctx.step(
            &desired.name,
            node,
            Action::OutOfRotation,
            name,
            already_gone_is_done(engine.disconnect(id, &network)),
        )
        .await
    }
}

/// `update_config.monitor`: a replica that was up must still be up (and
/// healthy) after `monitor`, or the rollout counts it as failed.
pub(super) async fn stays_up<R: Runtime>(
    engine: &R,
    id: &str,
    monitor: Duration,
    may_exit: bool,
) -> Result<(), HealthError> {
    tokio::time::sleep(monitor).await;
    match engine.health(id).await {
        Ok(Health::Healthy | Health::Starting) => Ok(()),
        Ok(Health::Exited(Some(0))) if may_exit => Ok(()),
        Ok(Health::Unhealthy) => Err(HealthError::UnhealthyWithin(monitor)),
        Ok(Health::Exited(code)) => Err(HealthError::ExitedWithin(code, monitor)),
        Err(e) => Err(HealthError::Engine(e)),
    }
}
