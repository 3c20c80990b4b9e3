//! Merging the files of a commit, in path order, with the checks that
//! span files: a name defined twice, one pipeline, the service limit.

#[allow(unused_imports)]
use super::*;

impl Merge {
    pub(super) fn add(&mut self, file: Loaded) {
        let (manifest, target) = (file.manifest, &mut self.loaded);
        target.diagnostics.extend(file.diagnostics);
        target.unknown_at.extend(file.unknown_at);
        for (key, at) in file.declared_at {
            target.declared_at.entry(key).or_insert(at);
        }
        let mut services: Vec<_> = manifest.services.into_values().collect();
        services.sort_by(|a, b| a.location.cmp(&b.location));
        for service in services {
            self.services_seen += 1;
            if self.services_seen == MAX_SERVICES + 1 {
                target
                    .diagnostics
                    .push(too_many_services(service.location.clone()));
            }
            if self.services_seen > MAX_SERVICES {
                continue;
            }
            match target.manifest.services.get(&service.name) {
                Some(first) => target.diagnostics.push(defined_twice(
                    "service",
                    &service.name,
                    service.location.clone(),
                    first.location.clone(),
                )),
                None => {
                    target
                        .manifest
                        .services
                        .insert(service.name.clone(), service);
                }
            }
        }
        for (name, node) in manifest.nodes {
            match target.manifest.nodes.get(&name) {
                Some(first) => target.diagnostics.push(defined_twice(
                    "node",
                    &name,
                    node.location.clone(),
                    first.location.clone(),
                )),
                None => {
                    target.manifest.nodes.insert(name, node);
                }
            }
        }
        if let Some(pipeline) = manifest.pipeline {
            match &target.manifest.pipeline {
                Some(first) => target.diagnostics.push(pipeline_twice(
                    pipeline.location.clone(),
                    first.location.clone(),
                )),
                None => target.manifest.pipeline = Some(pipeline),
            }
        }
        target.manifest.volumes.extend(manifest.volumes);
        target.manifest.networks.extend(manifest.networks);
        target.manifest.provided.extend(manifest.provided);
        if let Some(at) = file.network_at {
            match &target.network_at {
                Some(first) => target.diagnostics.push(
                    Diagnostic::error(at, "`networks.default` is declared twice")
                        .key("networks.default")
                        .related(first.clone())
                        .help("declare the stack's network in one manifest file only"),
                ),
                None => {
                    target.manifest.network = manifest.network;
                    target.network_at = Some(at);
                }
            }
        }
        if let Some(router) = manifest.router {
            match &target.manifest.router {
                Some(first) => target.diagnostics.push(
                    Diagnostic::error(router.location.clone(), "the router is defined twice")
                        .key("router")
                        .related(first.location.clone())
                        .help("define `router:` in one manifest file only"),
                ),
                None => target.manifest.router = Some(router),
            }
        }
    }
}

pub(super) fn defined_twice(
    what: &str,
    name: &str,
    location: Location,
    first: Location,
) -> Diagnostic {
    Diagnostic::error(location, format!("{what} `{name}` is defined twice"))
        .key(format!("{what}s.{name}"))
        .related(first)
        .help(format!(
            "{what} names are unique across all manifest files; rename or remove one"
        ))
}

pub(super) fn pipeline_twice(location: Location, first: Location) -> Diagnostic {
    Diagnostic::error(location, "the pipeline is defined twice")
        .key("pipeline")
        .related(first)
        .help("define `pipeline:` in one manifest file only")
}

pub(super) fn too_many_services(location: Location) -> Diagnostic {
    Diagnostic::error(location, format!("more than {MAX_SERVICES} services"))
        .help("pier manages at most 10,000 services per repository; split the repository")
}
