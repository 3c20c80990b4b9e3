//! A node: its endpoint and TLS material.

#[allow(unused_imports)]
use super::*;

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

pub(super) fn tls(spec: &TlsSpec, here: &Here, p: &mut Problems) -> Option<Tls> {
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
