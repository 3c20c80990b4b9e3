//! Typed specs → the normalised model, one entity at a time.
//!
//! Every accepted spelling is turned into one field here, and every rule that
//! concerns a single entity (a port that does not parse, `restart` and
//! `autorestart` that disagree, `every_node` with a replica count) is checked
//! here with the exact place of the offending value.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::diagnostic::{Diagnostic, Location};
use super::interpolate::Vars;
use super::load::{Here, Seg, i, k};
use super::model::*;
use super::spec::*;

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

/// `route`: at least one host, an optional path prefix, and the port.
fn route(spec: &RouteSpec, here: &Here, p: &mut Problems) -> Option<Route> {
    let hosts: Vec<String> = spec
        .host
        .iter()
        .chain(spec.hosts.iter().flatten())
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let mut ok = true;
    if hosts.is_empty() {
        p.push(
            here.error(&[k("route")], "`route` names no host")
                .help("add `host: app.example.com` (or `hosts: [...]`)"),
        );
        ok = false;
    }
    for host in hosts.iter().filter(|h| !super::router::is_host_name(h)) {
        p.push(
            here.error(&[k("route")], format!("`{host}` is not a host name"))
                .help(
                    "write a name like `app.example.com`, or `*.example.com` for every subdomain",
                ),
        );
        ok = false;
    }
    let path = match spec.path.as_deref().map(str::trim) {
        None | Some("/") => None,
        Some(path) if super::router::is_route_path(path) => {
            Some(path.trim_end_matches('/').to_string())
        }
        Some(path) => {
            p.push(
                here.error(
                    &[k("route"), k("path")],
                    format!("`{}` is not a path prefix", path.escape_debug()),
                )
                .help(
                    "start it with `/` and use letters, digits and `-._~/%+@:=,;!` only, e.g. `/api`; it matches that path and everything under it",
                ),
            );
            ok = false;
            None
        }
    };
    let port =
        match spec.port {
            Some(port) if port > 0 => Some(port),
            Some(_) => {
                p.push(here.error(&[k("route"), k("port")], "port 0 cannot serve requests"));
                None
            }
            None => {
                p.push(here.error(&[k("route")], "`route` names no `port`").help(
                    "add `port:` with the port the replicas serve HTTP on, e.g. `port: 8080`",
                ));
                None
            }
        };
    Some(Route {
        hosts,
        path,
        port: port?,
        tls: spec.tls.unwrap_or(false),
    })
    .filter(|_| ok)
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

const PATH_HELP: &str =
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

fn build(spec: &BuildSpec, here: &Here, vars: &Vars, p: &mut Problems) -> Option<Build> {
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

fn command_line(
    spec: &StringOrList,
    here: &Here,
    key: &str,
    p: &mut Problems,
) -> Option<Vec<String>> {
    match spec {
        StringOrList::Many(args) => Some(args.clone()),
        StringOrList::One(line) => match shell_words::split(line) {
            Ok(args) => Some(args),
            Err(_) => {
                p.push(
                    here.error(&[k(key)], format!("`{key}` has an unclosed quote"))
                        .help("close the quote, or write the arguments as a list"),
                );
                None
            }
        },
    }
}

/// `KEY=VALUE` lists and mappings. A key without a value takes pier's own environment's.
fn string_or_list(value: Option<&StringOrList>) -> Vec<String> {
    match value {
        None => Vec::new(),
        Some(StringOrList::One(one)) => vec![one.clone()],
        Some(StringOrList::Many(many)) => many.clone(),
    }
}

/// Environment variables: key-value pairs where a bare `NAME` that pier's
/// own environment does not set is left out, as in Compose, with a notice
/// so the omission is not silent.
fn environment_values(
    spec: &KeyValues,
    here: &Here,
    at: &[Seg],
    vars: &Vars,
    p: &mut Problems,
) -> BTreeMap<String, Option<String>> {
    let values = key_values(spec, here, at, vars, p);
    for (key, _) in values.iter().filter(|(_, value)| value.is_none()) {
        let mut path = at.to_vec();
        path.push(match spec {
            KeyValues::Map(_) => k(key),
            KeyValues::List(items) => i(items.iter().position(|item| item == key).unwrap_or(0)),
        });
        p.push(
            Diagnostic::notice(
                here.loc(&path),
                format!("`{key}` is not set in pier's environment, so containers do not get it"),
            )
            .key(here.key_path(&path))
            .help(format!(
                "set {key} in the environment of the pier process, or write `{key}=VALUE`"
            )),
        );
    }
    values
}

fn key_values(
    spec: &KeyValues,
    here: &Here,
    at: &[Seg],
    vars: &Vars,
    p: &mut Problems,
) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    match spec {
        KeyValues::Map(map) => {
            for (key, value) in map {
                out.insert(
                    key.clone(),
                    value
                        .as_ref()
                        .map(|v| v.to_string())
                        .or_else(|| vars.get(key).cloned()),
                );
            }
        }
        KeyValues::List(items) => {
            for (n, item) in items.iter().enumerate() {
                let (key, value) = match item.split_once('=') {
                    Some((key, value)) => (key.to_string(), Some(value.to_string())),
                    None => (item.clone(), vars.get(item).cloned()),
                };
                let mut path = at.to_vec();
                path.push(i(n));
                if key.is_empty() || key.contains(char::is_whitespace) {
                    p.push(here.error(&path, format!("`{item}` is not `KEY=VALUE`")));
                } else if out.insert(key.clone(), value).is_some() {
                    p.push(
                        here.error(&path, format!("`{key}` is set twice"))
                            .help("remove one of the two"),
                    );
                }
            }
        }
    }
    out
}

fn labels(
    spec: &ServiceSpec,
    here: &Here,
    vars: &Vars,
    p: &mut Problems,
) -> BTreeMap<String, String> {
    let Some(labels) = &spec.labels else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (key, value) in key_values(labels, here, &[k("labels")], vars, p) {
        if key.starts_with("pier.") {
            p.push(
                here.error(
                    &[k("labels")],
                    format!("label `{key}` uses the reserved prefix `pier.`"),
                )
                .help(
                    "pier marks the containers it owns with `pier.*` labels; choose another prefix",
                ),
            );
        } else {
            out.insert(key, value.unwrap_or_default());
        }
    }
    out
}

fn parse_range(text: &str) -> Option<PortRange> {
    let (start, end) = match text.split_once('-') {
        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
        None => {
            let port = text.parse().ok()?;
            (port, port)
        }
    };
    (start > 0 && start <= end).then_some(PortRange { start, end })
}

fn parse_protocol(text: &str) -> Option<Protocol> {
    match text {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn parse_port(spec: &PortSpec, here: &Here, n: usize, p: &mut Problems) -> Option<Port> {
    let at = [k("ports"), i(n)];
    let port = match spec {
        PortSpec::Number(target) => u16::try_from(*target)
            .ok()
            .filter(|t| *t > 0)
            .map(|t| Port {
                host_ip: None,
                published: None,
                target: PortRange { start: t, end: t },
                protocol: Protocol::Tcp,
            }),
        PortSpec::Short(text) => parse_short_port(text),
        PortSpec::Long(long) => {
            if long.mode.as_deref().is_some_and(|m| m != "host") {
                p.push(
                    here.error(&at, "only `mode: host` is supported")
                        .help("ingress mode needs Swarm"),
                );
                return None;
            }
            let target = u16::try_from(long.target).ok().filter(|t| *t > 0);
            let published = match &long.published {
                None => Some(None),
                Some(value) => parse_range(&value.to_string()).map(Some),
            };
            let protocol = parse_protocol(long.protocol.as_deref().unwrap_or("tcp"));
            match (target, published, protocol) {
                (Some(t), Some(published), Some(protocol)) => Some(Port {
                    host_ip: long.host_ip.clone(),
                    published,
                    target: PortRange { start: t, end: t },
                    protocol,
                }),
                _ => None,
            }
        }
    };
    if port.is_none() {
        p.push(
            here.error(&at, "not a valid port")
                .help("write `CONTAINER`, `HOST:CONTAINER` or `IP:HOST:CONTAINER` with an optional `/tcp` or `/udp`; ports are 1-65535, ranges `8000-8010`"),
        );
    }
    port
}

/// `[[IP:]HOST:]CONTAINER[/PROTO]`, with ranges; IPv6 host addresses in brackets.
fn parse_short_port(text: &str) -> Option<Port> {
    let (mapping, protocol) = match text.rsplit_once('/') {
        Some((mapping, proto)) => (mapping, parse_protocol(proto)?),
        None => (text, Protocol::Tcp),
    };
    let (host_ip, rest) = if let Some(stripped) = mapping.strip_prefix('[') {
        let (ip, rest) = stripped.split_once("]:")?;
        (Some(ip.to_string()), rest)
    } else {
        let parts: Vec<&str> = mapping.split(':').collect();
        match parts.len() {
            3 => (Some(parts[0].to_string()), &mapping[parts[0].len() + 1..]),
            1 | 2 => (None, mapping),
            _ => return None,
        }
    };
    let (published, target) = match rest.split_once(':') {
        Some(("", target)) => (None, parse_range(target)?),
        Some((host, target)) => (Some(parse_range(host)?), parse_range(target)?),
        None => (None, parse_range(rest)?),
    };
    if published.is_some_and(|p| p.len() != target.len() && p.len() != 1) && target.len() != 1 {
        return None;
    }
    Some(Port {
        host_ip: host_ip.filter(|ip| !ip.is_empty()),
        published,
        target,
        protocol,
    })
}

fn expose(spec: &Scalar, here: &Here, n: usize, p: &mut Problems) -> Option<String> {
    let text = spec.to_string();
    let (range, proto) = text.split_once('/').unwrap_or((&text, "tcp"));
    if parse_range(range).is_some() && parse_protocol(proto).is_some() {
        Some(text)
    } else {
        p.push(
            here.error(&[k("expose"), i(n)], format!("`{text}` is not a port"))
                .help("write `PORT` or `PORT/udp`"),
        );
        None
    }
}

fn mount(spec: &VolumeSpec, here: &Here, n: usize, p: &mut Problems) -> Option<Mount> {
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

/// `networks`: the networks a service joins, by key, with the aliases it
/// takes on each. Whether each is declared is checked with the whole
/// manifest.
fn service_networks(
    spec: &ServiceSpec,
    here: &Here,
    p: &mut Problems,
) -> BTreeMap<String, Vec<String>> {
    use super::spec::ServiceNetworksSpec;
    let Some(written) = &spec.networks else {
        return BTreeMap::new();
    };
    if spec.network_mode.is_some() || spec.net.is_some() {
        p.push(
            here.error(
                &[k("networks")],
                "`networks` and `network_mode` exclude each other",
            )
            .help("a container on the host's network, or on none, joins no other network"),
        );
        return BTreeMap::new();
    }
    let joined: BTreeMap<String, Vec<String>> = match written {
        ServiceNetworksSpec::List(names) => names.iter().map(|n| (n.clone(), Vec::new())).collect(),
        ServiceNetworksSpec::Map(map) => map
            .iter()
            .map(|(name, settings)| {
                let aliases = settings
                    .as_ref()
                    .and_then(|s| s.aliases.clone())
                    .unwrap_or_default();
                (name.clone(), aliases)
            })
            .collect(),
    };
    if joined.is_empty() {
        p.push(
            here.error(&[k("networks")], "`networks` lists no network")
                .help("list the networks the service joins (`default` is the stack's own), or remove the key"),
        );
    }
    for (network, aliases) in &joined {
        for alias in aliases.iter().filter(|a| !is_valid_name(a)) {
            p.push(here.error(
                &[k("networks"), k(network), k("aliases")],
                format!("`{alias}` cannot be a network alias"),
            ));
        }
    }
    joined
}

/// `network_mode` (or Tutum's `net`): `None` for the stack's network.
fn network_mode(spec: &ServiceSpec, here: &Here, p: &mut Problems) -> Option<String> {
    let (key, written) = match (spec.network_mode.as_deref(), spec.net.as_deref()) {
        (Some(mode), Some(net)) if mode != net => {
            p.push(
                here.error(&[k("net")], "`net` and `network_mode` disagree")
                    .help("they are one setting; write it once"),
            );
            return None;
        }
        (Some(mode), _) => ("network_mode", mode),
        (None, Some(net)) => ("net", net),
        (None, None) => return None,
    };
    match written {
        "bridge" | "default" => None,
        "host" | "none" => Some(written.to_string()),
        shared if shared.starts_with("service:") || shared.starts_with("container:") => {
            p.push(
                here.error(&[k(key)], format!("`{key}: {shared}` is not supported"))
                    .help("sharing another container's network is not supported; link to the service instead"),
            );
            None
        }
        other => {
            p.push(
                here.error(&[k(key)], format!("unknown network mode `{other}`"))
                    .help("use `bridge` (the default: the stack's own network), `none`, or `host`; to join networks of your own, list them in `networks`"),
            );
            None
        }
    }
}

/// `pid` or `ipc`: one of `allowed`; sharing another container's is not supported.
fn namespace_mode(
    written: Option<&str>,
    key: &str,
    allowed: &[&str],
    here: &Here,
    p: &mut Problems,
) -> Option<String> {
    let mode = written?;
    if allowed.contains(&mode) {
        return Some(mode.to_string());
    }
    let help = if mode.starts_with("service:") || mode.starts_with("container:") {
        format!("sharing another container's {key} namespace is not supported")
    } else {
        format!(
            "use {}",
            allowed
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    p.push(
        here.error(&[k(key)], format!("`{key}: {mode}` is not supported"))
            .help(help),
    );
    None
}

/// `devices`: `HOST[:CONTAINER[:PERMISSIONS]]`, as `docker run --device`.
fn devices(spec: &ServiceSpec, here: &Here, p: &mut Problems) -> Vec<super::model::Device> {
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
        out.push(super::model::Device {
            host: host.to_string(),
            container: container.to_string(),
            permissions: permissions.to_string(),
        });
    }
    out
}

/// A short mount's mode, `ro`/`rw` and `z`/`Z` in any order
/// (`ro,Z`): read-only, and the SELinux relabelling. The unknown option on failure.
fn mount_mode(mode: &str) -> Result<(bool, Option<char>), &str> {
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

fn restart(spec: &ServiceSpec, here: &Here, p: &mut Problems) -> Restart {
    let from_restart = spec.restart.as_deref().and_then(|r| {
        let parsed = match r {
            "no" | "\"no\"" => Some(Restart::No),
            "always" => Some(Restart::Always),
            "unless-stopped" => Some(Restart::UnlessStopped),
            "on-failure" => Some(Restart::OnFailure { max_retries: None }),
            other => other
                .strip_prefix("on-failure:")
                .and_then(|n| n.parse().ok())
                .map(|n| Restart::OnFailure {
                    max_retries: Some(n),
                }),
        };
        if parsed.is_none() {
            p.push(
                here.error(&[k("restart")], format!("unknown restart policy `{r}`"))
                    .help("use `no`, `always`, `on-failure[:N]` or `unless-stopped`"),
            );
        }
        parsed
    });
    let from_autorestart = spec.autorestart.as_deref().and_then(|r| {
        // Tutum's API spelled these in capitals (`ALWAYS`), and stackfiles
        // exported from it kept them.
        let parsed = match r.to_ascii_lowercase().as_str() {
            "off" => Some(Restart::No),
            "on_failure" => Some(Restart::OnFailure { max_retries: None }),
            "always" => Some(Restart::Always),
            _ => None,
        };
        if parsed.is_none() {
            p.push(
                here.error(&[k("autorestart")], format!("unknown autorestart `{r}`"))
                    .help("use `off`, `on_failure` or `always`"),
            );
        }
        parsed
    });
    match (from_restart, from_autorestart) {
        (Some(a), Some(b)) if a != b => {
            p.push(
                Diagnostic::error(
                    here.key_loc("autorestart"),
                    "`autorestart` and `restart` disagree",
                )
                .key(here.key_path(&[k("autorestart")]))
                .related(here.key_loc("restart"))
                .help("they set the same thing: keep one"),
            );
            a
        }
        (a, b) => a.or(b).unwrap_or_default(),
    }
}

/// `logging`, or its older spelling `log_driver` + `log_opt`.
fn logging(
    spec: &ServiceSpec,
    here: &Here,
    p: &mut Problems,
) -> Option<(String, BTreeMap<String, String>)> {
    let options = |map: Option<&BTreeMap<String, Scalar>>| -> BTreeMap<String, String> {
        map.into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    };
    let older = spec.log_driver.is_some() || spec.log_opt.is_some();
    match (&spec.logging, older) {
        (Some(_), true) => {
            p.push(
                here.error(
                    &[k("log_driver")],
                    "`logging` and `log_driver`/`log_opt` set the same thing",
                )
                .help("keep `logging: {driver, options}`"),
            );
            None
        }
        (Some(logging), false) => {
            let Some(driver) = logging.driver.clone() else {
                p.push(
                    here.error(&[k("logging")], "`logging` needs a `driver`")
                        .help("e.g. `logging: { driver: json-file, options: { max-size: 10m } }`"),
                );
                return None;
            };
            Some((driver, options(logging.options.as_ref())))
        }
        (None, true) => {
            let Some(driver) = spec.log_driver.clone() else {
                p.push(
                    here.error(&[k("log_opt")], "`log_opt` needs `log_driver`")
                        .help("name the driver the options are for"),
                );
                return None;
            };
            Some((driver, options(spec.log_opt.as_ref())))
        }
        (None, false) => None,
    }
}

/// One setting written in two places (Compose's top-level key and its
/// `deploy` form): either will do, both must agree.
fn agree<T: PartialEq>(
    here: &Here,
    p: &mut Problems,
    (first, a): (&str, Option<T>),
    (second, b): (&str, Option<T>),
) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) if a != b => {
            let path: Vec<Seg> = second.split('.').map(k).collect();
            p.push(
                here.error(&path, format!("`{first}` and `{second}` disagree"))
                    .help("they set the same thing: keep one"),
            );
            Some(a)
        }
        (a, b) => a.or(b),
    }
}

/// `deploy.restart_policy` as Compose maps it to an engine restart policy.
fn deploy_restart(policy: &RestartPolicySpec, here: &Here, p: &mut Problems) -> Option<Restart> {
    let at = [k("deploy"), k("restart_policy"), k("condition")];
    match policy.condition.as_deref() {
        Some("none") => Some(Restart::No),
        Some("on-failure" | "on_failure") => Some(Restart::OnFailure {
            max_retries: policy.max_attempts,
        }),
        None | Some("any") => Some(if policy.max_attempts.is_some() {
            Restart::OnFailure {
                max_retries: policy.max_attempts,
            }
        } else {
            Restart::Always
        }),
        Some(other) => {
            p.push(
                here.error(&at, format!("unknown restart condition `{other}`"))
                    .help("use `none`, `on-failure` or `any`"),
            );
            None
        }
    }
}

fn autodestroy(spec: &ServiceSpec, here: &Here, p: &mut Problems) -> Autodestroy {
    // Tutum's documented spellings are `no` and `on-success`; its API
    // wrote them in capitals (`ON_SUCCESS`).
    let written = spec.autodestroy.as_deref().map(str::to_ascii_lowercase);
    match written.as_deref() {
        None | Some("off" | "no") => Autodestroy::Off,
        Some("on_success" | "on-success") => Autodestroy::OnSuccess,
        Some("always") => Autodestroy::Always,
        Some(other) => {
            p.push(
                here.error(
                    &[k("autodestroy")],
                    format!("unknown autodestroy `{other}`"),
                )
                .help("use `no` (or `off`), `on-success` (or `on_success`) or `always`"),
            );
            Autodestroy::Off
        }
    }
}

fn strategy(spec: &ServiceSpec, here: &Here, p: &mut Problems) -> Strategy {
    match spec.deployment_strategy.as_deref() {
        None | Some("emptiest_node") => Strategy::EmptiestNode,
        Some("high_availability") => Strategy::HighAvailability,
        Some("every_node") => Strategy::EveryNode,
        Some(other) => {
            let help = match super::diagnostic::did_you_mean(
                other,
                ["emptiest_node", "high_availability", "every_node"],
            ) {
                Some(best) => format!("did you mean `{best}`?"),
                None => "use `emptiest_node`, `high_availability` or `every_node`".into(),
            };
            p.push(
                here.error(
                    &[k("deployment_strategy")],
                    format!("unknown deployment strategy `{other}`"),
                )
                .help(help),
            );
            Strategy::EmptiestNode
        }
    }
}

fn replicas(spec: &ServiceSpec, strategy: Strategy, here: &Here, p: &mut Problems) -> Option<u32> {
    let tutum = spec.target_num_containers;
    let compose = spec.deploy.as_ref().and_then(|d| d.replicas);
    let at_compose = || here.loc(&[k("deploy"), k("replicas")]);
    if let (Some(a), Some(b)) = (tutum, compose)
        && a != b
    {
        p.push(
            Diagnostic::error(
                here.key_loc("target_num_containers"),
                format!("`target_num_containers: {a}` and `deploy.replicas: {b}` disagree"),
            )
            .key(here.key_path(&[k("target_num_containers")]))
            .related(at_compose())
            .help("they set the same thing: keep one"),
        );
    }
    let replicas = tutum.or(compose);
    if strategy == Strategy::EveryNode {
        if replicas.is_some() {
            let location = if tutum.is_some() {
                here.key_loc("target_num_containers")
            } else {
                at_compose()
            };
            p.push(
                Diagnostic::error(location, "an `every_node` service cannot be scaled")
                    .key(here.key_path(&[k("deployment_strategy")]))
                    .help("it runs one container on every matching node; remove the replica count, or choose another strategy"),
            );
        }
        return None;
    }
    Some(replicas.unwrap_or(1))
}

fn healthcheck(spec: &HealthcheckSpec, here: &Here, p: &mut Problems) -> Option<Healthcheck> {
    let at = |key: &str| [k("healthcheck"), k(key)];
    let test = if spec.disable == Some(true) {
        vec!["NONE".to_string()]
    } else {
        match &spec.test {
            None => Vec::new(),
            Some(StringOrList::One(line)) => vec!["CMD-SHELL".into(), line.clone()],
            Some(StringOrList::Many(parts)) => {
                if !matches!(
                    parts.first().map(String::as_str),
                    Some("CMD" | "CMD-SHELL" | "NONE")
                ) {
                    p.push(
                        here.error(
                            &at("test"),
                            "a health check test list starts with `CMD`, `CMD-SHELL` or `NONE`",
                        )
                        .help("e.g. `[\"CMD\", \"wget\", \"-q\", \"-O-\", \"http://localhost/\"]`"),
                    );
                    return None;
                }
                parts.clone()
            }
        }
    };
    Some(Healthcheck {
        test,
        interval: spec
            .interval
            .as_deref()
            .and_then(|d| duration(d, here, &at("interval"), p)),
        timeout: spec
            .timeout
            .as_deref()
            .and_then(|d| duration(d, here, &at("timeout"), p)),
        retries: spec.retries,
        start_period: spec
            .start_period
            .as_deref()
            .and_then(|d| duration(d, here, &at("start_period"), p)),
    })
}

/// Compose durations: `10s`, `1m30s`, `500ms`, `2h`.
pub fn duration(text: &str, here: &Here, at: &[Seg], p: &mut Problems) -> Option<Duration> {
    match humantime::parse_duration(text) {
        Ok(d) => Some(d),
        Err(_) => {
            p.push(
                here.error(at, format!("`{text}` is not a duration"))
                    .help("write e.g. `10s`, `1m30s`, `500ms`"),
            );
            None
        }
    }
}

/// A size in bytes written at `at`; an error calling it not a `what`
/// (with an `example` in the help, when given) if it does not parse.
fn size(
    value: Option<&Scalar>,
    (here, at): (&Here, &[Seg]),
    what: &str,
    example: Option<&str>,
    p: &mut Problems,
) -> Option<u64> {
    let value = value?;
    let parsed = parse_bytes(&value.to_string());
    if parsed.is_none() {
        let error = here.error(at, format!("`{value}` is not a {what}"));
        p.push(match example {
            Some(example) => error.help(format!(
                "write bytes, or a number with b, k, m or g, e.g. `{example}`"
            )),
            None => error,
        });
    }
    parsed
}

/// A number of CPUs written at `at`, in billionths; an error if it is not
/// a positive number (with a help line when `with_help`).
fn nano_cpus(
    value: Option<&Scalar>,
    (here, at): (&Here, &[Seg]),
    with_help: bool,
    p: &mut Problems,
) -> Option<i64> {
    let cpus = value?;
    match cpus.to_string().parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Some((n * 1e9).round() as i64),
        _ => {
            let error = here.error(at, format!("`{cpus}` is not a number of CPUs"));
            p.push(if with_help {
                error.help("write a positive number, e.g. `0.5` or `2`")
            } else {
                error
            });
            None
        }
    }
}

fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let text = text
        .strip_suffix('b')
        .filter(|t| t.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(&text);
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let factor: u64 = match unit {
        "" | "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

fn constraint(text: &str, here: &Here, n: usize, p: &mut Problems) -> Option<Constraint> {
    let parsed = (|| {
        let (subject, equal, value) = if let Some((l, r)) = text.split_once("==") {
            (l.trim(), true, r.trim())
        } else {
            let (l, r) = text.split_once("!=")?;
            (l.trim(), false, r.trim())
        };
        let subject = match subject {
            "node.tags" | "node.tag" => ConstraintSubject::Tag { key: None },
            "node.name" | "node.hostname" => ConstraintSubject::NodeName,
            other => ConstraintSubject::Tag {
                key: Some(other.strip_prefix("node.labels.")?.to_string()),
            },
        };
        (!value.is_empty()).then(|| Constraint {
            subject,
            equal,
            value: value.to_string(),
        })
    })();
    if parsed.is_none() {
        p.push(
            here.error(&[k("deploy"), k("placement"), k("constraints"), i(n)], format!("cannot read constraint `{text}`"))
                .help("write `node.labels.KEY == VALUE` (a node tag `KEY=VALUE`), `node.tags == TAG` or `node.name == NAME`, or the same with `!=`"),
        );
    }
    parsed
}

fn update_config(spec: &UpdateConfigSpec, here: &Here, p: &mut Problems) -> UpdateConfig {
    let at = |key: &str| [k("deploy"), k("update_config"), k(key)];
    let mut config = UpdateConfig::default();
    if let Some(n) = spec.parallelism {
        if n == 0 {
            p.push(here.error(&at("parallelism"), "`parallelism` must be at least 1"));
        } else {
            config.parallelism = n;
        }
    }
    if let Some(d) = spec
        .delay
        .as_deref()
        .and_then(|d| duration(d, here, &at("delay"), p))
    {
        config.delay = d;
    }
    if let Some(d) = spec
        .monitor
        .as_deref()
        .and_then(|d| duration(d, here, &at("monitor"), p))
    {
        config.monitor = d;
    }
    config.order_written = spec.order.is_some();
    match spec.order.as_deref() {
        None | Some("stop-first") => {}
        Some("start-first") => config.order = UpdateOrder::StartFirst,
        Some(other) => p.push(
            here.error(&at("order"), format!("unknown update order `{other}`"))
                .help("use `stop-first` or `start-first`"),
        ),
    }
    match spec.failure_action.as_deref() {
        None | Some("rollback") => {}
        Some("pause") => p.push(
            here.error(&at("failure_action"), "`failure_action: pause` is not supported yet")
                .help("pier puts the replaced replica back and stops the rollout (`rollback`); remove the key or write `rollback`"),
        ),
        Some(other) => p.push(
            here.error(
                &at("failure_action"),
                format!("unknown failure action `{other}`"),
            )
            .help("use `rollback`"),
        ),
    }
    config
}

/// The services whose replacement replaces this one (`restart: true`) and
/// those that may be missing (`required: false`).
fn dependency_options(spec: &ServiceSpec) -> (BTreeSet<String>, BTreeSet<String>) {
    let Some(DependsOnSpec::Map(map)) = &spec.depends_on else {
        return Default::default();
    };
    let pick = |wanted: fn(&DependsOnConditionSpec) -> bool| {
        map.iter()
            .filter(|(_, options)| wanted(options))
            .map(|(name, _)| name.clone())
            .collect()
    };
    (
        pick(|o| o.restart == Some(true)),
        pick(|o| o.required == Some(false)),
    )
}

fn depends_on(
    spec: &ServiceSpec,
    here: &Here,
    p: &mut Problems,
) -> BTreeMap<String, DependsOnCondition> {
    match &spec.depends_on {
        None => BTreeMap::new(),
        Some(DependsOnSpec::List(names)) => names.iter().map(|n| (n.clone(), DependsOnCondition::ServiceStarted)).collect(),
        Some(DependsOnSpec::Map(map)) => map
            .iter()
            .map(|(name, c)| {
                let condition = match c.condition.as_deref() {
                    None | Some("service_started") => DependsOnCondition::ServiceStarted,
                    Some("service_healthy") => DependsOnCondition::ServiceHealthy,
                    Some("service_completed_successfully") => DependsOnCondition::ServiceCompletedSuccessfully,
                    Some(other) => {
                        p.push(here.error(&[k("depends_on"), k(name), k("condition")], format!("unknown condition `{other}`")).help("use `service_started`, `service_healthy` or `service_completed_successfully`"));
                        DependsOnCondition::ServiceStarted
                    }
                };
                (name.clone(), condition)
            })
            .collect(),
    }
}

fn link(text: &str) -> Link {
    match text.split_once(':') {
        Some((service, alias)) => Link {
            service: service.to_string(),
            alias: alias.to_string(),
        },
        None => Link {
            service: text.to_string(),
            alias: text.to_string(),
        },
    }
}

fn extra_hosts(spec: &ServiceSpec, here: &Here, p: &mut Problems) -> Vec<(String, String)> {
    match &spec.extra_hosts {
        None => Vec::new(),
        Some(KeyValues::Map(map)) => map
            .iter()
            .map(|(h, ip)| {
                (
                    h.clone(),
                    ip.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                )
            })
            .collect(),
        Some(KeyValues::List(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(n, item)| {
                let pair = item.split_once('=').or_else(|| item.split_once(':'));
                if pair.is_none() {
                    p.push(here.error(
                        &[k("extra_hosts"), i(n)],
                        format!("`{item}` is not `HOST:IP`"),
                    ));
                }
                pair.map(|(h, ip)| (h.to_string(), ip.to_string()))
            })
            .collect(),
    }
}

/// Normalise a node; `None` when its endpoint cannot be used at all.
pub fn node(
    name: &str,
    location: Location,
    spec: &NodeSpec,
    here: &Here,
) -> (Option<Node>, Problems) {
    let mut p = Problems::new();
    if !is_valid_name(name) {
        p.push(
            here.error(&[], format!("`{name}` cannot be a node name"))
                .help("use letters, digits, `_`, `.` and `-`, starting with a letter or digit"),
        );
    }
    let tls = spec.tls.as_ref().and_then(|t| tls(t, here, &mut p));
    let endpoint = match parse_endpoint(&spec.endpoint, tls.is_some()) {
        Ok(endpoint) => endpoint,
        Err(why) => {
            p.push(
                here.error(
                    &[k("endpoint")],
                    format!("cannot use endpoint `{}`: {why}", spec.endpoint),
                )
                .help(
                    "write `unix:///var/run/docker.sock`, `tcp://HOST:PORT` or `ssh://USER@HOST`",
                ),
            );
            return (None, p);
        }
    };
    if tls.is_some() && !matches!(endpoint, Endpoint::Tcp { .. }) {
        p.push(here.error(&[k("tls")], "`tls` only applies to `tcp://` endpoints"));
    }
    let node = Node {
        name: name.to_string(),
        endpoint,
        tags: spec.tags.iter().flatten().cloned().collect(),
        tls,
        location,
    };
    (Some(node), p)
}

/// `unix:///path`, `tcp://host[:port]`, `ssh://[user@]host[:port]`.
pub fn parse_endpoint(text: &str, tls: bool) -> Result<Endpoint, String> {
    let url = url::Url::parse(text).map_err(|e| e.to_string())?;
    match url.scheme() {
        "unix" => {
            let path = url.path();
            if url.host_str().is_some_and(|h| !h.is_empty()) || !path.starts_with('/') {
                return Err("a unix socket path is absolute: `unix:///var/run/docker.sock`".into());
            }
            Ok(Endpoint::Unix {
                path: path.to_string(),
            })
        }
        "tcp" | "ssh" => {
            let host = url
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or("it has no host")?
                .to_string();
            if !matches!(url.path(), "" | "/") {
                return Err("it has a path".into());
            }
            if url.scheme() == "tcp" {
                let port = url.port().unwrap_or(if tls { 2376 } else { 2375 });
                Ok(Endpoint::Tcp { host, port })
            } else {
                let user = Some(url.username().to_string()).filter(|u| !u.is_empty());
                Ok(Endpoint::Ssh {
                    user,
                    host,
                    port: url.port().unwrap_or(22),
                })
            }
        }
        other => Err(format!("unknown scheme `{other}`")),
    }
}

fn tls(spec: &TlsSpec, here: &Here, p: &mut Problems) -> Option<Tls> {
    for (key, value) in [
        ("ca", &spec.ca),
        ("cert", &spec.cert),
        ("key", &spec.key),
        ("secret", &spec.secret),
    ] {
        if value.as_deref().is_some_and(|v| v.contains("-----BEGIN")) {
            p.push(
                here.error(&[k("tls"), k(key)], "TLS key material must never be in the repository")
                    .help("name a file on the machine running pier, or use `secret: NAME` with PIER_TLS_<NAME> set to a folder holding ca.pem, cert.pem and key.pem; and rotate this key, it is now in git history"),
            );
            return None;
        }
    }
    match (&spec.secret, &spec.ca, &spec.cert, &spec.key) {
        (Some(name), None, None, None) => Some(Tls::Secret { name: name.clone() }),
        (None, Some(ca), Some(cert), Some(key)) => Some(Tls::Paths {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => {
            p.push(here.error(
                &[k("tls")],
                "`tls` takes either `secret`, or all of `ca`, `cert` and `key`",
            ));
            None
        }
    }
}

/// Normalise the pipeline.
pub fn pipeline(
    location: Location,
    spec: &PipelineSpec,
    here: &Here,
    vars: &Vars,
) -> (Pipeline, Problems) {
    let mut p = Problems::new();
    let mut names = BTreeSet::new();
    let mut stages = Vec::new();
    for (n, stage) in spec.stages.iter().flatten().enumerate() {
        let at = |key: &str| [k("stages"), i(n), k(key)];
        if !names.insert(stage.name.clone()) {
            p.push(
                here.error(
                    &at("name"),
                    format!("stage `{}` is defined twice", stage.name),
                )
                .help("stage names are unique"),
            );
        }
        let timeout = stage
            .timeout
            .as_deref()
            .and_then(|t| duration(t, here, &at("timeout"), &mut p));
        match (&stage.build, &stage.image, &stage.script) {
            (Some(services), None, None) => stages.push(Stage::Build { name: stage.name.clone(), services: services.clone(), timeout }),
            (None, Some(image), Some(script)) => stages.push(Stage::Script {
                name: stage.name.clone(),
                image: image.clone(),
                script: script.clone(),
                env: stage.env.as_ref().map(|e| environment_values(e, here, &at("env"), vars, &mut p)).unwrap_or_default(),
                timeout,
            }),
            (Some(_), _, _) => p.push(here.error(&[k("stages"), i(n)], "a build stage takes `build` only, without `image` or `script`")),
            (None, _, _) => p.push(
                here.error(&[k("stages"), i(n)], format!("stage `{}` needs `image` and `script`, or `build`", stage.name))
                    .help("a script stage runs `script` lines in a container of `image`; a build stage lists services to build"),
            ),
        }
    }
    let pipeline = Pipeline {
        branches: spec.branches.clone().unwrap_or_else(|| vec!["main".into()]),
        runner_tags: spec.runner_tags.iter().flatten().cloned().collect(),
        stages,
        location,
    };
    (pipeline, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths_stay_inside() {
        assert_eq!(normalize_repo_path("./app/../web/").unwrap(), "web");
        assert_eq!(normalize_repo_path(".").unwrap(), ".");
        assert_eq!(
            normalize_repo_path("../x").unwrap_err(),
            "climbs out of the repository"
        );
        assert_eq!(
            normalize_repo_path("a/../../x").unwrap_err(),
            "climbs out of the repository"
        );
        assert_eq!(
            normalize_repo_path("/etc").unwrap_err(),
            "is an absolute path"
        );
    }

    #[test]
    fn short_ports() {
        let p = |t: &str| parse_short_port(t);
        let one = |n| PortRange { start: n, end: n };
        assert_eq!(p("80").unwrap().target, one(80));
        assert_eq!(p("8080:80").unwrap().published, Some(one(8080)));
        let full = p("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(
            (full.host_ip.as_deref(), full.protocol),
            (Some("127.0.0.1"), Protocol::Udp)
        );
        let range = p("8000-8002:9000-9002").unwrap();
        assert_eq!(range.published.unwrap().len(), 3);
        assert_eq!(p("[::1]:80:80").unwrap().host_ip.as_deref(), Some("::1"));
        assert_eq!(p("127.0.0.1::80").unwrap().published, None);
        for bad in [
            "",
            "x",
            "0",
            "70000",
            "80/icmp",
            "1:2:3:4",
            "8000-8002:9000-9001",
        ] {
            assert!(p(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("64mb"), Some(64 << 20));
        assert_eq!(parse_bytes("lots"), None);
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("unix:///var/run/docker.sock", false).unwrap(),
            Endpoint::Unix {
                path: "/var/run/docker.sock".into()
            }
        );
        assert_eq!(
            parse_endpoint("tcp://10.0.0.1", true).unwrap(),
            Endpoint::Tcp {
                host: "10.0.0.1".into(),
                port: 2376
            }
        );
        assert_eq!(
            parse_endpoint("tcp://h:2375", false).unwrap(),
            Endpoint::Tcp {
                host: "h".into(),
                port: 2375
            }
        );
        assert_eq!(
            parse_endpoint("ssh://deploy@h", false).unwrap(),
            Endpoint::Ssh {
                user: Some("deploy".into()),
                host: "h".into(),
                port: 22
            }
        );
        assert_eq!(
            parse_endpoint("ssh://h:2222", false).unwrap(),
            Endpoint::Ssh {
                user: None,
                host: "h".into(),
                port: 2222
            }
        );
        assert!(
            parse_endpoint("http://h", false)
                .unwrap_err()
                .contains("unknown scheme")
        );
        assert!(parse_endpoint("10.0.0.1:2375", false).is_err());
    }
}
