//! After an edit: do the edited manifests say what was asked?

#[allow(unused_imports)]
use super::*;

/// Whether the edited manifests say what the edit asked for: guards against
/// an edit landing where the loader does not look.
pub(super) fn check_effect(edit: &Edit, manifest: &Manifest) -> Result<(), Refused> {
    let wrong = |what: String| {
        Err(Refused::Impossible(format!(
            "could not make this edit safely ({what}); edit the manifests by hand"
        )))
    };
    match edit {
        Edit::Scale(targets) => {
            for (service, count) in targets {
                let replicas = manifest.services.get(service).and_then(|s| s.replicas);
                if replicas != Some(*count) {
                    return wrong(format!("{service} would have {replicas:?} replicas"));
                }
            }
        }
        Edit::NodeAdd { name, tags, .. } => match manifest.nodes.get(name) {
            Some(node) if tags.iter().all(|t| node.tags.contains(t)) => {}
            _ => return wrong(format!("node {name} would not be there as asked")),
        },
        Edit::NodeRemove(name) => {
            if manifest.nodes.contains_key(name) {
                return wrong(format!("node {name} would still be there"));
            }
        }
        Edit::NodeTag { name, add, remove } => {
            let tags = manifest
                .nodes
                .get(name)
                .map(|n| n.tags.clone())
                .unwrap_or_default();
            if !add.iter().all(|t| tags.contains(t)) || remove.iter().any(|t| tags.contains(t)) {
                return wrong(format!("node {name} would have tags {tags:?}"));
            }
        }
        Edit::SetImage { service, image } => {
            let now = manifest.services.get(service).and_then(|s| s.image.clone());
            if now.as_deref() != Some(image.as_str()) {
                return wrong(format!("{service} would have image {now:?}"));
            }
        }
        Edit::Pin { service, digest } => {
            let now = manifest.services.get(service).and_then(|s| s.image.clone());
            if !now
                .as_deref()
                .is_some_and(|i| i.ends_with(&format!("@{digest}")))
            {
                return wrong(format!("{service} would have image {now:?}"));
            }
        }
        Edit::Unpin(service) => {
            let now = manifest.services.get(service).and_then(|s| s.image.clone());
            if now.as_deref().is_none_or(|i| i.contains('@')) {
                return wrong(format!("{service} would have image {now:?}"));
            }
        }
        Edit::SetEnv { service, vars } => {
            let env = manifest
                .services
                .get(service)
                .map(|s| s.environment.clone())
                .unwrap_or_default();
            for (key, value) in vars {
                let now = env.get(key).cloned().flatten();
                if now != *value {
                    return wrong(format!("{service} would not have {key} as asked"));
                }
            }
        }
    }
    Ok(())
}
