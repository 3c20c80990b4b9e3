//! The container policy: what manifests may ask of the hosts, set by
//! whoever runs pier (`--policy FILE`), never by the repository.
//!
//! A manifest that asks for more is refused like an invalid one, with the
//! place it asks and the rule that refuses it. Every spelling of a host
//! resource goes through the same rule: a host path is a host path whether
//! it comes as a bind, a local volume's `driver_opts` or a `/proc/*/root`
//! alias (see [`host_paths`]); a host namespace is one whether it comes
//! through `network_mode` or a network's name. Without a policy file the
//! default allows what Compose allows, except what gives a container the
//! host: a bind of the trees that control it, the host's network, PID or
//! IPC namespace, host devices (raw disks mounted as volumes among them),
//! the engine's special networks, and security options other than
//! `no-new-privileges`.

mod endpoints;
mod host_paths;

use serde::Deserialize;

use crate::manifest::model::{Mount, Service};
use crate::manifest::{Diagnostic, Loaded, Location};

use endpoints::EndpointPattern;
pub use host_paths::canonical as canonical_host_path;

/// Networks the engine itself provides. Joining one is a host namespace
/// (`host`), a way into another container (`container:…`, `service:…`), or
/// a network shared with every container the engine runs outside any
/// stack (`bridge`, Swarm's `ingress` and `docker_gwbridge`): allowed only
/// when `external_networks` names it exactly (`host` also by
/// `host_namespaces: [network]`).
const ENGINE_NETWORKS: &[&str] = &["host", "none", "bridge", "ingress", "docker_gwbridge"];

/// The most replicas a service may ask for unless the policy says
/// otherwise: a typo of a few zeros should not start a million containers.
pub const DEFAULT_MAX_REPLICAS: u32 = 1_000;

/// Local volume types that only take memory.
const HARMLESS_VOLUME_TYPES: &[&str] = &["tmpfs"];

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
    #[serde(default)]
    volume_types: Vec<String>,
    #[serde(default)]
    external_networks: Vec<String>,
    #[serde(default)]
    external_volumes: Vec<String>,
    #[serde(default = "default_max_replicas")]
    max_replicas: u32,
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

fn default_max_replicas() -> u32 {
    DEFAULT_MAX_REPLICAS
}

/// What manifests may ask for.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where the policy comes from, for messages.
    origin: String,
    /// The file it was read from, to read again (the daemon on SIGHUP).
    pub path: Option<String>,
    privileged: bool,
    /// Upper-case names without `CAP_`; `None`: any.
    cap_add: Option<Vec<String>>,
    /// Canonical path prefixes; `None`: any (but the host control trees).
    bind_mounts: Option<Vec<String>>,
    /// Inclusive ranges; `None`: any.
    host_ports: Option<Vec<(u16, u16)>>,
    node_endpoints: Option<(Vec<String>, Vec<EndpointPattern>)>,
    /// Of `network`, `pid`, `ipc`; `"*"`: all.
    host_namespaces: Vec<String>,
    /// Host device paths; `"*"`: any.
    devices: Vec<String>,
    /// Options beyond [`HARDENING_OPTIONS`]; `"*"`: any.
    security_opt: Vec<String>,
    /// `type`s of local volumes with `driver_opts` other than binds and
    /// tmpfs (`nfs`, `cifs`, `ext4`, …); `"*"`: any.
    volume_types: Vec<String>,
    /// Engine names of networks made outside the stack; `"*"`: any but
    /// [`ENGINE_NETWORKS`].
    external_networks: Vec<String>,
    /// Engine names of volumes made outside the stack; `"*"`: any.
    external_volumes: Vec<String>,
    max_replicas: u32,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            origin: "the default policy".into(),
            path: None,
            privileged: true,
            cap_add: None,
            bind_mounts: None,
            host_ports: None,
            node_endpoints: None,
            host_namespaces: Vec::new(),
            devices: Vec::new(),
            security_opt: Vec::new(),
            volume_types: any(),
            external_networks: any(),
            external_volumes: any(),
            max_replicas: DEFAULT_MAX_REPLICAS,
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
            .map(|policy| Policy {
                path: Some(path.to_string()),
                ..policy
            })
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
                prefixes.push(host_paths::canonical(prefix));
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
            let patterns = file
                .node_endpoints
                .iter()
                .map(|pattern| EndpointPattern::parse(pattern))
                .collect::<Result<_, _>>()?;
            Some((file.node_endpoints.clone(), patterns))
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
        if file.max_replicas == 0 {
            return Err("max_replicas: 0 would refuse every service".into());
        }
        Ok(Policy {
            origin,
            path: None,
            privileged: file.privileged,
            cap_add,
            bind_mounts,
            host_ports,
            node_endpoints,
            host_namespaces: file.host_namespaces,
            devices: file.devices,
            security_opt: file.security_opt,
            volume_types: file.volume_types,
            external_networks: file.external_networks,
            external_volumes: file.external_volumes,
            max_replicas: file.max_replicas,
        })
    }

    /// Every request of the loaded manifests this policy refuses, as errors.
    pub fn check(&self, loaded: &Loaded) -> Vec<Diagnostic> {
        let manifest = &loaded.manifest;
        let mut problems = Vec::new();
        for service in manifest.services.values() {
            self.check_service(service, &mut problems);
        }
        self.check_volumes(loaded, &mut problems);
        self.check_networks(loaded, &mut problems);
        if let Some((written, patterns)) = &self.node_endpoints {
            for node in manifest.nodes.values() {
                if !patterns.iter().any(|p| p.admits(&node.endpoint)) {
                    problems.push(self.refusal(
                        node.location.clone(),
                        format!("nodes.{}.endpoint", node.name),
                        format!("node `{}` at `{}`", node.name, node.endpoint),
                        format!("node_endpoints: [{}]", written.join(", ")),
                    ));
                }
            }
        }
        problems
    }

    /// Top-level volumes: a local volume bound to a host path is a bind of
    /// that path; one mounting a file system of another `type` is a host
    /// device (a raw disk) or a remote share; an external one is another
    /// stack's data.
    fn check_volumes(&self, loaded: &Loaded, problems: &mut Vec<Diagnostic>) {
        for (name, decl) in &loaded.manifest.volumes {
            let key = format!("volumes.{name}");
            let at = declared_at(loaded, &key);
            let mut refuse = |what: String, rule: String| {
                problems.push(self.refusal(at.clone(), key.clone(), what, rule));
            };
            if decl.external {
                let engine = decl.engine_name.as_deref().unwrap_or(name);
                if !listed(&self.external_volumes, engine) {
                    refuse(
                        format!("external volume `{engine}`"),
                        format!("external_volumes: {}", shown(&self.external_volumes)),
                    );
                }
            }
            if decl.driver_opts.is_empty() {
                continue;
            }
            let option = |key: &str| decl.driver_opts.get(key).map(String::as_str);
            let kind = option("type").unwrap_or("");
            let device = option("device").unwrap_or("");
            let mount_options: Vec<&str> = option("o")
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .collect();
            let binds = kind == "none"
                || mount_options
                    .iter()
                    .any(|part| matches!(*part, "bind" | "rbind"));
            if binds {
                let rule = if device.starts_with('/') {
                    self.bind_refused_by(device, mount_options.contains(&"ro"))
                } else {
                    Some("a bind-like volume's `device` must be an absolute host path".into())
                };
                if let Some(rule) = rule {
                    refuse(format!("a bind mount of `{device}` (driver_opts)"), rule);
                }
                continue;
            }
            if HARMLESS_VOLUME_TYPES.contains(&kind) {
                continue;
            }
            if !listed(&self.volume_types, kind) {
                refuse(
                    format!("a volume of type `{kind}` (driver_opts)"),
                    format!("volume_types: {}", shown(&self.volume_types)),
                );
            }
            if device.starts_with('/') {
                let path = host_paths::canonical(device);
                if !listed(&self.devices, &path) {
                    refuse(
                        format!("host device `{device}` mounted as a volume"),
                        format!("devices: {}", shown(&self.devices)),
                    );
                }
            }
        }
    }

    /// Top-level networks: the engine's own networks, whatever key names
    /// them, and networks made outside the stack.
    fn check_networks(&self, loaded: &Loaded, problems: &mut Vec<Diagnostic>) {
        for (name, decl) in &loaded.manifest.networks {
            let key = format!("networks.{name}");
            let at = declared_at(loaded, &key);
            let engine = decl.name("", name);
            let refused = if is_engine_network(&engine) {
                let host_allowed = engine == "host" && listed(&self.host_namespaces, "network");
                let named = self.external_networks.contains(&engine);
                (!host_allowed && !named).then(|| {
                    (
                        format!("the engine's network `{engine}`"),
                        format!(
                            "external_networks must name `{engine}` itself{}",
                            if engine == "host" {
                                " (or host_namespaces: [network])"
                            } else {
                                ""
                            }
                        ),
                    )
                })
            } else if decl.external && !listed(&self.external_networks, &engine) {
                Some((
                    format!("external network `{engine}`"),
                    format!("external_networks: {}", shown(&self.external_networks)),
                ))
            } else {
                None
            };
            if let Some((what, rule)) = refused {
                problems.push(self.refusal(at, key, what, rule));
            }
        }
    }

    fn check_service(&self, service: &Service, problems: &mut Vec<Diagnostic>) {
        let name = &service.name;
        let replicas = service.replicas.unwrap_or(0);
        let mut refuse = |key: &str, what: String, rule: String| {
            problems.push(self.refusal(
                service.location_of(key).clone(),
                format!("services.{name}.{key}"),
                what,
                rule,
            ));
        };
        if replicas > self.max_replicas {
            let written = ["target_num_containers", "scale", "deploy"]
                .into_iter()
                .find(|key| service.key_locations.contains_key(*key))
                .unwrap_or("deploy");
            refuse(
                written,
                format!("{replicas} replicas"),
                format!("max_replicas: {}", self.max_replicas),
            );
        }
        if service.privileged && !self.privileged {
            refuse(
                "privileged",
                "a privileged container".into(),
                "privileged: false".into(),
            );
        }
        for (key, hooks) in [
            ("post_start", &service.lifecycle.post_start),
            ("pre_stop", &service.lifecycle.pre_stop),
        ] {
            if hooks.iter().any(|h| h.privileged) && !self.privileged {
                refuse(
                    key,
                    "a privileged command in its containers".into(),
                    "privileged: false".into(),
                );
            }
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
            let Mount::Bind {
                source, read_only, ..
            } = mount
            else {
                continue;
            };
            if let Some(rule) = self.bind_refused_by(source, *read_only) {
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
    fn bind_refused_by(&self, source: &str, read_only: bool) -> Option<String> {
        let path = host_paths::canonical(source);
        if read_only && host_paths::READ_ONLY_HARMLESS.contains(&path.as_str()) {
            return None;
        }
        let listed_exactly = self
            .bind_mounts
            .as_ref()
            .is_some_and(|prefixes| prefixes.contains(&path));
        if host_paths::controls_host(&path) && !listed_exactly {
            return Some(format!(
                "`{path}` controls the host (its root, kernel interfaces, devices, configuration, system files, or a container engine's state or socket, or a folder holding one); it is refused unless bind_mounts names `{path}` itself"
            ));
        }
        let prefixes = self.bind_mounts.as_ref()?;
        let allowed = prefixes
            .iter()
            .any(|prefix| host_paths::is_under(&path, prefix));
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

/// Where `key` (`volumes.<name>`, `networks.<name>`) is declared.
fn declared_at(loaded: &Loaded, key: &str) -> Location {
    loaded
        .declared_at
        .get(key)
        .cloned()
        .unwrap_or_else(|| Location::new(loaded.files.first().map_or("", String::as_str), 0, 0))
}

/// Whether a network's engine name is one of the engine's own networks or
/// another container's namespace.
fn is_engine_network(name: &str) -> bool {
    ENGINE_NETWORKS.contains(&name)
        || name.starts_with("container:")
        || name.starts_with("service:")
}

/// `net_admin`, `CAP_NET_ADMIN` and `NET_ADMIN` are one capability.
fn capability_name(cap: &str) -> String {
    let upper = cap.trim().to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper).to_string()
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
mod tests;
