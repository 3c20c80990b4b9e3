//! Tests that take a node of the shared bed away. Cargo runs test binaries
//! one after another, so nothing else uses the bed meanwhile; within this
//! binary the tests take turns behind a lock, and every node taken away is
//! brought back even when a test fails.

mod support;

use std::process::Command;

use support::Bed;

static BED_CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn testbed(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testbed");
    let status = Command::new(script)
        .args(args)
        .status()
        .expect("tests/testbed runs");
    assert!(status.success(), "tests/testbed {args:?} failed");
}

/// Kills a node's engine now and starts it again when dropped.
struct KilledNode(&'static str);

impl KilledNode {
    fn kill(name: &'static str) -> KilledNode {
        testbed(&["kill-node", name]);
        KilledNode(name)
    }
}

impl Drop for KilledNode {
    fn drop(&mut self) {
        testbed(&["start-node", self.0]);
    }
}

/// With one node down, `diff` says what it cannot do there, and `apply`
/// changes nothing on it while still converging the others.
#[tokio::test]
async fn a_dead_node_is_reported_and_the_others_still_converge() {
    let _turn = BED_CHANGES.lock().await;
    let bed = Bed::get();
    let manifest = |replicas: u32| {
        format!(
            "{}services:\n  agent:\n    image: {image}\n    command: sleep 3600\n    stop_grace_period: 1s\n    deployment_strategy: every_node\n  web:\n    image: {image}\n    command: sleep 3600\n    stop_grace_period: 1s\n    target_num_containers: {replicas}\n    deployment_strategy: high_availability\n",
            support::nodes_yaml(&bed, &[&[], &[], &[]]),
            image = bed.base_image
        )
    };
    let repo = support::UserRepo::new("chaos", &manifest(3));
    let s = repo.stack.clone();
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(support::stack_containers(&bed, &s).await.len(), 6);

    {
        let _down = KilledNode::kill("n3");
        repo.commit(&manifest(2), "scale web down");
        let (code, stdout, _) = repo.pier(&bed, &["diff", "--engine-timeout", "2s"]);
        assert_eq!(code, 1, "{stdout}");
        assert!(
            stdout.contains("! replica 3 on n3: node unreachable"),
            "the plan says what and why: {stdout}"
        );

        let (code, stdout, stderr) = repo.pier(&bed, &["apply", "--engine-timeout", "2s"]);
        assert_eq!(code, 1, "blocked work makes apply fail: {stdout}{stderr}");
        assert!(stdout.contains("blocked"), "{stdout}");
        // What runs on the dead node is unknown, so nothing there is counted,
        // moved or removed: web already has 2 replicas on the live nodes.
        let alive: Vec<String> = support::stack_containers_on(&bed, &s, &["n1", "n2"]).await;
        let expected = [
            "n1:{s}-agent-1",
            "n1:{s}-web-1",
            "n2:{s}-agent-2",
            "n2:{s}-web-2",
        ]
        .map(|e| e.replace("{s}", &s));
        assert_eq!(alive, expected, "{stdout}{stderr}");
    }
    // Back up: its containers are there again (stopped by the engine's death);
    // the next apply scales web down to 2 and restarts agent-3.
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("- {s}-web-3 on n3: scaled down")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("~ {s}-agent-3 on n3: not running")),
        "{stdout}"
    );
    assert_eq!(repo.pier(&bed, &["diff"]).0, 0);
    support::remove_stack(&bed, &s).await;
}
