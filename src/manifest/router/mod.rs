//! The router: the Caddy service pier runs from the top-level `router` (one
//! container on each node carrying its tags), and the configuration it is
//! given, written from every service's `route` or Docker Cloud's
//! `VIRTUAL_HOST`.
//!
//! The configuration names services, not containers: Caddy asks the stack
//! network's DNS for a service's replicas every 250 ms and tries them in
//! turn for `retry_for`, so replicas coming and going (scaling, a rolling
//! replacement) change nothing in it. A change of routes is live
//! configuration: rewritten in the running routers and reloaded there.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::diagnostic::{Diagnostic, Location};
use super::here::{Here, k};
use super::model::{Acme, Manifest, Route, Service, UpdateOrder};
use super::spec::{AcmeSpec, KeyValues, RouterSpec, ServiceSpec, StringOrList, VolumeSpec};

/// The router's service name, reserved.
pub const SERVICE: &str = "pier-router";
/// Where its configuration is written in each container.
pub const CONFIG_PATH: &str = "/etc/pier/Caddyfile";
/// The image run when `router.image` is not set.
pub const DEFAULT_IMAGE: &str = "caddy:2";
/// The port the router listens on inside its container.
pub const LISTEN_PORT: u16 = 80;
/// The port the router serves HTTPS on inside its container.
pub const TLS_PORT: u16 = 443;
/// Where the certificate chain and key for HTTPS routes are written.
pub const TLS_CERT_PATH: &str = "/etc/pier/tls/cert.pem";
pub const TLS_KEY_PATH: &str = "/etc/pier/tls/key.pem";
/// The variable naming the folder with `cert.pem` and `key.pem` for HTTPS
/// routes: the daemon's own configuration, never the repository's.
pub const TLS_FOLDER_VAR: &str = "PIER_ROUTER_TLS";

/// Where the first route served over HTTPS is written, if any.
pub fn tls_route_at(manifest: &Manifest) -> Option<Location> {
    manifest
        .services
        .values()
        .find(|s| s.route.as_ref().is_some_and(|r| r.tls))
        .map(|s| s.location_of("route").clone())
}

/// The variable naming the image of a router that holds a private key
/// (certificate files, or ACME's account and certificates): the operator's
/// choice, never the repository's, since that image reads the key.
pub const IMAGE_VAR: &str = "PIER_ROUTER_IMAGE";

/// Run the router from `operator_image` (the operator's choice, or
/// [`DEFAULT_IMAGE`]) now that it will hold a private key. A manifest may
/// leave `router.image` out or name that same image; another image is
/// refused, at the router, with what to do.
pub fn use_operator_image(
    manifest: &mut Manifest,
    operator_image: &str,
) -> Result<(), Box<Diagnostic>> {
    let Some(router) = manifest.router.as_ref() else {
        return Ok(());
    };
    let written = router.service.image.as_deref().unwrap_or(DEFAULT_IMAGE);
    if written != DEFAULT_IMAGE && written != operator_image {
        return Err(Box::new(Diagnostic::error(
            router.location.clone(),
            format!("the router holds TLS keys, so it runs the image pier's operator chose (`{operator_image}`), not `{written}`"),
        )
        .key("router.image")
        .help(format!(
            "remove `router.image`, or have whoever runs pier set {IMAGE_VAR}={written} in its environment"
        ))));
    }
    for service in [
        manifest.services.get_mut(SERVICE),
        manifest.router.as_mut().map(|r| &mut r.service),
    ]
    .into_iter()
    .flatten()
    {
        service.image = Some(operator_image.to_string());
    }
    Ok(())
}

/// Give the router the certificate chain and key for HTTPS routes.
pub fn attach_tls(manifest: &mut Manifest, cert: String, key: String) {
    if let Some(router) = manifest.services.get_mut(SERVICE) {
        router.files.insert(TLS_CERT_PATH.into(), cert);
        router.files.insert(TLS_KEY_PATH.into(), key);
    }
}

/// The variable naming a file with the root certificate(s) an ACME CA's
/// directory is served under, when the system's do not cover it (a
/// private CA): read from pier's own environment.
pub const ACME_CA_ROOT_VAR: &str = "PIER_ROUTER_ACME_CA_ROOT";
/// Where that root is written in each router.
pub const ACME_CA_ROOT_PATH: &str = "/etc/pier/acme-ca-root.pem";
/// Where Caddy keeps its ACME account and certificates: a volume, so a
/// replaced router keeps them (a replacement mounts its predecessor's).
pub const DATA_PATH: &str = "/data";

/// Whether the router gets its certificates from an ACME CA.
pub fn uses_acme(manifest: &Manifest) -> bool {
    manifest.router.as_ref().is_some_and(|r| r.acme.is_some())
}

/// Have the router trust `root` (PEM) for its ACME CA's directory.
pub fn attach_acme_root(manifest: &mut Manifest, root: String) {
    if let Some(router) = manifest.services.get_mut(SERVICE) {
        router.files.insert(ACME_CA_ROOT_PATH.into(), root);
        if let Some(config) = router.files.get_mut(CONFIG_PATH) {
            *config = config.replacen(
                ACME_GLOBALS_END,
                &format!("\tacme_ca_root {ACME_CA_ROOT_PATH}\n{ACME_GLOBALS_END}"),
                1,
            );
        }
    }
}

/// Let's Encrypt's directory: the CA when `router.acme.ca` is not set.
pub const DEFAULT_ACME_CA: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The line the ACME options of the Caddyfile's global block end with.
const ACME_GLOBALS_END: &str = "\t# acme\n";

/// `router.acme`, checked: an e-mail address, and an `https://` directory.
pub fn acme(spec: &AcmeSpec, here: &Here, problems: &mut Vec<Diagnostic>) -> Option<Acme> {
    let email = spec.email.trim();
    let mut ok = true;
    if !email.contains('@')
        || email
            .chars()
            .any(|c| c.is_whitespace() || c == '{' || c == '}')
    {
        problems.push(
            here.error(
                &[k("acme"), k("email")],
                format!("`{email}` is not an e-mail address"),
            )
            .help("the CA writes to it about certificates about to expire: `ops@example.com`"),
        );
        ok = false;
    }
    if let Some(ca) = &spec.ca
        && (!ca.starts_with("https://")
            || ca
                .chars()
                .any(|c| c.is_whitespace() || c == '{' || c == '}'))
    {
        problems.push(
            here.error(&[k("acme"), k("ca")], format!("`{ca}` is not an ACME directory URL"))
                .help("an `https://` URL, e.g. `https://acme-staging-v02.api.letsencrypt.org/directory` for Let's Encrypt's staging CA"),
        );
        ok = false;
    }
    ok.then(|| Acme {
        email: email.to_string(),
        ca: spec.ca.clone(),
    })
}

/// How long the router waits for a replica to accept a connection before
/// it tries another. Replicas are a hop away on the stack's network, where
/// a connection is accepted within milliseconds; a replica that is gone
/// leaves no address to refuse one, and each request sent there waits
/// this long.
const DIAL_TIMEOUT: &str = "250ms";
/// How often the router asks DNS for a service's replicas: a replica that
/// is gone is still tried until the next answer.
const DNS_REFRESH: &str = "250ms";
/// How long the router waits before trying another replica after one
/// failed: short, as the next one is most likely up; it bounds how often
/// a request tries when none is.
const TRY_INTERVAL: &str = "50ms";
/// How long a replica that failed is passed over (with Caddy releases
/// that keep this state for replicas found through DNS): longer than a
/// gone replica stays in the DNS answer, short enough that one which only
/// missed a connection is back soon.
const FAIL_DURATION: &str = "2s";

/// How long a request keeps trying replicas when `retry_for` is not set.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(10);

/// Whether `host` is a DNS name (or `*.` and one): what a route may match.
pub fn is_host_name(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// Whether `path` may be a route's path prefix: `/` and then only the
/// characters of a URL path that mean nothing to the Caddyfile (letters,
/// digits and `-._~/%+@:=,;!`). No space, quote, brace, `#`, `*`, `?`,
/// backslash or line break can reach the router's configuration.
pub fn is_route_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 1024
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~/%+@:=,;!".contains(c))
}

/// The router as a service, normalised and checked like any other: Caddy
/// running the configuration pier writes, on every node with the tags.
pub fn service_spec(spec: &RouterSpec) -> ServiceSpec {
    let environment = [
        // Caddy keeps its state here; the official image sets the same.
        ("XDG_CONFIG_HOME", "/config"),
        ("XDG_DATA_HOME", "/data"),
    ]
    .into_iter()
    .map(|(k, v)| format!("{k}={v}"))
    .collect();
    ServiceSpec {
        image: Some(spec.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())),
        command: Some(StringOrList::Many(
            [
                "caddy",
                "run",
                "--config",
                CONFIG_PATH,
                "--adapter",
                "caddyfile",
            ]
            .map(String::from)
            .to_vec(),
        )),
        environment: Some(KeyValues::List(environment)),
        // Only with ACME, so routers without it are not replaced for it.
        volumes: spec
            .acme
            .is_some()
            .then(|| vec![VolumeSpec::Short(DATA_PATH.into())]),
        ports: spec.ports.clone(),
        tags: spec.tags.clone(),
        deployment_strategy: Some("every_node".into()),
        restart: Some("always".into()),
        // In-flight requests get this long to finish when a router is replaced.
        stop_grace_period: Some("5s".into()),
        ..Default::default()
    }
}

/// Once every file and env file is in: each service's route (`route`, or
/// `VIRTUAL_HOST` when a router is declared), checked against the others,
/// and the router's configuration. A `route` without a router is an error.
pub fn finish(manifest: &mut Manifest) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let Some(router) = manifest.router.as_ref() else {
        for service in manifest.services.values().filter(|s| s.route.is_some()) {
            problems.push(
                Diagnostic::error(
                    service.location_of("route").clone(),
                    format!("service `{}` has a `route`, but no `router` is declared", service.name),
                )
                .key(format!("services.{}.route", service.name))
                .help("declare the top-level `router:` with the `tags` of the nodes that run it and its `ports`"),
            );
        }
        return problems;
    };
    let retry_for = router.retry_for;
    let tags = &router.service.tags;
    if !manifest.nodes.is_empty() && !manifest.nodes.values().any(|n| tags.is_subset(&n.tags)) {
        problems.push(
            Diagnostic::warning(
                router.location.clone(),
                "no node carries all of the router's `tags`; no router runs and no route is served",
            )
            .key("router.tags")
            .help("tag the nodes that should run the router, or change `router.tags`"),
        );
    }
    if let Some(taken) = manifest.services.get(SERVICE) {
        problems.push(
            Diagnostic::error(
                taken.location.clone(),
                format!("`{SERVICE}` is the router's service name"),
            )
            .key(format!("services.{SERVICE}"))
            .help("rename this service: pier runs the router under that name"),
        );
        return problems;
    }
    let mut routes: Vec<(String, Route, i64)> = Vec::new();
    for service in manifest.services.values_mut() {
        if service.route.is_none() {
            match virtual_host(service) {
                Ok(route) => service.route = route,
                Err(problem) => problems.push(*problem),
            }
        }
        if let Some(route) = &service.route {
            if let Some(mode) = service.network_mode.as_deref() {
                problems.push(
                    Diagnostic::error(
                        service.location_of("route").clone(),
                        format!("service `{}` is routed, but `network_mode: {mode}` keeps it off the stack's network, where the router reaches replicas", service.name),
                    )
                    .key(format!("services.{}.route", service.name))
                    .help("remove `network_mode` from a routed service"),
                );
                continue;
            }
            routes.push((service.name.clone(), route.clone(), weight(service)));
        }
    }
    if !manifest.network.overlay {
        for (service, _, _) in &routes {
            if let Some(problem) = beyond_reach(manifest, service) {
                problems.push(problem);
            }
        }
    }
    let routes = resolve_overlaps(routes, manifest, &mut problems);
    let serves_https = router
        .service
        .ports
        .iter()
        .any(|p| (p.target.start..=p.target.end).contains(&TLS_PORT));
    if routes.iter().any(|(_, r)| r.tls) && !serves_https {
        problems.push(
            Diagnostic::error(
                router.location.clone(),
                format!("a route has `tls: true`, but the router publishes no port to its port {TLS_PORT}"),
            )
            .key("router.ports")
            .help("add `\"443:443\"` to the router's `ports`"),
        );
    }
    if router.acme.is_some() {
        problems.extend(acme_problems(manifest, router, &routes));
    }
    // Each service keeps the route it is served under (hosts it lost to a
    // heavier service are not its).
    let served: BTreeMap<&str, &Route> = routes.iter().map(|(s, r)| (s.as_str(), r)).collect();
    for service in manifest.services.values_mut() {
        service.route = served.get(service.name.as_str()).map(|r| (*r).clone());
        // A routed replica's successor is in rotation before it stops, as
        // the router sends requests only to replicas in rotation; unless
        // the service says otherwise.
        if service.route.is_some() && !service.update.order_written {
            service.update.order = UpdateOrder::StartFirst;
        }
    }
    let config = caddyfile(&routes, retry_for, router.acme.as_ref());
    let mut service = router.service.clone();
    service.files.insert(CONFIG_PATH.into(), config);
    // Caddy's own reload: the new configuration takes over gracefully,
    // listeners stay open and requests under way finish.
    service.reload = Some(
        [
            "caddy",
            "reload",
            "--config",
            CONFIG_PATH,
            "--adapter",
            "caddyfile",
        ]
        .map(String::from)
        .to_vec(),
    );
    manifest.services.insert(SERVICE.into(), service);
    problems
}

/// What ACME cannot do here: a wildcard host (it needs the DNS challenge,
/// which pier does not set up), and one certificate across router nodes
/// (each obtains its own, and the CA's HTTP check of one may reach
/// another).
fn acme_problems(
    manifest: &Manifest,
    router: &super::model::Router,
    routes: &[(String, Route)],
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    for (service, route) in routes.iter().filter(|(_, r)| r.tls) {
        if let Some(host) = route.hosts.iter().find(|h| h.starts_with("*.")) {
            problems.push(
                Diagnostic::error(
                    manifest.services[service].location_of("route").clone(),
                    format!("`{host}` is a wildcard: an ACME CA issues wildcard certificates only through DNS, which pier does not set up"),
                )
                .key(format!("services.{service}.route"))
                .help("list the host names, or leave `router.acme` out and give a wildcard certificate in PIER_ROUTER_TLS"),
            );
        }
    }
    let tags = &router.service.tags;
    let routers = manifest
        .nodes
        .values()
        .filter(|n| tags.is_subset(&n.tags))
        .count();
    if routers > 1 {
        problems.push(
            Diagnostic::warning(
                router.location.clone(),
                format!("{routers} nodes run a router, and with `acme` each obtains its own certificates: a CA's check of one may reach another through DNS or a load balancer, and fail"),
            )
            .key("router.acme")
            .help("point each host name at one router node, or give certificate files in PIER_ROUTER_TLS instead of `acme`"),
        );
    }
    problems
}

/// On a bridge network a router reaches only the replicas on its own node:
/// a warning when a routed service may run on a node without a router.
fn beyond_reach(manifest: &Manifest, name: &str) -> Option<Diagnostic> {
    let router = &manifest.router.as_ref()?.service;
    let service = manifest.services.get(name)?;
    let unreached = manifest
        .nodes
        .values()
        .find(|node| service.admits(node) && !router.admits(node))?;
    Some(
        Diagnostic::warning(
            service.location_of("route").clone(),
            format!(
                "`{name}` may run on {}, where no router runs, and a router reaches only its own node's replicas on a bridge network",
                unreached.name
            ),
        )
        .key(format!("services.{name}.route"))
        .help("declare `networks.default.driver: overlay`, so the routers reach replicas on every node"),
    )
}

/// Docker Cloud's `VIRTUAL_HOST_WEIGHT`: of services routed for the same
/// host and path, the heavier takes it.
fn weight(service: &Service) -> i64 {
    env(service, "VIRTUAL_HOST_WEIGHT")
        .and_then(|w| w.trim().parse().ok())
        .unwrap_or(0)
}

fn env<'s>(service: &'s Service, name: &str) -> Option<&'s str> {
    service.environment.get(name).and_then(|v| v.as_deref())
}

/// Docker Cloud's haproxy convention: `VIRTUAL_HOST=a.example.com,
/// http://b.example.com/api` routes those hosts (and paths) to the
/// service's first exposed port not in `EXCLUDE_PORTS`.
fn virtual_host(service: &Service) -> Result<Option<Route>, Box<Diagnostic>> {
    let Some(value) = env(service, "VIRTUAL_HOST").filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let at = service.location_of("environment").clone();
    let problem = |message: String, help: &str| {
        Box::new(
            Diagnostic::error(at.clone(), message)
                .key(format!(
                    "services.{}.environment.VIRTUAL_HOST",
                    service.name
                ))
                .help(help.to_string()),
        )
    };
    let mut hosts = Vec::new();
    let mut path = None;
    // An `https://` entry serves the route over HTTPS, as `tls: true` does.
    let mut tls = false;
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let secure = ["https://", "wss://"]
            .iter()
            .find_map(|scheme| entry.strip_prefix(scheme));
        tls |= secure.is_some();
        let rest = secure
            .or_else(|| entry.strip_prefix("http://"))
            .or_else(|| entry.strip_prefix("ws://"))
            .unwrap_or(entry);
        let (authority, entry_path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], Some(&rest[slash..])),
            None => (rest, None),
        };
        // The port in VIRTUAL_HOST is the router's, which the router's own `ports` set.
        let host = authority
            .split(':')
            .next()
            .unwrap_or(authority)
            .to_ascii_lowercase();
        if !is_host_name(&host) {
            return Err(problem(
                format!("VIRTUAL_HOST names `{host}`, which is not a host name"),
                "write names like `app.example.com`, separated by commas",
            ));
        }
        hosts.push(host);
        let entry_path = entry_path
            .map(|p| p.trim_end_matches('*').trim_end_matches('/').to_string())
            .filter(|p| !p.is_empty());
        if let Some(path) = entry_path.as_deref().filter(|p| !is_route_path(p)) {
            return Err(problem(
                format!(
                    "VIRTUAL_HOST gives the path `{}`, which is not a path prefix",
                    path.escape_debug()
                ),
                "a path holds letters, digits and `-._~/%+@:=,;!` only, e.g. `/api`",
            ));
        }
        if !hosts[1..].is_empty() && entry_path != path {
            return Err(problem(
                "VIRTUAL_HOST gives its hosts different paths; pier routes one path for all of them".into(),
                "give every entry the same path, or write `route: {hosts, path, port}`",
            ));
        }
        path = entry_path;
    }
    let excluded: Vec<u16> = env(service, "EXCLUDE_PORTS")
        .unwrap_or("")
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let port = service
        .ports
        .iter()
        .map(|p| p.target.start)
        .chain(
            service
                .expose
                .iter()
                .filter_map(|e| e.split(['/', '-']).next().and_then(|p| p.parse().ok())),
        )
        .find(|p| !excluded.contains(p));
    let Some(port) = port else {
        return Err(problem(
            format!(
                "VIRTUAL_HOST is set, but service `{}` exposes no port to route to",
                service.name
            ),
            "add `expose: [\"8080\"]` with the port the replicas serve HTTP on, or write `route: {host, port}`",
        ));
    };
    Ok(Some(Route {
        hosts,
        path,
        port,
        tls,
    }))
}

/// Two services routed for the same host and path: the heavier
/// (`VIRTUAL_HOST_WEIGHT`) keeps it; at equal weight it is an error.
fn resolve_overlaps(
    routes: Vec<(String, Route, i64)>,
    manifest: &Manifest,
    problems: &mut Vec<Diagnostic>,
) -> Vec<(String, Route)> {
    let router_location = manifest
        .router
        .as_ref()
        .map(|r| r.location.clone())
        .unwrap_or_else(|| Location::new("", 0, 0));
    // (host, path) → (weight, service) of each service routed there.
    type Claims = BTreeMap<(String, Option<String>), Vec<(i64, String)>>;
    let mut claims = Claims::new();
    for (service, route, weight) in &routes {
        for host in &route.hosts {
            claims
                .entry((host.clone(), route.path.clone()))
                .or_default()
                .push((*weight, service.clone()));
        }
    }
    let mut winners: BTreeMap<(String, Option<String>), String> = BTreeMap::new();
    for ((host, path), mut claimants) in claims {
        claimants.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        if let [first, second, ..] = claimants.as_slice()
            && first.0 == second.0
        {
            let location = manifest
                .services
                .get(&second.1)
                .map(|s| s.location_of("route").clone())
                .unwrap_or_else(|| router_location.clone());
            problems.push(
                Diagnostic::error(
                    location,
                    format!(
                        "services `{}` and `{}` are both routed for {host}{}",
                        first.1,
                        second.1,
                        path.as_deref().unwrap_or("")
                    ),
                )
                .key(format!("services.{}.route", second.1))
                .help("give them different hosts or paths, or set VIRTUAL_HOST_WEIGHT so one takes precedence"),
            );
        }
        winners.insert((host, path), claimants[0].1.clone());
    }
    routes
        .into_iter()
        .filter_map(|(service, mut route, _)| {
            route
                .hosts
                .retain(|host| winners.get(&(host.clone(), route.path.clone())) == Some(&service));
            (!route.hosts.is_empty()).then_some((service, route))
        })
        .collect()
}

/// The Caddyfile for `routes`: one site per host on port 80, each route a
/// `reverse_proxy` to the service's name on the stack network, which the
/// network's DNS resolves to the running replicas. Requests for other
/// hosts get 404. HTTPS sites use the certificate files, or with `acme`
/// Caddy's own certificate management, from that CA.
pub fn caddyfile(routes: &[(String, Route)], retry_for: Duration, acme: Option<&Acme>) -> String {
    let mut by_host: BTreeMap<&str, Vec<(&str, &Route)>> = BTreeMap::new();
    for (service, route) in routes {
        for host in &route.hosts {
            by_host.entry(host).or_default().push((service, route));
        }
    }
    // The admin API listens inside the container only: `caddy reload` there uses it.
    let mut out =
        String::from("# Written by pier from the manifests' routes.\n{\n\tadmin localhost:2019\n");
    match acme {
        // pier writes the redirects to HTTPS itself, below.
        Some(acme) => {
            let _ = write!(
                out,
                "\tauto_https disable_redirects\n\temail {}\n",
                acme.email
            );
            // Named even by default: left out, Caddy would fall back to
            // another CA of its choosing.
            let ca = acme.ca.as_deref().unwrap_or(DEFAULT_ACME_CA);
            let _ = writeln!(out, "\tacme_ca {ca}");
            out.push_str(ACME_GLOBALS_END);
        }
        None => out.push_str("\tauto_https off\n"),
    }
    out.push_str("}\n");
    for (host, mut routes) in by_host {
        // Longest path first; the route without a path catches the rest.
        routes.sort_by_key(|(_, r)| std::cmp::Reverse(r.path.as_ref().map_or(0, |p| p.len())));
        if routes.iter().any(|(_, r)| r.tls) {
            let _ = writeln!(
                out,
                "\nhttp://{host}:{LISTEN_PORT} {{\n\tredir https://{{host}}{{uri}} 308\n}}\n\nhttps://{host}:{TLS_PORT} {{"
            );
            if acme.is_none() {
                let _ = writeln!(out, "\ttls {TLS_CERT_PATH} {TLS_KEY_PATH}");
            }
        } else {
            let _ = writeln!(out, "\nhttp://{host}:{LISTEN_PORT} {{");
        }
        for (n, (service, route)) in routes.iter().enumerate() {
            let matcher = match &route.path {
                Some(path) => {
                    // Quoted as well as checked (`is_route_path`).
                    let _ = writeln!(out, "\t@route{n} path \"{path}\" \"{path}/*\"");
                    format!(" @route{n}")
                }
                None => String::new(),
            };
            // A replica gone from an overlay network leaves no address
            // behind to refuse a connection: one sent there while the
            // router still knows it is never answered. Give up on it after
            // `DIAL_TIMEOUT` and try another, instead of Caddy's 3 s.
            let _ = writeln!(
                out,
                "\treverse_proxy{matcher} {{\n\t\tdynamic a {service} {port} {{\n\t\t\trefresh {DNS_REFRESH}\n\t\t}}\n\t\tlb_policy round_robin\n\t\tlb_try_duration {retry}ms\n\t\tlb_try_interval {TRY_INTERVAL}\n\t\tfail_duration {FAIL_DURATION}\n\t\ttransport http {{\n\t\t\tdial_timeout {DIAL_TIMEOUT}\n\t\t}}\n\t}}",
                port = route.port,
                retry = retry_for.as_millis(),
            );
        }
        out.push_str("}\n");
    }
    let _ = write!(
        out,
        "\nhttp://:{LISTEN_PORT} {{\n\trespond \"no route for this host\" 404\n}}\n"
    );
    out
}

#[cfg(test)]
mod tests;
