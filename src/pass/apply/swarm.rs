//! Forming and changing the swarm an overlay network needs, before any
//! replica joins it.

#[allow(unused_imports)]
use super::*;

/// The plan's swarm steps, in order: the stack's overlay network needs its
/// nodes in one swarm, and the network on a manager. A join token goes from
/// the manager to the joining engine and nowhere else.
pub(super) async fn form_swarm<R: Runtime>(
    ctx: &Context<'_, R>,
    steps: &[&crate::plan::swarm::SwarmStep],
) -> Result<(), RolloutError> {
    use crate::plan::swarm::SwarmStep;
    for step in steps {
        match step {
            SwarmStep::Init { node } => {
                let engine = ctx.engine(node)?;
                let advertise = advertise_address(ctx.desired, node);
                ctx.step(
                    "",
                    node,
                    Action::SwarmInit,
                    node,
                    engine.swarm_init(advertise.as_deref()),
                )
                .await?;
            }
            SwarmStep::Join { node, via, manager } => {
                let (engine, through) = (ctx.engine(node)?, ctx.engine(via)?);
                let advertise = advertise_address(ctx.desired, node);
                let join = async {
                    let (worker_token, manager_token) = through.swarm_tokens().await?;
                    let address = through.swarm().await?.address.ok_or_else(|| {
                        RuntimeError::Failed(format!("{via} gives no address for its swarm"))
                    })?;
                    let token = if *manager {
                        manager_token
                    } else {
                        worker_token
                    };
                    engine
                        .swarm_join(advertise.as_deref(), &format!("{address}:2377"), &token)
                        .await
                };
                let action = if *manager {
                    Action::SwarmJoinManager
                } else {
                    Action::SwarmJoin
                };
                ctx.step("", node, action, via, join).await?;
            }
            SwarmStep::Promote { node, via } | SwarmStep::Demote { node, via } => {
                let manager = matches!(step, SwarmStep::Promote { .. });
                let (engine, through) = (ctx.engine(node)?, ctx.engine(via)?);
                let set_role = async {
                    let id = swarm_node_id(engine, node).await?;
                    through.swarm_set_role(&id, manager).await
                };
                let action = if manager {
                    Action::SwarmPromote
                } else {
                    Action::SwarmDemote
                };
                ctx.step("", node, action, via, set_role).await?;
            }
            SwarmStep::Leave { node, via } => {
                let (engine, through) = (ctx.engine(node)?, ctx.engine(via)?);
                let leave = async {
                    let id = swarm_node_id(engine, node).await?;
                    until_worker(engine, node, ctx.settings.health_timeout).await?;
                    engine.swarm_leave().await?;
                    through.swarm_forget(&id).await
                };
                ctx.step("", node, Action::SwarmLeave, via, leave).await?;
            }
            SwarmStep::CreateNetwork {
                node,
                network,
                encrypted,
                internal,
            } => {
                let engine = ctx.engine(node)?;
                let labels =
                    BTreeMap::from([(docker::LABEL_STACK.to_string(), ctx.desired.stack.clone())]);
                ctx.step(
                    "",
                    node,
                    Action::Network,
                    network,
                    engine.create_overlay(network, &labels, *encrypted, *internal),
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// The id `node`'s engine has in its swarm.
pub(super) async fn swarm_node_id<R: Runtime>(
    engine: &R,
    node: &str,
) -> Result<String, RuntimeError> {
    engine
        .swarm()
        .await?
        .node_id
        .ok_or_else(|| RuntimeError::Failed(format!("{node} gives no swarm node id")))
}

/// Wait, up to `bound`, until a demoted engine stops acting as a manager:
/// only a worker leaves a swarm without taking a vote with it.
pub(super) async fn until_worker<R: Runtime>(
    engine: &R,
    node: &str,
    bound: Duration,
) -> Result<(), RuntimeError> {
    let deadline = Instant::now() + bound;
    while engine.swarm().await?.manager {
        if Instant::now() >= deadline {
            return Err(RuntimeError::Failed(format!(
                "{node} still acts as a swarm manager after {bound:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// The address a node gives the swarm: its endpoint's, when that is an IP
/// address; otherwise the engine chooses (and says so when it cannot).
pub(super) fn advertise_address(desired: &Desired, node: &str) -> Option<String> {
    advertise_of(desired.nodes.get(node)?)
}

/// The address `node` gives a swarm it forms or joins.
pub fn advertise_of(node: &crate::manifest::model::Node) -> Option<String> {
    use crate::manifest::model::Endpoint;
    let host = match &node.endpoint {
        Endpoint::Tcp { host, .. } | Endpoint::Ssh { host, .. } => host,
        Endpoint::Unix { .. } => return None,
    };
    host.trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}
