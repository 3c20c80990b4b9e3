//! The desired-state model: manifest files → validated [`Manifest`].
//!
//! Owns the YAML reading (with locations and limits), variable interpolation,
//! the accepted key forms (Compose and Tutum), normalisation to one model,
//! cross-entity validation, and the JSON Schema of the format. Every problem
//! is a [`Diagnostic`] with `file:line:column`; loading never stops at the
//! first one and never panics.

pub mod diagnostic;
pub mod encrypted;
pub mod env_file;
pub mod here;
pub mod include;
pub mod interpolate;
pub mod keys;
pub mod load;
pub mod model;
mod normalize;
pub mod provided;
pub mod router;
pub mod sops;
pub mod spec;
pub mod validate;
pub mod yaml;

pub use diagnostic::{Diagnostic, Location, Severity};
pub use encrypted::Decrypt;
pub use interpolate::Vars;
pub use load::{Loaded, SourceFile};
pub use model::Manifest;
pub use validate::{Entry, MemoryTree, RepoTree};

/// Load files and run every validation rule, leaving SOPS files sealed
/// (what edits and tests need; a deploy uses [`load_and_validate_with`]).
pub fn load_and_validate(files: &[SourceFile], vars: &Vars, tree: &dyn RepoTree) -> Loaded {
    load_and_validate_with(files, vars, tree, Decrypt::Never)
}

/// Load files and run every validation rule, opening SOPS files as
/// `decrypt` allows.
pub fn load_and_validate_with(
    files: &[SourceFile],
    vars: &Vars,
    tree: &dyn RepoTree,
    decrypt: Decrypt<'_>,
) -> Loaded {
    let (files, include_problems) = include::expand(files, tree);
    let mut loaded = load::load(&files, vars);
    loaded.diagnostics.extend(include_problems);
    loaded.interpolated = files
        .iter()
        .flat_map(|f| interpolate::referenced_names(&f.text))
        .collect();
    loaded.files = files.iter().map(|f| f.path.clone()).collect();
    let across = validate::validate(&loaded.manifest, tree);
    loaded.add_checked(across);
    let from_env_files = env_file::merge(&mut loaded.manifest, tree, decrypt);
    loaded.add_checked(from_env_files);
    let provided = provided::merge(&mut loaded.manifest, tree, vars, decrypt);
    loaded.add_checked(provided);
    // Routes may come from env files (`VIRTUAL_HOST`), so they are read last.
    let routes = router::finish(&mut loaded.manifest);
    loaded.add_checked(routes);
    drop_missing_optional_dependencies(&mut loaded.manifest);
    loaded
        .diagnostics
        .sort_by(|a, b| a.location.cmp(&b.location).then(a.message.cmp(&b.message)));
    loaded.diagnostics.dedup();
    loaded.diagnostics = once_per_anchor(std::mem::take(&mut loaded.diagnostics));
    loaded
}

/// One problem for a value written once and merged into many services
/// (`<<: *defaults`): the same message at the same place, about the same
/// key of different services, becomes one naming them all.
fn once_per_anchor(diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = Vec::with_capacity(diagnostics.len());
    let mut services: Vec<Vec<String>> = Vec::new();
    for diagnostic in diagnostics {
        let split = diagnostic.key.as_deref().and_then(split_service_key);
        let same = out.last().is_some_and(|last| {
            let last_split = last.key.as_deref().and_then(split_service_key);
            last.location == diagnostic.location
                && last.severity == diagnostic.severity
                && last.message == diagnostic.message
                && last.help == diagnostic.help
                && matches!((&last_split, &split), (Some((_, a)), Some((_, b))) if a == b)
        });
        match (same, split) {
            (true, Some((service, _))) => services.last_mut().expect("one per kept").push(service),
            (_, split) => {
                services.push(split.map(|(s, _)| vec![s]).unwrap_or_default());
                out.push(diagnostic);
            }
        }
    }
    for (diagnostic, services) in out.iter_mut().zip(services) {
        if services.len() < 2 {
            continue;
        }
        let rest = diagnostic
            .key
            .as_deref()
            .and_then(split_service_key)
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        diagnostic.key = Some(format!("services.{{{}}}{rest}", services.join(",")));
        let (last, first) = services.split_last().expect("two or more");
        diagnostic.message = format!(
            "{} (in services {} and {last}, which all take it from here)",
            diagnostic.message,
            first.join(", ")
        );
    }
    out
}

/// `services.web.ports[1]` → (`web`, `.ports[1]`).
fn split_service_key(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix("services.")?;
    let end = rest.find(['.', '[']).unwrap_or(rest.len());
    Some((rest[..end].to_string(), rest[end..].to_string()))
}

/// `depends_on.<svc>.required: false` on a service not in the manifests:
/// warned about by validation, then left out of the model.
fn drop_missing_optional_dependencies(manifest: &mut Manifest) {
    let names: std::collections::BTreeSet<String> = manifest.services.keys().cloned().collect();
    for service in manifest.services.values_mut() {
        if service.optional_dependencies.is_empty() {
            continue;
        }
        let optional = &service.optional_dependencies;
        service
            .depends_on
            .retain(|name, _| names.contains(name) || !optional.contains(name));
        service.restart_with.retain(|name| names.contains(name));
    }
}

/// The JSON Schema of a manifest file, as committed in `manifests/pier.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(spec::FileSpec);
    serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
}
