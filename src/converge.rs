//! One pass of the loop, shared by `pier diff` and `pier apply`: load the
//! manifests at a commit → connect to the nodes → observe → resolve images →
//! build the desired state → plan. `diff` renders the plan; `apply` runs it.
//!
//! A manifest that does not validate stops the pass before any engine is
//! touched: a bad commit never causes a partial apply.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use crate::docker::Runtime;
use crate::docker::engine::Engine;
use crate::manifest::{self, Diagnostic, Manifest, Vars};
use crate::plan::{self, Desired, DesiredService, Observed, Plan};
use crate::registry::{Registry, ResolveError};
use crate::source::git::{GitSource, SourceError};
use crate::validate::Source;

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
    pub allow_empty: bool,
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
}

/// Load, observe, resolve and plan. Touches nothing.
pub async fn prepare(settings: &Settings, vars: &Vars) -> Result<Prepared, PassError> {
    let repo = GitSource::open(&settings.source.repo, &settings.source.cache_dir)?;
    let snapshot = repo.manifests(&settings.source.reference, &settings.source.path)?;
    let stack = settings.stack.clone().unwrap_or_else(|| repo.name());
    let loaded = manifest::load_and_validate(&snapshot.files, vars, &snapshot.tree);
    if !loaded.is_valid() {
        return Err(PassError::Invalid {
            commit: snapshot.commit,
            diagnostics: loaded.diagnostics,
        });
    }
    let manifest = loaded.manifest;
    let connections = connect_all(&manifest, settings.engine_timeout).await;
    let observed = crate::observe::observe(&stack, &connections, settings.engine_timeout).await;
    let engines: BTreeMap<String, Engine> = connections
        .into_iter()
        .filter_map(|(name, engine)| engine.ok().map(|e| (name, e)))
        .collect();
    let registry = Registry::new(
        settings.insecure_registries.clone(),
        crate::registry::CredentialStore::from_environment(),
    );
    let images = resolve_images(&manifest, &registry, &engines).await;
    let desired = desired_state(&manifest, &stack, &snapshot.commit, &images);
    let plan = plan::plan(
        &desired,
        &observed,
        &plan::Options {
            allow_empty: settings.allow_empty,
        },
    );
    Ok(Prepared {
        manifest,
        desired,
        observed,
        plan,
        engines,
        registry,
        diagnostics: loaded.diagnostics,
    })
}

/// A client per node, connected in parallel; a node that does not answer
/// carries the reason instead.
pub async fn connect_all(
    manifest: &Manifest,
    timeout: Duration,
) -> BTreeMap<String, Result<Engine, String>> {
    let attempts = manifest.nodes.values().map(|node| async move {
        (
            node.name.clone(),
            Engine::connect(node, timeout)
                .await
                .map_err(|e| e.to_string()),
        )
    });
    join_all(attempts).await.into_iter().collect()
}

/// How an image reference was pinned, or why it could not be.
pub type ImageResolution = Result<crate::registry::Resolved, ResolveError>;

/// Resolve every distinct image reference once. When the registry does not
/// have the image, an image every reachable engine already holds under the
/// same id is used by that id (a single-node setup without a registry).
pub async fn resolve_images<R: Runtime>(
    manifest: &Manifest,
    registry: &Registry,
    engines: &BTreeMap<String, R>,
) -> BTreeMap<String, ImageResolution> {
    let references: BTreeSet<&str> = manifest
        .services
        .values()
        .filter_map(|s| s.image.as_deref())
        .collect();
    let lookups = references.into_iter().map(|image| async move {
        let resolved = match registry.resolve(image).await {
            Ok(resolved) => Ok(resolved),
            // Only an image the registry does not have may come from the nodes'
            // own stores; an unreachable registry freezes the service instead, so
            // a registry outage never swaps running digests for local ids.
            Err(error @ (ResolveError::NotFound { .. } | ResolveError::Unauthorized { .. })) => {
                local_image(image, engines).await.ok_or(error)
            }
            Err(error) => Err(error),
        };
        (image.to_string(), resolved)
    });
    join_all(lookups).await.into_iter().collect()
}

async fn local_image<R: Runtime>(
    image: &str,
    engines: &BTreeMap<String, R>,
) -> Option<crate::registry::Resolved> {
    let ids: Vec<Option<String>> = join_all(
        engines
            .values()
            .map(|e| async move { e.image_id(image).await.ok().flatten() }),
    )
    .await;
    let first = ids.first().cloned().flatten()?;
    ids.iter()
        .all(|id| id.as_deref() == Some(first.as_str()))
        .then(|| crate::registry::Resolved {
            pinned: first.clone(),
            digest: first,
        })
}

/// The desired state: services with pinned images; services whose image
/// could not be resolved are frozen with the reason.
pub fn desired_state(
    manifest: &Manifest,
    stack: &str,
    commit: &str,
    images: &BTreeMap<String, ImageResolution>,
) -> Desired {
    let mut desired = Desired {
        stack: stack.to_string(),
        commit: commit.to_string(),
        nodes: manifest.nodes.clone(),
        services: BTreeMap::new(),
        frozen: BTreeMap::new(),
    };
    for service in manifest.services.values() {
        let Some(image) = service.image.as_deref() else {
            desired.frozen.insert(
                service.name.clone(),
                "no image yet: it is built by the pipeline".into(),
            );
            continue;
        };
        let resolved = match images.get(image) {
            Some(Ok(resolved)) => resolved,
            Some(Err(error)) => {
                let what = if error.is_transient() {
                    "will retry"
                } else {
                    "fix the image reference or push it"
                };
                desired.frozen.insert(
                    service.name.clone(),
                    format!("{error} ({what}; its containers are left as they are)"),
                );
                continue;
            }
            None => continue,
        };
        let spec = plan::spec::container_spec(
            stack,
            service,
            &resolved.pinned,
            plan::spec::aliases(manifest, &service.name),
        );
        let mut after: Vec<String> = service.links.iter().map(|l| l.service.clone()).collect();
        after.extend(service.depends_on.keys().cloned());
        after.extend(service.volumes_from.iter().cloned());
        after.sort();
        after.dedup();
        desired.services.insert(
            service.name.clone(),
            DesiredService {
                name: service.name.clone(),
                hash: plan::spec::spec_hash(&spec),
                fields: plan::spec::field_fingerprints(&spec),
                spec: Arc::new(spec),
                image_display: image.to_string(),
                digest: resolved.digest.clone(),
                replicas: service.replicas,
                strategy: service.strategy,
                tags: service.tags.clone(),
                constraints: service.constraints.clone(),
                update: service.update.clone(),
                sequential: service.sequential_deployment,
                after,
            },
        );
    }
    desired
}
