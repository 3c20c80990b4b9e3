//! The digests a commit deploys with: pinned once, kept in the store, so a
//! restart or a later pass of the same commit runs the same bits.

use super::*;
#[allow(unused_imports)]
use crate::pass::Connect;

impl<C: Connect> Reconciler<C> {
    /// Digests already decided: the registry watcher's latest for services
    /// that follow their tag, the commit's first resolution for the others.
    pub(super) async fn pins_for(&self, loaded: &Loaded) -> pass::Pins {
        let stored = self.stored_pins(loaded).await;
        let followed = self.shared.followed.lock().expect("followed lock").clone();
        let mut pins = pass::Pins::new();
        for service in loaded.manifest.services.values() {
            let Some(reference) = service.image.as_deref() else {
                continue;
            };
            let pinned = if service.autoredeploy {
                followed.get(reference).cloned()
            } else {
                self.pins
                    .get(&service.name)
                    .filter(|p| p.commit == loaded.commit && p.reference == reference)
                    .map(|p| p.resolved.clone())
                    .or_else(|| stored.get(&service.name).cloned())
            };
            if let Some(resolved) = pinned {
                pins.insert(service.name.clone(), resolved);
            }
        }
        pins
    }

    /// The digests stored for this commit's services not pinned in memory
    /// (after a restart), read in one call to the store.
    pub(super) async fn stored_pins(&self, loaded: &Loaded) -> BTreeMap<String, Resolved> {
        let wanted: Vec<(String, String)> = loaded
            .manifest
            .services
            .values()
            .filter(|service| !service.autoredeploy)
            .filter(|service| {
                self.pins
                    .get(&service.name)
                    .is_none_or(|p| p.commit != loaded.commit)
            })
            .filter_map(|service| Some((service.name.clone(), service.image.clone()?)))
            .collect();
        if wanted.is_empty() {
            return BTreeMap::new();
        }
        let commit = loaded.commit.clone();
        self.shared
            .store
            .call(move |store| {
                wanted
                    .into_iter()
                    .filter_map(|(name, reference)| {
                        let resolved = store.digest(&commit, &name, &reference).ok().flatten()?;
                        Some((name, resolved))
                    })
                    .collect()
            })
            .await
    }

    /// Keep what this pass resolved, so later passes at the same commit
    /// deploy the same bits.
    pub(super) fn remember_pins(&mut self, loaded: &Loaded, planned: &Planned<C::Runtime>) {
        for desired in planned.desired.services.values() {
            let Some(service) = loaded.manifest.services.get(&desired.name) else {
                continue;
            };
            let Some(reference) = service.image.clone() else {
                continue;
            };
            let resolved = Resolved {
                pinned: desired.spec.image.clone(),
                digest: desired.digest.clone(),
            };
            if service.autoredeploy {
                self.shared
                    .followed
                    .lock()
                    .expect("followed lock")
                    .entry(reference)
                    .or_insert(resolved);
                continue;
            }
            let known = self
                .pins
                .get(&desired.name)
                .is_some_and(|p| p.commit == loaded.commit && p.reference == reference);
            if !known {
                let (commit, name, followed, saved) = (
                    loaded.commit.clone(),
                    desired.name.clone(),
                    reference.clone(),
                    resolved.clone(),
                );
                self.shared.store.write(move |store| {
                    if let Err(e) = store.save_digest(&commit, &name, &followed, &saved) {
                        warn!(error = %e, "cannot record the resolved digest");
                    }
                });
                self.pins.insert(
                    desired.name.clone(),
                    Pin {
                        commit: loaded.commit.clone(),
                        reference,
                        resolved,
                    },
                );
            }
        }
    }
}
