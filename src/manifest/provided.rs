//! Compose's `configs` and `secrets`: the contents of every entry a
//! service names, read once the manifests are loaded: a file of the
//! commit (opened if SOPS-encrypted, as `Decrypt` allows), inline
//! `content`, or a variable of pier's environment that `--allow-env`
//! admits. A name a service uses that no top-level entry declares, a
//! missing file or an unset variable is an error at the service's entry.
//!
//! Each file's contents are fingerprinted with an HMAC keyed by the age
//! key (when one is given): the replica's fingerprint changes with them,
//! and reveals nothing to whoever can read container labels.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::diagnostic::Diagnostic;
use super::encrypted::{self, Decrypt, Read};
use super::interpolate::Vars;
use super::model::{Manifest, Origin, ProvidedFile, ProvidedKind, ProvidedSource};
use super::validate::RepoTree;

/// Lines shorter than this are not masked on their own: masking every
/// `a` or `on` in the logs would hide more than it protects.
const MIN_MASKED_LEN: usize = 4;

/// Fill in every service's `provided` files.
pub fn merge(
    manifest: &mut Manifest,
    tree: &dyn RepoTree,
    vars: &Vars,
    decrypt: Decrypt<'_>,
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let mut secrets = Vec::new();
    let sources = manifest.provided.clone();
    let fingerprint_key = match decrypt {
        Decrypt::With(keys) => keys.fingerprint_key(),
        Decrypt::Never => None,
    };
    // Each entry is read (and opened, and hashed) once, however many
    // services use it.
    let mut read: BTreeMap<(ProvidedKind, String), Result<Hashed, Problem>> = BTreeMap::new();
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
            let entry = read
                .entry((reference.kind, reference.source.clone()))
                .or_insert_with(|| {
                    let what = format!("{key} `{}`", reference.source);
                    let (contents, notice) = contents(source, tree, vars, decrypt, &what)?;
                    problems.extend(notice);
                    if reference.kind == ProvidedKind::Secret {
                        secrets.extend(maskable(&contents));
                    }
                    let digest = digest(&contents, fingerprint_key.as_ref());
                    Ok((contents, digest))
                });
            let (contents, digest) = match entry {
                Ok(read) => read.clone(),
                Err(problem) => {
                    problems.push(failed(problem.message.clone()).help(problem.help.clone()));
                    continue;
                }
            };
            files.push(ProvidedFile {
                kind: reference.kind,
                name: reference.source.clone(),
                target: reference.target.clone(),
                digest,
                contents,
                uid: reference.uid,
                gid: reference.gid,
                mode: reference.mode,
            });
        }
        service.provided = files;
    }
    manifest.secret_values.extend(secrets);
    problems
}

/// An entry's contents and their keyed digest.
type Hashed = (Vec<u8>, String);

#[derive(Clone)]
struct Problem {
    message: String,
    help: String,
}

/// The contents of one entry, and a notice when they stay sealed.
fn contents(
    source: &ProvidedSource,
    tree: &dyn RepoTree,
    vars: &Vars,
    decrypt: Decrypt<'_>,
    what: &str,
) -> Result<(Vec<u8>, Option<Diagnostic>), Problem> {
    match &source.origin {
        Origin::Content(text) => Ok((text.clone().into_bytes(), None)),
        Origin::File(path) => match encrypted::read(tree, path, decrypt) {
            Ok(Read::Plain(bytes)) => Ok((bytes, None)),
            Ok(Read::Opened(opened)) => Ok((opened.plaintext(), None)),
            Ok(Read::Sealed(bytes)) => Ok((bytes, Some(encrypted::sealed_notice(path, what)))),
            Ok(Read::Missing) => Err(Problem {
                message: format!("`{path}` ({what}) does not exist in the repository at this commit"),
                help: "commit the file, or correct the path (it is relative to the manifest file)"
                    .into(),
            }),
            Err(reason) => Err(Problem {
                message: reason,
                help: "give pier the age key the file is encrypted to (PIER_AGE_KEY_FILE), or fetch the repository again if it is damaged".into(),
            }),
        },
        Origin::Environment(name) => match vars.get(name) {
            Some(value) => Ok((value.clone().into_bytes(), None)),
            None => Err(Problem {
                message: format!(
                    "`{name}` ({what}) is not set in pier's environment, or not admitted"
                ),
                help: "set it where pier runs, and admit it with --allow-env".into(),
            }),
        },
    }
}

/// The parts of a secret's contents to mask: the whole (trimmed) and
/// each line long enough to mean something.
fn maskable(contents: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(contents);
    let mut out = vec![text.trim().to_string()];
    out.extend(
        text.lines()
            .map(str::trim)
            .filter(|line| line.chars().count() >= MIN_MASKED_LEN)
            .map(str::to_string),
    );
    out.retain(|v| !v.is_empty());
    out
}

/// HMAC-SHA-256 of the contents under `key`; with no key (no age key is
/// given, so no SOPS file was opened) a plain SHA-256.
fn digest(contents: &[u8], key: Option<&[u8; 32]>) -> String {
    let bytes: Vec<u8> = match key {
        Some(key) => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(contents);
            mac.finalize().into_bytes().to_vec()
        }
        None => {
            use sha2::Digest;
            Sha256::digest(contents).to_vec()
        }
    };
    hex::encode(&bytes[..16])
}
