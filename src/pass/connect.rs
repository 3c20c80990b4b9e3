//! Engine clients for the nodes, connected in parallel; a node that does
//! not answer carries the reason, never counts as empty.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;

use crate::docker::engine::Engine;
use crate::manifest::{self, Manifest};

/// A client per node, connected in parallel; a node that does not answer
/// carries the reason instead.
pub async fn connect_all(
    manifest: &Manifest,
    timeout: Duration,
) -> BTreeMap<String, Result<Engine, String>> {
    connect_nodes(manifest.nodes.values(), timeout).await
}

pub(super) async fn connect_nodes(
    nodes: impl IntoIterator<Item = &manifest::model::Node>,
    timeout: Duration,
) -> BTreeMap<String, Result<Engine, String>> {
    let attempts = nodes.into_iter().map(|node| async move {
        (
            node.name.clone(),
            Engine::connect(node, timeout)
                .await
                .map_err(|e| e.to_string()),
        )
    });
    join_all(attempts).await.into_iter().collect()
}

/// The engines that answered, by node.
pub fn reachable(
    connections: BTreeMap<String, Result<Engine, String>>,
) -> BTreeMap<String, Engine> {
    connections
        .into_iter()
        .filter_map(|(name, engine)| engine.ok().map(|e| (name, e)))
        .collect()
}
