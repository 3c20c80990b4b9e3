//! Each node made ready for a level of services: networks and volumes
//! created, images pulled, in parallel across nodes.

#[allow(unused_imports)]
use super::*;

/// Networks on every node a level touches, and the images its new containers need.
pub(super) async fn prepare_nodes<R: Runtime>(ctx: &Context<'_, R>, level: &[&ServicePlan]) {
    let network = ctx.desired.network.name(&ctx.desired.stack);
    // An overlay network is the swarm's: made once on a manager (a swarm
    // step), and found by every engine that attaches a container to it.
    let overlay = ctx.desired.network.overlay;
    let labels = BTreeMap::from([(docker::LABEL_STACK.to_string(), ctx.desired.stack.clone())]);
    // One pull per node and image, whichever services share it.
    let mut pulls: BTreeMap<(String, String), String> = BTreeMap::new();
    // The bridge networks each node needs, with whether each is internal:
    // the stack's own (and, with routes, its rotation network) unless it is
    // an overlay, and each named bridge network a new container there
    // joins. Overlay networks are the swarm's to make; external ones are
    // never made.
    let named = ctx.desired.named_networks();
    let routes = ctx
        .desired
        .has_routes()
        .then(|| ctx.desired.network.routes_name(&ctx.desired.stack));
    let mut bridges: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for service_plan in level {
        let Some(service) = ctx.desired.services.get(&service_plan.service) else {
            continue;
        };
        for change in &service_plan.changes {
            if matches!(change, Change::Remove { .. }) {
                continue;
            }
            let node = bridges.entry(change.node().to_string()).or_default();
            if !overlay {
                node.insert(network.clone(), false);
                node.extend(routes.iter().map(|r| (r.clone(), false)));
            }
            let joined = std::iter::once(&service.spec.network)
                .chain(service.spec.more_networks.iter().map(|(n, _)| n));
            for name in joined {
                if let Some(decl) = named.get(name).filter(|d| !d.overlay && !d.external) {
                    node.insert(name.clone(), decl.internal);
                }
            }
            pulls
                .entry((change.node().to_string(), service.spec.image.clone()))
                .or_insert_with(|| service.name.clone());
        }
    }
    join_all(bridges.iter().map(|(node, networks)| {
        let labels = &labels;
        async move {
            if let Ok(engine) = ctx.engine(node) {
                for (network, internal) in networks {
                    let _ = ctx
                        .step(
                            "",
                            node,
                            Action::Network,
                            network,
                            engine.ensure_network(network, labels, *internal),
                        )
                        .await;
                }
            }
        }
    }))
    .await;
    join_all(pulls.iter().map(|((node, image), service)| async move {
        let Ok(engine) = ctx.engine(node) else { return };
        // Pinned by digest: present locally means exactly these bits.
        let present = engine.image_id(image).await;
        if matches!(present, Ok(Some(_))) {
            return;
        }
        let desired = ctx.desired.services.get(service.as_str());
        let never = desired.is_some_and(|d| d.never_pull);
        let platform = desired.and_then(|d| d.spec.platform.as_deref());
        let credentials = ctx.credentials.for_image(image);
        let pull = async {
            // An engine that cannot say what it holds is not asked to pull.
            present?;
            if never {
                return Err(RuntimeError::Failed(
                    "the node does not have it, and `pull_policy: never` forbids pulling".into(),
                ));
            }
            engine.pull(image, credentials.as_ref(), platform).await
        };
        let _ = ctx.step(service, node, Action::Pull, image, pull).await;
    }))
    .await;
}
