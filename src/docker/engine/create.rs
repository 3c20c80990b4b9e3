//! What a container is created with: the Engine API body from the
//! planner's container spec, and the live files written into it.

#[allow(unused_imports)]
use super::*;

/// Labels and driver options for a named volume the engine creates on
/// first use (Compose's top-level `labels` and `driver_opts`).
pub(super) fn volume_options(
    mount: &crate::docker::MountSpec,
) -> Option<bollard::models::MountVolumeOptions> {
    if mount.labels.is_empty() && mount.driver_opts.is_empty() {
        return None;
    }
    Some(bollard::models::MountVolumeOptions {
        labels: Some(mount.labels.clone().into_iter().collect()),
        driver_config: (!mount.driver_opts.is_empty()).then(|| {
            bollard::models::MountVolumeOptionsDriverConfig {
                name: Some("local".into()),
                options: Some(mount.driver_opts.clone().into_iter().collect()),
            }
        }),
        ..Default::default()
    })
}

/// The largest live configuration file (and command output) pier reads back.
pub(super) const MAX_LIVE_FILE: usize = 1 << 20;

/// The contents of the first regular file in a tar archive.
pub(super) fn first_file(archive: &[u8]) -> std::io::Result<Option<String>> {
    use std::io::Read as _;
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            return Ok(Some(text));
        }
    }
    Ok(None)
}

/// A tar archive of `files` (absolute path → contents), to unpack at `/`.
/// The engine makes the folders they need, as it does for the pipeline's
/// workspace archives.
pub(super) fn files_archive(files: &BTreeMap<String, String>) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(contents.len() as u64);
        archive.append_data(
            &mut header,
            path.trim_start_matches('/'),
            contents.as_bytes(),
        )?;
    }
    archive.into_inner()
}

/// The tar archive of Compose's configs and secrets: each file with its
/// owner and mode, and each folder above it (root's, 0755) first.
pub(super) fn provided_archive(
    files: &[crate::manifest::model::ProvidedFile],
) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut folders = std::collections::BTreeSet::new();
    for file in files {
        let path = file.target.trim_start_matches('/');
        let mut folder = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, f)| f)
        {
            folder = if folder.is_empty() {
                part.to_string()
            } else {
                format!("{folder}/{part}")
            };
            if folders.insert(folder.clone()) {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                archive.append_data(&mut header, format!("{folder}/"), std::io::empty())?;
            }
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(file.mode);
        header.set_uid(u64::from(file.uid));
        header.set_gid(u64::from(file.gid));
        header.set_size(file.contents.len() as u64);
        archive.append_data(&mut header, path, file.contents.as_slice())?;
    }
    archive.into_inner()
}

pub(super) fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut port_bindings: HashMap<String, Option<Vec<BollardPortBinding>>> = HashMap::new();
    for binding in &spec.ports {
        port_bindings
            .entry(binding.container.clone())
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(BollardPortBinding {
                host_ip: binding.host_ip.clone(),
                host_port: Some(binding.host_port.map(|p| p.to_string()).unwrap_or_default()),
            });
    }
    let mut exposed: Vec<String> = spec.exposed.clone();
    exposed.extend(spec.ports.iter().map(|p| p.container.clone()));
    exposed.sort();
    exposed.dedup();
    let binds: Vec<String> = spec
        .mounts
        .iter()
        .filter_map(|m| {
            let relabel = m.relabel?;
            let mode = if m.read_only { "ro" } else { "rw" };
            Some(format!("{}:{}:{mode},{relabel}", m.source, m.target))
        })
        .collect();
    let mounts = spec
        .mounts
        .iter()
        .filter(|m| m.relabel.is_none())
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: (!m.source.is_empty()).then(|| m.source.clone()),
            typ: Some(if m.kind == "bind" {
                MountType::BIND
            } else {
                MountType::VOLUME
            }),
            read_only: Some(m.read_only),
            volume_options: volume_options(m),
            ..Default::default()
        })
        .collect();
    let (restart_name, retries) = &spec.restart;
    let restart = RestartPolicy {
        name: Some(match restart_name.as_str() {
            "always" => RestartPolicyNameEnum::ALWAYS,
            "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            _ => RestartPolicyNameEnum::NO,
        }),
        maximum_retry_count: retries.map(i64::from),
    };
    let nanos = |d: Option<Duration>| d.map(|d| d.as_nanos() as i64);
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(spec.env.clone()),
        exposed_ports: Some(exposed),
        labels: Some(spec.labels.clone().into_iter().collect()),
        hostname: spec.hostname.clone(),
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        stop_timeout: spec.stop_timeout.map(|d| d.as_secs() as i64),
        stop_signal: spec.stop_signal.clone(),
        tty: spec.tty.then_some(true),
        open_stdin: spec.stdin_open.then_some(true),
        stdin_once: spec.stdin_once.then_some(true),
        domainname: spec.domainname.clone(),
        healthcheck: spec.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: nanos(h.interval),
            timeout: nanos(h.timeout),
            retries: h.retries.map(i64::from),
            start_period: nanos(h.start_period),
            ..Default::default()
        }),
        host_config: Some(HostConfig {
            port_bindings: Some(port_bindings),
            mounts: Some(mounts),
            binds: (!binds.is_empty()).then_some(binds),
            privileged: Some(spec.privileged),
            restart_policy: Some(restart),
            memory: spec.memory.map(|m| m as i64),
            cpu_shares: spec.cpu_shares.map(i64::from),
            cap_add: Some(spec.cap_add.clone()),
            cap_drop: Some(spec.cap_drop.clone()),
            extra_hosts: Some(spec.extra_hosts.clone()),
            network_mode: Some(spec.network.clone()),
            volumes_from: (!spec.volumes_from.is_empty()).then(|| spec.volumes_from.clone()),
            nano_cpus: spec.nano_cpus,
            cpu_quota: spec.cpu_quota,
            cpu_period: spec.cpu_period,
            cpuset_cpus: spec.cpuset.clone(),
            memory_reservation: spec.memory_reservation.map(|m| m as i64),
            memory_swap: spec.memory_swap,
            oom_score_adj: spec.oom_score_adj,
            pids_limit: spec.pids_limit,
            ulimits: (!spec.ulimits.is_empty()).then(|| {
                spec.ulimits
                    .iter()
                    .map(|(name, (soft, hard))| bollard::models::ResourcesUlimits {
                        name: Some(name.clone()),
                        soft: Some(*soft),
                        hard: Some(*hard),
                    })
                    .collect()
            }),
            log_config: spec.logging.as_ref().map(|(driver, options)| {
                bollard::models::HostConfigLogConfig {
                    typ: Some(driver.clone()),
                    config: Some(options.clone().into_iter().collect()),
                }
            }),
            init: spec.init,
            readonly_rootfs: spec.read_only.then_some(true),
            shm_size: spec.shm_size.map(|s| s as i64),
            dns: (!spec.dns.is_empty()).then(|| spec.dns.clone()),
            dns_search: (!spec.dns_search.is_empty()).then(|| spec.dns_search.clone()),
            sysctls: (!spec.sysctls.is_empty()).then(|| spec.sysctls.clone().into_iter().collect()),
            tmpfs: (!spec.tmpfs.is_empty()).then(|| {
                spec.tmpfs
                    .iter()
                    .map(|entry| {
                        let (path, options) = entry.split_once(':').unwrap_or((entry, ""));
                        (path.to_string(), options.to_string())
                    })
                    .collect()
            }),
            group_add: (!spec.group_add.is_empty()).then(|| spec.group_add.clone()),
            devices: (!spec.devices.is_empty()).then(|| {
                spec.devices
                    .iter()
                    .map(
                        |(host, container, permissions)| bollard::models::DeviceMapping {
                            path_on_host: Some(host.clone()),
                            path_in_container: Some(container.clone()),
                            cgroup_permissions: Some(permissions.clone()),
                        },
                    )
                    .collect()
            }),
            security_opt: (!spec.security_opt.is_empty()).then(|| spec.security_opt.clone()),
            pid_mode: spec.pid_mode.clone(),
            ipc_mode: spec.ipc_mode.clone(),
            ..Default::default()
        }),
        // Aliases exist only on a user-defined network.
        networking_config: spec.on_stack_network().then(|| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                spec.network.clone(),
                EndpointSettings {
                    aliases: Some(spec.aliases.clone()),
                    links: spec.network_links.get(&spec.network).cloned(),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}
