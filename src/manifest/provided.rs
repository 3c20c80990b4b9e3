//! Compose's `configs` and `secrets`: the contents of every entry a
//! service names, read once the manifests are loaded: a file of the
//! commit, inline `content`, or a variable of pier's environment that
//! `--allow-env` admits. A name a service uses that no top-level entry
//! declares, a missing file or an unset variable is an error at the
//! service's entry.

use super::diagnostic::Diagnostic;
use super::interpolate::Vars;
use super::model::{Manifest, Origin, ProvidedFile, ProvidedKind};
use super::validate::RepoTree;

/// Fill in every service's `provided` files.
pub fn merge(manifest: &mut Manifest, tree: &dyn RepoTree, vars: &Vars) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let sources = manifest.provided.clone();
    for service in manifest.services.values_mut() {
        let mut files = Vec::new();
        for reference in &service.provided_refs {
            let key = reference.kind.key();
            let at = service.location_of(key).clone();
            let failed = |message: String| {
                Diagnostic::error(at.clone(), message)
                    .key(format!("services.{}.{key}", service.name))
            };
            let Some(source) = sources.get(&(reference.kind, reference.source.clone())) else {
                problems.push(
                    failed(format!("no top-level `{key}` entry `{}`", reference.source))
                        .help(format!("declare it under `{key}:` at the top level, with `file`, `content` or `environment`")),
                );
                continue;
            };
            let contents = match &source.origin {
                Origin::Content(text) => text.clone().into_bytes(),
                Origin::File(path) => match super::validate::read_file(tree, path) {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => {
                        problems.push(failed(format!(
                            "`{path}` ({key} `{}`) does not exist in the repository at this commit",
                            reference.source
                        )));
                        continue;
                    }
                    Err(reason) => {
                        problems.push(failed(reason));
                        continue;
                    }
                },
                Origin::Environment(name) => match vars.get(name) {
                    Some(value) => value.clone().into_bytes(),
                    None => {
                        problems.push(
                            failed(format!(
                                "`{name}` ({key} `{}`) is not set in pier's environment, or not admitted",
                                reference.source
                            ))
                            .help("set it where pier runs, and admit it with --allow-env"),
                        );
                        continue;
                    }
                },
            };
            files.push(ProvidedFile {
                target: reference.target.clone(),
                contents,
                uid: reference.uid,
                gid: reference.gid,
                mode: reference.mode,
                secret: reference.kind == ProvidedKind::Secret,
            });
        }
        service.provided = files;
    }
    problems
}
