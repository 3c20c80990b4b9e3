//! Observed state, rebuilt from the engines on every pass: all nodes in
//! parallel, each with its own timeout, so one slow or dead node never holds
//! up the others. The truth is in the containers' labels; nothing else is
//! needed to recover from a crash at any point.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;

use crate::docker::{ContainerInfo, Runtime, RuntimeError};
use crate::plan::container as labels;
use crate::plan::{NodeObservation, Observed, OwnedContainer};

/// What pier owns among a node's containers, for one stack.
pub fn node_observation(stack: &str, containers: &[ContainerInfo]) -> NodeObservation {
    let mut observation = NodeObservation {
        running: containers.iter().filter(|c| c.running).count(),
        ..Default::default()
    };
    for container in containers {
        match owned(stack, container) {
            Some(owned) => observation.owned.push(owned),
            None => {
                observation.foreign_names.insert(container.name.clone());
            }
        }
    }
    observation
}

/// A container of `stack`, if its labels say so. Containers with pier's
/// labels of another stack count as foreign: never touched by this one.
fn owned(stack: &str, container: &ContainerInfo) -> Option<OwnedContainer> {
    let label = |key: &str| container.labels.get(key).cloned();
    if label(labels::LABEL_STACK)? != stack {
        return None;
    }
    Some(OwnedContainer {
        id: container.id.clone(),
        name: container.name.clone(),
        service: label(labels::LABEL_SERVICE)?,
        replica: label(labels::LABEL_REPLICA)?.parse().ok()?,
        spec_hash: label(labels::LABEL_SPEC_HASH).unwrap_or_default(),
        image_digest: label(labels::LABEL_IMAGE_DIGEST).unwrap_or_default(),
        commit: label(labels::LABEL_COMMIT).unwrap_or_default(),
        running: container.running,
        created: container.created,
        healthy: container.running && !container.unhealthy,
        exit_code: container.exit_code,
        source: crate::plan::SourceId {
            hash: label(labels::LABEL_SOURCE).unwrap_or_default(),
            name: label(labels::LABEL_SOURCE_NAME).unwrap_or_default(),
        },
        spec_fields: container
            .labels
            .get(labels::LABEL_SPEC_FIELDS)
            .map(|fields| Arc::from(fields.as_str()))
            .unwrap_or_default(),
        files_hash: None,
        in_rotation: container.in_rotation,
        replaces: label(labels::LABEL_REPLACES),
    })
}

/// Read back the live configuration files of the running containers that
/// have some (`pier.files`), so the plan can tell which need them again.
async fn read_live_files<R: Runtime>(
    engine: &R,
    containers: &[ContainerInfo],
    observation: &mut NodeObservation,
) {
    // Few containers have live files (the routers): found from the list
    // once, not looked up for every container a node runs.
    let with_files = containers.iter().filter(|c| c.running).filter_map(|c| {
        let paths = c.labels.get(labels::LABEL_FILES)?;
        Some((c.id.as_str(), paths))
    });
    for (id, paths) in with_files {
        let Some(owned) = observation.owned.iter_mut().find(|o| o.id == id) else {
            continue;
        };
        let mut files = BTreeMap::new();
        for path in paths.split(',').filter(|p| !p.is_empty()) {
            match engine.read_file(&owned.id, path).await {
                Ok(Some(contents)) => {
                    files.insert(path.to_string(), contents);
                }
                // Missing or unreadable: written again, which is harmless.
                Ok(None) | Err(_) => {
                    files.clear();
                    break;
                }
            }
        }
        if !files.is_empty() {
            owned.files_hash = Some(crate::plan::spec::files_hash(&files));
        }
    }
}

/// How many nodes are listed at once. Every list in flight holds its whole
/// response (the connection's read buffer, then the engine client's parsed
/// containers) until it is reduced to an observation, so listing a fleet all
/// at once made the pass's peak memory grow with the fleet (150 MB of 150 MB
/// at 1,000 hosts); a bound keeps it flat, and the 2 cores that parse the
/// answers are as busy either way.
const LISTS_IN_FLIGHT: usize = 64;

/// Observe every node that has an engine; nodes without one are unreachable
/// with the reason given. A node's timeout runs from its turn.
pub async fn observe<R: Runtime>(
    stack: &str,
    engines: &BTreeMap<String, Result<R, RuntimeError>>,
    timeout: Duration,
) -> Observed {
    // Made (and boxed) before they are streamed: a stream over a closure
    // that borrows `engines` is not provably Send to the compiler.
    let lookups: Vec<futures_util::future::BoxFuture<'_, (String, NodeObservation)>> = engines
        .iter()
        .map(|(name, engine)| {
            Box::pin(async move { (name.clone(), observe_node(stack, engine, timeout).await) })
                as futures_util::future::BoxFuture<'_, _>
        })
        .collect();
    let mut fields = HashSet::new();
    Observed {
        nodes: futures_util::stream::iter(lookups)
            .buffer_unordered(LISTS_IN_FLIGHT)
            .map(|(name, mut node)| {
                share_fields(&mut fields, &mut node);
                (name, node)
            })
            .collect()
            .await,
    }
}

/// Keep one copy of each `pier.spec-fields` label the observation holds:
/// every replica of a configuration carries the same half kilobyte, which
/// a fleet's observation would otherwise hold once per container.
fn share_fields(kept: &mut HashSet<Arc<str>>, node: &mut NodeObservation) {
    for container in &mut node.owned {
        match kept.get(&container.spec_fields) {
            Some(shared) => container.spec_fields = shared.clone(),
            None => {
                kept.insert(container.spec_fields.clone());
            }
        }
    }
}

/// One node's observation, bounded by `timeout`.
async fn observe_node<R: Runtime>(
    stack: &str,
    engine: &Result<R, RuntimeError>,
    timeout: Duration,
) -> NodeObservation {
    let engine = match engine {
        Err(reason) => {
            return NodeObservation {
                unreachable: Some(reason.to_string()),
                ..Default::default()
            };
        }
        Ok(engine) => engine,
    };
    match tokio::time::timeout(timeout, engine.list()).await {
        Ok(Ok(containers)) => {
            let mut observation = node_observation(stack, &containers);
            // Bounded as a whole: a node that hangs here is read as
            // having stale files, which are written again.
            let _ = tokio::time::timeout(
                timeout,
                read_live_files(engine, &containers, &mut observation),
            )
            .await;
            observation
        }
        Ok(Err(e)) => NodeObservation {
            unreachable: Some(e.to_string()),
            ..Default::default()
        },
        Err(_) => NodeObservation {
            unreachable: Some(format!("no answer within {timeout:?}")),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, labels: &[(&str, &str)], running: bool) -> ContainerInfo {
        ContainerInfo {
            id: format!("id-{name}"),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            running,
            created: 0,
            unhealthy: false,
            exit_code: None,
            in_rotation: false,
        }
    }

    #[test]
    fn only_this_stacks_labelled_containers_are_owned() {
        let containers = [
            container(
                "s-web-1",
                &[
                    ("pier.stack", "s"),
                    ("pier.service", "web"),
                    ("pier.replica", "1"),
                    ("pier.spec-hash", "h"),
                ],
                true,
            ),
            container(
                "t-web-1",
                &[
                    ("pier.stack", "t"),
                    ("pier.service", "web"),
                    ("pier.replica", "1"),
                ],
                true,
            ),
            container("s-web-2", &[], true),
            container("stopped", &[], false),
        ];
        let o = node_observation("s", &containers);
        assert_eq!(o.running, 3);
        assert_eq!(o.owned.len(), 1);
        assert_eq!(
            (o.owned[0].service.as_str(), o.owned[0].replica),
            ("web", 1)
        );
        assert!(o.foreign_names.contains("s-web-2") && o.foreign_names.contains("t-web-1"));
    }
}
