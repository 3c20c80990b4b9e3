//! Validate manifest files on disk (outside git), printing every problem.
//!
//! `cargo run --example check_files -- FILE...`
use pier::manifest::{self, MemoryTree, SourceFile, Vars};

fn main() {
    let files: Vec<SourceFile> = std::env::args()
        .skip(1)
        .map(|path| SourceFile {
            text: std::fs::read_to_string(&path).expect("readable file"),
            path,
        })
        .collect();
    let loaded = manifest::load_and_validate(&files, &Vars::new(), &MemoryTree::default());
    for d in &loaded.diagnostics {
        println!("{d}");
    }
    println!(
        "{} services, valid: {}",
        loaded.manifest.services.len(),
        loaded.is_valid()
    );
}
