//! Compose's top-level `include:`: more manifest files, named by path from
//! the file that includes them and read from the same commit.
//!
//! Every file of the manifests folder is loaded anyway, so an include
//! matters for files outside it (a `compose.yaml` at the repository root,
//! a shared file in another folder). Included files are loaded like the
//! folder's own: their services join the one stack, and a name defined in
//! two files is an error. Paths must stay inside the repository.

use std::collections::BTreeSet;

use super::diagnostic::{Diagnostic, Location};
use super::load::SourceFile;
use super::validate::{RepoTree, read_file};
use super::yaml::{self, Node, Value};

/// How deep includes may nest (a file including a file including …).
const MAX_DEPTH: usize = 8;
/// Files one repository may bring in through includes.
const MAX_INCLUDED: usize = 256;

/// `files` and every file they include, in the order found; with the
/// problems of the `include:` entries themselves.
pub fn expand(files: &[SourceFile], tree: &dyn RepoTree) -> (Vec<SourceFile>, Vec<Diagnostic>) {
    let mut expansion = Expansion {
        tree,
        loaded: files.iter().map(|f| f.path.clone()).collect(),
        added: Vec::new(),
        problems: Vec::new(),
    };
    for file in files {
        expansion.includes_of(file, 0);
    }
    let mut all = files.to_vec();
    all.extend(expansion.added);
    (all, expansion.problems)
}

struct Expansion<'t> {
    tree: &'t dyn RepoTree,
    loaded: BTreeSet<String>,
    added: Vec<SourceFile>,
    problems: Vec<Diagnostic>,
}

impl Expansion<'_> {
    fn includes_of(&mut self, file: &SourceFile, depth: usize) {
        // Most files include nothing: skip parsing them twice.
        if !file.text.contains("include") {
            return;
        }
        let Ok(documents) = yaml::parse_documents(&file.text) else {
            return; // The loader reports the syntax error.
        };
        for document in &documents {
            let Value::Map(entries) = &document.value else {
                continue;
            };
            for (key, value) in entries {
                if key.value == "include" {
                    for (at, path) in self.entries(&file.path, value) {
                        self.include(&file.path, at, &path, depth);
                    }
                }
            }
        }
    }

    /// The paths an `include:` value names, each with where it is written.
    fn entries(&mut self, file: &str, value: &Node) -> Vec<(Location, String)> {
        let located = |node: &Node| {
            let (line, column) = yaml::line_col(node);
            Location::new(file, line, column)
        };
        let Value::Seq(items) = &value.value else {
            self.problems.push(
                Diagnostic::error(located(value), "`include` takes a list of paths")
                    .key("include")
                    .help("write `include: [other/compose.yaml]`"),
            );
            return Vec::new();
        };
        let mut paths = Vec::new();
        for item in items {
            match &item.value {
                Value::Str(path) => paths.push((located(item), path.clone())),
                Value::Map(options) => {
                    for (option, setting) in options {
                        match (option.value.as_str(), &setting.value) {
                            ("path", Value::Str(path)) => paths.push((located(setting), path.clone())),
                            ("path", Value::Seq(parts)) => paths.extend(parts.iter().filter_map(
                                |part| match &part.value {
                                    Value::Str(path) => Some((located(part), path.clone())),
                                    _ => None,
                                },
                            )),
                            (other, _) => self.problems.push(
                                Diagnostic::error(
                                    located(setting),
                                    format!("`include` option `{other}` is not supported"),
                                )
                                .key("include")
                                .help("pier takes `path`: an included file's paths are relative to its own folder, and variables come from pier's environment and the manifest folder's `.env`"),
                            ),
                        }
                    }
                }
                _ => self.problems.push(
                    Diagnostic::error(located(item), "an `include` entry is a path or `{path: …}`")
                        .key("include"),
                ),
            }
        }
        paths
    }

    fn include(&mut self, from: &str, at: Location, path: &str, depth: usize) {
        let Some(resolved) = resolve(from, path) else {
            self.problems.push(
                Diagnostic::error(at, format!("`{path}` leaves the repository"))
                    .key("include")
                    .help("include files of this repository, by a path relative to the including file"),
            );
            return;
        };
        if self.loaded.contains(&resolved) {
            return; // In the manifests folder, or included already.
        }
        if depth >= MAX_DEPTH || self.loaded.len() >= MAX_INCLUDED {
            self.problems.push(
                Diagnostic::error(
                    at,
                    format!(
                        "`{path}` is included {MAX_DEPTH} levels deep, or past {MAX_INCLUDED} files"
                    ),
                )
                .key("include")
                .help("flatten the includes"),
            );
            return;
        }
        let bytes = match read_file(self.tree, &resolved) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                self.problems.push(
                    Diagnostic::error(
                        at,
                        format!("`{resolved}` is not a file in the repository at this commit"),
                    )
                    .key("include")
                    .help("commit the file, or fix the path (relative to the including file)"),
                );
                return;
            }
            Err(reason) => {
                self.problems.push(
                    Diagnostic::error(at, reason)
                        .key("include")
                        .help("the repository is damaged; fetch or clone it again"),
                );
                return;
            }
        };
        let Ok(text) = String::from_utf8(bytes) else {
            self.problems.push(
                Diagnostic::error(at, format!("`{resolved}` is not UTF-8 text")).key("include"),
            );
            return;
        };
        self.loaded.insert(resolved.clone());
        let file = SourceFile {
            path: resolved,
            text,
        };
        self.includes_of(&file, depth + 1);
        self.added.push(file);
    }
}

/// `path` from the folder of `from`, both relative to the repository root;
/// `None` when it is absolute or climbs out.
fn resolve(from: &str, path: &str) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop(); // the including file's own name
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            name => parts.push(name),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::MemoryTree;

    #[test]
    fn paths_resolve_from_the_including_file_and_never_leave_the_repository() {
        assert_eq!(
            resolve("pier/a.yml", "../compose.yaml").as_deref(),
            Some("compose.yaml")
        );
        assert_eq!(
            resolve("pier/a.yml", "./more/b.yml").as_deref(),
            Some("pier/more/b.yml")
        );
        assert_eq!(resolve("pier/a.yml", "../../x.yml"), None);
        assert_eq!(resolve("pier/a.yml", "/etc/passwd"), None);
    }

    #[test]
    fn included_files_are_added_once_and_problems_are_placed() {
        let mut tree = MemoryTree::default();
        tree.add_file(
            "compose.yaml",
            "services:\n  db: { image: postgres }\ninclude: [pier/a.yml]\n",
        );
        let files = [SourceFile {
            path: "pier/a.yml".into(),
            text: "include:\n  - ../compose.yaml\n  - { path: ../missing.yaml }\n  - ../../out.yaml\nservices:\n  web: { image: x }\n".into(),
        }];
        let (all, problems) = expand(&files, &tree);
        let paths: Vec<&str> = all.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["pier/a.yml", "compose.yaml"]);
        let shown: Vec<String> = problems
            .iter()
            .map(|p| p.to_string().lines().next().unwrap().to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "pier/a.yml:3:13: error: include: `missing.yaml` is not a file in the repository at this commit",
                "pier/a.yml:4:5: error: include: `../../out.yaml` leaves the repository",
            ]
        );
    }
}
