//! Images on the nodes: pier remembers which it pulled, keeps those of the
//! last `--keep-images` revisions (so a rollback needs no registry), and
//! removes the older ones it pulled once nothing uses them. An image pier
//! did not pull (built or pulled by someone else) is never touched.

use super::*;
use crate::docker::{Runtime, RuntimeError};
#[allow(unused_imports)]
use crate::pass::Connect;
use crate::pass::apply::Action;

impl<C: Connect> Reconciler<C> {
    /// Remember the images this pass pulled.
    pub(super) fn remember_pulls(&self, report: &ApplyReport) {
        let pulled: Vec<(String, String)> = report
            .records
            .iter()
            .filter(|r| r.ok && r.action == Action::Pull)
            .map(|r| (r.node.clone(), r.target.clone()))
            .collect();
        if pulled.is_empty() {
            return;
        }
        self.shared.store.write(move |store| {
            for (node, image) in &pulled {
                if let Err(e) = store.record_pull(node, image) {
                    warn!(error = %e, "cannot record a pulled image");
                }
            }
        });
    }

    /// Remove, in the background, the images pier pulled that no recent
    /// revision names. An image still used by a container is refused by
    /// the engine and tried again after the next revision.
    pub(super) fn prune_images(&self, engines: &BTreeMap<String, C::Runtime>) {
        let keep = self.config.keep_images;
        if keep == 0 {
            return;
        }
        let (shared, engines, timeout) = (
            self.shared.clone(),
            engines.clone(),
            self.config.settings.engine_timeout,
        );
        tokio::spawn(async move {
            let read = shared
                .store
                .call(move |store| -> rusqlite::Result<_> {
                    Ok((store.pulled_images()?, store.recent_images(keep)?))
                })
                .await;
            let (pulled, kept) = match read {
                Ok(read) => read,
                Err(e) => return warn!(error = %e, "cannot read the images pulled; none removed"),
            };
            for (node, image) in pulled.into_iter().filter(|(_, i)| !kept.contains(i)) {
                let Some(engine) = engines.get(&node) else {
                    continue;
                };
                let removed = tokio::time::timeout(timeout, engine.remove_image(&image))
                    .await
                    .unwrap_or_else(|_| Err(RuntimeError::Unreachable("no answer".into())));
                match removed {
                    Ok(()) | Err(RuntimeError::NotFound(_)) => {
                        info!(node, image, "removed an image no recent revision runs");
                        let (node, image) = (node.clone(), image.clone());
                        shared.store.write(move |store| {
                            if let Err(e) = store.forget_pull(&node, &image) {
                                warn!(error = %e, "cannot forget a removed image");
                            }
                        });
                    }
                    // In use by a container: kept, and tried again later.
                    Err(RuntimeError::Conflict(_)) => {}
                    Err(e) => warn!(node, image, error = %e, "cannot remove an old image"),
                }
            }
        });
    }
}
