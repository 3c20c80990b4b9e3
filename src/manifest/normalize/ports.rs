//! `ports` and `expose`: every spelling of a port to one [`Port`].

#[allow(unused_imports)]
use super::*;

pub(super) fn parse_range(text: &str) -> Option<PortRange> {
    let (start, end) = match text.split_once('-') {
        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
        None => {
            let port = text.parse().ok()?;
            (port, port)
        }
    };
    (start > 0 && start <= end).then_some(PortRange { start, end })
}

pub(super) fn parse_protocol(text: &str) -> Option<Protocol> {
    match text {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    }
}

pub(super) fn parse_port(spec: &PortSpec, here: &Here, n: usize, p: &mut Problems) -> Option<Port> {
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
pub(super) fn parse_short_port(text: &str) -> Option<Port> {
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

pub(super) fn expose(spec: &Scalar, here: &Here, n: usize, p: &mut Problems) -> Option<String> {
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
