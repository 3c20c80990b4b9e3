//! `pier run SERVICE -- CMD…`: a one-off container from a service's current
//! spec (its image by digest, environment, networks, volumes), attached,
//! and removed when it ends unless kept.
//!
//! It carries `pier.stack` and `pier.run` but no `pier.service`: a pass
//! sees it as a container it does not own, so it is never counted as a
//! replica and never pruned, while it runs or after.

use std::collections::BTreeMap;

use crate::plan::container::ContainerSpec;
use crate::plan::container::{LABEL_COMMIT, LABEL_STACK};

/// The label that marks a one-off container, with the service it is of.
pub const LABEL_RUN: &str = "pier.run";

/// The spec of a one-off container of `service`: the replicas' spec with
/// `command` (when given), and without what belongs to the replicas alone:
/// published ports, the restart policy, the health check, the names other
/// containers reach the service by, and pier's replica labels.
pub fn one_off_spec(
    spec: &ContainerSpec,
    stack: &str,
    service: &str,
    commit: &str,
    command: Option<Vec<String>>,
    tty: bool,
) -> ContainerSpec {
    let mut one = spec.clone();
    if let Some(command) = command {
        one.command = Some(command);
    }
    one.ports.clear();
    one.restart = ("no".into(), None);
    one.healthcheck = None;
    one.aliases.clear();
    for (_, aliases) in one.more_networks.iter_mut() {
        aliases.clear();
    }
    one.reload = None;
    one.tty = tty;
    one.stdin_open = true;
    one.stdin_once = true;
    one.labels = spec
        .labels
        .iter()
        .filter(|(key, _)| !key.starts_with("pier."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain([
            (LABEL_STACK.to_string(), stack.to_string()),
            (LABEL_RUN.to_string(), service.to_string()),
            (LABEL_COMMIT.to_string(), commit.to_string()),
        ])
        .collect::<BTreeMap<_, _>>();
    one
}

/// `<stack>-<service>-run-<6 hex>`: unique enough beside the replicas'
/// names, and telling what it is in `docker ps`.
pub fn one_off_name(stack: &str, service: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    format!("{stack}-{service}-run-{:06x}", nanos & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::container::PortBinding;
    use crate::plan::container::{LABEL_REPLICA, LABEL_SERVICE};

    /// A one-off keeps the image, environment and mounts; it publishes no
    /// port, restarts never, answers to no service name, and carries no
    /// label that would make a pass count or prune it.
    #[test]
    fn a_one_off_is_the_service_without_what_makes_a_replica() {
        let spec = ContainerSpec {
            image: "reg/web@sha256:1".into(),
            command: Some(vec!["serve".into()]),
            env: vec!["MODE=prod".into()],
            ports: vec![PortBinding {
                container: "80/tcp".into(),
                host_ip: None,
                host_port: Some(8080),
            }],
            restart: ("always".into(), None),
            aliases: vec!["web".into()],
            labels: BTreeMap::from([
                (LABEL_SERVICE.to_string(), "web".to_string()),
                (LABEL_REPLICA.to_string(), "1".to_string()),
                ("team".to_string(), "blue".to_string()),
            ]),
            ..Default::default()
        };
        let one = one_off_spec(
            &spec,
            "shop",
            "web",
            "c1",
            Some(vec!["migrate".into()]),
            false,
        );
        assert_eq!(one.image, spec.image);
        assert_eq!(one.env, spec.env);
        assert_eq!(one.command, Some(vec!["migrate".to_string()]));
        assert!(one.ports.is_empty() && one.aliases.is_empty());
        assert_eq!(one.restart.0, "no");
        assert!(!one.labels.contains_key(LABEL_SERVICE) && !one.labels.contains_key(LABEL_REPLICA));
        assert_eq!(one.labels[LABEL_RUN], "web");
        assert_eq!(one.labels[LABEL_STACK], "shop");
        assert_eq!(one.labels["team"], "blue");
        let observed = crate::pass::observe::node_observation(
            "shop",
            &[crate::docker::ContainerInfo {
                id: "x".into(),
                name: one_off_name("shop", "web"),
                labels: one.labels.clone(),
                running: true,
                ..Default::default()
            }],
        );
        assert!(observed.owned.is_empty(), "a pass does not own a one-off");
    }
}
