//! Rules that look across the whole desired state: references between
//! services, dependency cycles, placement that no node can satisfy, and paths
//! that would leave the repository through a symlink.

use std::collections::{BTreeMap, BTreeSet};

use super::diagnostic::Diagnostic;
use super::model::{Manifest, Port, Service, Stage, Strategy};

/// What a path in the repository is, at the commit being validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File,
    Dir,
    Symlink { target: String },
}

/// Read access to the repository tree the manifests came from.
pub trait RepoTree {
    /// The entry at `path` (relative to the root, `/`-separated), without following symlinks.
    fn entry(&self, path: &str) -> Option<Entry>;
    /// The contents of the file at `path`, without following symlinks:
    /// `Ok(None)` when there is no such file, an error when there is one
    /// that cannot be read (never taken for an absent file).
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String>;
}

/// A runner node reached over plain `tcp://` runs whatever branch is under
/// test on an engine anyone on its network can drive: warned, since the
/// operator may have other protection (a private link) that pier cannot see.
fn plain_tcp_runners(manifest: &Manifest, problems: &mut Vec<Diagnostic>) {
    let Some(pipeline) = &manifest.pipeline else {
        return;
    };
    for node in manifest.nodes.values() {
        let plain_tcp =
            matches!(node.endpoint, super::model::Endpoint::Tcp { .. }) && node.tls.is_none();
        if plain_tcp && pipeline.runner_tags.is_subset(&node.tags) {
            problems.push(
                Diagnostic::warning(
                    node.location.clone(),
                    format!(
                        "node `{}` runs pipeline stages, branches under test among them, and its engine is reached over plain tcp:// without TLS: anyone who reaches {} can run containers there",
                        node.name, node.endpoint
                    ),
                )
                .key(format!("nodes.{}.endpoint", node.name))
                .help("give the node `tls:` (mutual TLS on port 2376), reach it over ssh://, or keep its port on a network only pier reaches; a dedicated runner node keeps untrusted stages off production"),
            );
        }
    }
}

/// The contents of the file at `path`, following symlinks inside the
/// repository; `Ok(None)` when there is no such file.
pub fn read_file(tree: &dyn RepoTree, path: &str) -> Result<Option<Vec<u8>>, String> {
    match resolve_path(tree, path) {
        Ok(Some((resolved, Entry::File))) => tree.read(&resolved),
        _ => Ok(None),
    }
}

/// Symlinks followed before a path is declared a loop.
const MAX_SYMLINK_HOPS: usize = 40;

/// Check everything that needs more than one entity at a time.
pub fn validate(manifest: &Manifest, tree: &dyn RepoTree) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let placeable: BTreeMap<&str, BTreeSet<&str>> = manifest
        .services
        .values()
        .map(|service| {
            let nodes = manifest
                .nodes
                .values()
                .filter(|node| service.admits(node))
                .map(|node| node.name.as_str())
                .collect();
            (service.name.as_str(), nodes)
        })
        .collect();
    for service in manifest.services.values() {
        networks_declared(manifest, service, &mut problems);
        links_share_a_network(manifest, service, &mut problems);
        if !manifest.on_overlay(service) {
            links_across_nodes(manifest, service, &placeable, &mut problems);
        }
        off_stack_network(manifest, service, &mut problems);
        relabelled_volumes(manifest, service, &mut problems);
        references(manifest, service, &mut problems);
        placement(manifest, service, &mut problems);
        repo_paths(service, tree, &mut problems);
        hooks::hook_nodes(service, &placeable, &mut problems);
    }
    cycles(manifest, &mut problems);
    plain_tcp_runners(manifest, &mut problems);
    let mut named: BTreeMap<&str, &Service> = BTreeMap::new();
    for service in manifest.services.values() {
        let Some(name) = service.container_name.as_deref() else {
            continue;
        };
        if let Some(first) = named.insert(name, service) {
            problems.push(
                Diagnostic::error(
                    service.location_of("container_name").clone(),
                    format!(
                        "`{name}` is also the container name of service `{}`",
                        first.name
                    ),
                )
                .key(format!("services.{}.container_name", service.name))
                .related(first.location_of("container_name").clone()),
            );
        }
    }
    if let Some(pipeline) = &manifest.pipeline {
        for stage in &pipeline.stages {
            if let Stage::Build { name, services, .. } = stage {
                for wanted in services {
                    match manifest.services.get(wanted) {
                        None => problems.push(
                            Diagnostic::error(
                                pipeline.location.clone(),
                                format!("stage `{name}` builds `{wanted}`, which is not a service"),
                            )
                            .key("pipeline.stages"),
                        ),
                        Some(s) if s.build.is_none() => problems.push(
                            Diagnostic::error(
                                pipeline.location.clone(),
                                format!("stage `{name}` builds `{wanted}`, which has no `build:`"),
                            )
                            .key("pipeline.stages")
                            .related(s.location.clone())
                            .help(format!("add `build: PATH` to service `{wanted}`")),
                        ),
                        Some(_) => {}
                    }
                }
            }
        }
        if !pipeline.runner_tags.is_empty()
            && !manifest
                .nodes
                .values()
                .any(|n| pipeline.runner_tags.is_subset(&n.tags))
        {
            problems.push(
                Diagnostic::warning(
                    pipeline.location.clone(),
                    "no node carries all of `runner_tags`; the pipeline cannot run",
                )
                .key("pipeline.runner_tags")
                .help(format!("nodes carry: {}", all_tags(manifest))),
            );
        }
    }
    problems
}

fn references(manifest: &Manifest, service: &Service, problems: &mut Vec<Diagnostic>) {
    let name = &service.name;
    let mut check = |key: String, target: &str| {
        if !manifest.services.contains_key(target) {
            let written = service
                .key_locations
                .get(&key)
                .unwrap_or_else(|| service.location_of(key.split(['.', '[']).next().unwrap_or("")));
            if let Some(found) = other_stack_link(manifest, target, written, &key, service) {
                problems.extend(found);
                return;
            }
            if key.starts_with("depends_on") && service.optional_dependencies.contains(target) {
                problems.push(
                    Diagnostic::warning(
                        written.clone(),
                        format!("`{target}` is not a service in the manifests; it is `required: false`, so it is ignored"),
                    )
                    .key(format!("services.{name}.{key}")),
                );
                return;
            }
            let mut diagnostic = Diagnostic::error(
                written.clone(),
                format!("`{target}` is not a service in the manifests"),
            )
            .key(format!("services.{name}.{key}"));
            if let Some(best) = super::diagnostic::did_you_mean(
                target,
                manifest.services.keys().map(String::as_str),
            ) {
                diagnostic = diagnostic.help(format!("did you mean `{best}`?"));
            }
            problems.push(diagnostic);
        }
    };
    for (n, link) in service.links.iter().enumerate() {
        check(format!("links[{n}]"), &link.service);
    }
    for dependency in service.depends_on.keys() {
        check(format!("depends_on.{dependency}"), dependency);
    }
    for (n, source) in service.volumes_from.iter().enumerate() {
        check(format!("volumes_from[{n}]"), source);
    }
}

/// Docker Cloud's `links: ["db.other"]` (or `volumes_from`) names service
/// `db` of stack `other`. A link resolves through a network both stacks
/// are on, made outside pier (`external: true`): fine when the service is
/// on one (`Some(None)`), else a precise error; `volumes_from` is always
/// an error, since pier deploys one stack per repository.
fn other_stack_link(
    manifest: &Manifest,
    target: &str,
    written: &super::diagnostic::Location,
    key: &str,
    linking: &Service,
) -> Option<Option<Diagnostic>> {
    let name = &linking.name;
    let link = key.starts_with("links");
    if !link && !key.starts_with("volumes_from") {
        return None;
    }
    let (service, stack) = target.split_once('.')?;
    if service.is_empty() || stack.is_empty() {
        return None;
    }
    if link && !manifest.external_networks(linking).is_empty() {
        return Some(None);
    }
    let here = if manifest.services.contains_key(service) {
        format!("; `{service}` here is this stack's own, write `{service}` to link to it")
    } else {
        String::new()
    };
    Some(Some(
        Diagnostic::error(
            written.clone(),
            if link {
                format!("`{target}` names service `{service}` of another stack, `{stack}`, but {name} is on no network shared with other stacks")
            } else {
                format!("`{target}` names service `{service}` of another stack, `{stack}`, which pier cannot see from these manifests")
            },
        )
        .key(format!("services.{name}.{key}"))
        .help(if link {
            format!("put both stacks on one network made outside pier: `docker network create -d overlay --attachable NAME` on a swarm manager (a bridge network on each node when both run on one), `networks: {{ shared: {{ external: true, name: NAME }} }}` in each stack, and `shared` in the `networks` of {name} and of `{service}` in `{stack}`; or add `{service}` to these manifests and link to `{service}`{here}")
        } else {
            format!("add `{service}` to these manifests and name it as `{service}`, or share the data through a named volume{here}")
        }),
    ))
}

/// Every network a service lists is `default` or declared at the top level.
fn networks_declared(manifest: &Manifest, service: &Service, problems: &mut Vec<Diagnostic>) {
    for network in service.networks.keys() {
        if network == "default" || manifest.networks.contains_key(network) {
            continue;
        }
        let mut diagnostic = Diagnostic::error(
            service.location_of("networks").clone(),
            format!("network `{network}` is not declared"),
        )
        .key(format!("services.{}.networks", service.name));
        diagnostic = match super::diagnostic::did_you_mean(
            network,
            manifest
                .networks
                .keys()
                .map(String::as_str)
                .chain(["default"]),
        ) {
            Some(best) => diagnostic.help(format!("did you mean `{best}`?")),
            None => diagnostic.help(format!(
                "declare it under the top-level `networks` (`networks: {{ {network}: {{}} }}`)"
            )),
        };
        problems.push(diagnostic);
    }
}

/// Whether `service` and the service named `other` are on a common network.
fn share_a_network(manifest: &Manifest, service: &Service, other: &str) -> bool {
    let Some(other) = manifest.services.get(other) else {
        return false;
    };
    let own: BTreeSet<&str> = manifest
        .service_networks(service)
        .iter()
        .map(|(k, _)| *k)
        .collect();
    manifest
        .service_networks(other)
        .iter()
        .any(|(key, _)| own.contains(key))
}

/// A link's alias resolves only on a network both services are on.
fn links_share_a_network(manifest: &Manifest, service: &Service, problems: &mut Vec<Diagnostic>) {
    if service.network_mode.is_some() {
        return;
    }
    for (n, link) in service.links.iter().enumerate() {
        let Some(target) = manifest.services.get(&link.service) else {
            continue;
        };
        if target.network_mode.is_some() {
            continue;
        }
        if !share_a_network(manifest, service, &link.service) {
            problems.push(
                Diagnostic::error(
                    service.location_of(&format!("links[{n}]")).clone(),
                    format!(
                        "{} links to {}, but they share no network, where the link would resolve",
                        service.name, link.service
                    ),
                )
                .key(format!("services.{}.links[{n}]", service.name))
                .help(format!(
                    "list a network of {} in the `networks` of {} too",
                    link.service, service.name
                )),
            );
        }
    }
}

/// On a bridge network (one per node) a link or dependency only resolves
/// between containers on the same node: warn where placement may split them.
fn links_across_nodes(
    manifest: &Manifest,
    service: &Service,
    placeable: &BTreeMap<&str, BTreeSet<&str>>,
    problems: &mut Vec<Diagnostic>,
) {
    let name = service.name.as_str();
    let Some(here) = placeable.get(name) else {
        return;
    };
    let targets = service
        .links
        .iter()
        .enumerate()
        .map(|(n, link)| (format!("links[{n}]"), link.service.as_str()))
        .chain(
            service
                .depends_on
                .keys()
                .map(|target| (format!("depends_on.{target}"), target.as_str())),
        );
    for (key, target) in targets {
        let Some(there) = placeable.get(target) else {
            continue;
        };
        // Two services on no common network are an error of their own.
        if !share_a_network(manifest, service, target) {
            continue;
        }
        let apart = here.iter().any(|a| there.iter().any(|b| a != b));
        if apart {
            problems.push(
                Diagnostic::warning(
                    service.location_of(&key).clone(),
                    format!("{name} and {target} may be placed on different nodes, where the stack's bridge network does not reach"),
                )
                .key(format!("services.{name}.{key}"))
                .help("declare `networks: { default: { driver: overlay } }` for one network across the nodes, or place both with the same tags"),
            );
        }
    }
}

/// A service on the host's network (or none) is not on the stack's: it
/// publishes no ports of its own, and services cannot reach each other by
/// name across that line.
fn off_stack_network(manifest: &Manifest, service: &Service, problems: &mut Vec<Diagnostic>) {
    let name = &service.name;
    let off = |s: &Service| s.network_mode.clone();
    if let Some(mode) = off(service) {
        if !service.ports.is_empty() {
            problems.push(
                Diagnostic::error(
                    service.location_of("ports").clone(),
                    format!("`ports` with `{}: {mode}`", service.network_mode_key()),
                )
                .key(format!("services.{name}.ports"))
                .help(if mode == "host" {
                    "on the host's network the container listens on the host's ports itself; remove `ports`"
                } else {
                    "a container without a network publishes nothing; remove `ports`"
                }),
            );
        }
        if !service.links.is_empty() {
            problems.push(
                Diagnostic::error(
                    service.location_of("links").clone(),
                    format!("`links` with `{}: {mode}`: the service is not on the stack's network, where names resolve", service.network_mode_key()),
                )
                .key(format!("services.{name}.links")),
            );
        }
    }
    for (n, link) in service.links.iter().enumerate() {
        let target = manifest.services.get(&link.service);
        if let Some((target, mode)) = target.and_then(|t| off(t).map(|mode| (t, mode))) {
            let key = format!("links[{n}]");
            problems.push(
                Diagnostic::error(
                    service.location_of(&key).clone(),
                    format!("`{}` runs with `{}: {mode}`, off the stack's network: it cannot be reached by name", link.service, target.network_mode_key()),
                )
                .key(format!("services.{name}.{key}"))
                .help("reach a service on the host's network at the node's address"),
            );
        }
    }
}

/// The engine takes SELinux relabelling only in its older mount syntax,
/// which cannot pass a new volume's labels or driver options.
fn relabelled_volumes(manifest: &Manifest, service: &Service, problems: &mut Vec<Diagnostic>) {
    for mount in &service.volumes {
        let super::model::Mount::Volume {
            source,
            relabel: Some(relabel),
            ..
        } = mount
        else {
            continue;
        };
        if manifest
            .volumes
            .get(source)
            .is_some_and(|d| !d.labels.is_empty() || !d.driver_opts.is_empty())
        {
            problems.push(
                Diagnostic::error(
                    service.location_of("volumes").clone(),
                    format!("volume `{source}` is declared with `labels` or `driver_opts` and mounted with `{relabel}`; the engine cannot do both"),
                )
                .key(format!("services.{}.volumes", service.name))
                .help("drop the SELinux option, or create the volume beforehand and declare it `external: true`"),
            );
        }
    }
}

fn all_tags(manifest: &Manifest) -> String {
    let tags: BTreeSet<&str> = manifest
        .nodes
        .values()
        .flat_map(|n| n.tags.iter().map(String::as_str))
        .collect();
    if tags.is_empty() {
        "no tags".into()
    } else {
        tags.into_iter().collect::<Vec<_>>().join(", ")
    }
}

fn placement(manifest: &Manifest, service: &Service, problems: &mut Vec<Diagnostic>) {
    let name = &service.name;
    let matching = manifest
        .nodes
        .values()
        .filter(|node| service.admits(node))
        .count();
    if !manifest.nodes.is_empty() && matching == 0 {
        problems.push(
            Diagnostic::warning(
                service.location_of("tags").clone(),
                "no node matches this service's tags and constraints; it cannot be placed",
            )
            .key(format!("services.{name}.tags"))
            .help(format!("nodes carry: {}", all_tags(manifest))),
        );
        return;
    }
    if service.strategy == Strategy::EveryNode || manifest.nodes.is_empty() {
        return;
    }
    let replicas = service.replica_count() as usize;
    if let Some(port) = service.ports.iter().find(|p| fixed_single_host_port(p))
        && replicas > matching
    {
        let published = port.published.map(|r| r.start).unwrap_or_default();
        problems.push(
            Diagnostic::error(
                service.location_of("ports").clone(),
                format!("{replicas} replicas cannot all publish host port {published}: only {matching} node(s) match"),
            )
            .key(format!("services.{name}.ports"))
            .help("two containers cannot bind one host port on one node: lower the replicas, add nodes, or let the engine choose the host port"),
        );
    }
}

fn fixed_single_host_port(port: &Port) -> bool {
    port.published.is_some_and(|r| r.len() == 1)
}

fn repo_paths(service: &Service, tree: &dyn RepoTree, problems: &mut Vec<Diagnostic>) {
    let name = &service.name;
    let mut check = |key: &str, path: &str, want_dir: bool| {
        let problem = match resolve(tree, path) {
            Err(why) => Some(format!("`{path}` {why}")),
            Ok(None) => Some(format!(
                "`{path}` does not exist in the repository at this commit"
            )),
            Ok(Some(Entry::Dir)) if !want_dir => Some(format!("`{path}` is a folder, not a file")),
            Ok(Some(Entry::File)) if want_dir => Some(format!("`{path}` is a file, not a folder")),
            Ok(_) => None,
        };
        if let Some(message) = problem {
            problems.push(
                Diagnostic::error(service.location_of(key).clone(), message)
                    .key(format!("services.{name}.{key}"))
                    .help(
                        "paths are relative to the manifest file's folder and must stay inside the repository",
                    ),
            );
        }
    };
    if let Some(build) = &service.build {
        check("build", &build.context, true);
    }
    for file in &service.env_files {
        check("env_file", file, false);
    }
}

/// Follow symlinks along `path`; an error when one points out of the repository.
pub fn resolve(tree: &dyn RepoTree, path: &str) -> Result<Option<Entry>, &'static str> {
    resolve_path(tree, path).map(|found| found.map(|(_, entry)| entry))
}

/// [`resolve`], with the path the entry was found at.
fn resolve_path(tree: &dyn RepoTree, path: &str) -> Result<Option<(String, Entry)>, &'static str> {
    if path == "." {
        return Ok(Some((".".into(), Entry::Dir)));
    }
    let mut pending: Vec<String> = path.split('/').rev().map(str::to_string).collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut hops = 0;
    let mut last = None;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                resolved
                    .pop()
                    .ok_or("climbs out of the repository through a symlink")?;
                continue;
            }
            _ => {}
        }
        resolved.push(part);
        let here = resolved.join("/");
        match tree.entry(&here) {
            None => return Ok(None),
            Some(Entry::Symlink { target }) => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err("goes through a symlink loop");
                }
                if target.starts_with('/') {
                    return Err("resolves through a symlink out of the repository");
                }
                resolved.pop();
                pending.extend(target.split('/').rev().map(str::to_string));
                last = None;
            }
            Some(entry) => last = Some(entry),
        }
    }
    let at = resolved.join("/");
    match last {
        Some(entry) => Ok(Some((at, entry))),
        None if resolved.is_empty() => Ok(Some((".".into(), Entry::Dir))),
        None => Ok(tree.entry(&at).map(|entry| (at, entry))),
    }
}

fn cycles(manifest: &Manifest, problems: &mut Vec<Diagnostic>) {
    let edges: BTreeMap<&str, Vec<&str>> = manifest
        .services
        .values()
        .map(|s| {
            let mut targets: Vec<&str> = s.links.iter().map(|l| l.service.as_str()).collect();
            targets.extend(s.depends_on.keys().map(String::as_str));
            targets.extend(s.volumes_from.iter().map(String::as_str));
            targets.retain(|t| manifest.services.contains_key(*t));
            targets.sort();
            targets.dedup();
            (s.name.as_str(), targets)
        })
        .collect();
    // Iterative depth-first search; each cycle is reported once, at its first service by name.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new(); // 1 = on the stack, 2 = done
    let mut reported = BTreeSet::new();
    for start in edges.keys() {
        if state.contains_key(start) {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        state.insert(start, 1);
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            if let Some(&target) = edges[node].get(*next) {
                *next += 1;
                match state.get(target) {
                    None => {
                        state.insert(target, 1);
                        stack.push((target, 0));
                    }
                    Some(1) => {
                        let from = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                        let mut cycle: Vec<&str> = stack[from..].iter().map(|(n, _)| *n).collect();
                        let first = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, n)| **n)
                            .map(|(i, _)| i)
                            .unwrap_or(0);
                        cycle.rotate_left(first);
                        if reported.insert(cycle.clone()) {
                            let head = &manifest.services[cycle[0]];
                            let mut path = cycle.join(" → ");
                            path.push_str(&format!(" → {}", cycle[0]));
                            problems.push(
                                Diagnostic::error(head.location.clone(), format!("services depend on each other in a cycle: {path}"))
                                    .key(format!("services.{}", cycle[0]))
                                    .help("`links`, `depends_on` and `volumes_from` decide start order; break the cycle"),
                            );
                        }
                    }
                    _ => {}
                }
            } else {
                state.insert(node, 2);
                stack.pop();
            }
        }
    }
}

/// A repository tree in memory, for tests and for folders read from disk.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree(pub BTreeMap<String, Entry>, BTreeMap<String, Vec<u8>>);

impl MemoryTree {
    /// A tree holding these files (their parent folders are implied).
    pub fn with_files<'a>(files: impl IntoIterator<Item = &'a str>) -> Self {
        let mut tree = MemoryTree::default();
        for file in files {
            tree.add(file, Entry::File);
        }
        tree
    }

    pub fn add(&mut self, path: &str, entry: Entry) {
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, dirs)| dirs.to_vec())
            .unwrap_or_default()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.0.entry(parent.clone()).or_insert(Entry::Dir);
        }
        self.0.insert(path.to_string(), entry);
    }

    /// Add a file with contents.
    pub fn add_file(&mut self, path: &str, text: &str) {
        self.add(path, Entry::File);
        self.1.insert(path.to_string(), text.as_bytes().to_vec());
    }
}

impl RepoTree for MemoryTree {
    fn entry(&self, path: &str) -> Option<Entry> {
        self.0.get(path).cloned()
    }

    /// Files added without contents are empty.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(matches!(self.0.get(path), Some(Entry::File))
            .then(|| self.1.get(path).cloned().unwrap_or_default()))
    }
}

mod hooks;
#[cfg(test)]
mod tests;
