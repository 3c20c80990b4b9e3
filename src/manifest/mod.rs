//! The desired-state model: manifest files → validated [`Manifest`].
//!
//! Owns the YAML reading (with locations and limits), variable interpolation,
//! the accepted key forms (Compose and Tutum), normalisation to one model,
//! cross-entity validation, and the JSON Schema of the format. Every problem
//! is a [`Diagnostic`] with `file:line:column`; loading never stops at the
//! first one and never panics.

pub mod diagnostic;
pub mod env_file;
pub mod interpolate;
pub mod keys;
pub mod load;
pub mod model;
mod normalize;
pub mod spec;
pub mod validate;
pub mod yaml;

pub use diagnostic::{Diagnostic, Location, Severity};
pub use interpolate::Vars;
pub use load::{Loaded, SourceFile};
pub use model::Manifest;
pub use validate::{Entry, MemoryTree, RepoTree};

/// Load files and run every validation rule.
pub fn load_and_validate(files: &[SourceFile], vars: &Vars, tree: &dyn RepoTree) -> Loaded {
    let mut loaded = load::load(files, vars);
    loaded
        .diagnostics
        .extend(validate::validate(&loaded.manifest, tree));
    let from_env_files = env_file::merge(&mut loaded.manifest, tree);
    loaded.diagnostics.extend(from_env_files);
    loaded
        .diagnostics
        .sort_by(|a, b| a.location.cmp(&b.location).then(a.message.cmp(&b.message)));
    loaded.diagnostics.dedup();
    loaded
}

/// The JSON Schema of a manifest file, as committed in `manifests/pier.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(spec::FileSpec);
    serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
}
