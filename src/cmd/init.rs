//! `pier init`: a manifests folder from the Compose file or Tutum
//! stackfile a project already has. The services are copied as written
//! (comments and all), the nodes come from flags or DOCKER_HOST, the
//! pipeline is a commented skeleton; then the folder is validated as it
//! is on disk, and the next commands are printed. Nothing is overwritten
//! without --force, and nothing is written when any file would be.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pier::manifest::{self, Decrypt, Entry, RepoTree, Severity, SourceFile, yaml};

use crate::cli::InitArgs;

/// Where Compose (and Tutum) look, in their order.
const CANDIDATES: [&str; 5] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
    "docker-cloud.yml",
];

pub fn init(args: InitArgs) -> ExitCode {
    match run(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &InitArgs) -> Result<ExitCode, String> {
    let source = find_source(args.file.as_deref())?;
    let text = std::fs::read_to_string(&source)
        .map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    let folder = PathBuf::from(&args.path);
    let nodes = nodes(&args.nodes)?;
    let compose = Compose::parse(&text);
    let files = [
        ("stack.yml", stack_file(&source, &text, &compose, &folder)),
        ("nodes.yml", nodes_file(&nodes)),
        ("pipeline.yml", pipeline_file(&compose)),
    ];
    let existing: Vec<String> = files
        .iter()
        .map(|(name, _)| folder.join(name))
        .filter(|path| path.exists())
        .map(|path| path.display().to_string())
        .collect();
    if !existing.is_empty() && !args.force {
        return Err(format!(
            "{} already exist(s); pass --force to overwrite",
            existing.join(", ")
        ));
    }
    std::fs::create_dir_all(&folder)
        .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    for (name, contents) in &files {
        let path = folder.join(name);
        std::fs::write(&path, contents)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let valid = validate(&folder, &files);
    let path_flag = if args.path == "pier" {
        String::new()
    } else {
        format!(" --path {}", args.path)
    };
    println!(
        "\nnext:\n  git add {} && git commit -m \"Deploy with pier\"\n  pier diff{path_flag}      # what pier would change on the nodes\n  pier apply{path_flag}     # do it (or `pier daemon` to keep them converged)",
        folder.display()
    );
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn find_source(file: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(file) = file {
        return Ok(file.to_path_buf());
    }
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no Compose file here (looked for {}); name one with --file",
                CANDIDATES.join(", ")
            )
        })
}

/// The services as written, with a line that says where they came from,
/// and every relative path (build contexts, env files, config and secret
/// files) changed to reach the same file from the manifests folder.
fn stack_file(source: &Path, text: &str, compose: &Compose, folder: &Path) -> String {
    let up = "../".repeat(
        folder
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .count(),
    );
    let source_dir = source
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty())
        .map(|p| format!("{p}/"))
        .unwrap_or_default();
    let moved = |path: &str| {
        let path = path.strip_prefix("./").unwrap_or(path);
        format!("{up}{source_dir}{path}")
    };
    let splices = compose
        .paths()
        .into_iter()
        .filter_map(|(node, path)| {
            let (start, end) = pier::edit::text::span(&node)?;
            (!path.starts_with('/') && !path.contains("://")).then(|| pier::edit::text::Splice {
                start,
                end,
                text: serde_json::to_string(&moved(&path)).expect("a string serialises"),
            })
        })
        .collect();
    format!(
        "# Copied from {} by `pier init`; relative paths changed to reach the\n# same files from {}/.\n{}",
        source.display(),
        folder.display(),
        pier::edit::text::apply(text, splices)
    )
}

/// A Compose file (or stackfile), parsed once for what `init` reads of it.
struct Compose {
    root: Option<yaml::Node>,
}

impl Compose {
    fn parse(text: &str) -> Compose {
        let root = yaml::parse_documents(text)
            .ok()
            .and_then(|documents| documents.into_iter().next());
        Compose { root }
    }

    /// The services, by name: under `services`, or (a Tutum stackfile)
    /// at the top.
    fn services(&self) -> Vec<(String, yaml::Node)> {
        let Some(root) = &self.root else {
            return Vec::new();
        };
        let holder = get(root, "services").unwrap_or_else(|| root.clone());
        match holder.value {
            yaml::Value::Map(entries) => entries.into_iter().map(|(k, v)| (k.value, v)).collect(),
            _ => Vec::new(),
        }
    }

    /// The services that declare `build`.
    fn built(&self) -> Vec<String> {
        self.services()
            .into_iter()
            .filter(|(_, service)| get(service, "build").is_some())
            .map(|(name, _)| name)
            .collect()
    }

    /// The scalars that name files: `build` (or its `context`), `env_file`
    /// entries, and top-level `configs`/`secrets` files.
    fn paths(&self) -> Vec<(yaml::Node, String)> {
        let text_of = |node: yaml::Node| match &node.value {
            yaml::Value::Str(s) => Some((node.clone(), s.clone())),
            _ => None,
        };
        let mut out = Vec::new();
        for (_, service) in self.services() {
            if let Some(build) = get(&service, "build") {
                out.extend(text_of(build.clone()));
                out.extend(get(&build, "context").and_then(text_of));
            }
            if let Some(env_file) = get(&service, "env_file") {
                match &env_file.value {
                    yaml::Value::Seq(items) => {
                        for item in items {
                            out.extend(text_of(item.clone()));
                            out.extend(get(item, "path").and_then(text_of));
                        }
                    }
                    _ => out.extend(text_of(env_file)),
                }
            }
        }
        for kind in ["configs", "secrets"] {
            let entries = self.root.as_ref().and_then(|root| get(root, kind));
            if let Some(yaml::Value::Map(entries)) = entries.map(|n| n.value) {
                for (_, entry) in entries {
                    out.extend(get(&entry, "file").and_then(text_of));
                }
            }
        }
        out
    }
}

/// The value of `key` in a mapping.
fn get(node: &yaml::Node, key: &str) -> Option<yaml::Node> {
    match &node.value {
        yaml::Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.value == key)
            .map(|(_, v)| v.clone()),
        _ => None,
    }
}

/// `NAME=ENDPOINT[:TAG,TAG]`, or one node from DOCKER_HOST.
fn nodes(flags: &[String]) -> Result<Vec<(String, String, Vec<String>)>, String> {
    if flags.is_empty() {
        let endpoint = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        return Ok(vec![("local".into(), endpoint, Vec::new())]);
    }
    flags.iter().map(|flag| node(flag)).collect()
}

fn node(flag: &str) -> Result<(String, String, Vec<String>), String> {
    let (name, rest) = flag
        .split_once('=')
        .filter(|(name, rest)| !name.is_empty() && !rest.is_empty())
        .ok_or_else(|| format!("`{flag}` is not NAME=ENDPOINT[:TAGS]"))?;
    // Tags follow the last colon, unless that is a port or a path.
    let (endpoint, tags) = match rest.rsplit_once(':') {
        Some((endpoint, tags))
            if endpoint.contains("://")
                && !tags.is_empty()
                && !tags.contains('/')
                && !tags.chars().all(|c| c.is_ascii_digit()) =>
        {
            (endpoint, tags.split(',').map(str::to_string).collect())
        }
        _ => (rest, Vec::new()),
    };
    Ok((name.to_string(), endpoint.to_string(), tags))
}

fn nodes_file(nodes: &[(String, String, Vec<String>)]) -> String {
    let mut out = String::from(
        "# The Docker hosts pier deploys to. A service runs on the nodes that\n# carry all of its `tags` (a service without tags, on any node).\nnodes:\n",
    );
    for (name, endpoint, tags) in nodes {
        out.push_str(&format!("  {name}:\n    endpoint: \"{endpoint}\"\n"));
        if !tags.is_empty() {
            out.push_str(&format!("    tags: [{}]\n", tags.join(", ")));
        }
    }
    out
}

/// A commented pipeline, with the services that have `build:` in its
/// build stage.
fn pipeline_file(compose: &Compose) -> String {
    let built = compose.built();
    let build = if built.is_empty() {
        "#     - name: build\n#       build: [app]            # services with `build:`\n"
            .to_string()
    } else {
        format!(
            "#     - name: build\n#       build: [{}]\n",
            built.join(", ")
        )
    };
    format!(
        "# Each new commit of a deploy branch is tested, its images are built\n# and pushed, and only then is it deployed. Uncomment and fill in.\n#\n# pipeline:\n#   branches: [main]\n#   stages:\n#     - name: test\n#       image: alpine:3.20           # an image with your test tools\n#       script: [\"./run-tests\"]\n{build}"
    )
}

/// Validate the written folder as it is on disk (it is not committed
/// yet), printing every problem; whether it is valid.
fn validate(folder: &Path, files: &[(&str, String)]) -> bool {
    let prefix = folder.to_string_lossy().trim_matches('/').to_string();
    let sources: Vec<SourceFile> = files
        .iter()
        .map(|(name, text)| SourceFile {
            path: format!("{prefix}/{name}"),
            text: text.clone(),
        })
        .collect();
    let vars = pier::manifest::interpolate::admitted_from_process(&[]);
    let keys = super::age_keys();
    let decrypt = if keys.is_empty() {
        Decrypt::Never
    } else {
        Decrypt::With(&keys)
    };
    let loaded = manifest::load_and_validate_with(&sources, &vars, &DiskTree, decrypt);
    for diagnostic in &loaded.diagnostics {
        eprintln!("{diagnostic}");
    }
    let errors = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    eprintln!(
        "{}: {} service(s), {} node(s); {errors} error(s)",
        if loaded.is_valid() {
            "valid"
        } else {
            "invalid"
        },
        loaded.manifest.services.len(),
        loaded.manifest.nodes.len()
    );
    loaded.is_valid()
}

/// The working folder as the repository tree, before anything is committed.
struct DiskTree;

impl RepoTree for DiskTree {
    fn entry(&self, path: &str) -> Option<Entry> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(if meta.file_type().is_symlink() {
            Entry::Symlink {
                target: std::fs::read_link(path)
                    .ok()?
                    .to_string_lossy()
                    .into_owned(),
            }
        } else if meta.is_dir() {
            Entry::Dir
        } else {
            Entry::File
        })
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {path}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_flags_read_tags_after_the_endpoint_only() {
        assert_eq!(
            node("web1=tcp://10.0.0.11:2376:web,eu").unwrap(),
            (
                "web1".into(),
                "tcp://10.0.0.11:2376".into(),
                vec!["web".into(), "eu".into()]
            )
        );
        assert_eq!(
            node("db=tcp://10.0.0.12:2376").unwrap().1,
            "tcp://10.0.0.12:2376"
        );
        assert_eq!(
            node("local=unix:///var/run/docker.sock").unwrap().1,
            "unix:///var/run/docker.sock"
        );
        assert!(node("=tcp://x").is_err() && node("web").is_err());
    }
}
