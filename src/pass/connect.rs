//! Engine clients for the nodes, connected in parallel; a node that does
//! not answer carries the reason, never counts as empty.
//!
//! A pass reaches its nodes through a [`Connect`]: the real engines
//! ([`Engines`]) everywhere pier runs, or in-memory ones in the unit tests
//! of the daemon's rules.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures_util::future::join_all;

use crate::docker::engine::Engine;
use crate::docker::{Runtime, RuntimeError};
use crate::manifest::{self, Manifest};

/// How a pass reaches the engine of a node.
pub trait Connect: Send + Sync {
    type Runtime: Runtime + Clone + Send + Sync + 'static;

    /// A client for `node`'s engine, or why it does not answer within
    /// `timeout`.
    fn connect(
        &self,
        node: &manifest::model::Node,
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Runtime, RuntimeError>> + Send;
}

/// The nodes' Docker engines, at their declared endpoints.
#[derive(Debug, Clone, Copy, Default)]
pub struct Engines;

impl Connect for Engines {
    type Runtime = Engine;

    async fn connect(
        &self,
        node: &manifest::model::Node,
        timeout: Duration,
    ) -> Result<Engine, RuntimeError> {
        Engine::connect(node, timeout).await
    }
}

/// A client per node, connected in parallel; a node that does not answer
/// carries the reason instead.
pub async fn connect_all(
    manifest: &Manifest,
    timeout: Duration,
) -> BTreeMap<String, Result<Engine, RuntimeError>> {
    connect_nodes(&Engines, manifest.nodes.values(), timeout).await
}

pub(super) async fn connect_nodes<C: Connect>(
    connector: &C,
    nodes: impl IntoIterator<Item = &manifest::model::Node>,
    timeout: Duration,
) -> BTreeMap<String, Result<C::Runtime, RuntimeError>> {
    let attempts = nodes
        .into_iter()
        .map(|node| async move { (node.name.clone(), connector.connect(node, timeout).await) });
    join_all(attempts).await.into_iter().collect()
}

/// The engines that answered, by node.
pub fn reachable<R>(connections: BTreeMap<String, Result<R, RuntimeError>>) -> BTreeMap<String, R> {
    connections
        .into_iter()
        .filter_map(|(name, engine)| engine.ok().map(|e| (name, e)))
        .collect()
}
