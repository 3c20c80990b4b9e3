//! Checks of a service's deploy hooks against the rest of the manifests.

#[allow(unused_imports)]
use super::*;

/// A hook's `node` must be one the service may run on: the hook mounts its
/// volumes and joins its networks there.
pub(super) fn hook_nodes(
    service: &Service,
    placeable: &BTreeMap<&str, BTreeSet<&str>>,
    problems: &mut Vec<Diagnostic>,
) {
    let hooks = [
        ("pre_deploy", &service.hooks.pre_deploy),
        ("post_deploy", &service.hooks.post_deploy),
    ];
    for (phase, hook) in hooks {
        let Some(node) = hook.as_ref().and_then(|h| h.node.as_deref()) else {
            continue;
        };
        if !placeable
            .get(service.name.as_str())
            .is_some_and(|nodes| nodes.contains(node))
        {
            problems.push(
                Diagnostic::error(
                    service.location_of("hooks").clone(),
                    format!(
                        "the {phase} hook of `{}` runs on node `{node}`, which the service may not run on",
                        service.name
                    ),
                )
                .help("name a node the service's tags and constraints admit, or leave `node` out"),
            );
        }
    }
}
