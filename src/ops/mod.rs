//! Operating services once they run: `pier logs`, `pier exec` and `pier
//! run`, over the Docker API only. This module owns finding a service's
//! replicas on the nodes (by their labels, like a pass) and choosing one;
//! `logs` merges and follows their output; `run` makes a one-off container
//! from a service's current spec.

pub mod logs;
pub mod run;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::docker::engine::Engine;
use crate::manifest::Manifest;
use crate::pass::{self, Loaded, PassError, Settings};
use crate::plan::OwnedContainer;

/// One replica of a service, where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub service: String,
    pub number: u32,
    pub node: String,
    pub id: String,
    pub name: String,
    pub running: bool,
}

impl Replica {
    fn of(node: &str, container: &OwnedContainer) -> Replica {
        Replica {
            service: container.service.clone(),
            number: container.replica,
            node: node.to_string(),
            id: container.id.clone(),
            name: container.name.clone(),
            running: container.running,
        }
    }

    /// `web.2@n1`, as output prefixes and messages name it.
    pub fn label(&self) -> String {
        format!("{}.{}@{}", self.service, self.number, self.node)
    }
}

/// Why a service's replicas cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error("no service `{name}` in the manifests{hint}")]
    UnknownService { name: String, hint: String },
    #[error("{0}")]
    NoReplica(String),
    #[error("{0}")]
    Engine(String),
}

/// The nodes of a stack, connected.
pub struct Reach {
    pub loaded: Loaded,
    pub engines: BTreeMap<String, Result<Engine, crate::docker::RuntimeError>>,
    pub timeout: Duration,
}

/// Which replicas a command means: of these services, optionally one
/// number and one node.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub services: Vec<String>,
    pub replica: Option<u32>,
    pub node: Option<String>,
}

impl Reach {
    /// Load the manifests and connect to their nodes (in parallel, each
    /// bounded by the engine timeout).
    pub async fn connect(settings: &Settings) -> Result<Reach, OpsError> {
        let vars = settings.manifest_vars();
        let loaded = pass::load_for_deploy(settings, &vars).await?;
        let engines = pass::connect::connect_all(&loaded.manifest, settings.engine_timeout).await;
        Ok(Reach {
            loaded,
            engines,
            timeout: settings.engine_timeout,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.loaded.manifest
    }

    pub fn engine(&self, node: &str) -> Option<&Engine> {
        self.engines.get(node).and_then(|e| e.as_ref().ok())
    }

    /// Check that every service named is in the manifests.
    pub fn check_services(&self, services: &[String]) -> Result<(), OpsError> {
        for name in services {
            if !self.manifest().services.contains_key(name) {
                let known = self.manifest().services.keys().map(String::as_str);
                let hint = crate::manifest::diagnostic::did_you_mean(name, known)
                    .map(|guess| format!("; did you mean `{guess}`?"))
                    .unwrap_or_default();
                return Err(OpsError::UnknownService {
                    name: name.clone(),
                    hint,
                });
            }
        }
        Ok(())
    }

    /// The replicas `selection` means on the nodes that answer, by service
    /// and number, and the nodes that did not answer, with why: what runs
    /// there is unknown, not absent.
    pub async fn replicas(
        &self,
        selection: &Selection,
    ) -> (Vec<Replica>, BTreeMap<String, String>) {
        let observed =
            pass::observe::observe(&self.loaded.stack, &self.engines, self.timeout).await;
        let mut replicas = Vec::new();
        let mut unreachable = BTreeMap::new();
        for (node, observation) in &observed.nodes {
            if selection.node.as_ref().is_some_and(|n| n != node) {
                continue;
            }
            if let Some(reason) = &observation.unreachable {
                unreachable.insert(node.clone(), reason.clone());
                continue;
            }
            replicas.extend(
                observation
                    .owned
                    .iter()
                    .filter(|c| selection.services.contains(&c.service))
                    .filter(|c| selection.replica.is_none_or(|n| n == c.replica))
                    .map(|c| Replica::of(node, c)),
            );
        }
        replicas
            .sort_by(|a, b| (&a.service, a.number, &a.node).cmp(&(&b.service, b.number, &b.node)));
        (replicas, unreachable)
    }

    /// The one running replica `selection` means (its lowest number when
    /// no number is given).
    pub async fn one_running(&self, selection: &Selection) -> Result<Replica, OpsError> {
        self.check_services(&selection.services)?;
        let (replicas, unreachable) = self.replicas(selection).await;
        if let Some(replica) = replicas.into_iter().find(|r| r.running) {
            return Ok(replica);
        }
        let service = selection.services.join(", ");
        let which = match (selection.replica, &selection.node) {
            (Some(n), Some(node)) => format!("replica {n} of {service} on {node}"),
            (Some(n), None) => format!("replica {n} of {service}"),
            (None, Some(node)) => format!("replica of {service} on {node}"),
            (None, None) => format!("replica of {service}"),
        };
        let missing = if unreachable.is_empty() {
            String::new()
        } else {
            let nodes: Vec<String> = unreachable
                .iter()
                .map(|(node, why)| format!("{node} ({why})"))
                .collect();
            format!("; unreachable, so unknown: {}", nodes.join(", "))
        };
        Err(OpsError::NoReplica(format!("no running {which}{missing}")))
    }
}

/// `web` or `web.2`: a service and, optionally, a replica number.
pub fn parse_target(text: &str) -> (String, Option<u32>) {
    match text.rsplit_once('.') {
        Some((service, number)) if number.parse::<u32>().is_ok() => {
            (service.to_string(), number.parse().ok())
        }
        _ => (text.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_names_a_service_and_maybe_a_replica() {
        assert_eq!(parse_target("web"), ("web".into(), None));
        assert_eq!(parse_target("web.2"), ("web".into(), Some(2)));
        assert_eq!(parse_target("api.v2"), ("api.v2".into(), None));
    }
}
