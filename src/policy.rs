//! The container policy: what manifests may ask of the hosts, set by
//! whoever runs pier (`--policy FILE`), never by the repository.
//!
//! A manifest that asks for more is refused like an invalid one, with the
//! place it asks and the rule that refuses it. Without a policy file the
//! default allows what Compose allows, except what gives a container the
//! host: a bind of `/`, of the Docker socket or of a folder holding it,
//! the host's network, PID or IPC namespace, host devices, and security
//! options other than `no-new-privileges`.

use std::path::Path;

use serde::Deserialize;

use crate::manifest::model::{Endpoint, Manifest, Mount, Service};
use crate::manifest::{Diagnostic, Location};

/// Paths whose bind gives a container control of the host: the root, the
/// Docker socket, and the folders that hold it. Refused unless a policy
/// names the very path.
const HOST_CONTROL_PATHS: &[&str] = &[
    "/",
    "/var",
    "/run",
    "/var/run",
    "/var/run/docker.sock",
    "/run/docker.sock",
];

/// The policy file's form.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default = "yes")]
    privileged: bool,
    #[serde(default = "any")]
    cap_add: Vec<String>,
    #[serde(default = "any")]
    bind_mounts: Vec<String>,
    #[serde(default = "any")]
    host_ports: Vec<String>,
    #[serde(default = "any")]
    node_endpoints: Vec<String>,
    #[serde(default)]
    host_namespaces: Vec<String>,
    #[serde(default)]
    devices: Vec<String>,
    #[serde(default)]
    security_opt: Vec<String>,
}

/// Security options that only take privileges away, allowed by any policy.
const HARDENING_OPTIONS: &[&str] = &["no-new-privileges", "no-new-privileges:true"];

/// Whether a policy list (`"*"`: anything) names `item`.
fn listed(list: &[String], item: &str) -> bool {
    list.iter().any(|entry| entry == "*" || entry == item)
}

fn shown(list: &[String]) -> String {
    if list.is_empty() {
        "[] (none)".into()
    } else {
        format!("[{}]", list.join(", "))
    }
}

fn yes() -> bool {
    true
}

fn any() -> Vec<String> {
    vec!["*".into()]
}

/// What manifests may ask for.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where the policy comes from, for messages.
    origin: String,
    privileged: bool,
    /// Upper-case names without `CAP_`; `None`: any.
    cap_add: Option<Vec<String>>,
    /// Normalised path prefixes; `None`: any (but [`HOST_CONTROL_PATHS`]).
    bind_mounts: Option<Vec<String>>,
    /// Inclusive ranges; `None`: any.
    host_ports: Option<Vec<(u16, u16)>>,
    node_endpoints: Option<(Vec<String>, globset::GlobSet)>,
    /// Of `network`, `pid`, `ipc`; `"*"`: all.
    host_namespaces: Vec<String>,
    /// Host device paths; `"*"`: any.
    devices: Vec<String>,
    /// Options beyond [`HARDENING_OPTIONS`]; `"*"`: any.
    security_opt: Vec<String>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            origin: "the default policy".into(),
            privileged: true,
            cap_add: None,
            bind_mounts: None,
            host_ports: None,
            node_endpoints: None,
            host_namespaces: Vec::new(),
            devices: Vec::new(),
            security_opt: Vec::new(),
        }
    }
}

impl Policy {
    /// Read a policy file (YAML, or JSON, which is YAML too).
    pub fn from_file(path: &str) -> Result<Policy, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the policy file {path}: {e}"))?;
        let file: PolicyFile = serde_saphyr::from_str(&text)
            .map_err(|e| format!("the policy file {path} is not valid: {e}"))?;
        Policy::from_parts(format!("the policy {path}"), file)
            .map_err(|e| format!("the policy file {path} is not valid: {e}"))
    }

    fn from_parts(origin: String, file: PolicyFile) -> Result<Policy, String> {
        let is_any = |list: &[String]| list.iter().any(|entry| entry == "*");
        let cap_add = (!is_any(&file.cap_add)).then(|| {
            file.cap_add
                .iter()
                .map(|cap| capability_name(cap))
                .collect()
        });
        let bind_mounts = if is_any(&file.bind_mounts) {
            None
        } else {
            let mut prefixes = Vec::new();
            for prefix in &file.bind_mounts {
                if !prefix.starts_with('/') {
                    return Err(format!("bind_mounts: `{prefix}` is not an absolute path"));
                }
                prefixes.push(normalize_path(prefix));
            }
            Some(prefixes)
        };
        let host_ports = if is_any(&file.host_ports) {
            None
        } else {
            Some(
                file.host_ports
                    .iter()
                    .map(|range| parse_port_range(range))
                    .collect::<Result<_, _>>()?,
            )
        };
        let node_endpoints = if is_any(&file.node_endpoints) {
            None
        } else {
            let mut globs = globset::GlobSetBuilder::new();
            for pattern in &file.node_endpoints {
                let glob = globset::GlobBuilder::new(pattern)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| format!("node_endpoints: `{pattern}`: {e}"))?;
                globs.add(glob);
            }
            let set = globs.build().map_err(|e| format!("node_endpoints: {e}"))?;
            Some((file.node_endpoints.clone(), set))
        };
        if let Some(unknown) = file
            .host_namespaces
            .iter()
            .find(|n| !matches!(n.as_str(), "network" | "pid" | "ipc" | "*"))
        {
            return Err(format!(
                "host_namespaces: `{unknown}` is not one of network, pid, ipc"
            ));
        }
        Ok(Policy {
            origin,
            privileged: file.privileged,
            cap_add,
            bind_mounts,
            host_ports,
            node_endpoints,
            host_namespaces: file.host_namespaces,
            devices: file.devices,
            security_opt: file.security_opt,
        })
    }

    /// Every request of `manifest` this policy refuses, as errors.
    pub fn check(&self, manifest: &Manifest) -> Vec<Diagnostic> {
        let mut problems = Vec::new();
        for service in manifest.services.values() {
            self.check_service(service, &mut problems);
        }
        if let Some((patterns, set)) = &self.node_endpoints {
            for node in manifest.nodes.values() {
                let endpoint = node.endpoint.to_string();
                if !set.is_match(&endpoint) && !set.is_match(spelled(&node.endpoint)) {
                    problems.push(self.refusal(
                        node.location.clone(),
                        format!("nodes.{}.endpoint", node.name),
                        format!("node `{}` at `{endpoint}`", node.name),
                        format!("node_endpoints: [{}]", patterns.join(", ")),
                    ));
                }
            }
        }
        problems
    }

    fn check_service(&self, service: &Service, problems: &mut Vec<Diagnostic>) {
        let name = &service.name;
        let mut refuse = |key: &str, what: String, rule: String| {
            problems.push(self.refusal(
                service.location_of(key).clone(),
                format!("services.{name}.{key}"),
                what,
                rule,
            ));
        };
        if service.privileged && !self.privileged {
            refuse(
                "privileged",
                "a privileged container".into(),
                "privileged: false".into(),
            );
        }
        if let Some(allowed) = &self.cap_add {
            for cap in &service.cap_add {
                if !allowed.contains(&capability_name(cap)) {
                    refuse(
                        "cap_add",
                        format!("capability `{cap}`"),
                        format!("cap_add: [{}]", allowed.join(", ")),
                    );
                }
            }
        }
        let namespaces = [
            ("network_mode", "network", service.network_mode.as_deref()),
            ("pid", "pid", service.pid.as_deref()),
            ("ipc", "ipc", service.ipc.as_deref()),
        ];
        for (key, namespace, mode) in namespaces {
            if mode == Some("host") && !listed(&self.host_namespaces, namespace) {
                refuse(
                    key,
                    format!("the host's {namespace} namespace"),
                    format!("host_namespaces: {}", shown(&self.host_namespaces)),
                );
            }
        }
        for device in &service.devices {
            if !listed(&self.devices, &device.host) {
                refuse(
                    "devices",
                    format!("host device `{}`", device.host),
                    format!("devices: {}", shown(&self.devices)),
                );
            }
        }
        for option in &service.security_opt {
            if !HARDENING_OPTIONS.contains(&option.as_str()) && !listed(&self.security_opt, option)
            {
                refuse(
                    "security_opt",
                    format!("security option `{option}`"),
                    format!(
                        "security_opt: {} (no-new-privileges is always allowed)",
                        shown(&self.security_opt)
                    ),
                );
            }
        }
        for mount in &service.volumes {
            let Mount::Bind { source, .. } = mount else {
                continue;
            };
            if let Some(rule) = self.bind_refused_by(source) {
                refuse("volumes", format!("a bind mount of `{source}`"), rule);
            }
        }
        if let Some(ranges) = &self.host_ports {
            for port in &service.ports {
                let Some(published) = port.published else {
                    continue;
                };
                let inside = ranges
                    .iter()
                    .any(|(low, high)| *low <= published.start && published.end <= *high);
                if !inside {
                    let shown = if published.start == published.end {
                        published.start.to_string()
                    } else {
                        format!("{}-{}", published.start, published.end)
                    };
                    refuse(
                        "ports",
                        format!("host port {shown}"),
                        format!("host_ports: [{}]", render_ranges(ranges)),
                    );
                }
            }
        }
    }

    /// The rule that refuses a bind of `source`, if any.
    fn bind_refused_by(&self, source: &str) -> Option<String> {
        let path = normalize_path(source);
        let listed_exactly = self
            .bind_mounts
            .as_ref()
            .is_some_and(|prefixes| prefixes.contains(&path));
        if HOST_CONTROL_PATHS.contains(&path.as_str()) && !listed_exactly {
            return Some(format!(
                "the host's root, the Docker socket and the folders holding it are refused unless bind_mounts names `{path}` itself"
            ));
        }
        let prefixes = self.bind_mounts.as_ref()?;
        let allowed = prefixes.iter().any(|prefix| is_under(&path, prefix));
        (!allowed).then(|| format!("bind_mounts: [{}]", prefixes.join(", ")))
    }

    fn refusal(&self, location: Location, key: String, what: String, rule: String) -> Diagnostic {
        Diagnostic::error(location, format!("{what} is refused by {}", self.origin))
            .key(key)
            .help(format!(
                "rule: {rule}. The policy belongs to whoever runs pier (--policy); change the manifest, or ask them to allow it"
            ))
    }
}

/// `tcp://host:2375` as written without the default port, so that a
/// pattern such as `tcp://10.0.0.*` matches a node written that way.
fn spelled(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Tcp { host, .. } => format!("tcp://{host}"),
        Endpoint::Ssh {
            user: Some(user),
            host,
            ..
        } => format!("ssh://{user}@{host}"),
        Endpoint::Ssh {
            user: None, host, ..
        } => format!("ssh://{host}"),
        Endpoint::Unix { path } => format!("unix://{path}"),
    }
}

/// `net_admin`, `CAP_NET_ADMIN` and `NET_ADMIN` are one capability.
fn capability_name(cap: &str) -> String {
    let upper = cap.trim().to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper).to_string()
}

/// `/a//b/./c/../d/` → `/a/b/d`: what the engine mounts, without asking
/// the host (a symlink on the host is not followed; the root-and-socket
/// rule lists the usual `/var/run` → `/run` spelling both ways).
fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in Path::new(path).components() {
        match part {
            std::path::Component::Normal(name) => parts.push(name.to_str().unwrap_or_default()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether `path` is `prefix` or inside it, by whole components.
fn is_under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let number = |part: &str| {
        part.trim()
            .parse::<u16>()
            .map_err(|_| format!("host_ports: `{text}` is not a port or a range like 8000-8999"))
    };
    let (low, high) = match text.split_once('-') {
        Some((low, high)) => (number(low)?, number(high)?),
        None => {
            let port = number(text)?;
            (port, port)
        }
    };
    if low > high {
        return Err(format!("host_ports: `{text}` ends before it starts"));
    }
    Ok((low, high))
}

fn render_ranges(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|(low, high)| {
            if low == high {
                low.to_string()
            } else {
                format!("{low}-{high}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        let file: PolicyFile = serde_saphyr::from_str(yaml).unwrap();
        Policy::from_parts("the policy p.yaml".into(), file).unwrap()
    }

    #[test]
    fn the_default_refuses_only_the_host_root_and_the_docker_socket() {
        let default = Policy::default();
        for refused in [
            "/",
            "/var/run/docker.sock",
            "/run//docker.sock",
            "/var/run/",
            "/srv/../var/run/docker.sock",
        ] {
            assert!(default.bind_refused_by(refused).is_some(), "{refused}");
        }
        for allowed in ["/srv/data", "/var/lib/app", "/run/user/1000"] {
            assert_eq!(default.bind_refused_by(allowed), None, "{allowed}");
        }
    }

    #[test]
    fn listed_prefixes_allow_whole_components_and_the_socket_only_by_name() {
        let p = policy("bind_mounts: [/srv, /var/run/docker.sock]\n");
        assert_eq!(p.bind_refused_by("/srv/app/data"), None);
        assert_eq!(p.bind_refused_by("/var/run/docker.sock"), None);
        assert!(p.bind_refused_by("/srvx").is_some());
        assert!(p.bind_refused_by("/var/run").is_some());
        assert!(p.bind_refused_by("/etc").is_some());
    }

    #[test]
    fn policy_files_are_checked() {
        for (yaml, problem) in [
            ("host_ports: [\"90-80\"]\n", "ends before it starts"),
            ("host_ports: [http]\n", "is not a port"),
            ("bind_mounts: [srv]\n", "not an absolute path"),
        ] {
            let file: PolicyFile = serde_saphyr::from_str(yaml).unwrap();
            let error = Policy::from_parts("p".into(), file).unwrap_err();
            assert!(error.contains(problem), "{yaml}: {error}");
        }
        assert!(serde_saphyr::from_str::<PolicyFile>("privilege: false\n").is_err());
        assert_eq!(capability_name("cap_net_admin"), "NET_ADMIN");
    }
}
