//! Loading: manifest files → one [`Manifest`] plus every problem found.
//!
//! Each file is parsed into a located tree, interpolated, checked key by key
//! (unknown, unsupported, extension), typed with serde and normalised. A
//! problem in one service never hides the problems of another: the loader
//! keeps going and reports them all.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;

use super::diagnostic::{Diagnostic, Location, did_you_mean};
use super::here::find;
pub use super::here::{Here, Seg, i, k};
use super::interpolate::{Vars, interpolate_all};
use super::keys::{self, is_extension, unsupported_reason};
use super::model::Manifest;
use super::normalize;
use super::spec::{NodeSpec, PipelineSpec, ServiceSpec, VolumeDeclSpec};
use super::yaml::{self, Key, Node, Value, line_col};

mod declarations;
mod merge;

#[allow(unused_imports)]
use merge::*;

/// More services than this across all files are refused.
pub const MAX_SERVICES: usize = 10_000;

/// One manifest file: its path in the repository and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// The manifests and every problem found in them. Valid when no diagnostic is an error.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub manifest: Manifest,
    pub diagnostics: Vec<Diagnostic>,
    /// Where a value holds an unset variable: a problem found there comes
    /// from the unknown value, so it is not reported.
    pub unknown_at: BTreeSet<Location>,
    /// The variables the files (included ones too) interpolate, by name,
    /// so the values they bring in can be masked.
    pub interpolated: BTreeSet<String>,
    /// Every file read, the included ones after the manifests folder's.
    pub files: Vec<String>,
    /// Where `networks.default` is declared, if it is.
    pub network_at: Option<Location>,
    /// Where each top-level volume and network is declared, by
    /// `volumes.<name>` and `networks.<name>`: what the container policy
    /// points at when it refuses one.
    pub declared_at: BTreeMap<String, Location>,
}

impl Loaded {
    pub fn is_valid(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Add problems found after interpolation, leaving out those at a value
    /// whose variables were unset.
    pub fn add_checked(&mut self, problems: impl IntoIterator<Item = Diagnostic>) {
        let unknown_at = &self.unknown_at;
        self.diagnostics.extend(
            problems
                .into_iter()
                .filter(|d| !unknown_at.contains(&d.location)),
        );
    }
}

/// Load and merge manifest files. Problems are collected, not returned early.
pub fn load(files: &[SourceFile], vars: &Vars) -> Loaded {
    let mut merged = Merge::default();
    for file in on_all_cores(files, |file| load_file(file, vars)) {
        merged.add(file);
    }
    let mut loaded = merged.loaded;
    // A block merged into several services reports its problem once.
    loaded
        .diagnostics
        .sort_by(|a, b| a.location.cmp(&b.location).then(a.message.cmp(&b.message)));
    loaded.diagnostics.dedup();
    loaded
}

/// One file on its own: everything but the checks across files.
fn load_file(file: &SourceFile, vars: &Vars) -> Loaded {
    let mut loader = Loader {
        vars,
        loaded: Loaded::default(),
        pipeline_at: None,
    };
    loader.file(file, yaml::parse_documents(&file.text));
    loader.loaded
}

/// Run `work` on every file, on all cores: files are independent until
/// their services are merged, and parsing them is most of the work.
fn on_all_cores<T: Send>(files: &[SourceFile], work: impl Fn(&SourceFile) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len().max(1));
    if threads <= 1 {
        return files.iter().map(&work).collect();
    }
    let chunk = files.len().div_ceil(threads);
    let work = &work;
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(work).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a loader thread never panics"))
            .collect()
    })
}

/// Files merged in path order, with the checks that span files: names
/// defined twice, one pipeline, the service limit.
#[derive(Default)]
struct Merge {
    loaded: Loaded,
    services_seen: usize,
}

struct Loader<'v> {
    vars: &'v Vars,
    loaded: Loaded,
    pipeline_at: Option<Location>,
}

impl Loader<'_> {
    fn push(&mut self, diagnostic: Diagnostic) {
        self.loaded.diagnostics.push(diagnostic);
    }

    fn file(&mut self, file: &SourceFile, parsed: Result<Vec<Node>, yaml::YamlError>) {
        let documents = match parsed {
            Ok(documents) => documents,
            Err(e) => {
                let help = if e.message.contains("limit") {
                    "the file is over one of pier's limits (1 MiB, nesting depth 64, 50,000 nodes from YAML aliases); split or simplify it; nothing from this file was loaded"
                } else {
                    "fix the YAML syntax; nothing from this file was loaded"
                };
                self.push(
                    Diagnostic::error(Location::new(&file.path, e.line, e.column), e.message)
                        .help(help),
                );
                return;
            }
        };
        for mut document in documents {
            for (first, again) in yaml::duplicate_keys(&document) {
                let (line, column) = line_col(again);
                let (first_line, first_column) = line_col(first);
                self.push(
                    Diagnostic::error(
                        Location::new(&file.path, line, column),
                        format!("key `{}` is written twice in one mapping", again.value),
                    )
                    .related(Location::new(&file.path, first_line, first_column))
                    .help("YAML keeps only the last one; remove the one you do not mean"),
                );
            }
            // Unset variables are reported and the file is checked on, so
            // one run shows every problem; see `Loaded::unknown_at`.
            let mut interpolated = Interpolated::default();
            interpolate_tree(&mut document, self.vars, &file.path, &mut interpolated);
            let before = self.loaded.diagnostics.len();
            self.document(&file.path, &document);
            let found = self.loaded.diagnostics.split_off(before);
            self.loaded.unknown_at.extend(interpolated.unknown_at);
            self.loaded.add_checked(found);
            self.loaded.diagnostics.extend(interpolated.problems);
        }
    }

    fn document(&mut self, file: &str, document: &Node) {
        let Value::Map(entries) = &document.value else {
            let (line, column) = line_col(document);
            self.push(
                Diagnostic::error(
                    Location::new(file, line, column),
                    format!(
                        "a manifest file holds a mapping at the top level, found {}",
                        document.value.kind()
                    ),
                )
                .help("start with `services:`, `nodes:` or `pipeline:`"),
            );
            return;
        };
        let pier_format = entries
            .iter()
            .any(|(key, _)| matches!(key.value.as_str(), "services" | "nodes" | "pipeline"));
        if !pier_format {
            // A Tutum stackfile (or Compose v1): every top-level key is a service.
            for (key, value) in entries {
                if !is_extension(&key.value) {
                    self.service(file, key, value);
                }
            }
            return;
        }
        for (key, value) in entries {
            match key.value.as_str() {
                name if is_extension(name) => {}
                // Followed before loading: see `include::expand`.
                "version" | "include" => {}
                "services" => self.each_entry(file, key, value, Self::service),
                "nodes" => self.each_entry(file, key, value, Self::node),
                "pipeline" => self.pipeline(file, key, value),
                "volumes" => self.volumes(file, value),
                "configs" => {
                    self.provided(file, value, crate::manifest::model::ProvidedKind::Config)
                }
                "secrets" => {
                    self.provided(file, value, crate::manifest::model::ProvidedKind::Secret)
                }
                "networks" => self.networks(file, value),
                "router" => self.router(file, key, value),
                other => self.push(unknown_key(
                    file,
                    key,
                    "the top level",
                    other,
                    keys::UNSUPPORTED_FILE_KEYS,
                    keys::FILE_KEYS.iter().map(String::as_str),
                )),
            }
        }
    }

    fn each_entry(
        &mut self,
        file: &str,
        key: &Key,
        value: &Node,
        mut each: impl FnMut(&mut Self, &str, &Key, &Node),
    ) {
        match &value.value {
            Value::Map(entries) => {
                for (name, body) in entries {
                    if !is_extension(&name.value) {
                        each(self, file, name, body);
                    }
                }
            }
            Value::Null => {}
            other => {
                let (line, column) = line_col(value);
                self.push(
                    Diagnostic::error(
                        Location::new(file, line, column),
                        format!(
                            "expected a mapping of names to settings, found {}",
                            other.kind()
                        ),
                    )
                    .key(key.value.clone()),
                );
            }
        }
    }

    fn service(&mut self, file: &str, key: &Key, body: &Node) {
        let name = key.value.as_str();
        let (line, column) = line_col(key);
        let location = Location::new(file, line, column);
        if let Some(first) = self.loaded.manifest.services.get(name) {
            let first = first.location.clone();
            self.push(defined_twice("service", name, location, first));
            return;
        }
        let here = Here {
            file,
            node: body,
            prefix: format!("services.{name}"),
        };
        let Some(spec) = self.typed_entity::<ServiceSpec>(
            &here,
            "service",
            &keys::SERVICE_KEYS,
            keys::UNSUPPORTED_SERVICE_KEYS,
            keys::NO_EFFECT_SERVICE_KEYS,
        ) else {
            // Keep the name known, so references to it are not reported as well.
            let (placeholder, _) =
                normalize::service(name, location, &ServiceSpec::default(), &here, self.vars);
            self.loaded
                .manifest
                .services
                .insert(name.to_string(), placeholder);
            return;
        };
        let (service, problems) = normalize::service(name, location, &spec, &here, self.vars);
        self.loaded.diagnostics.extend(problems);
        self.loaded
            .manifest
            .services
            .insert(name.to_string(), service);
    }

    fn node(&mut self, file: &str, key: &Key, body: &Node) {
        let name = key.value.as_str();
        let (line, column) = line_col(key);
        let location = Location::new(file, line, column);
        if let Some(first) = self.loaded.manifest.nodes.get(name) {
            let first = first.location.clone();
            self.push(defined_twice("node", name, location, first));
            return;
        }
        let here = Here {
            file,
            node: body,
            prefix: format!("nodes.{name}"),
        };
        let Some(spec) = self.typed_entity::<NodeSpec>(&here, "node", &keys::NODE_KEYS, &[], &[])
        else {
            return;
        };
        let (node, problems) = normalize::node(name, location, &spec, &here);
        self.loaded.diagnostics.extend(problems);
        if let Some(node) = node {
            self.loaded.manifest.nodes.insert(name.to_string(), node);
        }
    }

    fn pipeline(&mut self, file: &str, key: &Key, body: &Node) {
        let (line, column) = line_col(key);
        let location = Location::new(file, line, column);
        if let Some(first) = &self.pipeline_at {
            self.push(pipeline_twice(location, first.clone()));
            return;
        }
        self.pipeline_at = Some(location.clone());
        let here = Here {
            file,
            node: body,
            prefix: "pipeline".into(),
        };
        let Some(spec) =
            self.typed_entity::<PipelineSpec>(&here, "pipeline", &keys::PIPELINE_KEYS, &[], &[])
        else {
            return;
        };
        let (pipeline, problems) = normalize::pipeline(location, &spec, &here, self.vars);
        self.loaded.diagnostics.extend(problems);
        self.loaded.manifest.pipeline = Some(pipeline);
    }

    /// Top-level `router`: the proxy, normalised as a service would be.
    fn router(&mut self, file: &str, key: &Key, body: &Node) {
        let (line, column) = line_col(key);
        let location = Location::new(file, line, column);
        let here = Here {
            file,
            node: body,
            prefix: "router".into(),
        };
        let Some(spec) = self.typed_entity::<super::spec::RouterSpec>(
            &here,
            "router",
            &keys::ROUTER_KEYS,
            &[],
            &[],
        ) else {
            return;
        };
        if spec.ports.as_ref().is_none_or(Vec::is_empty) {
            self.push(
                here.error(&[], "the router has no `ports`")
                    .help("add the host ports it listens on, e.g. `ports: [\"80:80\"]`"),
            );
        }
        let mut problems = Vec::new();
        let retry_for = match spec.retry_for.as_deref() {
            Some(text) => normalize::duration(text, &here, &[k("retry_for")], &mut problems)
                .unwrap_or(super::router::DEFAULT_RETRY_FOR),
            None => super::router::DEFAULT_RETRY_FOR,
        };
        let acme = spec
            .acme
            .as_ref()
            .and_then(|acme| super::router::acme(acme, &here, &mut problems));
        let (service, more) = normalize::service(
            super::router::SERVICE,
            location.clone(),
            &super::router::service_spec(&spec),
            &here,
            self.vars,
        );
        self.loaded
            .diagnostics
            .extend(problems.into_iter().chain(more));
        self.loaded.manifest.router = Some(super::model::Router {
            service,
            retry_for,
            acme,
            location,
        });
    }

    /// Check an entity's keys, then type it. `None` when it cannot be typed.
    fn typed_entity<T: DeserializeOwned>(
        &mut self,
        here: &Here,
        what: &str,
        supported: &BTreeSet<String>,
        unsupported: &[(&str, &'static str)],
        no_effect: &[(&str, &'static str)],
    ) -> Option<T> {
        let entries = match &here.node.value {
            Value::Map(entries) => entries,
            Value::Null => {
                self.push(
                    Diagnostic::error(here.loc(&[]), format!("{what} has no settings"))
                        .key(here.prefix.clone())
                        .help(match what {
                            "service" => "a service needs at least `image` or `build`",
                            "node" => "a node needs at least `endpoint`",
                            _ => "add its settings or remove it",
                        }),
                );
                return None;
            }
            other => {
                self.push(
                    Diagnostic::error(
                        here.loc(&[]),
                        format!("expected a mapping of settings, found {}", other.kind()),
                    )
                    .key(here.prefix.clone()),
                );
                return None;
            }
        };
        let mut object = serde_json::Map::new();
        for (key, value) in entries {
            let name = key.value.as_str();
            if is_extension(name) {
                continue;
            }
            if supported.contains(name) {
                if let Some((_, why)) = no_effect.iter().find(|(k, _)| *k == name) {
                    let (line, column) = line_col(key);
                    self.push(
                        Diagnostic::warning(
                            Location::new(here.file, line, column),
                            format!("`{name}` has no effect in pier"),
                        )
                        .key(format!("{}.{name}", here.prefix))
                        .help(format!("{why}; remove it to silence this warning")),
                    );
                }
                object.insert(name.to_string(), value.value.to_json());
                continue;
            }
            self.push(unknown_key(
                here.file,
                key,
                &format!("a {what}"),
                name,
                unsupported,
                supported.iter().map(String::as_str),
            ));
            self.loaded.diagnostics.last_mut().expect("just pushed").key =
                Some(here.prefix.clone());
        }
        // Keys already reported are left out, so what remains is still typed
        // and checked: a key that fails to type is reported and dropped, and
        // the rest is typed again, so one bad key never hides another.
        loop {
            let value = serde_json::Value::Object(std::mem::take(&mut object));
            let typed = type_json::<T>(here, &value);
            let serde_json::Value::Object(back) = value else {
                unreachable!("built as an object")
            };
            object = back;
            match typed {
                Ok(value) => return Some(value),
                Err(failure) => {
                    let (diagnostic, first_key) = *failure;
                    self.push(diagnostic);
                    object.remove(&first_key?)?;
                }
            }
        }
    }
}

/// Type a JSON value with serde; a failure becomes a diagnostic at the exact
/// place, with the top-level key it happened under.
fn type_json<T: DeserializeOwned>(
    here: &Here,
    json: &serde_json::Value,
) -> Result<T, Box<(Diagnostic, Option<String>)>> {
    serde_path_to_error::deserialize(json).map_err(|error| {
        let path: Vec<Seg> = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                _ => None,
            })
            .collect();
        let mut text = error.inner().to_string();
        if !text.contains(' ') || !text.contains(['`', ':']) || text.starts_with("a ") {
            // An untagged form's bare "expecting" text: say what was found.
            text = format!(
                "expected {text}, found {}",
                find(here.node, &path).value.kind()
            );
        }
        let (message, help) = describe_serde_error(&text);
        let diagnostic = here.error(&path, message);
        let diagnostic = match help {
            Some(help) => diagnostic.help(help),
            None => diagnostic,
        };
        let first_key = match path.first() {
            Some(Seg::Key(key)) => Some(key.clone()),
            _ => None,
        };
        Box::new((diagnostic, first_key))
    })
}

/// Turn serde's wording into ours, with a "did you mean" for unknown keys.
fn describe_serde_error(message: &str) -> (String, Option<String>) {
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let help = match did_you_mean(field, candidates.iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("expected one of: {}", candidates.join(", ")),
        };
        return (format!("unknown key `{field}`"), Some(help));
    }
    let message = message
        .replace("invalid type: ", "expected ")
        .replace("string \"", "the string \"")
        .replace("integer `", "the number `")
        .replace("boolean `", "the boolean `")
        .replace("a sequence", "a list")
        .replace("sequence", "a list")
        .replace("unit value", "nothing");
    // serde words it "expected X, expected Y": make it "found X, expected Y".
    let message = match message
        .strip_prefix("expected ")
        .and_then(|m| m.split_once(", expected "))
    {
        Some((found, expected)) => format!("expected {expected}, found {found}"),
        None => message,
    };
    (message, None)
}

fn unknown_key<'a>(
    file: &str,
    key: &Key,
    place: &str,
    name: &str,
    unsupported: &[(&str, &'static str)],
    supported: impl Iterator<Item = &'a str>,
) -> Diagnostic {
    let (line, column) = line_col(key);
    let location = Location::new(file, line, column);
    if let Some(why) = unsupported_reason(unsupported, name) {
        return Diagnostic::error(location, format!("`{name}` is not supported in {place}"))
            .help(why);
    }
    let supported: Vec<&str> = supported.collect();
    let diagnostic = Diagnostic::error(location, format!("unknown key `{name}` in {place}"));
    match did_you_mean(name, supported.iter().copied()) {
        Some(best) => diagnostic.help(format!("did you mean `{best}`?")),
        None => diagnostic.help(format!(
            "{place} takes: {}; keys starting with `x-` are ignored",
            supported.join(", ")
        )),
    }
}

/// What interpolating one document found.
#[derive(Default)]
struct Interpolated {
    problems: Vec<Diagnostic>,
    unknown_at: BTreeSet<Location>,
}

/// Interpolate every string scalar (not keys, not `x-` blocks). A scalar that
/// interpolation turned into a number or boolean is retyped, as Compose does.
/// A problem is reported where the text is written, so a variable in an
/// anchor merged into many services is reported once.
fn interpolate_tree(node: &mut Node, vars: &Vars, file: &str, found: &mut Interpolated) {
    match &mut node.value {
        Value::Str(text) if text.contains('$') => {
            let (value, problems) = interpolate_all(text, vars);
            if problems.is_empty() {
                node.value = retype(value);
                return;
            }
            let written = Location::new(
                file,
                node.defined.line() as usize,
                node.defined.column() as usize,
            );
            for problem in problems {
                found
                    .problems
                    .push(Diagnostic::error(written.clone(), problem.message).help(problem.help));
            }
            // A value replayed by an alias is placed at the alias, with the
            // rest of its block: marking that place would hide their problems.
            if node.referenced == node.defined {
                found.unknown_at.insert(written);
            }
            node.value = Value::Str(value);
        }
        Value::Seq(items) => {
            for item in items {
                interpolate_tree(item, vars, file, found);
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries {
                if !is_extension(&key.value) {
                    interpolate_tree(value, vars, file, found);
                }
            }
        }
        _ => {}
    }
}

fn retype(text: String) -> Value {
    if let Ok(int) = text.parse::<i64>() {
        return Value::Int(int);
    }
    match text.as_str() {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::Str(text),
    }
}

/// A network's key: what Compose allows in a project's names.
fn is_network_key(key: &str) -> bool {
    key.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}
