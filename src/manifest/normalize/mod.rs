//! Typed specs → the normalised model, one entity at a time.
//!
//! Every accepted spelling is turned into one field here, and every rule that
//! concerns a single entity (a port that does not parse, `restart` and
//! `autorestart` that disagree, `every_node` with a replica count) is checked
//! here with the exact place of the offending value.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::diagnostic::{Diagnostic, Location};
use super::here::{Here, Seg, i, k};
use super::interpolate::Vars;
use super::model::*;
use super::spec::*;

mod lifecycle;
mod networks;
mod nodes;
mod pipeline;
mod ports;
mod provided;
mod storage;
#[cfg(test)]
mod tests;
mod values;

use lifecycle::*;
use networks::*;
use ports::*;
use storage::*;
use values::*;

pub use nodes::node;
pub use pipeline::pipeline;
pub use storage::{is_valid_name, repo_path};
pub use values::duration;

type Problems = Vec<Diagnostic>;

/// Normalise a service. Problems are returned beside a best-effort service.
pub fn service(
    name: &str,
    location: Location,
    spec: &ServiceSpec,
    here: &Here,
    vars: &Vars,
) -> (Service, Problems) {
    let mut p = Problems::new();
    if !is_valid_name(name) {
        p.push(
            Diagnostic::error(location.clone(), format!("`{name}` cannot be a service name"))
                .key(here.prefix.clone())
                .help("use letters, digits, `_`, `.` and `-`, starting with a letter or digit (it becomes part of container names)"),
        );
    }
    // `image:` with nothing after it is YAML null: the same mistake as `image: ""`.
    let image_written_empty = spec.image.is_none() && here.has_key("image");
    let image = match spec.image.as_deref().map(str::trim) {
        _ if image_written_empty => {
            p.push(
                here.error(&[k("image")], "`image` is empty")
                    .help("name an image, e.g. `nginx:1.27`"),
            );
            None
        }
        Some("") => {
            p.push(
                here.error(&[k("image")], "`image` is empty")
                    .help("name an image, e.g. `nginx:1.27`"),
            );
            None
        }
        other => other.map(str::to_string),
    };
    if spec.image.is_none() && spec.build.is_none() && !image_written_empty {
        p.push(
            here.error(&[], "service has neither `image` nor `build`")
                .help("add `image: NAME[:TAG]`, or `build: PATH` to build it from the repository"),
        );
    }
    let build = spec
        .build
        .as_ref()
        .and_then(|b| build(b, here, vars, &mut p));
    let command = spec
        .command
        .as_ref()
        .and_then(|c| command_line(c, here, "command", &mut p));
    let entrypoint = spec
        .entrypoint
        .as_ref()
        .and_then(|c| command_line(c, here, "entrypoint", &mut p));
    let environment = spec
        .environment
        .as_ref()
        .map(|e| environment_values(e, here, &[k("environment")], vars, &mut p))
        .unwrap_or_default();
    let env_files = match &spec.env_file {
        None => Vec::new(),
        Some(StringOrList::One(path)) => repo_path(path, here, &[k("env_file")], &mut p)
            .into_iter()
            .collect(),
        Some(StringOrList::Many(paths)) => paths
            .iter()
            .enumerate()
            .filter_map(|(n, path)| repo_path(path, here, &[k("env_file"), i(n)], &mut p))
            .collect(),
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(n, port)| parse_port(port, here, n, &mut p))
        .collect();
    let expose = spec
        .expose
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(n, e)| expose(e, here, n, &mut p))
        .collect();
    let volumes = spec
        .volumes
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(n, v)| mount(v, here, n, &mut p))
        .collect();
    let labels = labels(spec, here, vars, &mut p);
    let restart = restart(spec, here, &mut p);
    let healthcheck = spec
        .healthcheck
        .as_ref()
        .and_then(|h| healthcheck(h, here, &mut p));
    let strategy = strategy(spec, here, &mut p);
    let replicas = replicas(spec, strategy, here, &mut p);
    let deploy = spec.deploy.clone().unwrap_or_default();
    let constraints = deploy
        .placement
        .and_then(|pl| pl.constraints)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(n, c)| constraint(c, here, n, &mut p))
        .collect();
    let update = deploy
        .update_config
        .map(|u| update_config(&u, here, &mut p))
        .unwrap_or_default();
    let mem_limit = size(
        spec.mem_limit.as_ref(),
        (here, &[k("mem_limit")]),
        "memory size",
        Some("512m"),
        &mut p,
    );
    let limits = deploy
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .unwrap_or_default();
    let reserved = deploy
        .resources
        .as_ref()
        .and_then(|r| r.reservations.clone())
        .unwrap_or_default();
    let at_limits = |key: &str| [k("deploy"), k("resources"), k("limits"), k(key)];
    let limit_bytes = size(
        limits.memory.as_ref(),
        (here, &at_limits("memory")),
        "memory size",
        None,
        &mut p,
    );
    let mem_limit = agree(
        here,
        &mut p,
        ("mem_limit", mem_limit),
        ("deploy.resources.limits.memory", limit_bytes),
    );
    let reserved_bytes = size(
        reserved.memory.as_ref(),
        (
            here,
            &[k("deploy"), k("resources"), k("reservations"), k("memory")],
        ),
        "memory size",
        None,
        &mut p,
    );
    let limit_cpus = nano_cpus(
        limits.cpus.as_ref(),
        (here, &at_limits("cpus")),
        false,
        &mut p,
    );
    let restart = match deploy.restart_policy.as_ref() {
        Some(policy) => {
            let from_deploy = deploy_restart(policy, here, &mut p);
            let written = spec.restart.is_some() || spec.autorestart.is_some();
            let own = written.then_some(restart);
            agree(
                here,
                &mut p,
                ("restart", own),
                ("deploy.restart_policy", from_deploy),
            )
            .unwrap_or_default()
        }
        None => restart,
    };
    let depends_on = depends_on(spec, here, &mut p);
    let (restart_with, optional_dependencies) = dependency_options(spec);
    let links = spec.links.iter().flatten().map(|l| link(l)).collect();
    let autodestroy = autodestroy(spec, here, &mut p);
    if restart == Restart::Always && autodestroy != Autodestroy::Off {
        p.push(
            here.error(&[k("autodestroy")], "`autodestroy` must be `off` when containers always restart")
                .help("a container that always restarts never stops for good, so it can never be destroyed (Tutum's rule); drop one of the two"),
        );
    }
    let bytes_of = |key: &str, value: &Option<Scalar>, p: &mut Problems| {
        size(value.as_ref(), (here, &[k(key)]), "size", Some("512m"), p)
    };
    let mem_reservation = bytes_of("mem_reservation", &spec.mem_reservation, &mut p);
    let mem_reservation = agree(
        here,
        &mut p,
        ("mem_reservation", mem_reservation),
        ("deploy.resources.reservations.memory", reserved_bytes),
    );
    let memswap_limit = match &spec.memswap_limit {
        Some(value) if value.to_string() == "-1" => Some(-1),
        other => bytes_of("memswap_limit", other, &mut p).map(|b| b as i64),
    };
    let nano_cpus = nano_cpus(spec.cpus.as_ref(), (here, &[k("cpus")]), true, &mut p);
    let nano_cpus = agree(
        here,
        &mut p,
        ("cpus", nano_cpus),
        ("deploy.resources.limits.cpus", limit_cpus),
    );
    if nano_cpus.is_some() && (spec.cpu_quota.is_some() || spec.cpu_period.is_some()) {
        p.push(
            here.error(&[k("cpus")], "`cpus` cannot be combined with `cpu_quota` or `cpu_period`")
                .help("the engine refuses both; `cpus: 0.5` is `cpu_quota: 50000` with `cpu_period: 100000`"),
        );
    }
    if memswap_limit.is_some() && mem_limit.is_none() {
        p.push(
            here.error(&[k("memswap_limit")], "`memswap_limit` needs `mem_limit`")
                .help("the engine limits memory plus swap only together with memory"),
        );
    }
    if let Some(adjust) = spec.oom_score_adj
        && !(-1000..=1000).contains(&adjust)
    {
        p.push(
            here.error(
                &[k("oom_score_adj")],
                format!("`{adjust}` is outside -1000 to 1000"),
            )
            .help("the kernel takes -1000 (never kill) to 1000 (kill first)"),
        );
    }
    if let Some(container_name) = &spec.container_name {
        let count = match strategy {
            Strategy::EveryNode => None,
            _ => Some(replicas.unwrap_or(1)),
        };
        if count != Some(1) {
            let how_many = count.map_or("one per matching node".to_string(), |n| n.to_string());
            p.push(
                here.error(&[k("container_name")], format!("`container_name` names one container; this service runs {how_many}"))
                    .help("drop `container_name` (replicas are named `<stack>-<service>-<n>`), or run one replica"),
            );
        } else if !is_valid_name(container_name) {
            p.push(here.error(
                &[k("container_name")],
                format!("`{container_name}` cannot be a container name"),
            ));
        }
    }
    let network_mode = network_mode(spec, here, &mut p);
    let networks = service_networks(spec, here, &mut p);
    let pid = namespace_mode(spec.pid.as_deref(), "pid", &["host"], here, &mut p);
    let ipc = namespace_mode(
        spec.ipc.as_deref(),
        "ipc",
        &["private", "shareable", "none", "host"],
        here,
        &mut p,
    );
    let devices = devices(spec, here, &mut p);
    let shm_size = size(
        spec.shm_size.as_ref(),
        (here, &[k("shm_size")]),
        "size",
        Some("64m"),
        &mut p,
    );
    let sysctls = spec
        .sysctls
        .as_ref()
        .map(|s| key_values(s, here, &[k("sysctls")], vars, &mut p))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, value)| {
            if value.is_none() {
                p.push(
                    here.error(&[k("sysctls")], format!("sysctl `{key}` has no value"))
                        .help("write `KEY=VALUE`"),
                );
            }
            Some((key, value?))
        })
        .collect();
    let tmpfs = string_or_list(spec.tmpfs.as_ref());
    for (n, entry) in tmpfs.iter().enumerate() {
        if !entry.starts_with('/') {
            p.push(
                here.error(
                    &[k("tmpfs"), i(n)],
                    format!("`{entry}` is not an absolute path"),
                )
                .help("write `/PATH` or `/PATH:OPTIONS`, e.g. `/run:size=64m`"),
            );
        }
    }
    let pull_policy = match spec.pull_policy.as_deref() {
        None | Some("missing") | Some("if_not_present") => PullPolicy::Missing,
        Some("always") => PullPolicy::Always,
        Some("never") => PullPolicy::Never,
        Some("build") => PullPolicy::Build,
        Some(other) => {
            p.push(
                here.error(
                    &[k("pull_policy")],
                    format!("unknown pull policy `{other}`"),
                )
                .help("use `always`, `missing`, `never` or `build`"),
            );
            PullPolicy::Missing
        }
    };
    if spec.privileged == Some(true) {
        p.push(
            Diagnostic::notice(
                here.key_loc("privileged"),
                "runs privileged: its containers have full access to the host",
            )
            .key(here.key_path(&[k("privileged")])),
        );
    }
    let service = Service {
        name: name.to_string(),
        image,
        build,
        command,
        entrypoint,
        environment,
        env_files,
        ports,
        expose,
        volumes,
        labels,
        privileged: spec.privileged.unwrap_or(false),
        restart,
        healthcheck,
        replicas,
        strategy,
        tags: spec.tags.iter().flatten().cloned().collect(),
        constraints,
        update,
        mem_limit,
        cpu_shares: spec.cpu_shares,
        depends_on,
        restart_with,
        optional_dependencies,
        links,
        hostname: spec.hostname.clone(),
        user: spec.user.as_ref().map(|u| u.to_string()),
        working_dir: spec.working_dir.clone(),
        cap_add: spec.cap_add.clone().unwrap_or_default(),
        cap_drop: spec.cap_drop.clone().unwrap_or_default(),
        volumes_from: spec
            .volumes_from
            .iter()
            .flatten()
            .map(|v| v.split(':').next().unwrap_or(v).to_string())
            .collect(),
        nano_cpus,
        cpu_quota: spec.cpu_quota,
        cpu_period: spec.cpu_period,
        cpuset: spec.cpuset.as_ref().map(|c| c.to_string()),
        mem_reservation,
        memswap_limit,
        oom_score_adj: spec.oom_score_adj,
        pids_limit: limits.pids,
        container_name: spec.container_name.clone(),
        network_mode,
        networks,
        pid,
        ipc,
        devices,
        security_opt: spec.security_opt.clone().unwrap_or_default(),
        ulimits: spec
            .ulimits
            .iter()
            .flatten()
            .map(|(name, limit)| {
                let pair = match limit {
                    UlimitSpec::Both(n) => (*n, *n),
                    UlimitSpec::Pair { soft, hard } => (*soft, *hard),
                };
                (name.clone(), pair)
            })
            .collect(),
        logging: logging(spec, here, &mut p),
        init: spec.init,
        platform: platform(spec, here, &mut p),
        read_only: spec.read_only.unwrap_or(false),
        tty: spec.tty.unwrap_or(false),
        stdin_open: spec.stdin_open.unwrap_or(false),
        stop_signal: spec.stop_signal.clone(),
        shm_size,
        dns: string_or_list(spec.dns.as_ref()),
        dns_search: string_or_list(spec.dns_search.as_ref()),
        domainname: spec.domainname.clone(),
        sysctls,
        tmpfs,
        group_add: spec
            .group_add
            .iter()
            .flatten()
            .map(|g| g.to_string())
            .collect(),
        volumes_from_read_only: spec
            .volumes_from
            .iter()
            .flatten()
            .filter_map(|v| v.strip_suffix(":ro"))
            .map(str::to_string)
            .collect(),
        extra_hosts: extra_hosts(spec, here, &mut p),
        stop_grace_period: spec
            .stop_grace_period
            .as_deref()
            .and_then(|d| duration(d, here, &[k("stop_grace_period")], &mut p)),
        pull_policy,
        autoredeploy: spec.autoredeploy.unwrap_or(false),
        hooks: spec
            .hooks
            .as_ref()
            .map(|h| lifecycle::hooks(h, here, &mut p))
            .unwrap_or_default(),
        provided_refs: provided::provided_refs(spec, here, &mut p),
        provided: Vec::new(),
        lifecycle: crate::manifest::model::Lifecycle {
            post_start: lifecycle::container_hooks(
                spec.post_start.as_deref(),
                "post_start",
                here,
                vars,
                &mut p,
            ),
            pre_stop: lifecycle::container_hooks(
                spec.pre_stop.as_deref(),
                "pre_stop",
                here,
                vars,
                &mut p,
            ),
        },
        autodestroy,
        sequential_deployment: spec.sequential_deployment.unwrap_or(false),
        route: spec.route.as_ref().and_then(|r| route(r, here, &mut p)),
        files: BTreeMap::new(),
        reload: None,
        location,
        key_locations: key_locations(here),
    };
    (service, p)
}

/// Where each key of a service is written, and each entry of the lists
/// that name other services (`links[2]`, `volumes_from[0]`,
/// `depends_on.db`), so a problem found across services points at the entry.
fn key_locations(here: &Here) -> BTreeMap<String, Location> {
    use super::yaml::Value;
    let Value::Map(entries) = &here.node.value else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (key, value) in entries {
        let name = key.value.as_str();
        out.insert(name.to_string(), here.key_loc(name));
        if !matches!(
            name,
            "links" | "external_links" | "volumes_from" | "depends_on"
        ) {
            continue;
        }
        match &value.value {
            Value::Seq(items) => {
                for (n, item) in items.iter().enumerate() {
                    let location = here.loc(&[k(name), i(n)]);
                    match (&item.value, name) {
                        (Value::Str(target), "depends_on") => {
                            out.insert(format!("depends_on.{target}"), location);
                        }
                        _ => {
                            out.insert(format!("{name}[{n}]"), location);
                        }
                    }
                }
            }
            Value::Map(targets) => {
                for (target, _) in targets {
                    let (line, column) = super::yaml::line_col(target);
                    out.insert(
                        format!("{name}.{}", target.value),
                        Location::new(here.file, line, column),
                    );
                }
            }
            _ => {}
        }
    }
    out
}
