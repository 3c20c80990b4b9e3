//! Unit tests of the normalisation, one entity at a time.

use super::nodes::parse_endpoint;
use super::storage::normalize_repo_path;
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
