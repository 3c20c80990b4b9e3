//! Pinning images: each tag the services name resolved to a digest once
//! per pass (through the daemon's background resolver when there is one),
//! or an image every node holds under one id when the registry does not
//! have it; then handed to the planner as its own terms.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::future::join_all;

use super::Pins;
use crate::docker::Runtime;
use crate::manifest::Manifest;
use crate::plan::desired::{ImageChoice, PinnedImage};
use crate::registry::{Registry, ResolveError};

/// How an image reference was pinned, or why it could not be.
pub type ImageResolution = Result<crate::registry::Resolved, ResolveError>;

/// The registries' answers for every distinct image reference of the
/// services not pinned, asked once each; needs no engine, so a pass asks
/// while it observes the nodes. Then [`with_local_images`].
pub async fn ask_registries(
    manifest: &Manifest,
    registry: &Registry,
    resolver: Option<&std::sync::Arc<crate::pass::resolver::Resolver>>,
    pins: &Pins,
) -> BTreeMap<String, ImageResolution> {
    let references: BTreeSet<&str> = manifest
        .services
        .values()
        .filter(|s| !pins.contains_key(&s.name))
        .filter_map(|s| s.image.as_deref())
        .collect();
    if let Some(resolver) = resolver {
        // Pinned services are not asked for, so their images' entries go
        // too; they are asked afresh when they follow a tag again.
        resolver.forget_all_but(&references);
    }
    let lookups = references.into_iter().map(|image| async move {
        let answer = match resolver {
            Some(resolver) => resolver.lookup(image).await,
            None => registry.resolve(image).await,
        };
        (image.to_string(), answer)
    });
    join_all(lookups).await.into_iter().collect()
}

/// The registries' answers, with an image the registry does not have taken
/// from the nodes' own stores when every reachable engine holds it under
/// one id.
pub async fn with_local_images<R: Runtime>(
    asked: BTreeMap<String, ImageResolution>,
    engines: &BTreeMap<String, R>,
) -> BTreeMap<String, ImageResolution> {
    let resolved = asked.into_iter().map(|(image, answer)| async move {
        let resolved = match answer {
            Ok(resolved) => Ok(resolved),
            // Only an image the registry does not have may come from the nodes'
            // own stores; an unreachable registry or rejected credentials
            // freeze the service instead, so neither an outage nor an expired
            // password ever swaps running digests for local ids. (Anonymous
            // access refused is how Docker Hub answers for a repository it
            // does not have, so it counts as not found.)
            Err(error @ (ResolveError::NotFound { .. } | ResolveError::Unauthorized { .. })) => {
                local_image(&image, engines).await.ok_or(error)
            }
            Err(error) => Err(error),
        };
        (image, resolved)
    });
    join_all(resolved).await.into_iter().collect()
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

/// How each service's image is pinned, in the planner's terms: the
/// caller's pin, else the resolution of its tag; a failure says what
/// happens next.
pub fn image_choices(
    manifest: &Manifest,
    images: &BTreeMap<String, ImageResolution>,
    pins: &Pins,
) -> BTreeMap<String, ImageChoice> {
    manifest
        .services
        .values()
        .filter_map(|service| {
            let image = service.image.as_deref()?;
            let resolution = pins
                .get(&service.name)
                .map(Ok)
                .or_else(|| images.get(image).map(Result::as_ref))?;
            let choice = match resolution {
                Ok(resolved) => ImageChoice::Pinned(PinnedImage {
                    pinned: resolved.pinned.clone(),
                    digest: resolved.digest.clone(),
                }),
                Err(error) => {
                    let what = if error.is_transient() {
                        "will retry"
                    } else {
                        "fix the image reference or push it"
                    };
                    ImageChoice::Unavailable(format!(
                        "{error} ({what}; its containers are left as they are)"
                    ))
                }
            };
            Some((service.name.clone(), choice))
        })
        .collect()
}
