//! A record in a swarm's Raft store, written with compare-and-swap: a Swarm
//! config whose labels carry the record. A config's data cannot change, but
//! its labels can, and every update names the version it read
//! (`POST /configs/{id}/update?version=N`): the managers refuse one made
//! against an older version ("update out of sequence"). This is what
//! `pier daemon --ha` keeps its lease in (`crate::daemon::lease`).
//!
//! These calls do not pass the fence (`super::super::fence`): they are how
//! a daemon gets or keeps the term the fence asks for (as is forming the
//! swarm they need, [`Engine::init_swarm`]).

use std::collections::BTreeMap;

use bollard::models::ConfigSpec;

use super::{Engine, RuntimeError, classify};

/// A record read: its labels and the version an update must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmRecord {
    pub version: u64,
    pub labels: BTreeMap<String, String>,
}

/// Why a write of the record did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Another writer got there first: the record is not what was read.
    #[error("the record changed since it was read")]
    Conflict,
    #[error(transparent)]
    Engine(#[from] RuntimeError),
}

fn is_conflict(error: &RuntimeError) -> bool {
    match error {
        RuntimeError::Conflict(_) => true,
        RuntimeError::Failed(message) => {
            message.contains("out of sequence") || message.contains("already exists")
        }
        _ => false,
    }
}

impl Engine {
    /// The record named `name`; `None` when there is none yet.
    pub async fn record_read(&self, name: &str) -> Result<Option<SwarmRecord>, RuntimeError> {
        let config = match self
            .within(
                "a swarm config inspection",
                Box::pin(self.docker.inspect_config(name)),
            )
            .await?
            .map_err(classify)
        {
            Ok(config) => config,
            Err(RuntimeError::NotFound(_)) => return Ok(None),
            Err(other) => return Err(other),
        };
        let version = config
            .version
            .and_then(|v| v.index)
            .ok_or_else(|| RuntimeError::Failed(format!("swarm config {name} has no version")))?;
        let labels = config
            .spec
            .and_then(|s| s.labels)
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Some(SwarmRecord { version, labels }))
    }

    /// Create the record `name` with `labels`; [`RecordError::Conflict`]
    /// when another writer created it first.
    pub async fn record_create(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RecordError> {
        let spec = record_spec(name, labels);
        let created = self
            .within(
                "a swarm config creation",
                Box::pin(self.docker.create_config(spec)),
            )
            .await?;
        created.map(drop).map_err(record_error)
    }

    /// Replace the labels of record `name` if it is still at `version`;
    /// [`RecordError::Conflict`] when another writer changed it since.
    pub async fn record_update(
        &self,
        name: &str,
        version: u64,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RecordError> {
        let options = bollard::query_parameters::UpdateConfigOptionsBuilder::default()
            .version(version as i64)
            .build();
        let request = self
            .docker
            .update_config(name, record_spec(name, labels), options);
        let updated = self
            .within("a swarm config update", Box::pin(request))
            .await?;
        updated.map_err(record_error)
    }
}

/// The config that holds a record: its labels are the record. A config
/// must hold data, which never changes (the managers refuse an update of
/// it), so it is the name.
fn record_spec(name: &str, labels: &BTreeMap<String, String>) -> ConfigSpec {
    use base64::Engine as _;
    ConfigSpec {
        name: Some(name.to_string()),
        labels: Some(labels.clone().into_iter().collect()),
        data: Some(base64::engine::general_purpose::STANDARD.encode(name)),
        ..Default::default()
    }
}

fn record_error(error: bollard::errors::Error) -> RecordError {
    match classify(error) {
        e if is_conflict(&e) => RecordError::Conflict,
        e => RecordError::Engine(e),
    }
}
