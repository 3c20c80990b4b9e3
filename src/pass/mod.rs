//! One pass, the same for `pier diff`, `pier apply`, `pier pipeline run
//! --deploy` and every daemon pass: load the manifests at a commit
//! (`load`) → connect to the nodes and observe them (`connect`,
//! `observe`) → pin the images (`resolve`, and the daemon's `resolver`) →
//! lower to the desired state and plan (`planning`, over the pure
//! `crate::plan`) → carry the plan out (`deploy`, `apply`).
//!
//! A manifest that does not validate stops the pass before any engine is
//! touched: a bad commit never causes a partial apply.

pub mod apply;
pub mod connect;
pub mod deploy;
mod load;
pub mod observe;
mod planning;
mod resolve;
pub mod resolver;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::docker::engine::Engine;
use crate::manifest::{self, Diagnostic, Manifest, Vars};
use crate::plan;
use crate::plan::{Desired, Observed, Plan};
use crate::registry::Registry;
use crate::source::git::SourceError;
use crate::validate::Source;

pub use connect::{Connect, Engines, connect_all, reachable};
pub use deploy::deploy;
pub use load::{load, load_for_deploy, registry, registry_in_background, with_router_certificate};
pub use planning::{plan_loaded, prepare};
pub use resolve::{ImageResolution, ask_registries, with_local_images};

/// Everything a pass needs besides the manifests.
#[derive(Debug, Clone)]
pub struct Settings {
    pub source: Source,
    /// Names this deployment; containers carry it as `pier.stack`
    /// (default: the repository's folder name).
    pub stack: Option<String>,
    /// Registries served over plain HTTP (`host:port`).
    pub insecure_registries: Vec<String>,
    /// How long an engine may take to answer before its node counts as unreachable.
    pub engine_timeout: Duration,
    /// How long the registry may take to connect or answer a read.
    pub registry_timeout: Duration,
    pub allow_empty: bool,
    /// Take over containers of the stack deployed from another repository.
    pub adopt: bool,
    /// What manifests may ask of the hosts.
    pub policy: crate::policy::Policy,
    /// The variables of pier's environment manifests may use (`--allow-env`).
    pub allow_env: Vec<String>,
    /// The age keys that open the repository's SOPS files (none: a SOPS
    /// file stops a deploy with an error saying how to give one).
    pub keys: std::sync::Arc<crate::manifest::sops::Keys>,
}

impl Settings {
    /// The variables of this process's environment the manifests may use.
    pub fn manifest_vars(&self) -> Vars {
        crate::manifest::interpolate::admitted_from_process(&self.allow_env)
    }
}

/// Why a pass could not produce a plan.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the manifests at {commit} are invalid; nothing was changed")]
    Invalid {
        commit: String,
        diagnostics: Vec<Diagnostic>,
    },
}

/// The manifests at one commit, validated.
#[derive(Clone)]
pub struct Loaded {
    pub commit: String,
    pub stack: String,
    /// Where the manifests come from, recorded on every container.
    pub source: plan::SourceId,
    /// The variables the manifest files interpolate, by name.
    pub interpolated: BTreeSet<String>,
    pub manifest: Manifest,
    /// Warnings and notices from validation.
    pub diagnostics: Vec<Diagnostic>,
}

/// The outcome of the read-only half of a pass.
pub struct Prepared {
    pub manifest: Manifest,
    pub desired: Desired,
    pub observed: Observed,
    pub plan: Plan,
    pub engines: BTreeMap<String, Engine>,
    pub registry: Registry,
    /// Warnings and notices from validation.
    pub diagnostics: Vec<Diagnostic>,
    /// The variables the manifest files interpolate, by name.
    pub interpolated: BTreeSet<String>,
}

/// What was observed and planned for one loaded commit, and the engines
/// that answered (real ones unless a caller connected otherwise).
pub struct Planned<R = Engine> {
    pub desired: Desired,
    pub observed: Observed,
    pub plan: Plan,
    pub engines: BTreeMap<String, R>,
    /// Why this pass could not do everything, when the cause may pass by
    /// itself (an unreachable node or registry): worth retrying.
    pub transient: Option<String>,
    /// Unreachable nodes given up as down this pass.
    pub down: BTreeSet<String>,
}

/// Images a caller has already pinned, by service name: these services are
/// not resolved again (the daemon keeps a commit's digests until it changes).
pub type Pins = BTreeMap<String, crate::registry::Resolved>;

/// What a caller decided before planning.
#[derive(Debug, Clone, Default)]
pub struct PassInput {
    pub pins: Pins,
    /// Services to leave as they are, with the reason (the daemon freezes a
    /// service whose rollout of this commit was rolled back).
    pub frozen: BTreeMap<String, String>,
    /// The daemon's view of node loss; `None` (one-shot commands): an
    /// unreachable node is never given up on.
    pub node_loss: Option<NodeLoss>,
    /// `autodestroy` jobs that ran and were removed, by service and spec
    /// hash: the daemon does not start them again for that configuration.
    pub destroyed: BTreeSet<(String, String)>,
    /// Nodes that left the manifests and still hold containers of the
    /// stack, as the daemon remembers them: observed too, and drained.
    pub retired: BTreeMap<String, manifest::model::Node>,
    /// Where the daemon resolves images off the pass's path; `None`
    /// (one-shot commands): each image is resolved before planning.
    pub resolver: Option<std::sync::Arc<crate::pass::resolver::Resolver>>,
}

/// Since when each node has been unreachable, and how long that may last
/// before the node counts as down and its movable replicas start elsewhere.
#[derive(Debug, Clone, Default)]
pub struct NodeLoss {
    pub unreachable_since: BTreeMap<String, std::time::Instant>,
    pub down_after: Duration,
}

impl NodeLoss {
    /// The unreachable nodes of `observed` that have been so for long enough.
    pub fn down(&self, observed: &Observed, now: std::time::Instant) -> BTreeSet<String> {
        observed
            .nodes
            .iter()
            .filter(|(_, o)| o.unreachable.is_some())
            .filter(|(name, _)| {
                self.unreachable_since
                    .get(*name)
                    .is_some_and(|since| now.saturating_duration_since(*since) >= self.down_after)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Remember which nodes answered in `observed`.
    pub fn observe(&mut self, observed: &Observed, now: std::time::Instant) {
        for (name, o) in &observed.nodes {
            if o.unreachable.is_some() {
                self.unreachable_since.entry(name.clone()).or_insert(now);
            } else {
                self.unreachable_since.remove(name);
            }
        }
        self.unreachable_since
            .retain(|name, _| observed.nodes.contains_key(name));
    }

    /// When the next node will count as down, if one is on its way.
    pub fn next_down_at(&self, now: std::time::Instant) -> Option<std::time::Instant> {
        self.unreachable_since
            .values()
            .map(|since| *since + self.down_after)
            .filter(|at| *at > now)
            .min()
    }
}
