//! What a service mounts and builds: `volumes`, `devices`, `build`, and
//! the repository paths they name.

#[allow(unused_imports)]
use super::*;

/// Docker's container name rule, which every service name becomes part of.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 63
}

/// A path written in a manifest file, relative to that file's folder (as in
/// Compose), as a normalised path from the repository root; refused when
/// absolute or climbing out of the repository.
pub fn repo_path(path: &str, here: &Here, at: &[Seg], p: &mut Problems) -> Option<String> {
    if path.starts_with('/') || path.starts_with('~') || path.contains('\\') {
        p.push(
            here.error(at, format!("`{path}` is an absolute path"))
                .help(PATH_HELP),
        );
        return None;
    }
    let from_root = match here.file.rsplit_once('/') {
        Some((folder, _)) => format!("{folder}/{path}"),
        None => path.to_string(),
    };
    match normalize_repo_path(&from_root) {
        Ok(normalized) => Some(normalized),
        Err(why) => {
            p.push(here.error(at, format!("`{path}` {why}")).help(PATH_HELP));
            None
        }
    }
}

pub(super) const PATH_HELP: &str =
    "paths are relative to the manifest file's folder and must stay inside the repository";

/// `./app/../web/` → `web`; the root is `.`.
pub fn normalize_repo_path(path: &str) -> Result<String, &'static str> {
    if path.starts_with('/') || path.starts_with('~') || path.contains('\\') {
        return Err("is an absolute path");
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("climbs out of the repository");
                }
            }
            other => parts.push(other),
        }
    }
    Ok(if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    })
}

pub(super) fn build(spec: &BuildSpec, here: &Here, vars: &Vars, p: &mut Problems) -> Option<Build> {
    let (context, dockerfile, args) = match spec {
        BuildSpec::Context(context) => (repo_path(context, here, &[k("build")], p)?, None, None),
        BuildSpec::Full(full) => (
            repo_path(
                full.context.as_deref().unwrap_or("."),
                here,
                &[k("build"), k("context")],
                p,
            )?,
            full.dockerfile.clone(),
            full.args.as_ref(),
        ),
    };
    let dockerfile = dockerfile.unwrap_or_else(|| "Dockerfile".into());
    if normalize_repo_path(&dockerfile).is_err() {
        p.push(here.error(
            &[k("build"), k("dockerfile")],
            format!("`{dockerfile}` must be a path inside the build context"),
        ));
    }
    let args = args
        .map(|a| key_values(a, here, &[k("build"), k("args")], vars, p))
        .unwrap_or_default();
    Some(Build {
        context,
        dockerfile,
        args,
    })
}

pub(super) fn mount(spec: &VolumeSpec, here: &Here, n: usize, p: &mut Problems) -> Option<Mount> {
    let at = [k("volumes"), i(n)];
    let (source, target, read_only, relabel) = match spec {
        VolumeSpec::Short(text) => {
            let parts: Vec<&str> = text.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [target] => (None, *target, None),
                [source, target] => (Some(*source), *target, None),
                [source, target, mode] => (Some(*source), *target, Some(*mode)),
                _ => {
                    p.push(here.error(&at, format!("`{text}` is not `[SOURCE:]TARGET[:MODE]`")));
                    return None;
                }
            };
            let (read_only, relabel) = match mount_mode(mode.unwrap_or("")) {
                Ok(parsed) => parsed,
                Err(other) => {
                    p.push(
                        here.error(&at, format!("unknown mount option `{other}` in `{text}`"))
                            .help("use `ro` or `rw`, and `z` or `Z` for SELinux relabelling, separated by `,`"),
                    );
                    return None;
                }
            };
            (
                source.map(str::to_string),
                target.to_string(),
                read_only,
                relabel,
            )
        }
        VolumeSpec::Long(long) => {
            if let Some(kind) = long
                .kind
                .as_deref()
                .filter(|k| !matches!(*k, "volume" | "bind"))
            {
                p.push(
                    here.error(&at, format!("mount type `{kind}` is not supported"))
                        .help("use `volume` or `bind`"),
                );
                return None;
            }
            (
                long.source.clone(),
                long.target.clone(),
                long.read_only.unwrap_or(false),
                None,
            )
        }
    };
    if !target.starts_with('/') {
        p.push(
            here.error(
                &at,
                format!("mount target `{target}` is not an absolute path"),
            )
            .help("the target is a path inside the container, e.g. `/data`"),
        );
        return None;
    }
    Some(match source {
        None => Mount::Anonymous { target },
        Some(source) if source.starts_with('/') => Mount::Bind {
            source,
            target,
            read_only,
            relabel,
        },
        Some(source) if source.starts_with('.') || source.starts_with('~') => {
            p.push(
                here.error(&at, format!("relative bind mount `{source}`"))
                    .help("the repository is not on the nodes: use an absolute host path or a named volume"),
            );
            return None;
        }
        Some(source) if is_valid_name(&source) => Mount::Volume {
            source,
            target,
            read_only,
            relabel,
        },
        Some(source) => {
            p.push(here.error(
                &at,
                format!("`{source}` is neither a volume name nor an absolute host path"),
            ));
            return None;
        }
    })
}

/// `devices`: `HOST[:CONTAINER[:PERMISSIONS]]`, as `docker run --device`.
pub(super) fn devices(
    spec: &ServiceSpec,
    here: &Here,
    p: &mut Problems,
) -> Vec<crate::manifest::model::Device> {
    let mut out = Vec::new();
    for (n, text) in spec.devices.iter().flatten().enumerate() {
        let parts: Vec<&str> = text.split(':').collect();
        let (host, container, permissions) = match parts.as_slice() {
            [host] => (*host, *host, "rwm"),
            [host, container] => (*host, *container, "rwm"),
            [host, container, permissions] => (*host, *container, *permissions),
            _ => ("", "", ""),
        };
        let valid = host.starts_with('/')
            && container.starts_with('/')
            && !permissions.is_empty()
            && permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
        if !valid {
            p.push(
                here.error(&[k("devices"), i(n)], format!("`{text}` is not a device mapping"))
                    .help("write `/dev/HOST[:/dev/CONTAINER[:PERMISSIONS]]`, permissions of `r`, `w`, `m`"),
            );
            continue;
        }
        out.push(crate::manifest::model::Device {
            host: host.to_string(),
            container: container.to_string(),
            permissions: permissions.to_string(),
        });
    }
    out
}

/// A short mount's mode, `ro`/`rw` and `z`/`Z` in any order
/// (`ro,Z`): read-only, and the SELinux relabelling. The unknown option on failure.
pub(super) fn mount_mode(mode: &str) -> Result<(bool, Option<char>), &str> {
    let (mut read_only, mut relabel) = (false, None);
    for option in mode.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "z" => relabel = Some('z'),
            "Z" => relabel = Some('Z'),
            other => return Err(other),
        }
    }
    Ok((read_only, relabel))
}
