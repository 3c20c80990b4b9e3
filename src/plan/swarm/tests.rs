//! Unit tests of the swarm plan: forming, growing and leaving the swarm.

use super::*;

fn inactive() -> SwarmMembership {
    SwarmMembership {
        state: "inactive".into(),
        ..Default::default()
    }
}

fn member(cluster: &str, manager: bool) -> SwarmMembership {
    SwarmMembership {
        state: "active".into(),
        cluster: Some(cluster.into()),
        manager,
        ..Default::default()
    }
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|n| n.to_string()).collect()
}

fn overlay() -> Overlay {
    Overlay {
        networks: vec![OverlayNetwork {
            name: "pier-app-overlay".into(),
            encrypted: false,
            internal: false,
        }],
    }
}

/// The plan for `nodes` whose overlay network exists already, with no
/// node leaving.
fn plan_formed(
    nodes: &BTreeSet<String>,
    observed: &BTreeMap<String, SwarmMembership>,
) -> SwarmPlan {
    plan(
        nodes,
        observed,
        &overlay(),
        &names(&["pier-app-overlay"]),
        &BTreeMap::new(),
    )
}

#[test]
fn a_new_swarm_gets_three_managers_stable_by_name_and_the_network() {
    let nodes = names(&["n1", "n2", "n3", "n4"]);
    let observed = nodes.iter().map(|n| (n.clone(), inactive())).collect();
    let plan = plan(
        &nodes,
        &observed,
        &overlay(),
        &BTreeSet::new(),
        &BTreeMap::new(),
    );
    let join = |node: &str, manager| SwarmStep::Join {
        node: node.into(),
        via: "n1".into(),
        manager,
    };
    assert_eq!(
        plan.steps,
        [
            SwarmStep::Init { node: "n1".into() },
            join("n2", true),
            join("n3", true),
            join("n4", false),
            SwarmStep::CreateNetwork {
                node: "n1".into(),
                network: "pier-app-overlay".into(),
                encrypted: false,
                internal: false,
            },
        ]
    );
    assert!(plan.blocked.is_empty());
}

/// One manager and one joiner short of three: the joiner is a worker,
/// never the second of two managers (which could lose neither).
#[test]
fn managers_stay_odd_when_joiners_cannot_make_three() {
    let nodes = names(&["n1", "n2", "n3"]);
    let observed = BTreeMap::from([
        ("n1".to_string(), member("c", true)),
        ("n3".to_string(), inactive()),
    ]);
    let plan = plan_formed(&nodes, &observed);
    assert_eq!(
        plan.steps,
        [SwarmStep::Join {
            node: "n3".into(),
            via: "n1".into(),
            manager: false,
        }]
    );
}

/// A stack that grew from two nodes to three: its worker is promoted
/// and the newcomer joins as a manager, so it has three.
#[test]
fn a_worker_is_promoted_when_it_helps_make_three_managers() {
    let nodes = names(&["n1", "n2", "n3"]);
    let observed = BTreeMap::from([
        ("n1".to_string(), member("c", true)),
        ("n2".to_string(), member("c", false)),
        ("n3".to_string(), inactive()),
    ]);
    let plan = plan_formed(&nodes, &observed);
    assert_eq!(
        plan.steps,
        [
            SwarmStep::Promote {
                node: "n2".into(),
                via: "n1".into(),
            },
            SwarmStep::Join {
                node: "n3".into(),
                via: "n1".into(),
                manager: true,
            }
        ]
    );
    // Once done, nothing more: three managers, one of them promoted
    // and not acting as one yet.
    let formed = BTreeMap::from([
        ("n1".to_string(), member("c", true)),
        (
            "n2".to_string(),
            SwarmMembership {
                promoted: true,
                ..member("c", false)
            },
        ),
        ("n3".to_string(), member("c", true)),
    ]);
    assert_eq!(plan_formed(&nodes, &formed), SwarmPlan::default());
    // Two workers and one manager: both promoted, and no more than three.
    let four = names(&["n1", "n2", "n3", "n4"]);
    let workers = BTreeMap::from([
        ("n1".to_string(), member("c", true)),
        ("n2".to_string(), member("c", false)),
        ("n3".to_string(), member("c", false)),
        ("n4".to_string(), member("c", false)),
    ]);
    let promoted: Vec<SwarmStep> = plan_formed(&four, &workers).steps;
    assert_eq!(
        promoted,
        ["n2", "n3"].map(|node| SwarmStep::Promote {
            node: node.into(),
            via: "n1".into()
        })
    );
}

#[test]
fn a_formed_swarm_with_its_network_plans_nothing() {
    let nodes = names(&["n1", "n2"]);
    let observed = BTreeMap::from([
        ("n1".to_string(), member("c1", true)),
        ("n2".to_string(), member("c1", false)),
    ]);
    let plan = plan_formed(&nodes, &observed);
    assert_eq!(plan, SwarmPlan::default());
}

/// A stack that shrank from three nodes to two keeps one manager: the
/// leaving one is demoted and leaves, and of the two staying the last
/// by name is demoted too. Not while a manager cannot be seen.
#[test]
fn two_managers_left_become_one() {
    let nodes = names(&["n1", "n2"]);
    let knowing = |count: usize| SwarmMembership {
        managers: (1..=count).map(|i| format!("10.0.0.{i}:2377")).collect(),
        ..member("c", true)
    };
    let observed = BTreeMap::from([
        ("n1".to_string(), knowing(3)),
        ("n2".to_string(), member("c", true)),
    ]);
    let away = BTreeMap::from([(
        "n3".to_string(),
        Leaving {
            membership: member("c", true),
            overlay_containers: Vec::new(),
        },
    )]);
    let plan_with = |observed: &BTreeMap<String, SwarmMembership>,
                     away: &BTreeMap<String, Leaving>| {
        plan(
            &nodes,
            observed,
            &overlay(),
            &names(&["pier-app-overlay"]),
            away,
        )
    };
    let step = |kind: fn(String, String) -> SwarmStep, node: &str| kind(node.into(), "n1".into());
    assert_eq!(
        plan_with(&observed, &away).steps,
        [
            step(|node, via| SwarmStep::Demote { node, via }, "n3"),
            step(|node, via| SwarmStep::Leave { node, via }, "n3"),
            step(|node, via| SwarmStep::Demote { node, via }, "n2"),
        ]
    );
    // n3 gone already: the same.
    let mut gone = observed.clone();
    gone.insert("n1".into(), knowing(2));
    assert_eq!(
        plan_with(&gone, &BTreeMap::new()).steps,
        [step(|node, via| SwarmStep::Demote { node, via }, "n2")]
    );
    // A third manager pier does not see (n3 not leaving, just not a
    // node of this stack), or n2 unreachable: nothing is demoted.
    assert_eq!(plan_with(&observed, &BTreeMap::new()), SwarmPlan::default());
    let unseen = BTreeMap::from([("n1".to_string(), knowing(2))]);
    assert_eq!(plan_with(&unseen, &BTreeMap::new()), SwarmPlan::default());
    // One manager and a worker: odd already.
    let odd = BTreeMap::from([
        ("n1".to_string(), knowing(1)),
        ("n2".to_string(), member("c", false)),
    ]);
    assert_eq!(plan_with(&odd, &BTreeMap::new()), SwarmPlan::default());
}

#[test]
fn a_worker_is_in_the_swarm_of_the_manager_it_knows() {
    let nodes = names(&["n1", "n2"]);
    let manager = SwarmMembership {
        address: Some("10.0.0.1".into()),
        ..member("c1", true)
    };
    let worker = SwarmMembership {
        state: "active".into(),
        managers: vec!["10.0.0.1:2377".into()],
        ..Default::default()
    };
    let observed = BTreeMap::from([("n1".to_string(), manager), ("n2".to_string(), worker)]);
    assert_eq!(plan_formed(&nodes, &observed), SwarmPlan::default());
}

#[test]
fn a_node_in_another_swarm_is_blocked_never_moved_and_unreachable_ones_wait() {
    let nodes = names(&["n1", "n2", "n3", "n4"]);
    let observed = BTreeMap::from([
        ("n1".to_string(), member("c1", true)),
        ("n2".to_string(), member("c2", true)),
        ("n3".to_string(), inactive()),
    ]);
    let plan = plan_formed(&nodes, &observed);
    // A worker: with n4 away, a second manager could not be made a third.
    assert_eq!(
        plan.steps,
        [SwarmStep::Join {
            node: "n3".into(),
            via: "n1".into(),
            manager: false
        }]
    );
    assert_eq!(plan.blocked.keys().collect::<Vec<_>>(), ["n2"]);
    assert!(plan.blocked["n2"].contains("another swarm (c2)"));
}

/// A manager that left the manifests and is drained is demoted, then
/// leaves; a worker just leaves; one with overlay containers of others
/// stays and says why; one in another swarm is not touched.
#[test]
fn drained_nodes_that_left_the_manifests_leave_the_swarm() {
    let nodes = names(&["n1", "n2"]);
    let observed = BTreeMap::from([
        (
            "n1".to_string(),
            SwarmMembership {
                address: Some("10.0.0.1".into()),
                ..member("c", true)
            },
        ),
        ("n2".to_string(), member("c", false)),
    ]);
    // As an engine says it: a worker knows its managers, not its swarm.
    let worker = SwarmMembership {
        state: "active".into(),
        managers: vec!["10.0.0.1:2377".into()],
        ..Default::default()
    };
    let leaving = |membership: SwarmMembership, containers: &[&str]| Leaving {
        membership,
        overlay_containers: containers.iter().map(|c| c.to_string()).collect(),
    };
    let away = BTreeMap::from([
        ("n3".to_string(), leaving(member("c", true), &[])),
        ("n4".to_string(), leaving(worker, &[])),
        (
            "n5".to_string(),
            leaving(member("c", false), &["other-db-1"]),
        ),
        ("n6".to_string(), leaving(member("elsewhere", true), &[])),
        (
            "n7".to_string(),
            leaving(
                SwarmMembership {
                    promoted: true,
                    ..member("c", false)
                },
                &[],
            ),
        ),
    ]);
    let plan = plan(
        &nodes,
        &observed,
        &overlay(),
        &names(&["pier-app-overlay"]),
        &away,
    );
    let step = |kind: fn(String, String) -> SwarmStep, node: &str| kind(node.into(), "n1".into());
    assert_eq!(
        plan.steps,
        [
            step(|node, via| SwarmStep::Demote { node, via }, "n3"),
            step(|node, via| SwarmStep::Leave { node, via }, "n3"),
            step(|node, via| SwarmStep::Leave { node, via }, "n4"),
        ]
    );
    assert!(plan.steps.iter().all(SwarmStep::runs_last));
    assert_eq!(plan.staying.keys().collect::<Vec<_>>(), ["n5", "n7"]);
    assert!(
        plan.staying["n5"].contains("other-db-1"),
        "{:?}",
        plan.staying
    );
    // A promotion under way: the node leaves on a later pass, soon.
    assert!(plan.staying["n7"].contains("just promoted"));
    assert!(plan.settling);
}
