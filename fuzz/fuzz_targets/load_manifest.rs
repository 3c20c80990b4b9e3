//! Arbitrary bytes as a manifest file: loading and validation must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pier::manifest::{self, MemoryTree, SourceFile, Vars};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let files = [
        SourceFile { path: "pier/fuzz.yml".into(), text },
        SourceFile {
            path: "pier/nodes.yml".into(),
            text: "nodes:\n  a: { endpoint: \"tcp://h:2375\", tags: [web] }\n".into(),
        },
    ];
    let vars = Vars::from([("SET".to_string(), "1".to_string())]);
    let tree = MemoryTree::with_files(["app/Dockerfile", "pier/.env"]);
    let loaded = manifest::load_and_validate(&files, &vars, &tree);
    // Every diagnostic renders, and validity agrees with the errors listed.
    for diagnostic in &loaded.diagnostics {
        let _ = diagnostic.to_string();
    }
    assert_eq!(loaded.is_valid(), !loaded.diagnostics.iter().any(|d| d.is_error()));
});
