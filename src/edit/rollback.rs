//! `pier rollback`: the manifests of an earlier revision restored as one
//! commit, every image pinned to the digest that ran then, so the daemon
//! deploys exactly what ran, and keeps it until someone commits again.
//!
//! Without services named, the manifests folder becomes the revision's
//! (files added since are removed). With services named, only their
//! entries are put back, each where the service is written now, and the
//! result is checked to define them as the revision did.

use std::collections::{BTreeMap, BTreeSet};

use super::text::{self, Splice};
use super::{Changed, Editor, Refused, parse_all};
use crate::manifest::{self, RepoTree, SourceFile, Vars};
use crate::source::git::{ROLLBACK_TRAILER, short_commit as short};

/// What to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    /// The revision restored (a full commit id).
    pub to: String,
    /// The revision running when the rollback is made.
    pub from: String,
    /// Services to restore; empty: the whole manifests folder.
    pub services: Vec<String>,
    /// The reference to write for each service restored:
    /// `name:tag@sha256:…`, the digest that ran at `to`.
    pub images: BTreeMap<String, String>,
}

impl Rollback {
    /// The commit message: both revisions, the pins, and the trailer the
    /// daemon reads.
    pub fn message(&self) -> String {
        let which = if self.services.is_empty() {
            String::new()
        } else {
            format!(" {}", self.services.join(", "))
        };
        let pins: Vec<String> = self
            .images
            .iter()
            .map(|(service, image)| format!("  {service}: {image}"))
            .collect();
        format!(
            "Roll back{which} to {} (from {})\n\nImages pinned to the digests that ran at {}:\n{}\n\n{ROLLBACK_TRAILER}: {}\n",
            short(&self.to),
            short(&self.from),
            short(&self.to),
            pins.join("\n"),
            self.to
        )
    }
}

/// `image` pinned to `digest`: `name:tag@sha256:…` (a digest already in
/// `image` is replaced).
pub fn pinned_reference(image: &str, digest: &str) -> String {
    let name = image.split_once('@').map_or(image, |(name, _)| name);
    format!("{name}@{digest}")
}

/// Work out the rollback on `current` (the branch tip's manifests) from
/// `restored` (the revision's). Pure: reads and writes nothing.
pub fn plan_rollback(
    current: &[SourceFile],
    restored: &[SourceFile],
    folder: &str,
    rollback: &Rollback,
    vars: &Vars,
    tree: &dyn RepoTree,
) -> Result<Vec<Changed>, Refused> {
    let staged = if rollback.services.is_empty() {
        restored.to_vec()
    } else {
        restore_services(current, restored, &rollback.services)?
    };
    let loaded = manifest::load_and_validate(&staged, vars, tree);
    if !loaded.is_valid() {
        return Err(Refused::WouldBeInvalid(loaded.diagnostics));
    }
    let parsed = parse_all(&staged)?;
    let mut editor = Editor {
        files: &staged,
        parsed: &parsed,
        manifest: &loaded.manifest,
        splices: BTreeMap::new(),
        new_files: Vec::new(),
        folder,
    };
    for (service, image) in &rollback.images {
        editor.set_image(service, image)?;
    }
    let pinned = super::apply_changes(&staged, &editor.changed());
    let after = manifest::load_and_validate(&pinned, vars, tree);
    if !after.is_valid() {
        return Err(Refused::WouldBeInvalid(after.diagnostics));
    }
    check_restored(&after.manifest, restored, rollback, vars, tree)?;
    Ok(changes(current, &pinned))
}

/// `current` with each named service's entry replaced by its entry in
/// `restored`, re-indented to where it is written now.
fn restore_services(
    current: &[SourceFile],
    restored: &[SourceFile],
    services: &[String],
) -> Result<Vec<SourceFile>, Refused> {
    let parsed_current = parse_all(current)?;
    let parsed_restored = parse_all(restored)?;
    let mut splices: BTreeMap<usize, Vec<Splice>> = BTreeMap::new();
    for service in services {
        let now = block_of(current, &parsed_current, service)?.ok_or_else(|| {
            Refused::Impossible(format!(
                "`{service}` is not in the manifests now; roll back without naming services to restore it"
            ))
        })?;
        let then = block_of(restored, &parsed_restored, service)?.ok_or_else(|| {
            Refused::Impossible(format!(
                "`{service}` was not in the manifests at that revision"
            ))
        })?;
        let text = &restored[then.file].text[then.start..then.end];
        splices.entry(now.file).or_default().push(Splice {
            start: now.start,
            end: now.end,
            text: text::reindent(text, then.indent, now.indent),
        });
    }
    Ok(current
        .iter()
        .enumerate()
        .map(|(index, file)| SourceFile {
            path: file.path.clone(),
            text: match splices.remove(&index) {
                Some(splices) => text::apply(&file.text, splices),
                None => file.text.clone(),
            },
        })
        .collect())
}

/// Where a service's entry is written: its file, its lines, its indentation.
struct Block {
    file: usize,
    start: usize,
    end: usize,
    indent: usize,
}

fn block_of(
    files: &[SourceFile],
    parsed: &[Vec<manifest::yaml::Node>],
    service: &str,
) -> Result<Option<Block>, Refused> {
    let Some((file, scope, key, _)) = super::locate_service(parsed, service) else {
        return Ok(None);
    };
    let text = &files[file].text;
    match text::entry_lines(text, scope, key)? {
        Some((start, end, indent)) => Ok(Some(Block {
            file,
            start,
            end,
            indent,
        })),
        None => Err(Refused::Impossible(format!(
            "`{service}` is written in flow style in {}; roll back without naming services, or restore it by hand",
            files[file].path
        ))),
    }
}

/// The restored services must be defined as at the revision, images aside
/// (pinned now), and carry the pinned images.
fn check_restored(
    after: &manifest::Manifest,
    restored: &[SourceFile],
    rollback: &Rollback,
    vars: &Vars,
    tree: &dyn RepoTree,
) -> Result<(), Refused> {
    let then = manifest::load_and_validate(restored, vars, tree).manifest;
    let named: BTreeSet<&String> = if rollback.services.is_empty() {
        then.services.keys().collect()
    } else {
        rollback.services.iter().collect()
    };
    let without_image = |service: &manifest::model::Service| {
        let mut value = serde_json::to_value(service).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove("image");
        }
        value
    };
    for name in named {
        let (Some(now), Some(was)) = (after.services.get(name), then.services.get(name)) else {
            return Err(Refused::Impossible(format!(
                "could not restore `{name}` safely; restore it by hand"
            )));
        };
        if without_image(now) != without_image(was) {
            return Err(Refused::Impossible(format!(
                "restoring `{name}` where it is written now would not define it as at {}; roll back without naming services, or restore it by hand",
                short(&rollback.to)
            )));
        }
        if let Some(image) = rollback.images.get(name)
            && now.image.as_deref() != Some(image.as_str())
        {
            return Err(Refused::Impossible(format!(
                "could not pin `{name}` to {image}; edit the manifests by hand"
            )));
        }
    }
    Ok(())
}

/// The files that differ between `before` and `after`, as changes.
fn changes(before: &[SourceFile], after: &[SourceFile]) -> Vec<Changed> {
    let mut out = Vec::new();
    for file in after {
        let old = before.iter().find(|f| f.path == file.path);
        if old.is_none_or(|old| old.text != file.text) {
            out.push(Changed {
                path: file.path.clone(),
                before: old.map(|f| f.text.clone()),
                after: Some(file.text.clone()),
            });
        }
    }
    for file in before {
        if !after.iter().any(|f| f.path == file.path) {
            out.push(Changed {
                path: file.path.clone(),
                before: Some(file.text.clone()),
                after: None,
            });
        }
    }
    out
}
