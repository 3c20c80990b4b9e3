//! Unit tests of the router: routes, the Caddyfile, and what no manifest may write into it.

use super::*;

fn route(hosts: &[&str], path: Option<&str>, port: u16) -> Route {
    Route {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        path: path.map(String::from),
        port,
        tls: false,
    }
}

#[test]
fn host_names_are_dns_names_or_one_wildcard_label() {
    for good in ["app.example.com", "localhost", "*.example.com", "a-1.b2"] {
        assert!(is_host_name(good), "{good}");
    }
    for bad in [
        "",
        "App.example.com",
        "-a.com",
        "a..b",
        "*",
        "a.*.com",
        "a_b.com",
    ] {
        assert!(!is_host_name(bad), "{bad}");
    }
}

/// What follows the site block for `address` in `config`.
fn site<'c>(config: &'c str, address: &str) -> &'c str {
    config
        .split(&format!("{address} {{"))
        .nth(1)
        .unwrap_or_else(|| panic!("a site for {address} in {config}"))
}

/// `text` as the one manifest file of a commit, loaded and checked.
fn load(text: &str) -> crate::manifest::Loaded {
    let files = [crate::manifest::SourceFile {
        path: "pier/s.yml".into(),
        text: text.into(),
    }];
    crate::manifest::load_and_validate(
        &files,
        &crate::manifest::Vars::new(),
        &crate::manifest::MemoryTree::default(),
    )
}

fn router_config(text: &str) -> String {
    let loaded = load(text);
    assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
    loaded.manifest.services[SERVICE].files[CONFIG_PATH].clone()
}

/// With `acme`, HTTPS sites carry no certificate files: Caddy obtains
/// them from the CA, keeps them in a volume, and trusts the root pier
/// gives it for a private CA.
#[test]
fn acme_hands_certificates_to_caddy_and_its_ca() {
    let text = "router:\n  ports: [\"80:80\", \"443:443\"]\n  acme: { email: ops@example.com, ca: \"https://ca.test/dir\" }\nservices:\n  web: { image: x, route: { host: a.example.com, port: 80, tls: true } }\n";
    let mut loaded = load(text);
    assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
    let router = &loaded.manifest.services[SERVICE];
    let config = &router.files[CONFIG_PATH];
    assert!(
            config.contains("\tauto_https disable_redirects\n\temail ops@example.com\n\tacme_ca https://ca.test/dir\n"),
            "{config}"
        );
    let site = site(config, "https://a.example.com:443");
    assert!(!site.contains("tls "), "no certificate files: {config}");
    assert_eq!(router.volumes.len(), 1, "Caddy's data in a volume");
    attach_acme_root(&mut loaded.manifest, "ROOT PEM".into());
    let router = &loaded.manifest.services[SERVICE];
    assert!(
        router.files[CONFIG_PATH].contains(&format!("\tacme_ca_root {ACME_CA_ROOT_PATH}\n")),
        "{}",
        router.files[CONFIG_PATH]
    );
    assert_eq!(router.files[ACME_CA_ROOT_PATH], "ROOT PEM");

    let wildcard = load(&text.replace("a.example.com", "\"*.example.com\""));
    assert!(
        wildcard
            .diagnostics
            .iter()
            .any(|d| d.message.contains("is a wildcard")),
        "{:?}",
        wildcard.diagnostics
    );
    let default_ca = load(&text.replace(", ca: \"https://ca.test/dir\"", ""));
    assert!(
        default_ca.manifest.services[SERVICE].files[CONFIG_PATH]
            .contains(&format!("\tacme_ca {DEFAULT_ACME_CA}\n")),
        "Let's Encrypt, named"
    );
    let bad = load(&text.replace("ops@example.com", "nobody"));
    assert!(
        bad.diagnostics
            .iter()
            .any(|d| d.to_string().contains("router.acme.email")),
        "{:?}",
        bad.diagnostics
    );
}

/// Routed services are replaced start-first unless they say otherwise,
/// on a bridge or an overlay network; others keep stop-first.
#[test]
fn routed_services_are_replaced_start_first_by_default() {
    let orders = |text: &str| {
        let loaded = load(text);
        assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
        loaded
            .manifest
            .services
            .values()
            .map(|s| (s.name.clone(), s.update.order))
            .collect::<BTreeMap<_, _>>()
    };
    let services = "services:\n  web: { image: x, route: { host: a.test, port: 80 } }\n  pinned: { image: x, route: { host: b.test, port: 80 }, deploy: { update_config: { order: stop-first } } }\n  worker: { image: x }\n";
    let bridge = orders(&format!("router: {{ ports: [\"80:80\"] }}\n{services}"));
    assert_eq!(bridge["web"], UpdateOrder::StartFirst);
    assert_eq!(bridge["pinned"], UpdateOrder::StopFirst);
    assert_eq!(bridge["worker"], UpdateOrder::StopFirst);
    let overlay = orders(&format!(
        "router: {{ ports: [\"80:80\"] }}\nnetworks:\n  default: {{ driver: overlay }}\n{services}"
    ));
    assert_eq!(overlay["web"], UpdateOrder::StartFirst);
    assert_eq!(overlay["pinned"], UpdateOrder::StopFirst);
}

/// Docker Cloud's convention: hosts with a scheme, a port and a path
/// glob; the first port not excluded; the heavier of two services
/// routed for one host takes it.
#[test]
fn virtual_host_routes_like_docker_cloud_haproxy() {
    let config = router_config(
        "router: { ports: [\"80:80\"] }\nservices:\n  web:\n    image: x\n    environment: { VIRTUAL_HOST: \"http://a.example.com:8000/api/*\", EXCLUDE_PORTS: \"22\" }\n    expose: [\"22\", \"9000\"]\n  new:\n    image: x\n    environment: { VIRTUAL_HOST: B.example.com }\n    expose: [\"80\"]\n  old:\n    image: x\n    environment: { VIRTUAL_HOST: b.example.com, VIRTUAL_HOST_WEIGHT: \"-1\" }\n    expose: [\"80\"]\n",
    );
    let a = site(&config, "http://a.example.com:80");
    assert!(a.contains("path \"/api\" \"/api/*\""), "{config}");
    assert!(a.contains("dynamic a web 9000"), "{config}");
    let b = site(&config, "http://b.example.com:80");
    assert!(b.contains("dynamic a new 80"), "{config}");
    assert!(
        !config.contains("dynamic a old"),
        "the lighter service loses b: {config}"
    );
}

/// `https://` in VIRTUAL_HOST is Docker Cloud's way to ask for TLS.
#[test]
fn an_https_virtual_host_is_served_over_tls_and_plain_http_redirects() {
    let config = router_config(
        "router: { ports: [\"80:80\", \"443:443\"] }\nservices:\n  web:\n    image: x\n    environment: { VIRTUAL_HOST: \"https://s.example.com\" }\n    expose: [\"80\"]\n",
    );
    let site = site(&config, "https://s.example.com:443");
    assert!(
        site.contains(&format!("tls {TLS_CERT_PATH} {TLS_KEY_PATH}")),
        "{config}"
    );
    assert!(site.contains("dynamic a web 80"), "{config}");
    assert!(
        config.contains("http://s.example.com:80 {\n\tredir https://{host}{uri} 308"),
        "{config}"
    );
}

#[test]
fn each_host_is_a_site_with_longer_paths_first() {
    let config = caddyfile(
        &[
            (
                "web".into(),
                route(&["app.example.com", "www.example.com"], None, 8080),
            ),
            (
                "api".into(),
                route(&["app.example.com"], Some("/api"), 9000),
            ),
        ],
        Duration::from_secs(10),
        None,
    );
    let app = site(&config, "http://app.example.com:80");
    let api = app.find("dynamic a api 9000").expect("the api route");
    let web = app.find("dynamic a web 8080").expect("the web route");
    assert!(api < web, "{config}");
    assert!(app.contains("@route0 path \"/api\" \"/api/*\""), "{config}");
    assert!(config.contains("http://www.example.com:80 {"), "{config}");
    assert!(config.contains("lb_try_duration 10000ms"), "{config}");
    assert!(
        config.contains("respond \"no route for this host\" 404"),
        "{config}"
    );
}

/// A path or host that would write a directive of its own into the
/// Caddyfile is refused, however it is written: `route.path`,
/// `VIRTUAL_HOST`'s path, or its host.
#[test]
fn nothing_written_in_a_manifest_adds_a_directive_to_the_router() {
    let injections = [
        "/x\n\tfile_server\n\troot * /etc/pier/tls",
        "/x}\nhttp://:80 {\n\tfile_server",
        "/x\"\"/y",
        "/x #comment",
        "/x\\",
        "/{$$HOME}",
    ];
    for path in injections {
        let text = format!(
            "router: {{ ports: [\"80:80\"] }}\nservices:\n  web: {{ image: x, route: {{ host: a.test, port: 80, path: {path:?} }} }}\n"
        );
        let loaded = load(&text);
        assert!(!loaded.is_valid(), "route.path {path:?} was accepted");
        assert!(
            loaded
                .diagnostics
                .iter()
                .any(|d| d.message.contains("is not a path prefix")),
            "{path:?}: {:?}",
            loaded.diagnostics
        );
        let text = format!(
            "router: {{ ports: [\"80:80\"] }}\nservices:\n  web: {{ image: x, expose: [\"80\"], environment: {{ VIRTUAL_HOST: {:?} }} }}\n",
            format!("a.test{path}")
        );
        assert!(
            !load(&text).is_valid(),
            "VIRTUAL_HOST path {path:?} was accepted"
        );
    }
    for host in ["a.test\n\tfile_server", "a.test{", "a test"] {
        let text = format!(
            "router: {{ ports: [\"80:80\"] }}\nservices:\n  web: {{ image: x, expose: [\"80\"], environment: {{ VIRTUAL_HOST: {host:?} }} }}\n"
        );
        assert!(
            !load(&text).is_valid(),
            "VIRTUAL_HOST host {host:?} was accepted"
        );
    }
}
