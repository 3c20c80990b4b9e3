//! How a service is reached: `networks`, `network_mode`, the `pid`/`ipc`
//! namespaces, `extra_hosts`, and its `route`.

#[allow(unused_imports)]
use super::*;

/// `route`: at least one host, an optional path prefix, and the port.
pub(super) fn route(spec: &RouteSpec, here: &Here, p: &mut Problems) -> Option<Route> {
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
    for host in hosts
        .iter()
        .filter(|h| !crate::manifest::router::is_host_name(h))
    {
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
        Some(path) if crate::manifest::router::is_route_path(path) => {
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

/// `networks`: the networks a service joins, by key, with the aliases it
/// takes on each. Whether each is declared is checked with the whole
/// manifest.
pub(super) fn service_networks(
    spec: &ServiceSpec,
    here: &Here,
    p: &mut Problems,
) -> BTreeMap<String, Vec<String>> {
    use crate::manifest::spec::ServiceNetworksSpec;
    let Some(written) = &spec.networks else {
        return BTreeMap::new();
    };
    if spec.network_mode.is_some() || spec.net.is_some() {
        let written = if spec.network_mode.is_some() {
            "network_mode"
        } else {
            "net"
        };
        p.push(
            here.error(
                &[k("networks")],
                format!("`networks` and `{written}` exclude each other"),
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
pub(super) fn network_mode(spec: &ServiceSpec, here: &Here, p: &mut Problems) -> Option<String> {
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
pub(super) fn namespace_mode(
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

pub(super) fn extra_hosts(
    spec: &ServiceSpec,
    here: &Here,
    p: &mut Problems,
) -> Vec<(String, String)> {
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
