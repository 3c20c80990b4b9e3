//! Tests that take a node of the shared bed away. Cargo runs test binaries
//! one after another, so nothing else uses the bed meanwhile; within this
//! binary the tests take turns behind a lock, and every node taken away is
//! brought back even when a test fails.

mod support;

use std::process::Command;
use std::time::Duration;

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

/// Stops the open registry now and starts it again when dropped.
struct StoppedRegistry;

impl StoppedRegistry {
    fn stop() -> StoppedRegistry {
        testbed(&["stop-registry"]);
        StoppedRegistry
    }
}

impl Drop for StoppedRegistry {
    fn drop(&mut self) {
        testbed(&["start-registry"]);
    }
}

/// The registry goes away under a running daemon: nothing running is
/// touched, a commit that needs the registry waits (Degraded, retried)
/// instead of failing, and it deploys once the registry is back.
#[tokio::test]
async fn a_registry_outage_changes_nothing_and_deploys_resume() {
    let _turn = BED_CHANGES.lock().await;
    let bed = Bed::get();
    let repository = format!("pier-test/{}", support::unique("outage"));
    support::push_image(&bed, &bed.nodes[0], &repository, "1", "outage").await;
    let image = format!("{}/{repository}:1", bed.registry);
    let manifest = |version: u32| {
        format!(
            "{}services:\n  web:\n    image: {image}\n    stop_grace_period: 1s\n    target_num_containers: 2\n    deployment_strategy: high_availability\n    environment: {{ VERSION: \"{version}\" }}\n  follows:\n    image: {image}\n    stop_grace_period: 1s\n    autoredeploy: true\n",
            support::nodes_yaml(&bed, &[&[], &[], &[]]),
        )
    };
    let repo = support::UserRepo::new("outage", &manifest(1));
    let state = tempfile::tempdir().unwrap();
    let daemon = support::Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &support::DaemonOptions::default().arg("--registry-interval", "300ms"),
    );
    let converged = |version: u32| {
        let (bed, stack) = (&bed, &repo.stack);
        async move {
            let all = support::stack_replicas(bed, stack).await;
            let version = version.to_string();
            let web_ok = all
                .iter()
                .filter(|r| r.3.get("pier.service").map(String::as_str) == Some("web"))
                .filter(|r| r.2)
                .count()
                == 2;
            (all.len() == 3 && all.iter().all(|r| r.2) && web_ok).then_some((all, version))
        }
    };
    support::eventually("the stack runs", Duration::from_secs(60), || converged(1)).await;
    let before = support::stack_replicas(&bed, &repo.stack).await;

    {
        let _down = StoppedRegistry::stop();
        support::eventually(
            "the registry watcher notices",
            Duration::from_secs(30),
            || async {
                (daemon
                    .metric("pier_registry_requests_total{result=\"unreachable\"}")
                    .await
                    >= 2.0)
                    .then_some(())
            },
        )
        .await;
        repo.commit(&manifest(2), "version 2 while the registry is down");
        let status = support::eventually(
            "web waits for the registry",
            Duration::from_secs(30),
            || async {
                let status = daemon.status().await;
                let web = status["services"]
                    .as_array()?
                    .iter()
                    .find(|s| s["name"] == "web")?
                    .clone();
                (web["condition"] == "Degraded").then_some(web)
            },
        )
        .await;
        assert!(
            status["reason"].as_str().unwrap().contains("unreachable"),
            "{status}"
        );
        assert_eq!(
            support::stack_replicas(&bed, &repo.stack).await,
            before,
            "nothing was touched during the outage"
        );
    }

    let head = {
        let out = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(repo.dir.path())
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    support::eventually(
        "version 2 deploys once the registry is back",
        Duration::from_secs(60),
        || async {
            let all = support::stack_replicas(&bed, &repo.stack).await;
            let web: Vec<_> = all
                .iter()
                .filter(|r| r.3.get("pier.service").map(String::as_str) == Some("web"))
                .collect();
            (web.len() == 2
                && web
                    .iter()
                    .all(|r| r.2 && r.3.get("pier.commit") == Some(&head)))
            .then_some(())
        },
    )
    .await;
    drop(daemon);
    support::remove_stack(&bed, &repo.stack).await;
}
