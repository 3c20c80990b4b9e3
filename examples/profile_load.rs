//! Time the phases of loading the manifests of a repository (for profiling).
//!
//! `cargo run --release --example profile_load -- REPO`
use std::time::Instant;

use pier::manifest::{self, Vars};
use pier::source::git::GitSource;

fn main() {
    let repo = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let t = Instant::now();
    let source = GitSource::open(&repo, &std::env::temp_dir()).expect("repo");
    let snapshot = source.manifests("HEAD", "pier").expect("manifests");
    let read = t.elapsed();
    let t = Instant::now();
    let parsed: Vec<_> = snapshot
        .files
        .iter()
        .map(|f| manifest::yaml::parse_documents(&f.text).map(|d| d.len()))
        .collect();
    let parse = t.elapsed();
    let t = Instant::now();
    let loaded = manifest::load::load(&snapshot.files, &Vars::new());
    let load = t.elapsed();
    let t = Instant::now();
    let problems = manifest::validate::validate(&loaded.manifest, &snapshot.tree);
    let validate = t.elapsed();
    println!(
        "read {read:?}, parse (1 thread) {parse:?}, load (all) {load:?}, validate {validate:?}; {} files, {} services, {} problems",
        parsed.len(),
        loaded.manifest.services.len(),
        problems.len() + loaded.diagnostics.len()
    );
}
