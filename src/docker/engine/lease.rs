//! A record in a swarm's Raft store, written with compare-and-swap: a Swarm
//! config whose labels carry the record. A config's data cannot change, but
//! its labels can, and every update names the version it read
//! (`POST /configs/{id}/update?version=N`): the managers refuse one made
//! against an older version ("update out of sequence"). This is what
//! `pier daemon --ha` keeps its lease in (`crate::daemon::lease`).
//!
//! These calls do not pass the fence (`super::super::fence`): they are how
//! a daemon gets or keeps the term the fence asks for.

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
        use base64::Engine as _;
        let spec = ConfigSpec {
            name: Some(name.to_string()),
            labels: Some(labels.clone().into_iter().collect()),
            // A config must hold data; the record lives in the labels.
            data: Some(base64::engine::general_purpose::STANDARD.encode(name)),
            ..Default::default()
        };
        self.within(
            "a swarm config creation",
            Box::pin(self.docker.create_config(spec)),
        )
        .await?
        .map(drop)
        .map_err(|e| match classify(e) {
            e if is_conflict(&e) => RecordError::Conflict,
            e => RecordError::Engine(e),
        })
    }

    /// Replace the labels of record `name` if it is still at `version`;
    /// [`RecordError::Conflict`] when another writer changed it since.
    pub async fn record_update(
        &self,
        name: &str,
        version: u64,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RecordError> {
        use base64::Engine as _;
        let spec = ConfigSpec {
            name: Some(name.to_string()),
            labels: Some(labels.clone().into_iter().collect()),
            // Unchanged: the managers refuse an update of a config's data.
            data: Some(base64::engine::general_purpose::STANDARD.encode(name)),
            ..Default::default()
        };
        let options = bollard::query_parameters::UpdateConfigOptionsBuilder::default()
            .version(version as i64)
            .build();
        self.within(
            "a swarm config update",
            Box::pin(self.docker.update_config(name, spec, options)),
        )
        .await?
        .map_err(|e| match classify(e) {
            e if is_conflict(&e) => RecordError::Conflict,
            e => RecordError::Engine(e),
        })
    }

    /// Form a swarm on this engine, for the lease only: the one call that
    /// changes an engine without a term, because the term needs the swarm.
    /// An engine already in one refuses, and the caller looks again.
    pub async fn form_swarm_for_lease(&self, advertise: Option<&str>) -> Result<(), RuntimeError> {
        let request = bollard::models::SwarmInitRequest {
            listen_addr: Some("0.0.0.0:2377".into()),
            advertise_addr: advertise.map(str::to_string),
            ..Default::default()
        };
        self.within("a swarm init", Box::pin(self.docker.init_swarm(request)))
            .await?
            .map(drop)
            .map_err(classify)
    }
}
