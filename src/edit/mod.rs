//! Changing the manifests the way a user would: `pier scale`, `pier node`,
//! `pier set`. An edit finds where a value is written (in whichever file,
//! under whichever key form) and changes only those bytes; the result is
//! validated, and checked to mean what was asked, before anything is
//! committed ([`commit`] does the git side).
//!
//! A value that reaches a service through a YAML anchor or merge key is not
//! edited at its anchor (that would change every service sharing it): the
//! service gets its own key instead.

mod check;
pub mod commit;
pub mod rollback;
pub mod text;

use std::collections::BTreeMap;

use crate::manifest::model::{Manifest, Strategy};
use crate::manifest::yaml::{self, Key, Node, Value};
use crate::manifest::{self, Diagnostic, RepoTree, SourceFile, Vars};
use text::{EditError, Splice};

/// One change a user asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Scale(Vec<(String, u32)>),
    NodeAdd {
        name: String,
        endpoint: String,
        tags: Vec<String>,
    },
    NodeRemove(String),
    NodeTag {
        name: String,
        add: Vec<String>,
        remove: Vec<String>,
    },
    SetImage {
        service: String,
        image: String,
    },
    /// `None` removes the variable.
    SetEnv {
        service: String,
        vars: Vec<(String, Option<String>)>,
    },
    /// Pin the service's image reference to a digest (`name:tag@sha256:…`).
    Pin {
        service: String,
        digest: String,
    },
    /// Drop the digest from the service's image reference.
    Unpin(String),
}

impl Edit {
    /// A commit message saying what the edit does.
    pub fn message(&self) -> String {
        match self {
            Edit::Scale(targets) => {
                let list: Vec<String> = targets.iter().map(|(s, n)| format!("{s}={n}")).collect();
                format!("Scale {}", list.join(", "))
            }
            Edit::NodeAdd { name, .. } => format!("Add node {name}"),
            Edit::NodeRemove(name) => format!("Remove node {name}"),
            Edit::NodeTag { name, add, remove } => {
                let mut changes: Vec<String> = add.iter().map(|t| format!("+{t}")).collect();
                changes.extend(remove.iter().map(|t| format!("-{t}")));
                format!("Tag node {name} {}", changes.join(" "))
            }
            Edit::SetImage { service, image } => format!("Set {service} image to {image}"),
            Edit::SetEnv { service, vars } => {
                let list: Vec<String> = vars
                    .iter()
                    .map(|(k, v)| match v {
                        Some(_) => format!("{k}=…"),
                        None => format!("{k}-"),
                    })
                    .collect();
                format!("Set {service} environment {}", list.join(" "))
            }
            Edit::Pin { service, digest } => format!("Pin {service} to {digest}"),
            Edit::Unpin(service) => format!("Unpin {service}: follow its tag again"),
        }
    }
}

/// Why an edit was refused. Nothing is committed.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the manifests at this commit are invalid already; fix them first")]
    AlreadyInvalid(Vec<Diagnostic>),
    #[error("{0}")]
    Impossible(String),
    #[error("the edit would make the manifests invalid; nothing was committed")]
    WouldBeInvalid(Vec<Diagnostic>),
}

impl From<EditError> for Refused {
    fn from(e: EditError) -> Self {
        Refused::Impossible(e.0)
    }
}

/// A file and its text after the edit (`None`: the edit removes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub path: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// Work out the edit on `files`; check that the result is valid and means
/// what was asked. Pure: reads and writes nothing.
pub fn plan_edit(
    files: &[SourceFile],
    folder: &str,
    edit: &Edit,
    vars: &Vars,
    tree: &dyn RepoTree,
) -> Result<Vec<Changed>, Refused> {
    let before = manifest::load_and_validate(files, vars, tree);
    if !before.is_valid() {
        return Err(Refused::AlreadyInvalid(before.diagnostics));
    }
    let parsed = parse_all(files)?;
    let mut editor = Editor {
        files,
        parsed: &parsed,
        manifest: &before.manifest,
        splices: BTreeMap::new(),
        new_files: Vec::new(),
        folder,
    };
    editor.run(edit)?;
    let changed = editor.changed();
    let after = manifest::load_and_validate(&apply_changes(files, &changed), vars, tree);
    if !after.is_valid() {
        return Err(Refused::WouldBeInvalid(after.diagnostics));
    }
    check::check_effect(edit, &after.manifest)?;
    Ok(changed)
}

/// `files` with `changed` made: texts replaced, files added and removed.
pub fn apply_changes(files: &[SourceFile], changed: &[Changed]) -> Vec<SourceFile> {
    let mut out: Vec<SourceFile> = files
        .iter()
        .filter_map(|f| match changed.iter().find(|c| c.path == f.path) {
            Some(c) => c.after.clone().map(|text| SourceFile {
                path: f.path.clone(),
                text,
            }),
            None => Some(f.clone()),
        })
        .collect();
    out.extend(
        changed
            .iter()
            .filter(|c| c.before.is_none())
            .filter_map(|c| {
                c.after.clone().map(|text| SourceFile {
                    path: c.path.clone(),
                    text,
                })
            }),
    );
    out
}

fn parse_all(files: &[SourceFile]) -> Result<Vec<Vec<Node>>, Refused> {
    files
        .iter()
        .map(|f| {
            yaml::parse_documents(&f.text)
                .map_err(|e| Refused::Impossible(format!("{}: {e}", f.path)))
        })
        .collect()
}

/// Where service `name` is written: its file, the mapping that holds it
/// (`services:` in pier's format, the document in a Tutum stackfile), its
/// key and its value.
fn locate_service<'n>(
    parsed: &'n [Vec<Node>],
    name: &str,
) -> Option<(usize, &'n Node, &'n Key, &'n Node)> {
    for (file, documents) in parsed.iter().enumerate() {
        for document in documents {
            let pier_format = entries(document)
                .iter()
                .any(|(k, _)| matches!(k.value.as_str(), "services" | "nodes" | "pipeline"));
            let scope = if pier_format {
                match lookup(document, "services") {
                    Some((_, services)) => services,
                    None => continue,
                }
            } else {
                document
            };
            if let Some((key, value)) = lookup(scope, name) {
                return Some((file, scope, key, value));
            }
        }
    }
    None
}

struct Editor<'a> {
    files: &'a [SourceFile],
    parsed: &'a [Vec<Node>],
    manifest: &'a Manifest,
    /// Splices per file index.
    splices: BTreeMap<usize, Vec<Splice>>,
    new_files: Vec<(String, String)>,
    folder: &'a str,
}

/// A mapping entry found in a file: which file, its key and its value.
struct Found<'a> {
    file: usize,
    key: &'a Key,
    value: &'a Node,
}

fn entries(node: &Node) -> &[(Key, Node)] {
    match &node.value {
        Value::Map(entries) => entries,
        _ => &[],
    }
}

fn lookup<'n>(node: &'n Node, key: &str) -> Option<(&'n Key, &'n Node)> {
    // Own entries win over merged ones, as the loader reads them.
    entries(node)
        .iter()
        .rev()
        .find(|(k, _)| k.value == key)
        .map(|(k, v)| (k, v))
}

impl<'a> Editor<'a> {
    fn text(&self, file: usize) -> &'a str {
        &self.files[file].text
    }

    fn splice(&mut self, file: usize, splice: Splice) {
        self.splices.entry(file).or_default().push(splice);
    }

    fn changed(&self) -> Vec<Changed> {
        let mut out: Vec<Changed> = self
            .splices
            .iter()
            .map(|(file, splices)| Changed {
                path: self.files[*file].path.clone(),
                before: Some(self.files[*file].text.clone()),
                after: Some(text::apply(&self.files[*file].text, splices.clone())),
            })
            .collect();
        out.extend(self.new_files.iter().map(|(path, text)| Changed {
            path: path.clone(),
            before: None,
            after: Some(text.clone()),
        }));
        out
    }

    fn run(&mut self, edit: &Edit) -> Result<(), Refused> {
        match edit {
            Edit::Scale(targets) => {
                for (service, count) in targets {
                    self.scale(service, *count)?;
                }
                Ok(())
            }
            Edit::SetImage { service, image } => self.set_image(service, image),
            Edit::Pin { service, digest } => {
                let image = self.image_of(service)?;
                self.set_image(service, &rollback::pinned_reference(&image, digest))
            }
            Edit::Unpin(service) => {
                let image = self.image_of(service)?;
                match image.split_once('@') {
                    Some((name, _)) => self.set_image(service, name),
                    None => Err(Refused::Impossible(format!(
                        "`{service}` is not pinned: its image is `{image}`"
                    ))),
                }
            }
            Edit::SetEnv { service, vars } => {
                for (key, value) in vars {
                    self.set_env(service, key, value.as_deref())?;
                }
                Ok(())
            }
            Edit::NodeAdd {
                name,
                endpoint,
                tags,
            } => self.node_add(name, endpoint, tags),
            Edit::NodeRemove(name) => self.node_remove(name),
            Edit::NodeTag { name, add, remove } => self.node_tag(name, add, remove),
        }
    }

    /// The file and mapping entry that declare service `name`.
    fn service(&self, name: &str) -> Result<Found<'a>, Refused> {
        if let Some((file, _, key, value)) = locate_service(self.parsed, name) {
            return Ok(Found { file, key, value });
        }
        if let Some(service) = self.manifest.services.get(name) {
            return Err(Refused::Impossible(format!(
                "service `{name}` is written in {}, which the manifests include; pier edits the manifests folder's own files: change it there by hand",
                service.location.file
            )));
        }
        let known: Vec<&str> = self.manifest.services.keys().map(String::as_str).collect();
        Err(Refused::Impossible(format!(
            "no service `{name}` in the manifests{}",
            match manifest::diagnostic::did_you_mean(name, known.iter().copied()) {
                Some(guess) => format!("; did you mean `{guess}`?"),
                None => String::new(),
            }
        )))
    }

    fn node(&self, name: &str) -> Result<Found<'a>, Refused> {
        for (file, documents) in self.parsed.iter().enumerate() {
            for document in documents {
                if let Some((_, nodes)) = lookup(document, "nodes")
                    && let Some((key, value)) = lookup(nodes, name)
                {
                    return Ok(Found { file, key, value });
                }
            }
        }
        Err(Refused::Impossible(format!(
            "no node `{name}` in the manifests"
        )))
    }

    /// Set `key` of a service (or node) mapping to a scalar: in place when
    /// the service writes it itself, as a new own key otherwise.
    fn set_own_scalar(
        &mut self,
        found: &Found<'a>,
        key: &str,
        value: &str,
        raw: bool,
    ) -> Result<(), Refused> {
        let text = self.text(found.file);
        if let Some((existing_key, existing)) = lookup(found.value, key)
            && text::is_own(existing_key)
            && text::is_own(existing)
            && !matches!(existing.value, Value::Map(_) | Value::Seq(_))
        {
            let splice = if raw {
                let (start, end) = text::require_span(existing)?;
                Splice {
                    start,
                    end,
                    text: value.to_string(),
                }
            } else {
                text::set_scalar(text, existing, value)?
            };
            self.splice(found.file, splice);
            return Ok(());
        }
        let rendered = if raw {
            value.to_string()
        } else {
            text::scalar(value)
        };
        let splice = text::insert_entry(text, found.key, found.value, key, &rendered)?;
        self.splice(found.file, splice);
        Ok(())
    }

    fn scale(&mut self, service: &str, count: u32) -> Result<(), Refused> {
        if let Some(s) = self.manifest.services.get(service)
            && s.strategy == Strategy::EveryNode
        {
            return Err(Refused::Impossible(format!(
                "`{service}` uses deployment_strategy every_node: it runs one container on every matching node, so its count follows the nodes (tag or add nodes instead)"
            )));
        }
        let found = self.service(service)?;
        // Change the count where it is written: `deploy.replicas` when the
        // service uses it, `target_num_containers` otherwise.
        if let Some((deploy_key, deploy)) = lookup(found.value, "deploy")
            && text::is_own(deploy_key)
            && text::is_own(deploy)
            && lookup(deploy, "replicas").is_some()
        {
            let deploy_found = Found {
                file: found.file,
                key: deploy_key,
                value: deploy,
            };
            return self.set_own_scalar(&deploy_found, "replicas", &count.to_string(), true);
        }
        self.set_own_scalar(&found, "target_num_containers", &count.to_string(), true)
    }

    /// The image reference a service names now.
    fn image_of(&self, service: &str) -> Result<String, Refused> {
        self.service(service)?;
        self.manifest
            .services
            .get(service)
            .and_then(|s| s.image.clone())
            .ok_or_else(|| {
                Refused::Impossible(format!(
                    "`{service}` has no `image` to pin (a service that is only built names the image it pushes in `image`)"
                ))
            })
    }

    fn set_image(&mut self, service: &str, image: &str) -> Result<(), Refused> {
        let found = self.service(service)?;
        self.set_own_scalar(&found, "image", image, false)
    }

    fn set_env(&mut self, service: &str, key: &str, value: Option<&str>) -> Result<(), Refused> {
        let found = self.service(service)?;
        let text = self.text(found.file);
        let Some((env_key, env)) = lookup(found.value, "environment") else {
            let Some(value) = value else {
                return Ok(()); // Removing what is not there changes nothing.
            };
            let entry = format!("{{ {key}: {} }}", text::double_quoted(value));
            let splice = text::insert_entry(text, found.key, found.value, "environment", &entry)?;
            self.splice(found.file, splice);
            return Ok(());
        };
        if !text::is_own(env_key) || !text::is_own(env) {
            return Err(Refused::Impossible(format!(
                "`{service}` takes its environment from a YAML anchor shared with other services; change it there by hand"
            )));
        }
        let env_found = Found {
            file: found.file,
            key: env_key,
            value: env,
        };
        match &env.value {
            Value::Map(_) => match (lookup(env, key), value) {
                (Some((_, old)), Some(value))
                    if !matches!(old.value, Value::Null)
                        || text::span(old).is_some_and(|(s, e)| e > s) =>
                {
                    self.splice(found.file, text::set_scalar(text, old, value)?);
                }
                (Some((k, _)), Some(value)) => {
                    // `KEY:` with no value: rewrite the entry.
                    let (start, end) = text::require_span(k)?;
                    let rest = &text[end..];
                    let colon = rest.find(':').map(|i| end + i + 1).unwrap_or(end);
                    self.splice(
                        found.file,
                        Splice {
                            start,
                            end: colon,
                            text: format!("{key}: {}", text::double_quoted(value)),
                        },
                    );
                }
                (Some((k, old)), None) => {
                    self.splice(found.file, text::remove_entry(text, env, k, old)?);
                }
                (None, Some(value)) => {
                    let splice =
                        text::insert_entry(text, env_key, env, key, &text::double_quoted(value))?;
                    self.splice(found.file, splice);
                }
                (None, None) => {}
            },
            Value::Seq(items) => {
                let existing = items.iter().find(|item| match &item.value {
                    Value::Str(s) => s.split_once('=').map_or(s.as_str(), |(k, _)| k) == key,
                    _ => false,
                });
                match (existing, value) {
                    (Some(item), Some(value)) => {
                        self.splice(
                            found.file,
                            text::set_scalar(text, item, &format!("{key}={value}"))?,
                        );
                    }
                    (Some(item), None) => {
                        self.splice(found.file, text::remove_item(text, env, item)?);
                    }
                    (None, Some(value)) => {
                        let item = text::scalar(&format!("{key}={value}"));
                        let splice =
                            text::append_item(text, env_found.key, env_found.value, &item)?;
                        self.splice(found.file, splice);
                    }
                    (None, None) => {}
                }
            }
            _ => {
                return Err(Refused::Impossible(format!(
                    "`{service}`'s environment is neither a mapping nor a list"
                )));
            }
        }
        Ok(())
    }

    fn node_add(&mut self, name: &str, endpoint: &str, tags: &[String]) -> Result<(), Refused> {
        if self.manifest.nodes.contains_key(name) {
            return Err(Refused::Impossible(format!("node `{name}` exists already")));
        }
        let mut value = format!("{{ endpoint: {}", text::double_quoted(endpoint));
        if !tags.is_empty() {
            let tags: Vec<String> = tags.iter().map(|t| text::scalar(t)).collect();
            value.push_str(&format!(", tags: [{}]", tags.join(", ")));
        }
        value.push_str(" }");
        for (file, documents) in self.parsed.iter().enumerate() {
            for document in documents {
                if let Some((nodes_key, nodes)) = lookup(document, "nodes") {
                    let text = self.text(file);
                    let splice = match &nodes.value {
                        Value::Map(_) => text::insert_entry(text, nodes_key, nodes, name, &value)?,
                        // `nodes:` with nothing under it yet.
                        _ => {
                            let (_, end) = text::require_span(nodes_key)?;
                            let line_end = text[end..].find('\n').map_or(text.len(), |i| end + i);
                            Splice {
                                start: line_end,
                                end: line_end,
                                text: format!("\n  {name}: {value}"),
                            }
                        }
                    };
                    self.splice(file, splice);
                    return Ok(());
                }
            }
        }
        // No file declares nodes yet: a file of their own keeps a Tutum-format
        // file from turning into a pier-format one.
        let folder = self.folder.trim_matches('/');
        let path = if folder.is_empty() || folder == "." {
            "nodes.yml".to_string()
        } else {
            format!("{folder}/nodes.yml")
        };
        if self.files.iter().any(|f| f.path == path) {
            return Err(Refused::Impossible(format!(
                "{path} exists but declares no nodes; add the node by hand"
            )));
        }
        self.new_files
            .push((path, format!("nodes:\n  {name}: {value}\n")));
        Ok(())
    }

    fn node_remove(&mut self, name: &str) -> Result<(), Refused> {
        let found = self.node(name)?;
        for (file, documents) in self.parsed.iter().enumerate() {
            for document in documents {
                if let Some((_, nodes)) = lookup(document, "nodes")
                    && file == found.file
                    && entries(nodes)
                        .iter()
                        .any(|(k, _)| std::ptr::eq(k, found.key))
                {
                    let splice =
                        text::remove_entry(self.text(file), nodes, found.key, found.value)?;
                    self.splice(file, splice);
                    return Ok(());
                }
            }
        }
        Err(Refused::Impossible(format!(
            "node `{name}` could not be located"
        )))
    }

    fn node_tag(&mut self, name: &str, add: &[String], remove: &[String]) -> Result<(), Refused> {
        let found = self.node(name)?;
        let text = self.text(found.file);
        let Some((tags_key, tags)) = lookup(found.value, "tags") else {
            if add.is_empty() {
                return Ok(());
            }
            let list: Vec<String> = add.iter().map(|t| text::scalar(t)).collect();
            let splice = text::insert_entry(
                text,
                found.key,
                found.value,
                "tags",
                &format!("[{}]", list.join(", ")),
            )?;
            self.splice(found.file, splice);
            return Ok(());
        };
        let Value::Seq(items) = &tags.value else {
            return Err(Refused::Impossible(format!(
                "node `{name}` has tags that are not a list"
            )));
        };
        let has = |tag: &str| {
            items
                .iter()
                .any(|i| i.value.scalar_text().as_deref() == Some(tag))
        };
        if text::is_flow(text, tags) {
            // A one-line list is rewritten whole, in the same style.
            let mut list: Vec<String> =
                items.iter().filter_map(|i| i.value.scalar_text()).collect();
            list.retain(|t| !remove.contains(t));
            list.extend(add.iter().filter(|t| !has(t)).cloned());
            let rendered: Vec<String> = list.iter().map(|t| text::scalar(t)).collect();
            let (start, _) = text::require_span(tags)?;
            let end = text::flow_close(text, start).ok_or_else(|| {
                Refused::Impossible(format!("node `{name}`: its tags list is not closed"))
            })?;
            self.splice(
                found.file,
                Splice {
                    start,
                    end: end + 1,
                    text: format!("[{}]", rendered.join(", ")),
                },
            );
            return Ok(());
        }
        let removed: Vec<&Node> = items
            .iter()
            .filter(|i| i.value.scalar_text().is_some_and(|t| remove.contains(&t)))
            .collect();
        let added: Vec<&String> = add.iter().filter(|t| !has(t)).collect();
        if removed.len() == items.len() && !added.is_empty() {
            return Err(Refused::Impossible(format!(
                "node `{name}`: replacing every tag of a block list at once; edit it by hand"
            )));
        }
        for item in removed {
            self.splice(found.file, text::remove_item(text, tags, item)?);
        }
        for tag in added {
            self.splice(
                found.file,
                text::append_item(text, tags_key, tags, &text::scalar(tag))?,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
