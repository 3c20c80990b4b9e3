//! The effective container configuration of a service, and its hash.
//!
//! The hash covers everything pier sets on a container, the resolved image
//! digest included, and nothing that changes without the container needing to
//! (the commit, the replica number). A replica is stale exactly when its
//! `pier.spec-hash` label differs from this hash.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::container::{ContainerSpec, HealthcheckSpec, MountSpec, PortBinding, ReplicaLink};
use crate::manifest::model::{Manifest, Mount, Protocol, Restart, Service};

/// The network every container of a stack joins on its node.
pub fn network_name(stack: &str) -> String {
    crate::manifest::model::StackNetwork::default().name(stack)
}

/// `<stack>-<service>-<replica>`.
pub fn container_name(stack: &str, service: &str, replica: u32) -> String {
    format!("{stack}-{service}-{replica}")
}

/// Names other services reach this one by: its own name and every link alias to it.
pub fn aliases(manifest: &Manifest, service: &str) -> Vec<String> {
    let mut aliases = vec![service.to_string()];
    for other in manifest.services.values() {
        for link in &other.links {
            if link.service == service && !aliases.contains(&link.alias) {
                aliases.push(link.alias.clone());
            }
        }
    }
    aliases.sort();
    aliases
}

/// Tutum's link variables, for `links: ["cache:redis"]`: `REDIS_NAME`
/// (`/<service>/redis`), and for each port the linked service publishes or exposes, `REDIS_PORT_6379_TCP=tcp://redis:6379`
/// with `_ADDR`, `_PORT` and `_PROTO`; `REDIS_PORT` for its first port; and
/// `REDIS_ENV_<NAME>` for each of its environment values whose name does not
/// look secret. Addresses are names the stack's network resolves, never
/// container addresses, so they hold while replicas come and go. A variable
/// the service sets itself wins.
pub fn link_env(manifest: &Manifest, service: &Service) -> Vec<String> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for link in &service.links {
        let Some(target) = manifest.services.get(&link.service) else {
            continue;
        };
        let prefix = link_prefix(&link.alias);
        let alias = &link.alias;
        vars.insert(
            format!("{prefix}_NAME"),
            format!("/{}/{alias}", service.name),
        );
        for (n, (port, proto)) in linked_ports(target).into_iter().enumerate() {
            let url = format!("{proto}://{alias}:{port}");
            let name = format!("{prefix}_PORT_{port}_{}", proto.to_ascii_uppercase());
            if n == 0 {
                vars.insert(format!("{prefix}_PORT"), url.clone());
            }
            vars.insert(format!("{name}_ADDR"), alias.clone());
            vars.insert(format!("{name}_PORT"), port.to_string());
            vars.insert(format!("{name}_PROTO"), proto.to_string());
            vars.insert(name, url);
        }
        for (key, value) in &target.environment {
            if let Some(value) = value
                && !looks_secret(key)
            {
                vars.insert(format!("{prefix}_ENV_{key}"), value.clone());
            }
        }
    }
    vars.into_iter()
        .filter(|(key, _)| !service.environment.contains_key(key))
        .map(|(key, value)| format!("{key}={value}"))
        .collect()
}

/// What a service's per-replica link variables need of each link.
pub fn replica_links(manifest: &Manifest, service: &Service) -> Vec<ReplicaLink> {
    service
        .links
        .iter()
        .filter_map(|link| {
            let target = manifest.services.get(&link.service)?;
            Some(ReplicaLink {
                service: link.service.clone(),
                prefix: link_prefix(&link.alias),
                alias: link.alias.clone(),
                ports: linked_ports(target),
            })
        })
        .collect()
}

/// Tutum's per-replica link variables, for each replica `N` of each linked
/// service (`replicas`: service → (replica number, container name)):
/// `REDIS_N_NAME`, `REDIS_N_PORT` and `REDIS_N_PORT_<port>_<PROTO>` with
/// `_ADDR`, `_PORT` and `_PROTO`, addressed by the replica's container name,
/// which the stack's network resolves. A variable already in `env` wins.
pub fn replica_link_env(
    links: &[ReplicaLink],
    replicas: &BTreeMap<String, Vec<(u32, String)>>,
    service: &str,
    env: &[String],
) -> Vec<String> {
    let set: BTreeSet<&str> = env
        .iter()
        .map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k))
        .collect();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for link in links {
        for (replica, container) in replicas.get(&link.service).into_iter().flatten() {
            let prefix = format!("{}_{replica}", link.prefix);
            vars.insert(
                format!("{prefix}_NAME"),
                format!("/{service}/{}_{replica}", link.alias),
            );
            for (n, (port, proto)) in link.ports.iter().enumerate() {
                let url = format!("{proto}://{container}:{port}");
                let name = format!("{prefix}_PORT_{port}_{}", proto.to_ascii_uppercase());
                if n == 0 {
                    vars.insert(format!("{prefix}_PORT"), url.clone());
                }
                vars.insert(format!("{name}_ADDR"), container.clone());
                vars.insert(format!("{name}_PORT"), port.to_string());
                vars.insert(format!("{name}_PROTO"), proto.to_string());
                vars.insert(name, url);
            }
        }
    }
    vars.into_iter()
        .filter(|(key, _)| !set.contains(key.as_str()))
        .map(|(key, value)| format!("{key}={value}"))
        .collect()
}

/// A link alias as a variable prefix: upper case, other characters `_`.
fn link_prefix(alias: &str) -> String {
    alias
        .to_ascii_uppercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The container ports a service publishes or exposes, in order, once each.
fn linked_ports(service: &Service) -> Vec<(u32, &'static str)> {
    let mut ports = Vec::new();
    for port in &service.ports {
        for offset in 0..port.target.len() {
            ports.push((port.target.start as u32 + offset, protocol(port.protocol)));
        }
    }
    for entry in &service.expose {
        let (range, proto) = entry.split_once('/').unwrap_or((entry, "tcp"));
        let proto = match proto {
            "udp" => "udp",
            "sctp" => "sctp",
            _ => "tcp",
        };
        let (low, high) = range.split_once('-').unwrap_or((range, range));
        if let (Ok(low), Ok(high)) = (low.parse::<u32>(), high.parse::<u32>()) {
            ports.extend((low..=high.min(low + 1024)).map(|port| (port, proto)));
        }
    }
    let mut seen = BTreeSet::new();
    ports.retain(|entry| seen.insert(*entry));
    ports
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// The container configuration for `service` running `image` (a pinned reference).
pub fn container_spec(
    stack: &str,
    service: &Service,
    image: &str,
    aliases: Vec<String>,
    volumes: &BTreeMap<String, crate::manifest::model::VolumeDecl>,
    network: &str,
) -> ContainerSpec {
    let mut ports = Vec::new();
    for port in &service.ports {
        for offset in 0..port.target.len() {
            let container = format!(
                "{}/{}",
                port.target.start as u32 + offset,
                protocol(port.protocol)
            );
            let host_port = port.published.map(|p| {
                // A single published port for a range of targets publishes them all on it (Compose).
                if p.len() == 1 {
                    p.start
                } else {
                    (p.start as u32 + offset) as u16
                }
            });
            ports.push(PortBinding {
                container,
                host_ip: port.host_ip.clone(),
                host_port,
            });
        }
    }
    let exposed = service
        .expose
        .iter()
        .map(|e| {
            if e.contains('/') {
                e.clone()
            } else {
                format!("{e}/tcp")
            }
        })
        .collect();
    let mounts = service
        .volumes
        .iter()
        .map(|m| match m {
            Mount::Anonymous { target } => MountSpec {
                kind: "volume".into(),
                source: String::new(),
                target: target.clone(),
                read_only: false,
                ..Default::default()
            },
            Mount::Volume {
                source,
                target,
                read_only,
                relabel,
            } => {
                // Named volumes belong to the stack, as in Compose, unless
                // declared with a name of their own or as external.
                let declared = volumes.get(source).cloned().unwrap_or_default();
                MountSpec {
                    kind: "volume".into(),
                    source: declared
                        .engine_name
                        .unwrap_or_else(|| format!("{stack}_{source}")),
                    target: target.clone(),
                    read_only: *read_only,
                    external: declared.external,
                    relabel: *relabel,
                    labels: declared.labels,
                    driver_opts: declared.driver_opts,
                }
            }
            Mount::Bind {
                source,
                target,
                read_only,
                relabel,
            } => MountSpec {
                kind: "bind".into(),
                source: source.clone(),
                target: target.clone(),
                read_only: *read_only,
                relabel: *relabel,
                ..Default::default()
            },
        })
        .collect();
    let restart = match service.restart {
        Restart::No => ("no".to_string(), None),
        Restart::Always => ("always".into(), None),
        Restart::UnlessStopped => ("unless-stopped".into(), None),
        Restart::OnFailure { max_retries } => ("on-failure".into(), max_retries),
    };
    let mut labels: BTreeMap<String, String> = service.labels.clone();
    labels.insert(super::container::LABEL_STACK.into(), stack.into());
    labels.insert(super::container::LABEL_SERVICE.into(), service.name.clone());
    if !service.files.is_empty() {
        let paths: Vec<&str> = service.files.keys().map(String::as_str).collect();
        labels.insert(super::container::LABEL_FILES.into(), paths.join(","));
    }
    ContainerSpec {
        image: image.to_string(),
        command: service.command.clone(),
        entrypoint: service.entrypoint.clone(),
        env: service
            .environment
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect(),
        ports,
        exposed,
        mounts,
        labels,
        privileged: service.privileged,
        restart,
        healthcheck: service.healthcheck.as_ref().map(|h| HealthcheckSpec {
            test: h.test.clone(),
            interval: h.interval,
            timeout: h.timeout,
            retries: h.retries,
            start_period: h.start_period,
        }),
        memory: service.mem_limit,
        cpu_shares: service.cpu_shares,
        hostname: service.hostname.clone(),
        user: service.user.clone(),
        working_dir: service.working_dir.clone(),
        cap_add: service.cap_add.clone(),
        cap_drop: service.cap_drop.clone(),
        extra_hosts: service
            .extra_hosts
            .iter()
            .map(|(h, ip)| format!("{h}:{ip}"))
            .collect(),
        stop_timeout: service.stop_grace_period,
        network: service
            .network_mode
            .clone()
            .unwrap_or_else(|| network.to_string()),
        aliases: if service.network_mode.is_some() {
            Vec::new()
        } else {
            aliases
        },
        nano_cpus: service.nano_cpus,
        cpu_quota: service.cpu_quota,
        cpu_period: service.cpu_period,
        cpuset: service.cpuset.clone(),
        memory_reservation: service.mem_reservation,
        memory_swap: service.memswap_limit,
        oom_score_adj: service.oom_score_adj,
        pids_limit: service.pids_limit,
        ulimits: service.ulimits.clone(),
        logging: service.logging.clone(),
        init: service.init,
        platform: service.platform.clone(),
        read_only: service.read_only,
        tty: service.tty,
        stdin_open: service.stdin_open,
        stdin_once: false,
        stop_signal: service.stop_signal.clone(),
        shm_size: service.shm_size,
        dns: service.dns.clone(),
        dns_search: service.dns_search.clone(),
        domainname: service.domainname.clone(),
        sysctls: service.sysctls.clone(),
        tmpfs: service.tmpfs.clone(),
        group_add: service.group_add.clone(),
        devices: service
            .devices
            .iter()
            .map(|d| (d.host.clone(), d.container.clone(), d.permissions.clone()))
            .collect(),
        security_opt: service.security_opt.clone(),
        pid_mode: service.pid.clone(),
        ipc_mode: service.ipc.clone(),
        files: service.files.clone(),
        provided: service.provided.clone(),
        provided_digest: provided_digest(&service.provided),
        replica_links: Vec::new(),
        more_networks: Vec::new(),
        network_links: BTreeMap::new(),
        reload: service.reload.clone(),
        volumes_from: service
            .volumes_from
            .iter()
            .map(|source| {
                if service.volumes_from_read_only.contains(source) {
                    format!("{source}:ro")
                } else {
                    source.clone()
                }
            })
            .collect(),
    }
}

/// A short, stable hash of a container spec (first 16 hex digits of SHA-256
/// over its JSON form).
/// A fingerprint of live configuration files (path → contents), to tell
/// whether a running container has the current ones.
pub fn files_hash(files: &BTreeMap<String, String>) -> String {
    let mut digest = Sha256::new();
    for (path, contents) in files {
        digest.update(path.as_bytes());
        digest.update([0]);
        digest.update(contents.as_bytes());
        digest.update([0]);
    }
    digest
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Per file a container is given, by `secret <name>` or `config <name>`:
/// a digest of where it goes, its owner and mode, and its contents' keyed
/// digest (never the contents).
fn provided_digest(files: &[crate::manifest::model::ProvidedFile]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|file| {
            let kind = if file.is_secret() { "secret" } else { "config" };
            let placed = format!(
                "{}\0{}:{}:{:o}\0{}",
                file.target, file.uid, file.gid, file.mode, file.digest
            );
            (
                format!("{kind} {}", file.name),
                short_hash(placed.as_bytes()),
            )
        })
        .collect()
}

pub fn spec_hash(spec: &ContainerSpec) -> String {
    let json = serde_json::to_vec(spec).expect("a container spec serialises");
    let digest = Sha256::digest(&json);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn short_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Per-part fingerprints of a spec: `env.KEY` for each variable, and one for
/// every other part (`image`, `command`, `ports`, ...). Values never appear,
/// only short hashes of them.
pub fn field_fingerprints(spec: &ContainerSpec) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    for entry in &spec.env {
        let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
        fields.insert(format!("env.{key}"), short_hash(value.as_bytes()));
    }
    let json = serde_json::to_value(spec).expect("a container spec serialises");
    if let serde_json::Value::Object(parts) = json {
        for (name, value) in parts {
            if name != "env" && name != "labels" && name != "provided_digest" {
                fields.insert(name, short_hash(value.to_string().as_bytes()));
            }
        }
    }
    // Named by file, so a plan says `secret db changed`, never a value.
    for (file, digest) in &spec.provided_digest {
        fields.insert(file.clone(), digest.clone());
    }
    fields.insert(
        "labels".into(),
        short_hash(
            serde_json::to_string(&user_labels(spec))
                .unwrap_or_default()
                .as_bytes(),
        ),
    );
    // Named apart, so a plan says a replacement follows a dependency's.
    if let Some(hashes) = spec.labels.get(super::container::LABEL_RESTARTS_WITH) {
        fields.insert("restarts_with".into(), short_hash(hashes.as_bytes()));
    }
    fields
}

fn user_labels(spec: &ContainerSpec) -> BTreeMap<&String, &String> {
    spec.labels
        .iter()
        .filter(|(k, _)| !k.starts_with("pier."))
        .collect()
}

/// Whether a variable's value must not be shown.
pub fn looks_secret(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    [
        "PASS",
        "SECRET",
        "TOKEN",
        "KEY",
        "CREDENTIAL",
        "PRIVATE",
        "AUTH",
        "CERT",
    ]
    .iter()
    .any(|w| key.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_replica_link_variables_address_each_replica_by_name() {
        let links = [ReplicaLink {
            service: "cache".into(),
            prefix: "REDIS".into(),
            alias: "redis".into(),
            ports: vec![(6379, "tcp"), (6380, "udp")],
        }];
        let replicas = BTreeMap::from([(
            "cache".to_string(),
            vec![
                (1, "app-cache-1".to_string()),
                (3, "app-cache-3".to_string()),
            ],
        )]);
        let env = replica_link_env(&links, &replicas, "web", &["REDIS_3_NAME=mine".into()]);
        for expected in [
            "REDIS_1_NAME=/web/redis_1",
            "REDIS_1_PORT=tcp://app-cache-1:6379",
            "REDIS_1_PORT_6379_TCP=tcp://app-cache-1:6379",
            "REDIS_1_PORT_6379_TCP_ADDR=app-cache-1",
            "REDIS_1_PORT_6379_TCP_PORT=6379",
            "REDIS_1_PORT_6379_TCP_PROTO=tcp",
            "REDIS_1_PORT_6380_UDP=udp://app-cache-1:6380",
            "REDIS_3_PORT=tcp://app-cache-3:6379",
        ] {
            assert!(env.iter().any(|e| e == expected), "{expected} in {env:?}");
        }
        assert!(
            !env.iter().any(|e| e.starts_with("REDIS_3_NAME=")),
            "the service's own variable wins: {env:?}"
        );
        assert!(!env.iter().any(|e| e.starts_with("REDIS_2_")), "{env:?}");
    }
}
