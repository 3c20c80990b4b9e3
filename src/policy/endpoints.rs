//! `node_endpoints`: which engines a manifest may name as nodes.
//!
//! A node receives registry credentials and every environment value its
//! containers get, so a pattern must say exactly which hosts it admits.
//! Patterns are parsed, not globbed over the endpoint's text: a host is an
//! IP address, a CIDR block, an IPv4 address with `*` for whole octets, an
//! exact DNS name, or a name with `*` for one whole label. A `*` never
//! crosses a dot or a colon, so `tcp://10.0.0.*` admits `tcp://10.0.0.5`
//! and not `tcp://10.0.0.5.evil.example`.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::manifest::model::Endpoint;

/// One `node_endpoints` entry.
#[derive(Debug, Clone)]
pub struct EndpointPattern {
    scheme: Scheme,
    /// `None`: any user (ssh).
    user: Option<String>,
    host: HostPattern,
    /// `None`: any port.
    port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Tcp,
    Ssh,
    Unix,
}

#[derive(Debug, Clone)]
enum HostPattern {
    /// `*`: any host (or, for `unix://*`, any socket).
    Any,
    /// An address or a block of them.
    Net(IpNet),
    /// An IPv4 address with `*` for some octets.
    Octets([Option<u8>; 4]),
    /// A DNS name; `None` labels are `*` (exactly one label).
    Name(Vec<Option<String>>),
    /// A unix socket's exact path.
    Path(String),
}

impl EndpointPattern {
    /// Parse one entry, or say what is wrong with it.
    pub fn parse(text: &str) -> Result<EndpointPattern, String> {
        let problem = |why: &str| format!("node_endpoints: `{text}` {why}");
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| problem("has no scheme: write tcp://, ssh:// or unix://"))?;
        let scheme = match scheme {
            "tcp" => Scheme::Tcp,
            "ssh" => Scheme::Ssh,
            "unix" => Scheme::Unix,
            _ => return Err(problem("has an unknown scheme: use tcp, ssh or unix")),
        };
        if scheme == Scheme::Unix {
            let host = match rest {
                "*" => HostPattern::Any,
                path if path.starts_with('/') && !path.contains('*') => {
                    HostPattern::Path(path.to_string())
                }
                _ => return Err(problem("is not `unix://*` or a socket's absolute path")),
            };
            return Ok(EndpointPattern {
                scheme,
                user: None,
                host,
                port: None,
            });
        }
        let (user, authority) = match rest.rsplit_once('@') {
            Some((user, authority)) if scheme == Scheme::Ssh => (Some(user.to_string()), authority),
            Some(_) => return Err(problem("names a user, which only ssh:// takes")),
            None => (None, rest),
        };
        let (host, port) = split_port(authority).map_err(|why| problem(&why))?;
        let host = host_pattern(host).map_err(|why| problem(&why))?;
        Ok(EndpointPattern {
            scheme,
            user,
            host,
            port,
        })
    }

    /// Whether this pattern admits `endpoint`.
    pub fn admits(&self, endpoint: &Endpoint) -> bool {
        match endpoint {
            Endpoint::Unix { path } => {
                self.scheme == Scheme::Unix
                    && match &self.host {
                        HostPattern::Any => true,
                        HostPattern::Path(allowed) => allowed == path,
                        _ => false,
                    }
            }
            Endpoint::Tcp { host, port } => {
                self.scheme == Scheme::Tcp && self.admits_host(host, *port)
            }
            Endpoint::Ssh { user, host, port } => {
                self.scheme == Scheme::Ssh
                    && (self.user.is_none() || self.user == *user)
                    && self.admits_host(host, *port)
            }
        }
    }

    fn admits_host(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|allowed| allowed != port) {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let address = host.parse::<IpAddr>().ok();
        match (&self.host, address) {
            (HostPattern::Any, _) => true,
            (HostPattern::Net(net), Some(address)) => net.contains(&address),
            (HostPattern::Octets(octets), Some(IpAddr::V4(address))) => octets
                .iter()
                .zip(address.octets())
                .all(|(allowed, octet)| allowed.is_none_or(|allowed| allowed == octet)),
            (HostPattern::Name(labels), None) => {
                let written: Vec<String> =
                    host.split('.').map(|l| l.to_ascii_lowercase()).collect();
                written.len() == labels.len()
                    && labels.iter().zip(&written).all(|(allowed, label)| {
                        !label.is_empty() && allowed.as_ref().is_none_or(|allowed| allowed == label)
                    })
            }
            _ => false,
        }
    }
}

/// `host[:port]`, `[v6][:port]`, with `:*` for any port.
fn split_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("has an IPv6 address without its closing `]`")?;
        (host, after.strip_prefix(':'))
    } else if authority.matches(':').count() > 1 {
        // A bare IPv6 address or block: no port.
        (authority, None)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("*") => None,
        Some(port) => Some(
            port.parse::<u16>()
                .map_err(|_| format!("has `{port}` for a port"))?,
        ),
    };
    Ok((host, port))
}

fn host_pattern(host: &str) -> Result<HostPattern, String> {
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if let Ok(net) = host.parse::<IpNet>() {
        return Ok(HostPattern::Net(net));
    }
    if let Ok(address) = host.parse::<IpAddr>() {
        return Ok(HostPattern::Net(IpNet::from(address)));
    }
    let labels: Vec<&str> = host.split('.').collect();
    let numeric = |label: &&str| *label == "*" || label.chars().all(|c| c.is_ascii_digit());
    if host.contains('*') && labels.iter().all(numeric) {
        if labels.len() != 4 {
            return Err("has an address with `*` that is not four octets: write `10.0.0.*`, or a block such as `10.0.0.0/16`".into());
        }
        let mut octets = [None; 4];
        for (slot, label) in octets.iter_mut().zip(&labels) {
            if *label != "*" {
                *slot = Some(
                    label
                        .parse::<u8>()
                        .map_err(|_| format!("has `{label}`, which is not an octet"))?,
                );
            }
        }
        return Ok(HostPattern::Octets(octets));
    }
    let mut pattern = Vec::new();
    for label in labels {
        match label {
            "*" => pattern.push(None),
            label
                if !label.is_empty()
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
            {
                pattern.push(Some(label.to_ascii_lowercase()))
            }
            _ => {
                return Err(format!(
                    "has `{host}`, which is not an address, a CIDR block or a host name (`*` stands for one whole label or octet)"
                ));
            }
        }
    }
    Ok(HostPattern::Name(pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: host.into(),
            port,
        }
    }

    fn admits(pattern: &str, endpoint: &Endpoint) -> bool {
        EndpointPattern::parse(pattern).unwrap().admits(endpoint)
    }

    #[test]
    fn a_star_never_crosses_a_dot_or_a_colon() {
        assert!(admits("tcp://10.0.0.*", &tcp("10.0.0.5", 2376)));
        for evil in [
            "10.0.0.5.evil.example",
            "10.0.0.evil.example",
            "10.0.0.5:1@evil",
        ] {
            assert!(!admits("tcp://10.0.0.*", &tcp(evil, 2376)), "{evil}");
        }
        assert!(admits(
            "tcp://*.docker.internal",
            &tcp("n1.docker.internal", 2375)
        ));
        assert!(!admits(
            "tcp://*.docker.internal",
            &tcp("a.n1.docker.internal", 2375)
        ));
        assert!(!admits(
            "tcp://*.docker.internal",
            &tcp("docker.internal", 2375)
        ));
        assert!(!admits(
            "tcp://*.docker.internal",
            &tcp("n1.docker.internal.evil", 2375)
        ));
        assert!(EndpointPattern::parse("tcp://10.0.*").is_err());
    }

    #[test]
    fn blocks_names_ports_users_and_schemes_are_exact() {
        assert!(admits("tcp://10.0.0.0/16", &tcp("10.0.200.1", 2375)));
        assert!(!admits("tcp://10.0.0.0/16", &tcp("10.1.0.1", 2375)));
        assert!(!admits("tcp://10.0.0.0/16", &tcp("10.0.0.1.nip.io", 2375)));
        assert!(admits("tcp://fd00::/8", &tcp("fd00::5", 2376)));
        assert!(admits("tcp://[fd00::1]:2376", &tcp("[fd00::1]", 2376)));
        assert!(admits(
            "tcp://Node1.Example:2376",
            &tcp("node1.example", 2376)
        ));
        assert!(!admits(
            "tcp://node1.example:2376",
            &tcp("node1.example", 2375)
        ));
        assert!(!admits(
            "tcp://node1.example",
            &tcp("node1.example.org", 2375)
        ));
        let ssh = |user: Option<&str>, host: &str| Endpoint::Ssh {
            user: user.map(String::from),
            host: host.into(),
            port: 22,
        };
        assert!(admits("ssh://*", &ssh(Some("root"), "anything.example")));
        assert!(admits(
            "ssh://deploy@10.0.0.5",
            &ssh(Some("deploy"), "10.0.0.5")
        ));
        assert!(!admits(
            "ssh://deploy@10.0.0.5",
            &ssh(Some("root"), "10.0.0.5")
        ));
        assert!(!admits("ssh://*", &tcp("10.0.0.5", 22)));
        let unix = Endpoint::Unix {
            path: "/var/run/docker.sock".into(),
        };
        assert!(admits("unix:///var/run/docker.sock", &unix));
        assert!(!admits("unix:///run/other.sock", &unix));
        assert!(!admits("tcp://*", &unix));
    }
}
