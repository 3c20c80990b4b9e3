//! Unit tests of the container policy: every spelling it must see through.

use super::*;

fn policy(yaml: &str) -> Policy {
    let file: PolicyFile = serde_saphyr::from_str(yaml).unwrap();
    Policy::from_parts("the policy p.yaml".into(), file).unwrap()
}

fn loaded(text: &str) -> Loaded {
    let files = [crate::manifest::SourceFile {
        path: "pier/stack.yml".into(),
        text: text.into(),
    }];
    let tree = crate::manifest::MemoryTree::default();
    let loaded = crate::manifest::load_and_validate(&files, &Default::default(), &tree);
    assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
    loaded
}

/// The refusals of `policy` for `text`, as `line: message`.
fn refusals(policy: &Policy, text: &str) -> Vec<String> {
    let mut found = policy.check(&loaded(text));
    found.sort_by(|a, b| a.location.cmp(&b.location));
    found
        .iter()
        .map(|d| {
            format!(
                "{}: {} ({})",
                d.location.line,
                d.message,
                d.help.clone().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn the_default_refuses_binds_of_what_controls_the_host_in_any_spelling() {
    let default = Policy::default();
    for refused in [
        "/",
        "/var/run/docker.sock",
        "/run//docker.sock",
        "/var/run/",
        "/srv/../var/run/docker.sock",
        "/proc/1/root",
        "/proc/self/root/etc",
        "/run/containerd/containerd.sock",
        "/var/lib/docker",
        "/etc",
        "/root",
        "/dev",
        "/sys",
        "/boot",
    ] {
        assert!(
            default.bind_refused_by(refused, false).is_some(),
            "{refused}"
        );
    }
    for allowed in ["/srv/data", "/var/lib/app", "/run/user/1000"] {
        assert_eq!(default.bind_refused_by(allowed, false), None, "{allowed}");
    }
    assert_eq!(
        default.bind_refused_by("/etc/localtime", true),
        None,
        "read-only, harmless"
    );
    assert!(default.bind_refused_by("/etc/localtime", false).is_some());
}

#[test]
fn listed_prefixes_allow_whole_components_and_host_control_paths_only_by_name() {
    let p = policy("bind_mounts: [/srv, /var/run/docker.sock, /etc/ssl/certs]\n");
    assert_eq!(p.bind_refused_by("/srv/app/data", false), None);
    assert_eq!(p.bind_refused_by("/var/run/docker.sock", false), None);
    assert_eq!(
        p.bind_refused_by("/run/docker.sock", false),
        None,
        "one path, two spellings"
    );
    assert_eq!(p.bind_refused_by("/etc/ssl/certs", false), None);
    assert!(p.bind_refused_by("/etc/ssl/certs/private", false).is_some());
    assert!(p.bind_refused_by("/srvx", false).is_some());
    assert!(p.bind_refused_by("/var/run", false).is_some());
    assert!(p.bind_refused_by("/etc", false).is_some());
}

#[test]
fn a_volume_bound_to_a_host_path_is_a_bind_of_that_path() {
    let refused = refusals(
        &Policy::default(),
        "services:\n  app: { image: x, volumes: [\"root:/host\", \"disk:/disk\", \"share:/share\", \"mem:/mem\", \"ok:/ok\"] }\nvolumes:\n  root:\n    driver_opts: { type: none, o: bind, device: /proc/self/root }\n  disk:\n    driver_opts: { type: ext4, device: /dev/sda1 }\n  share:\n    driver_opts: { type: nfs, o: \"addr=10.0.0.9,rw\", device: \":/export\" }\n  mem:\n    driver_opts: { type: tmpfs, device: tmpfs, o: size=64m }\n  ok:\n    driver_opts: { type: none, o: \"rbind,ro\", device: /srv/ok }\n",
    );
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(
        refused[0].starts_with("4: a bind mount of `/proc/self/root` (driver_opts)"),
        "{refused:#?}"
    );
    assert!(refused[0].contains("controls the host"), "{refused:#?}");
    assert!(
        refused[1].starts_with("6: host device `/dev/sda1`"),
        "{refused:#?}"
    );

    let strict = refusals(
        &policy("bind_mounts: [/srv]\n"),
        "services:\n  app: { image: x, volumes: [\"share:/share\", \"ext:/ext\"] }\nvolumes:\n  share:\n    driver_opts: { type: nfs, o: \"addr=10.0.0.9\", device: \":/export\" }\n  ext:\n    external: true\n    name: other-stack_db\n",
    );
    assert_eq!(strict.len(), 2, "{strict:#?}");
    assert!(
        strict[0].contains("volume of type `nfs`") && strict[0].contains("volume_types: [] (none)"),
        "{strict:#?}"
    );
    assert!(
        strict[1].contains("external volume `other-stack_db`")
            && strict[1].contains("external_volumes: [] (none)"),
        "{strict:#?}"
    );
    let allowed = policy("volume_types: [nfs]\nexternal_volumes: [other-stack_db]\n");
    assert!(allowed.check(&loaded("services:\n  app: { image: x, volumes: [\"share:/share\", \"ext:/ext\"] }\nvolumes:\n  share:\n    driver_opts: { type: nfs, o: \"addr=10.0.0.9\", device: \":/export\" }\n  ext:\n    external: true\n    name: other-stack_db\n")).is_empty());
}

#[test]
fn the_engines_networks_are_refused_whatever_key_names_them() {
    let text = |name: &str, external: bool| {
        format!(
            "services:\n  app: {{ image: x, networks: [n] }}\nnetworks:\n  n: {{ name: \"{name}\", external: {external} }}\n"
        )
    };
    for name in [
        "host",
        "bridge",
        "none",
        "ingress",
        "docker_gwbridge",
        "container:db",
        "service:db",
    ] {
        for external in [true, false] {
            let refused = refusals(&Policy::default(), &text(name, external));
            assert_eq!(refused.len(), 1, "{name} {external}: {refused:#?}");
            assert!(
                refused[0].starts_with(&format!("4: the engine's network `{name}`")),
                "{refused:#?}"
            );
        }
    }
    assert!(refusals(&policy("host_namespaces: [network]\n"), &text("host", true)).is_empty());
    assert!(
        refusals(
            &policy("external_networks: [bridge]\n"),
            &text("bridge", true)
        )
        .is_empty()
    );
    assert_eq!(
        refusals(
            &policy("external_networks: [\"*\"]\n"),
            &text("bridge", true)
        )
        .len(),
        1,
        "`*` never names the engine's own"
    );
    let refused = refusals(
        &policy("external_networks: [shared]\n"),
        &text("other", true),
    );
    assert!(
        refused[0].contains("external network `other`")
            && refused[0].contains("external_networks: [shared]"),
        "{refused:#?}"
    );
    assert!(refusals(&Policy::default(), &text("other", true)).is_empty());
}

#[test]
fn replicas_have_an_upper_bound() {
    let text = "services:\n  app: { image: x, deploy: { replicas: 1001 } }\n";
    let refused = refusals(&Policy::default(), text);
    assert!(
        refused[0].contains("1001 replicas") && refused[0].contains("max_replicas: 1000"),
        "{refused:#?}"
    );
    assert!(refusals(&policy("max_replicas: 5000\n"), text).is_empty());
}

#[test]
fn node_endpoint_patterns_match_hosts_not_text() {
    let p = policy("node_endpoints: [\"tcp://10.0.0.*\"]\n");
    let nodes = |host: &str| format!("nodes:\n  n: {{ endpoint: \"tcp://{host}:2376\" }}\n");
    assert!(refusals(&p, &nodes("10.0.0.5")).is_empty());
    let refused = refusals(&p, &nodes("10.0.0.5.evil.example"));
    assert_eq!(refused.len(), 1, "{refused:#?}");
}

#[test]
fn policy_files_are_checked() {
    for (yaml, problem) in [
        ("host_ports: [\"90-80\"]\n", "ends before it starts"),
        ("host_ports: [http]\n", "is not a port"),
        ("bind_mounts: [srv]\n", "not an absolute path"),
        ("node_endpoints: [\"tcp://10.0.*\"]\n", "not four octets"),
        ("node_endpoints: [\"10.0.0.1\"]\n", "has no scheme"),
        ("max_replicas: 0\n", "refuse every service"),
    ] {
        let file: PolicyFile = serde_saphyr::from_str(yaml).unwrap();
        let error = Policy::from_parts("p".into(), file).unwrap_err();
        assert!(error.contains(problem), "{yaml}: {error}");
    }
    assert!(serde_saphyr::from_str::<PolicyFile>("privilege: false\n").is_err());
    assert_eq!(capability_name("cap_net_admin"), "NET_ADMIN");
}
