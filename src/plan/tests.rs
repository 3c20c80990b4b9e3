//! Golden plans for every strategy, scaling, staleness, pruning, name clashes
//! and unreachable nodes, from plain values.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::docker::ContainerSpec;
use crate::manifest::Location;
use crate::manifest::model::{Autodestroy, Endpoint, Node, Strategy, UpdateConfig};

fn node(name: &str, tags: &[&str]) -> Node {
    Node {
        name: name.into(),
        endpoint: Endpoint::Unix {
            path: format!("/run/{name}.sock"),
        },
        tags: tags.iter().map(|t| t.to_string()).collect(),
        tls: None,
        location: Location::file("n.yml"),
    }
}

fn spec(image: &str, port: Option<u16>) -> ContainerSpec {
    ContainerSpec {
        image: image.into(),
        ports: port
            .map(|p| crate::docker::PortBinding {
                container: "80/tcp".into(),
                host_ip: None,
                host_port: Some(p),
            })
            .into_iter()
            .collect(),
        restart: ("no".into(), None),
        network: "pier-s".into(),
        ..Default::default()
    }
}

fn service(name: &str, replicas: Option<u32>, strategy: Strategy, tags: &[&str]) -> DesiredService {
    let spec = spec("img@sha256:new", None);
    DesiredService {
        name: name.into(),
        hooks: Default::default(),
        lifecycle: Default::default(),
        hash: super::spec::spec_hash(&spec),
        spec: Arc::new(spec),
        image_display: "img:1".into(),
        digest: "sha256:new".into(),
        replicas,
        strategy,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        constraints: vec![],
        update: UpdateConfig::default(),
        sequential: false,
        after: vec![],
        movable: true,
        waits_for: vec![],
        run_to_completion: false,
        awaited: false,
        autodestroy: Default::default(),
        never_pull: false,
        volumes_from: Vec::new(),
        container_name: None,
        routed: false,
        keeps_successor_name: false,
    }
}

fn desired(nodes: Vec<Node>, services: Vec<DesiredService>) -> Desired {
    Desired {
        stack: "s".into(),
        commit: "c0ffee".into(),
        nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
        services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
        frozen: BTreeMap::new(),
        source: Default::default(),
        network: Default::default(),
        networks: Default::default(),
    }
}

fn observed(nodes: &[(&str, usize)]) -> Observed {
    Observed {
        nodes: nodes
            .iter()
            .map(|(n, running)| {
                (
                    n.to_string(),
                    NodeObservation {
                        running: *running,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    }
}

fn owned(obs: &mut Observed, node: &str, service: &str, replica: u32, hash: &str) {
    let n = obs.nodes.get_mut(node).expect("observed node");
    n.running += 1;
    n.owned.push(OwnedContainer {
        id: format!("id-{service}-{replica}"),
        name: format!("s-{service}-{replica}"),
        service: service.into(),
        replica,
        spec_hash: hash.into(),
        image_digest: "sha256:old".into(),
        commit: "old".into(),
        running: true,
        created: 0,
        healthy: true,
        source: Default::default(),
        exit_code: None,
        spec_fields: Default::default(),
        files_hash: None,
        in_rotation: false,
        replaces: None,
    });
}

/// The plan as short lines: `+ web-1 n1`, `~ web-2 n2`, `- web-3 n3`, `! 4 reason`.
fn lines(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for s in &plan.services {
        for c in &s.changes {
            out.push(match c {
                Change::Create { node, replica, .. } => format!("+ {}-{replica} {node}", s.service),
                Change::Replace { node, replica, .. } => {
                    format!("~ {}-{replica} {node}", s.service)
                }
                Change::Remove {
                    node, container, ..
                } => format!("- {}-{} {node}", s.service, container.replica),
                Change::Reload { node, container } => {
                    format!("↻ {}-{} {node}", s.service, container.replica)
                }
                Change::Rotate {
                    node,
                    container,
                    into,
                } => format!(
                    "{} {}-{} {node}",
                    if *into { "→" } else { "←" },
                    s.service,
                    container.replica
                ),
            });
        }
        for b in &s.blocked {
            out.push(format!(
                "! {}-{} {}",
                s.service,
                b.replica.map_or("*".into(), |r| r.to_string()),
                b.reason
            ));
        }
    }
    out
}

fn run(d: &Desired, o: &Observed) -> Vec<String> {
    lines(&plan(d, o, &Options::default()))
}

#[test]
fn emptiest_node_fills_the_least_loaded_node_first() {
    let d = desired(
        vec![node("n1", &[]), node("n2", &[]), node("n3", &[])],
        vec![service("web", Some(4), Strategy::EmptiestNode, &[])],
    );
    let o = observed(&[("n1", 5), ("n2", 2), ("n3", 3)]);
    assert_eq!(
        run(&d, &o),
        ["+ web-1 n2", "+ web-2 n2", "+ web-3 n3", "+ web-4 n2"]
    );
}

#[test]
fn high_availability_spreads_the_service_across_nodes() {
    let d = desired(
        vec![node("n1", &[]), node("n2", &[]), node("n3", &[])],
        vec![service("web", Some(4), Strategy::HighAvailability, &[])],
    );
    let o = observed(&[("n1", 5), ("n2", 2), ("n3", 3)]);
    // One per node first (least loaded first among equals), then the least loaded again.
    assert_eq!(
        run(&d, &o),
        ["+ web-1 n2", "+ web-2 n3", "+ web-3 n1", "+ web-4 n2"]
    );
}

#[test]
fn every_node_runs_one_per_matching_node_and_blocks_on_unreachable_ones() {
    let d = desired(
        vec![
            node("n1", &["edge"]),
            node("n2", &["edge"]),
            node("n3", &[]),
            node("n4", &["edge"]),
        ],
        vec![service("agent", None, Strategy::EveryNode, &["edge"])],
    );
    let mut o = observed(&[("n1", 0), ("n2", 0), ("n3", 0), ("n4", 0)]);
    owned(&mut o, "n2", "agent", 1, &d.services["agent"].hash);
    owned(&mut o, "n2", "agent", 2, &d.services["agent"].hash);
    o.nodes.get_mut("n4").unwrap().unreachable = Some("connection refused".into());
    assert_eq!(
        run(&d, &o),
        [
            "- agent-2 n2",
            "+ agent-2 n1",
            "! agent-3 node unreachable: connection refused"
        ]
    );
}

#[test]
fn tutum_deploy_tags_example() {
    let nodes = vec![
        node(
            "my-node-dev",
            &[
                "aws",
                "us-east-1",
                "development",
                "test",
                "frontend",
                "backend",
            ],
        ),
        node(
            "my-node-prod-1",
            &["aws", "us-east-1", "production", "frontend"],
        ),
        node(
            "my-node-prod-2",
            &["aws", "us-east-2", "production", "frontend"],
        ),
        node(
            "my-node-prod-3",
            &["aws", "us-east-1", "production", "backend"],
        ),
        node(
            "my-node-prod-4",
            &["aws", "us-east-2", "production", "backend"],
        ),
    ];
    let d = desired(
        nodes,
        vec![
            service(
                "my-webapp-dev",
                Some(3),
                Strategy::EmptiestNode,
                &["development", "frontend"],
            ),
            service(
                "my-webapp-prod",
                Some(4),
                Strategy::HighAvailability,
                &["production", "frontend"],
            ),
        ],
    );
    let o = observed(&[
        ("my-node-dev", 0),
        ("my-node-prod-1", 0),
        ("my-node-prod-2", 0),
        ("my-node-prod-3", 0),
        ("my-node-prod-4", 0),
    ]);
    assert_eq!(
        run(&d, &o),
        [
            "+ my-webapp-dev-1 my-node-dev",
            "+ my-webapp-dev-2 my-node-dev",
            "+ my-webapp-dev-3 my-node-dev",
            "+ my-webapp-prod-1 my-node-prod-1",
            "+ my-webapp-prod-2 my-node-prod-2",
            "+ my-webapp-prod-3 my-node-prod-1",
            "+ my-webapp-prod-4 my-node-prod-2",
        ]
    );
}

#[test]
fn scaling_up_keeps_existing_replicas_and_down_removes_the_highest_first() {
    let d = desired(
        vec![node("n1", &[]), node("n2", &[])],
        vec![service("web", Some(3), Strategy::HighAvailability, &[])],
    );
    let hash = d.services["web"].hash.clone();
    let mut o = observed(&[("n1", 0), ("n2", 0)]);
    owned(&mut o, "n2", "web", 1, &hash);
    assert_eq!(
        run(&d, &o),
        ["+ web-2 n1", "+ web-3 n1"],
        "stable: replica 1 stays on n2"
    );

    let mut d1 = d.clone();
    d1.services.get_mut("web").unwrap().replicas = Some(1);
    let mut o = observed(&[("n1", 0), ("n2", 0)]);
    for (n, r) in [("n1", 1), ("n2", 2), ("n1", 3), ("n2", 4)] {
        owned(&mut o, n, "web", r, &hash);
    }
    assert_eq!(run(&d1, &o), ["- web-4 n2", "- web-3 n1", "- web-2 n2"]);
}

#[test]
fn converged_state_plans_nothing() {
    let d = desired(
        vec![node("n1", &[])],
        vec![service("web", Some(2), Strategy::EmptiestNode, &[])],
    );
    let hash = d.services["web"].hash.clone();
    let mut o = observed(&[("n1", 0)]);
    owned(&mut o, "n1", "web", 1, &hash);
    owned(&mut o, "n1", "web", 2, &hash);
    let p = plan(&d, &o, &Options::default());
    assert!(p.is_empty(), "{:?}", lines(&p));
    assert_eq!(p.services[0].unchanged, 2);
}

#[test]
fn stale_replicas_are_replaced_in_place() {
    let d = desired(
        vec![node("n1", &[]), node("n2", &[])],
        vec![service("web", Some(2), Strategy::HighAvailability, &[])],
    );
    let hash = d.services["web"].hash.clone();
    let mut o = observed(&[("n1", 0), ("n2", 0)]);
    owned(&mut o, "n1", "web", 1, "oldhash");
    owned(&mut o, "n2", "web", 2, &hash);
    assert_eq!(run(&d, &o), ["~ web-1 n1"]);
    let p = plan(&d, &o, &Options::default());
    let Change::Replace { start_first, .. } = &p.services[0].changes[0] else {
        panic!()
    };
    assert!(!start_first, "stop-first is the default");
}

#[test]
fn start_first_only_without_a_fixed_host_port() {
    let mut web = service("web", Some(1), Strategy::EmptiestNode, &[]);
    web.update.order = UpdateOrder::StartFirst;
    let mut with_port = web.clone();
    with_port.name = "api".into();
    with_port.spec = Arc::new(spec("img@sha256:new", Some(8080)));
    let d = desired(vec![node("n1", &[])], vec![web, with_port]);
    let mut o = observed(&[("n1", 0)]);
    owned(&mut o, "n1", "web", 1, "old");
    owned(&mut o, "n1", "api", 1, "old");
    let p = plan(&d, &o, &Options::default());
    let orders: Vec<(String, bool)> = p
        .services
        .iter()
        .map(|s| match &s.changes[0] {
            Change::Replace { start_first, .. } => (s.service.clone(), *start_first),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        orders,
        [("api".to_string(), false), ("web".to_string(), true)]
    );
}

#[test]
fn pruning_removes_only_owned_containers_of_undeclared_services() {
    let d = desired(
        vec![node("n1", &[])],
        vec![service("web", Some(1), Strategy::EmptiestNode, &[])],
    );
    let hash = d.services["web"].hash.clone();
    let mut o = observed(&[("n1", 1)]);
    owned(&mut o, "n1", "web", 1, &hash);
    owned(&mut o, "n1", "old-api", 1, "x");
    o.nodes
        .get_mut("n1")
        .unwrap()
        .foreign_names
        .insert("s-old-api-2".into());
    assert_eq!(run(&d, &o), ["- old-api-1 n1"]);
}

#[test]
fn a_name_held_by_an_unowned_container_is_blocked_not_removed() {
    let d = desired(
        vec![node("n1", &[])],
        vec![service("web", Some(1), Strategy::EmptiestNode, &[])],
    );
    let mut o = observed(&[("n1", 1)]);
    o.nodes
        .get_mut("n1")
        .unwrap()
        .foreign_names
        .insert("s-web-1".into());
    let got = run(&d, &o);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("! web-1 a container named `s-web-1` exists on n1 and is not pier's"),
        "{got:?}"
    );
}

#[test]
fn unreachable_nodes_are_never_planned_for_removal() {
    let d = desired(
        vec![node("n1", &[]), node("n2", &[])],
        vec![service("web", Some(1), Strategy::HighAvailability, &[])],
    );
    let mut o = observed(&[("n1", 0), ("n2", 0)]);
    owned(&mut o, "n2", "web", 1, "stale");
    owned(&mut o, "n2", "web", 2, "stale");
    owned(&mut o, "n2", "gone", 1, "x");
    o.nodes.get_mut("n2").unwrap().unreachable = Some("timed out".into());
    assert_eq!(
        run(&d, &o),
        [
            "! web-* cannot scale down: the remaining replicas are on unreachable nodes",
            "! web-1 node unreachable: timed out",
            "! web-2 node unreachable: timed out",
            "! gone-1 cannot remove, node unreachable: timed out",
        ]
    );
}

#[test]
fn replicas_that_fit_nowhere_are_blocked_with_the_reason() {
    let mut web = service("web", Some(3), Strategy::HighAvailability, &["web"]);
    web.spec = Arc::new(spec("img@sha256:new", Some(80)));
    let d = desired(
        vec![
            node("n1", &["web"]),
            node("n2", &["web"]),
            node("n3", &["db"]),
        ],
        vec![web],
    );
    let o = observed(&[("n1", 0), ("n2", 0), ("n3", 0)]);
    assert_eq!(
        run(&d, &o),
        [
            "+ web-1 n1",
            "+ web-2 n2",
            "! web-3 every matching node already runs a replica publishing the same host port",
        ]
    );
    let lonely = desired(
        vec![node("n1", &["db"])],
        vec![service("web", Some(1), Strategy::EmptiestNode, &["web"])],
    );
    assert_eq!(
        run(&lonely, &observed(&[("n1", 0)])),
        ["! web-1 no node carries all of the tags [web] and meets the constraints"]
    );
}

#[test]
fn an_empty_desired_state_never_deletes_everything_unless_allowed() {
    let d = desired(vec![node("n1", &[])], vec![]);
    let mut o = observed(&[("n1", 0)]);
    owned(&mut o, "n1", "web", 1, "x");
    let p = plan(&d, &o, &Options::default());
    assert!(
        p.refused[0].contains("declare no services while 1 container(s)"),
        "{:?}",
        p.refused
    );
    assert!(p.is_empty());
    let p = plan(
        &d,
        &o,
        &Options {
            allow_empty: true,
            ..Default::default()
        },
    );
    assert_eq!(lines(&p), ["- web-1 n1"]);
}

#[test]
fn services_come_after_what_they_depend_on() {
    let mut app = service("app", Some(1), Strategy::EmptiestNode, &[]);
    app.after = vec!["redis".into()];
    let d = desired(
        vec![node("n1", &[])],
        vec![app, service("redis", Some(1), Strategy::EmptiestNode, &[])],
    );
    assert_eq!(
        run(&d, &observed(&[("n1", 0)])),
        ["+ redis-1 n1", "+ app-1 n1"]
    );
}

#[test]
fn tag_changes_move_replicas_off_nodes_that_no_longer_match() {
    let d = desired(
        vec![node("n1", &["web"]), node("n2", &[])],
        vec![service("web", Some(1), Strategy::EmptiestNode, &["web"])],
    );
    let hash = d.services["web"].hash.clone();
    let mut o = observed(&[("n1", 0), ("n2", 0)]);
    owned(&mut o, "n2", "web", 1, &hash);
    assert_eq!(run(&d, &o), ["- web-1 n2", "+ web-1 n1"]);
}

#[test]
fn frozen_services_keep_their_containers() {
    let mut d = desired(vec![node("n1", &[])], vec![]);
    d.frozen.insert("web".into(), "registry unreachable".into());
    let mut o = observed(&[("n1", 0)]);
    owned(&mut o, "n1", "web", 1, "x");
    assert_eq!(run(&d, &o), ["! web-* registry unreachable"]);
}

#[test]
fn replacements_say_which_parts_change_and_hide_values_unless_revealed() {
    let mut d = desired(
        vec![node("n1", &[])],
        vec![service("web", Some(1), Strategy::EmptiestNode, &[])],
    );
    let old_spec = d.services["web"].spec.clone();
    let mut new_spec = (*old_spec).clone();
    new_spec.env = vec!["API_TOKEN=t0p".into(), "GREETING=hello".into()];
    new_spec.command = Some(vec!["serve".into()]);
    let mut old = (*old_spec).clone();
    old.env = vec!["GREETING=hi".into(), "OLD=1".into()];
    let web = d.services.get_mut("web").unwrap();
    web.hash = super::spec::spec_hash(&new_spec);
    web.spec = Arc::new(new_spec);
    let mut o = observed(&[("n1", 0)]);
    owned(&mut o, "n1", "web", 1, "old");
    o.nodes.get_mut("n1").unwrap().owned[0].spec_fields =
        serde_json::to_string(&super::spec::field_fingerprints(&old))
            .unwrap()
            .into();
    o.nodes.get_mut("n1").unwrap().owned[0].image_digest = "sha256:new".into();
    let p = plan(&d, &o, &Options::default());
    let shown = |p: &Plan| -> Vec<String> {
        let Change::Replace { changed, .. } = &p.services[0].changes[0] else {
            panic!()
        };
        changed
            .iter()
            .map(|c| format!("{} {} {:?}", c.field, c.change, c.value))
            .collect()
    };
    assert_eq!(
        shown(&p),
        [
            "command changed None",
            "env.API_TOKEN added None",
            "env.GREETING changed None",
            "env.OLD removed None"
        ]
    );
    let text = render::human(&p, &d, render::Style { color: false });
    assert!(
        text.contains("~ s-web-1 on n1: command changed, env +API_TOKEN (value hidden), env ~GREETING (value hidden), env -OLD"),
        "{text}"
    );

    // --show-values: a value from the environment stays hidden, and so does
    // a secret-looking name's.
    let mut revealed = p.clone();
    render::reveal_env_values(&mut revealed, &d, &[]);
    assert_eq!(
        shown(&revealed)[1..3],
        [
            "env.API_TOKEN added None",
            "env.GREETING changed Some(\"hello\")"
        ]
    );
    let text = render::human(&revealed, &d, render::Style { color: false });
    assert!(text.contains("env ~GREETING=\"hello\""), "{text}");
    let mut from_environment = p.clone();
    render::reveal_env_values(&mut from_environment, &d, &["ell".to_string()]);
    assert_eq!(shown(&from_environment)[2], "env.GREETING changed None");
}

/// Placement keeps only the few best-ranked nodes per service (see
/// `scaled`): on random loads, reachability, existing replicas, host ports
/// and strategies it picks exactly what scanning every node for every
/// replica picks.
#[test]
fn placement_matches_a_full_scan_on_random_inputs() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |bound: u64| {
        // xorshift64: reproducible without a dependency.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    for case in 0..500 {
        let n = 1 + next(8) as usize;
        let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let spread = next(2) == 0;
        let fixed_port = next(4) == 0;
        let strategy = if spread {
            Strategy::HighAvailability
        } else {
            Strategy::EmptiestNode
        };
        let mut web = service("web", None, strategy, &[]);
        if fixed_port {
            web.spec = Arc::new(spec("img@sha256:new", Some(80)));
            web.hash = super::spec::spec_hash(&web.spec);
        }
        let loads: Vec<(&str, usize)> = names
            .iter()
            .map(|name| (name.as_str(), next(6) as usize))
            .collect();
        let mut o = observed(&loads);
        let mut existing = 0;
        let mut of_service = vec![0i64; n];
        for (p, name) in names.iter().enumerate() {
            for _ in 0..next(3) {
                if fixed_port && of_service[p] > 0 {
                    break;
                }
                existing += 1;
                owned(&mut o, name, "web", existing, &web.hash);
                of_service[p] += 1;
            }
            if next(5) == 0 {
                o.nodes.get_mut(name).unwrap().unreachable = Some("down".into());
            }
        }
        let wanted = existing + 1 + next(8) as u32;
        web.replicas = Some(wanted);

        let mut total: Vec<i64> = names.iter().map(|n| o.nodes[n].running as i64).collect();
        let reachable: Vec<bool> = names
            .iter()
            .map(|n| o.nodes[n].unreachable.is_none())
            .collect();
        let mut expected = Vec::new();
        for replica in existing + 1..=wanted {
            let best = (0..n)
                .filter(|&p| reachable[p] && (!fixed_port || of_service[p] == 0))
                .min_by_key(|&p| (if spread { of_service[p] } else { 0 }, total[p], p));
            match best {
                Some(p) => {
                    expected.push(format!("+ web-{replica} n{p}"));
                    of_service[p] += 1;
                    total[p] += 1;
                }
                None => expected.push(format!("! web-{replica}")),
            }
        }

        let d = desired(names.iter().map(|n| node(n, &[])).collect(), vec![web]);
        // Unreachable nodes are given up as down, so placement goes on
        // around them (otherwise nothing is placed: see
        // `an_unreachable_node_may_still_run_the_missing_replicas`).
        let options = Options {
            down: names
                .iter()
                .filter(|n| o.nodes[*n].unreachable.is_some())
                .cloned()
                .collect(),
            ..Default::default()
        };
        let planned: Vec<String> = lines(&plan(&d, &o, &options))
            .into_iter()
            .map(|line| match line.strip_prefix("! ") {
                // Blocked lines without their reason.
                Some(rest) => format!("! {}", rest.split(' ').next().unwrap_or_default()),
                None => line,
            })
            .collect();
        assert_eq!(planned, expected, "case {case}");
    }
}

/// Unknown is not empty: while a node the service may run on does not
/// answer, the replicas the others lack may be running there, so none is
/// started elsewhere; once the caller gives the node up as down, movable
/// services are placed on the others, and the rest wait for the node.
#[test]
fn an_unreachable_node_may_still_run_the_missing_replicas() {
    let web = service("web", Some(3), Strategy::HighAvailability, &[]);
    let mut db = service("db", Some(1), Strategy::HighAvailability, &[]);
    db.movable = false;
    let d = desired(
        vec![node("n1", &[]), node("n2", &[]), node("n3", &[])],
        vec![web.clone(), db],
    );
    let mut o = observed(&[("n1", 0), ("n2", 0), ("n3", 0)]);
    owned(&mut o, "n1", "web", 1, &web.hash);
    owned(&mut o, "n2", "web", 2, &web.hash);
    o.nodes.get_mut("n3").unwrap().unreachable = Some("connection refused".into());
    assert_eq!(
        run(&d, &o),
        [
            "! db-1 waiting on node n3: it is unreachable (connection refused) and may still run this replica",
            "! web-3 waiting on node n3: it is unreachable (connection refused) and may still run this replica",
        ]
    );
    let down = Options {
        down: ["n3".to_string()].into(),
        ..Default::default()
    };
    assert_eq!(
        lines(&plan(&d, &o, &down)),
        [
            "! db-1 waiting for node n3: it is down, and db cannot move (it has volumes or host folders, or is pinned to the node by name)",
            "+ web-3 n1",
        ]
    );
}

/// When a node given up as down comes back, the older copy of a replica
/// that was started elsewhere meanwhile is removed, whichever node it is on.
#[test]
fn a_returning_node_loses_its_older_copies() {
    let web = service("web", Some(2), Strategy::HighAvailability, &[]);
    let d = desired(vec![node("n1", &[]), node("n2", &[])], vec![web.clone()]);
    let mut o = observed(&[("n1", 0), ("n2", 0)]);
    owned(&mut o, "n1", "web", 1, &web.hash);
    owned(&mut o, "n1", "web", 2, &web.hash);
    owned(&mut o, "n2", "web", 2, &web.hash);
    // n2's copy of replica 2 is the older: n1's was started while n2 was down.
    for (node, created) in [("n1", 10), ("n2", 5)] {
        let copy = o
            .nodes
            .get_mut(node)
            .unwrap()
            .owned
            .iter_mut()
            .find(|c| c.replica == 2);
        copy.unwrap().created = created;
    }
    assert_eq!(run(&d, &o), ["- web-2 n2"]);
}

fn copy(o: &mut Observed, node: &str, name: &str, hash: &str, running: bool, healthy: bool) {
    owned(o, node, "web", 1, hash);
    let c = o.nodes.get_mut(node).unwrap().owned.last_mut().unwrap();
    c.name = name.into();
    c.id = format!("id-{name}");
    (c.running, c.healthy) = (running, healthy);
}

/// After a crash mid-replacement: the old copy set aside is kept while its
/// successor is not healthy (the successor goes and the old one is
/// replaced again, which puts it back if the new one fails), and removed
/// once the successor is healthy.
#[test]
fn a_set_aside_copy_outlives_a_successor_that_is_not_healthy() {
    let web = service("web", Some(1), Strategy::HighAvailability, &[]);
    let d = desired(vec![node("n1", &[])], vec![web.clone()]);
    let mut o = observed(&[("n1", 0)]);
    copy(&mut o, "n1", "s-web-1-pier-old", "old", false, false);
    copy(&mut o, "n1", "s-web-1", &web.hash, true, false);
    let p = plan(&d, &o, &Options::default());
    let changes: Vec<String> = p.services[0]
        .changes
        .iter()
        .map(|c| match c {
            Change::Remove { container, .. } => format!("- {}", container.name),
            Change::Replace { old, .. } => format!("~ {}", old.name),
            Change::Create { name, .. } => format!("+ {name}"),
            Change::Reload { container, .. } => format!("↻ {}", container.name),
            Change::Rotate { container, .. } => format!("→ {}", container.name),
        })
        .collect();
    assert_eq!(changes, ["- s-web-1", "~ s-web-1-pier-old"]);

    let mut o = observed(&[("n1", 0)]);
    copy(&mut o, "n1", "s-web-1-pier-old", "old", false, false);
    copy(&mut o, "n1", "s-web-1", &web.hash, true, true);
    assert_eq!(run(&d, &o), ["- web-1 n1"]);
    let p = plan(&d, &o, &Options::default());
    assert!(
        matches!(&p.services[0].changes[0], Change::Remove { container, .. } if container.name == "s-web-1-pier-old")
    );
}

/// After a crash mid start-first replacement, both copies run: the
/// successor goes while its predecessor is there (the predecessor is
/// replaced again), whichever of the replica's two names each has. A
/// successor whose predecessor is gone is the replica, under either name.
#[test]
fn an_unfinished_start_first_successor_gives_way_under_either_name() {
    let mut web = service("web", Some(1), Strategy::HighAvailability, &[]);
    web.update.order = UpdateOrder::StartFirst;
    let d = desired(vec![node("n1", &[])], vec![web.clone()]);
    let changes = |o: &Observed| -> Vec<String> {
        plan(&d, o, &Options::default()).services[0]
            .changes
            .iter()
            .map(|c| match c {
                Change::Remove { container, .. } => format!("- {}", container.name),
                Change::Replace { old, .. } => format!("~ {}", old.name),
                other => format!("{other:?}"),
            })
            .collect()
    };
    for (old, new) in [
        ("s-web-1", "s-web-1-pier-next"),
        ("s-web-1-pier-next", "s-web-1"),
    ] {
        let mut o = observed(&[("n1", 0)]);
        copy(&mut o, "n1", old, "old", true, true);
        copy(&mut o, "n1", new, &web.hash, true, false);
        o.nodes.get_mut("n1").unwrap().owned[1].replaces = Some(format!("id-{old}"));
        assert_eq!(changes(&o), [format!("- {new}"), format!("~ {old}")]);

        let mut o = observed(&[("n1", 0)]);
        copy(&mut o, "n1", new, &web.hash, true, true);
        o.nodes.get_mut("n1").unwrap().owned[0].replaces = Some(format!("id-{old}"));
        assert!(changes(&o).is_empty(), "{new} alone is the replica");
    }
    // From before the label: a `-pier-next` copy beside the replica is
    // still an unfinished successor.
    let mut o = observed(&[("n1", 0)]);
    copy(&mut o, "n1", "s-web-1-pier-next", &web.hash, true, true);
    copy(&mut o, "n1", "s-web-1", "old", true, true);
    assert_eq!(changes(&o), ["- s-web-1-pier-next", "~ s-web-1"]);
}

/// A container pier does not own under the name a replacement needs for
/// the old one blocks that replacement up front.
#[test]
fn a_foreign_set_aside_name_blocks_the_replacement() {
    let web = service("web", Some(1), Strategy::HighAvailability, &[]);
    let d = desired(vec![node("n1", &[])], vec![web]);
    let mut o = observed(&[("n1", 0)]);
    owned(&mut o, "n1", "web", 1, "stale");
    o.nodes
        .get_mut("n1")
        .unwrap()
        .foreign_names
        .insert("s-web-1-pier-old".into());
    let lines = run(&d, &o);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(
            "! web-1 a container named `s-web-1-pier-old` exists on n1 and is not pier's"
        ),
        "{lines:?}"
    );
}

/// A job another service waits for (`service_completed_successfully`) has
/// done its work once it exited with 0: it is not replaced on every pass;
/// one that failed runs again. An `autodestroy` replica that exited as asked
/// is removed, and not started again once the caller remembers it ran.
#[test]
fn jobs_that_completed_stay_and_autodestroyed_ones_are_not_run_again() {
    let mut job = service("migrate", Some(1), Strategy::HighAvailability, &[]);
    job.run_to_completion = true;
    let mut once = service("once", Some(1), Strategy::HighAvailability, &[]);
    once.autodestroy = Autodestroy::OnSuccess;
    let d = desired(vec![node("n1", &[])], vec![job.clone(), once.clone()]);
    let exited = |o: &mut Observed, service: &str, hash: &str, code: i64| {
        owned(o, "n1", service, 1, hash);
        let c = o.nodes.get_mut("n1").unwrap().owned.last_mut().unwrap();
        (c.running, c.exit_code) = (false, Some(code));
    };
    let mut o = observed(&[("n1", 0)]);
    exited(&mut o, "migrate", &job.hash, 0);
    exited(&mut o, "once", &once.hash, 0);
    assert_eq!(run(&d, &o), ["- once-1 n1"]);
    let p = plan(&d, &o, &Options::default());
    assert!(matches!(
        &p.services.iter().find(|s| s.service == "once").unwrap().changes[0],
        Change::Remove { reason, .. } if reason == AUTODESTROYED
    ));

    let mut o = observed(&[("n1", 0)]);
    exited(&mut o, "migrate", &job.hash, 3);
    assert_eq!(run(&d, &o), ["~ migrate-1 n1", "+ once-1 n1"]);
    let ran = Options {
        destroyed: [("once".to_string(), once.hash.clone())].into(),
        ..Default::default()
    };
    assert_eq!(lines(&plan(&d, &o, &ran)), ["~ migrate-1 n1"]);
}

/// A node that left the manifests is drained: its copies are removed and
/// never count as the replica, whatever order the nodes sort in; while it
/// does not answer, the replicas it may run are not started elsewhere.
#[test]
fn a_node_that_left_the_manifests_is_drained() {
    let web = service("web", Some(2), Strategy::HighAvailability, &[]);
    let d = desired(vec![node("n2", &[])], vec![web.clone()]);
    let mut o = observed(&[("n1", 0), ("n2", 0)]);
    o.nodes.get_mut("n1").unwrap().draining = true;
    owned(&mut o, "n1", "web", 1, &web.hash);
    owned(&mut o, "n2", "web", 2, &web.hash);
    assert_eq!(run(&d, &o), ["- web-1 n1", "+ web-1 n2"]);

    o.nodes.get_mut("n1").unwrap().unreachable = Some("timeout".into());
    o.nodes.get_mut("n1").unwrap().owned.clear();
    assert_eq!(
        run(&d, &o),
        [
            "! web-1 waiting on node n1: it left the manifests and is unreachable (timeout), and may still run this replica"
        ]
    );
}

/// Settings added to containers over time are left out of the hash while
/// unset, so upgrading pier never replaces a running container by itself.
#[test]
fn unset_later_settings_leave_the_spec_hash_as_it_was() {
    let spec = spec("img@sha256:1", Some(80));
    let json = serde_json::to_value(&spec).unwrap();
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    for later in [
        "volumes_from",
        "init",
        "read_only",
        "tty",
        "stdin_open",
        "stop_signal",
        "shm_size",
        "dns",
        "dns_search",
        "domainname",
        "sysctls",
        "tmpfs",
        "group_add",
        "nano_cpus",
        "cpu_quota",
        "cpu_period",
        "cpuset",
        "memory_reservation",
        "memory_swap",
        "oom_score_adj",
        "pids_limit",
        "ulimits",
        "logging",
    ] {
        assert!(
            !keys.iter().any(|k| k.as_str() == later),
            "{later} in {keys:?}"
        );
    }
    let mut with_tty = spec.clone();
    with_tty.tty = true;
    assert_ne!(
        super::spec::spec_hash(&spec),
        super::spec::spec_hash(&with_tty),
        "a setting that is set is hashed"
    );
}

/// Upgrading pier replaces no container by itself: the hash of a spec is
/// the same in every version. A change that moves this value makes every
/// running replica stale at the upgrade; it needs a migration plan, not a
/// new expected value.
#[test]
fn the_spec_hash_is_stable_across_versions() {
    let mut pinned = spec("registry.example/app@sha256:0123456789abcdef", Some(8080));
    pinned.env = vec!["MODE=production".into(), "PORT=80".into()];
    pinned.command = Some(vec!["serve".into(), "--port".into(), "80".into()]);
    assert_eq!(super::spec::spec_hash(&pinned), "221878c465a58c58");
}

/// A replica planned on a node that cannot join the stack's swarm is held
/// back with that node's reason; the others go ahead.
#[test]
fn replicas_wait_on_nodes_that_cannot_join_the_swarm() {
    let d = desired(
        vec![node("n1", &[]), node("n2", &[])],
        vec![service("web", Some(2), Strategy::HighAvailability, &[])],
    );
    let o = observed(&[("n1", 0), ("n2", 0)]);
    let swarm = crate::plan::swarm::SwarmPlan {
        steps: Vec::new(),
        blocked: [("n2".to_string(), "it is in another swarm".to_string())].into(),
        ..Default::default()
    };
    let p = plan(&d, &o, &Options::default()).with_swarm(swarm);
    assert_eq!(
        lines(&p),
        [
            "+ web-1 n1",
            "! web-2 n2 cannot join the stack's swarm: it is in another swarm"
        ]
    );
}

/// A linked service's plan lists its replicas as they will be, kept and
/// created, for the per-replica link variables; a service nothing links to
/// lists none.
#[test]
fn a_linked_service_lists_its_replicas_after_the_plan() {
    let mut web = service("web", Some(1), Strategy::EmptiestNode, &[]);
    Arc::make_mut(&mut web.spec).replica_links = vec![crate::plan::container::ReplicaLink {
        service: "cache".into(),
        prefix: "REDIS".into(),
        alias: "redis".into(),
        ports: vec![(6379, "tcp")],
    }];
    let cache = service("cache", Some(3), Strategy::EmptiestNode, &[]);
    let hash = cache.hash.clone();
    let d = desired(vec![node("n1", &[]), node("n2", &[])], vec![web, cache]);
    let mut o = observed(&[("n1", 0), ("n2", 0)]);
    owned(&mut o, "n1", "cache", 2, &hash);
    owned(&mut o, "n2", "cache", 5, &hash);
    let plan = super::plan(&d, &o, &Options::default());
    let replicas = |name: &str| {
        plan.services
            .iter()
            .find(|s| s.service == name)
            .map(|s| s.replicas.clone())
            .unwrap()
    };
    // Replicas keep their numbers: 2 and 5 stay, and 1 comes.
    assert_eq!(
        replicas("cache"),
        [1, 2, 5].map(|r| (r, format!("s-cache-{r}")))
    );
    assert!(replicas("web").is_empty());

    // Scaled down to one: the replica removed is not listed.
    let mut d = d;
    d.services.get_mut("cache").unwrap().replicas = Some(1);
    let plan = super::plan(&d, &o, &Options::default());
    let cache = plan.services.iter().find(|s| s.service == "cache").unwrap();
    let removed: Vec<u32> = cache
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Remove { container, .. } => Some(container.replica),
            _ => None,
        })
        .collect();
    assert_eq!(removed.len(), 1, "{:?}", cache.changes);
    let left: Vec<u32> = cache.replicas.iter().map(|(r, _)| *r).collect();
    assert_eq!(left.len(), 1);
    assert!(
        !left.contains(&removed[0]),
        "{left:?} after removing {removed:?}"
    );
}

/// A routed service's replicas are in rotation while running and healthy:
/// a healthy one out of rotation goes in, an unhealthy one in rotation
/// comes out, and the others (and any unrouted service) are left alone.
#[test]
fn routed_replicas_follow_their_health_in_and_out_of_rotation() {
    let mut web = service("web", Some(3), Strategy::EmptiestNode, &[]);
    web.routed = true;
    let hash = web.hash.clone();
    let worker = service("worker", Some(1), Strategy::EmptiestNode, &[]);
    let worker_hash = worker.hash.clone();
    let d = desired(vec![node("n1", &[])], vec![web, worker]);
    let mut o = observed(&[("n1", 0)]);
    for replica in 1..=3 {
        owned(&mut o, "n1", "web", replica, &hash);
    }
    owned(&mut o, "n1", "worker", 1, &worker_hash);
    let containers = &mut o.nodes.get_mut("n1").unwrap().owned;
    // web-1: healthy, not in rotation; web-2: unhealthy, in rotation;
    // web-3: healthy, in rotation; worker-1: unhealthy, not routed.
    containers[1].healthy = false;
    containers[1].in_rotation = true;
    containers[2].in_rotation = true;
    containers[3].healthy = false;
    assert_eq!(run(&d, &o), ["→ web-1 n1", "← web-2 n1"]);
}

/// The swarm makes the named overlay networks services join, with their
/// options; never an unused one, an external one, or a bridge.
#[test]
fn overlay_networks_are_the_named_ones_in_use() {
    use crate::manifest::model::NetworkDecl;
    let mut web = service("web", Some(1), Strategy::EmptiestNode, &[]);
    let mut spec = (*web.spec).clone();
    spec.network = "pier-s_mesh-overlay".into();
    spec.more_networks = vec![
        ("pier-s_back".into(), vec!["web".into()]),
        ("edge".into(), vec!["web".into()]),
    ];
    web.spec = Arc::new(spec);
    let mut d = desired(vec![node("n1", &[])], vec![web]);
    let overlay = |internal| NetworkDecl {
        overlay: true,
        internal,
        ..Default::default()
    };
    d.networks = BTreeMap::from([
        ("mesh".to_string(), overlay(true)),
        ("unused".to_string(), overlay(false)),
        ("back".to_string(), NetworkDecl::default()),
        (
            "edge".to_string(),
            NetworkDecl {
                external: true,
                engine_name: Some("edge".into()),
                ..overlay(false)
            },
        ),
    ]);
    assert_eq!(
        d.overlay_networks(),
        [super::swarm::OverlayNetwork {
            name: "pier-s_mesh-overlay".into(),
            encrypted: false,
            internal: true,
        }]
    );
}

/// The order is data in the plan: waves by dependency, and in a service
/// removals, then creations, then replacements `parallelism` at a time;
/// `diff` shows it as it will run.
#[test]
fn the_rollout_order_is_planned_and_shown() {
    let mut web = service("web", Some(3), Strategy::HighAvailability, &[]);
    web.after = vec!["db".into()];
    web.update.parallelism = 2;
    let d = desired(
        vec![node("n1", &[]), node("n2", &[])],
        vec![web, service("db", Some(1), Strategy::EmptiestNode, &[])],
    );
    let mut o = observed(&[("n1", 0), ("n2", 0)]);
    for replica in 1..=4 {
        owned(
            &mut o,
            if replica % 2 == 1 { "n1" } else { "n2" },
            "web",
            replica,
            "oldhash",
        );
    }
    let p = plan(&d, &o, &Options::default());
    let names: Vec<Vec<&str>> = p
        .waves
        .iter()
        .map(|w| w.services.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(names, [vec!["db"], vec!["web"]]);
    let web = p.services.iter().find(|s| s.service == "web").unwrap();
    let kinds: Vec<Vec<&str>> = web
        .batches
        .iter()
        .map(|batch| {
            batch
                .iter()
                .map(|&i| match &web.changes[i] {
                    Change::Remove { .. } => "remove",
                    Change::Create { .. } => "create",
                    Change::Replace { .. } => "replace",
                    _ => "other",
                })
                .collect()
        })
        .collect();
    assert_eq!(
        kinds,
        [vec!["remove"], vec!["replace", "replace"], vec!["replace"]],
        "{:?}",
        lines(&p)
    );
    let shown = super::render::human(&p, &d, super::render::Style { color: false });
    assert!(
        shown.contains("Order (each step once the one before it is done):"),
        "{shown}"
    );
    assert!(shown.contains("  1. db\n"), "{shown}");
    assert!(
        shown.contains("  2. web (s-web-4, then s-web-1 s-web-2, then s-web-3)\n"),
        "{shown}"
    );
    let json: serde_json::Value = serde_json::from_str(&super::render::json(&p)).unwrap();
    assert_eq!(json["waves"][1]["services"][0], "web", "{json}");
    let web = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "web")
        .unwrap();
    assert_eq!(web["batches"].as_array().unwrap().len(), 3, "{json}");
}
