//! Tests that take a node of the shared bed away, or take engines out of
//! a swarm. Cargo runs test binaries one after another, so nothing else
//! uses the bed meanwhile; within this binary the tests take turns behind
//! a lock, and every node taken away is brought back even when a test
//! fails.
//!
//! Leaving a swarm belongs here because the engines of Debian 12 (20.10)
//! then stop answering name lookups on the bridge networks that existed
//! before (moby/moby#45144): a test elsewhere whose containers find each
//! other by name, a router's replicas for one, would fail meanwhile.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{
    Bed, CONVERGE, Daemon, DaemonOptions, UserRepo, eventually, nodes_yaml, remove_stack, sleeper,
    stack_replicas, wait_running,
};

static BED_CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn testbed(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testbed");
    let status = Command::new(script)
        .args(args)
        .status()
        .expect("tests/testbed runs");
    assert!(status.success(), "tests/testbed {args:?} failed");
}

/// A change to the shared bed (`tests/testbed` subcommand and arguments),
/// undone when dropped: also when the test fails.
struct BedChange(&'static [&'static str]);

impl BedChange {
    fn make(change: &[&str], undo: &'static [&'static str]) -> BedChange {
        testbed(change);
        BedChange(undo)
    }
}

impl Drop for BedChange {
    fn drop(&mut self) {
        testbed(self.0);
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

    // Where the replicas landed depends on the nodes' load (other stacks count).
    let before: Vec<String> = support::stack_containers_on(&bed, &s, &["n1", "n2"]).await;
    assert_eq!(before.len(), 4, "{before:?}");
    {
        let _down = BedChange::make(&["kill-node", "n3"], &["start-node", "n3"]);
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
        assert_eq!(alive, before, "{stdout}{stderr}");
    }
    // Back up: its containers are there again (stopped by the engine's death);
    // the next apply scales web down to 2 and restarts agent-3.
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("- {s}-web-3 on n")) && stdout.contains(": scaled down"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("~ {s}-agent-3 on n3: not running")),
        "{stdout}"
    );
    assert_eq!(repo.pier(&bed, &["diff"]).0, 0);
    support::remove_stack(&bed, &s).await;
}

/// An engine that stops answering after pier connected to it: the steps that
/// meet it fail within the engine timeout as retryable, instead of holding
/// the apply for the HTTP client's ten minutes; the other node converges,
/// and once the engine answers again the next apply finishes the job.
#[tokio::test]
async fn a_hung_engine_fails_its_steps_in_time_and_the_rest_converges() {
    let _turn = BED_CHANGES.lock().await;
    let bed = Bed::get();
    let manifest = format!(
        "{}services:\n  agent:\n    image: {}\n    command: sleep 3600\n    stop_grace_period: 1s\n    deployment_strategy: every_node\n",
        support::nodes_yaml(&bed, &[&[], &[]]),
        bed.base_image
    );
    let repo = support::UserRepo::new("hung", &manifest);
    let s = repo.stack.clone();
    let settings = pier::pass::Settings {
        source: pier::validate::Source {
            repo: repo.dir.path().display().to_string(),
            reference: "HEAD".into(),
            path: "pier".into(),
            cache_dir: repo.dir.path().join(".cache"),
        },
        stack: Some(s.clone()),
        insecure_registries: vec![bed.registry.clone()],
        engine_timeout: Duration::from_secs(2),
        registry_timeout: Duration::from_secs(2),
        allow_empty: false,
        adopt: false,
        policy: Default::default(),
        allow_env: Vec::new(),
        keys: Default::default(),
    };
    let vars = std::env::vars().collect();
    let prepared = pier::pass::prepare(&settings, &vars).await.expect("a plan");
    assert_eq!(pier::plan::render::summary(&prepared.plan).create, 2);

    let apply_settings = pier::pass::apply::ApplySettings::default();
    let report = {
        let _hung = BedChange::make(&["freeze-node", "n2"], &["thaw-node", "n2"]);
        let apply = pier::pass::apply::apply(
            &prepared.desired,
            &prepared.plan,
            &prepared.engines,
            prepared.registry.credentials(),
            &apply_settings,
            &|_| {},
        );
        tokio::time::timeout(Duration::from_secs(60), apply)
            .await
            .expect("apply ends although n2 never answers")
    };
    let failure = report.failures.join("\n");
    assert!(
        failure.contains("on n2") && failure.contains("did not answer"),
        "the failure names the node and why: {failure}"
    );
    assert!(
        report.transient.contains("agent"),
        "a hung engine is retried, not a failed release: {report:?}"
    );
    assert_eq!(
        support::stack_containers_on(&bed, &s, &["n1"]).await,
        [format!("n1:{s}-agent-1")],
        "n1 converged meanwhile"
    );

    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let running: Vec<_> = support::stack_containers(&bed, &s)
        .await
        .into_iter()
        .filter(|(_, _, running)| *running)
        .map(|(node, name, _)| format!("{node}:{name}"))
        .collect();
    assert_eq!(
        running,
        [format!("n1:{s}-agent-1"), format!("n2:{s}-agent-2")]
    );
    assert_eq!(repo.pier(&bed, &["diff"]).0, 0);
    support::remove_stack(&bed, &s).await;
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
        let _down = BedChange::make(&["stop-registry"], &["start-registry"]);
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

    let head = support::head_commit(repo.dir.path());
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

/// The registry is down when a release has to be rolled back: `pier
/// rollback` pins the digests that ran, which the nodes still hold, so the
/// rollback needs no registry and every replica runs v1 again.
#[tokio::test]
async fn a_rollback_needs_no_registry() {
    let _turn = BED_CHANGES.lock().await;
    let bed = Bed::get();
    let repository = format!("pier-test/{}", support::unique("rbdown"));
    let one = support::push_image(&bed, &bed.nodes[0], &repository, "1", "one").await;
    let two = support::push_image(&bed, &bed.nodes[0], &repository, "2", "two").await;
    let manifest = |tag: &str| {
        format!(
            "{}services:\n  web:\n    image: {}/{repository}:{tag}\n    command: sleep 3600\n    stop_grace_period: 1s\n    target_num_containers: 2\n    deployment_strategy: high_availability\n",
            support::nodes_yaml(&bed, &[&[], &[], &[]]),
            bed.registry
        )
    };
    let repo = support::UserRepo::new("rbdown", &manifest("1"));
    let state = tempfile::tempdir().unwrap();
    let daemon = support::Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &support::DaemonOptions::default(),
    );
    let runs = |digest: String| {
        let (bed, stack) = (&bed, &repo.stack);
        async move {
            let web: Vec<_> = support::stack_replicas(bed, stack)
                .await
                .into_iter()
                .filter(|r| r.2 && r.3.get("pier.image-digest") == Some(&digest))
                .collect();
            (web.len() == 2).then_some(())
        }
    };
    support::eventually("v1 runs", CONVERGE, || runs(one.clone())).await;
    repo.commit(&manifest("2"), "version 2");
    support::eventually("v2 runs", CONVERGE, || runs(two.clone())).await;
    {
        let _down = BedChange::make(&["stop-registry"], &["start-registry"]);
        let (code, out, err) = repo.pier(
            &bed,
            &["rollback", "--state-dir", state.path().to_str().unwrap()],
        );
        assert_eq!(code, 0, "{out}\n{err}");
        support::eventually("v1 runs again, the registry down", CONVERGE, || {
            runs(one.clone())
        })
        .await;
    }
    drop(daemon);
    support::remove_stack(&bed, &repo.stack).await;
}

/// `pier logs --follow` through a node that stops answering: it says so,
/// and once the node answers again it follows that node's replica again
/// from where it was.
#[tokio::test]
async fn following_logs_survives_a_node_that_stops_answering() {
    use std::io::BufRead;
    let _turn = BED_CHANGES.lock().await;
    let bed = Bed::get();
    let manifest = format!(
        "{}services:\n  talker:\n    image: {}\n    command: [\"sh\", \"-c\", \"i=0; while true; do echo tick $$i; i=$$((i+1)); sleep 0.2; done\"]\n    stop_grace_period: 1s\n    target_num_containers: 2\n    deployment_strategy: high_availability\n    tags: [app]\n",
        support::nodes_yaml(&bed, &[&[], &["app"], &["app"]]),
        bed.base_image
    );
    let repo = support::UserRepo::new("follow", &manifest);
    let (code, out, err) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{out}{err}");
    support::wait_running(&bed, &repo.stack, "talker", 2).await;
    let mut follower = Command::new(env!("CARGO_BIN_EXE_pier"))
        .args([
            "logs",
            "talker",
            "--follow",
            "--tail",
            "0",
            "--engine-timeout",
            "2s",
            "--stack",
            &repo.stack,
        ])
        .current_dir(repo.dir.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel::<String>();
    for pipe in [
        Box::new(follower.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(follower.stderr.take().unwrap()),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
    }
    let wait_for = |what: &str, test: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + CONVERGE;
        loop {
            let line = received
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            if test(&line) {
                return line;
            }
        }
    };
    wait_for("a line from n3", &|l| {
        l.starts_with("talker.") && l.contains("@n3")
    });
    {
        let _frozen = BedChange::make(&["freeze-node", "n3"], &["thaw-node", "n3"]);
        wait_for("the note that n3 stopped answering", &|l| {
            l.contains("node n3 stopped answering")
        });
    }
    wait_for("the note that n3 answers again", &|l| {
        l.contains("node n3 answers again")
    });
    wait_for("n3's replica followed again", &|l| {
        l.starts_with("talker.") && l.contains("@n3")
    });
    follower.kill().unwrap();
    let _ = follower.wait();
    support::remove_stack(&bed, &repo.stack).await;
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The threebar example end to end, with the daemon as a subprocess: each
/// commit is tested on the `ci` node, built and pushed to the authenticated
/// registry, and deployed to both production nodes; a commit whose test fails
/// is neither built nor deployed, and the status says why. No password shows
/// in the log, the store or `pier logs`. (Here rather than in `engine`: the
/// example publishes port 8080 on the production nodes.)
#[tokio::test]
async fn threebar_commits_are_tested_built_and_deployed() {
    let _turn = BED_CHANGES.lock().await;
    let bed = Bed::get();
    let repo = tempfile::tempdir().unwrap();
    copy_tree(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/threebar")),
        repo.path(),
    );
    let git = |args: &[&str]| support::git(repo.path(), args);
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "threebar"]);
    let stack = support::unique("threebar");
    let state = tempfile::tempdir().unwrap();
    let daemon = support::Daemon::start(
        &bed,
        repo.path().to_str().unwrap(),
        &stack,
        state.path(),
        &support::DaemonOptions::default()
            .arg("--health-timeout", "60s")
            .env("PIER_ALLOW_ENV", "PIER_TB_*")
            .env("PIER_TB_REGISTRY", &bed.registry_auth)
            .env("PIER_TB_BASE_IMAGE", &bed.base_image)
            .env("PIER_REGISTRY_HOST", &bed.registry_auth)
            .env("PIER_REGISTRY_USER", &bed.registry_user)
            .env("PIER_REGISTRY_PASSWORD", &bed.registry_password),
    );
    let production: Vec<&support::Node> = bed.nodes.iter().take(2).collect();
    let serves = |text: &'static str| {
        let production = production.clone();
        async move {
            for node in &production {
                let (code, body) = support::http_get(&node.addr, 8080, "/").await?;
                if code != 200 || !body.contains(text) {
                    return None;
                }
            }
            Some(())
        }
    };
    support::eventually(
        "both production nodes serve threebar",
        Duration::from_secs(180),
        || serves("<h1>threebar</h1>"),
    )
    .await;
    let status = support::eventually("the pass finishes", Duration::from_secs(120), || async {
        let status = daemon.status().await;
        (status["services"][0]["condition"] == "Ready").then_some(status)
    })
    .await;
    assert_eq!(status["pipeline"]["state"], "passed", "{status}");
    let web = &status["services"][0];
    assert_eq!(
        (web["name"].as_str(), web["running"].as_u64()),
        (Some("web"), Some(2)),
        "{status}"
    );
    let first_digest = web["digest"].as_str().unwrap().to_string();

    // A change to the page: tested, built, pushed and rolled out.
    std::fs::write(
        repo.path().join("app/www/index.html"),
        "<h1>threebar v2</h1>\n",
    )
    .unwrap();
    git(&["commit", "-q", "-am", "v2 of the page"]);
    support::eventually("both nodes serve v2", Duration::from_secs(180), || {
        serves("threebar v2")
    })
    .await;
    support::eventually("the rollout finishes", Duration::from_secs(120), || async {
        let status = daemon.status().await;
        (status["services"][0]["condition"] == "Ready"
            && status["services"][0]["digest"].as_str() != Some(first_digest.as_str()))
        .then_some(())
    })
    .await;
    let commit = support::head_commit(repo.path());
    let logs = Command::new(env!("CARGO_BIN_EXE_pier"))
        .args(["logs", "--run", &commit, "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&logs.stdout).into_owned();
    assert!(logs.contains("ok: index.html names the app"), "{logs}");
    assert!(
        logs.contains("== test passed on n3"),
        "the test ran on the ci node: {logs}"
    );
    assert!(
        logs.contains("pushed ") && logs.contains("== build passed on n3"),
        "{logs}"
    );

    // A commit whose test fails: nothing is built or deployed.
    std::fs::write(repo.path().join("app/www/index.html"), "<h1>oops</h1>\n").unwrap();
    git(&["commit", "-q", "-am", "a page that fails its test"]);
    let status = support::eventually(
        "the failing pipeline shows",
        Duration::from_secs(120),
        || async {
            let status = daemon.status().await;
            (status["pipeline"]["state"] == "failed").then_some(status)
        },
    )
    .await;
    let summary = status["pipeline"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("stage `test` failed") && summary.contains("exit code 1"),
        "{summary}"
    );
    assert!(
        status["stalled"]
            .as_str()
            .unwrap_or_default()
            .contains("pipeline"),
        "{status}"
    );
    assert!(serves("threebar v2").await.is_some(), "v2 still serves");

    // No secret anywhere pier writes.
    let password = &bed.registry_password;
    assert!(
        !daemon.log_text().contains(password.as_str()),
        "password in the daemon log"
    );
    let db = std::fs::read(state.path().join("pier.db")).unwrap();
    let wal = std::fs::read(state.path().join("pier.db-wal")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&db).contains(password.as_str())
            && !String::from_utf8_lossy(&wal).contains(password.as_str()),
        "password in the store"
    );
    assert!(!logs.contains(password.as_str()), "password in pier logs");
    drop(daemon);
    support::remove_stack(&bed, &stack).await;
}

/// The nodes of `service`'s running replicas in `stack`, and how many
/// copies it has (running or not), on the named nodes.
async fn copies(bed: &Bed, stack: &str, service: &str, nodes: &[&str]) -> (Vec<String>, usize) {
    let only = Bed {
        nodes: bed
            .nodes
            .iter()
            .filter(|n| nodes.contains(&n.name.as_str()))
            .cloned()
            .collect(),
        ..bed.clone()
    };
    let replicas = support::stack_replicas(&only, stack).await;
    let of_service: Vec<_> = replicas
        .iter()
        .filter(|(_, _, _, labels)| labels.get("pier.service").map(String::as_str) == Some(service))
        .collect();
    let running = of_service
        .iter()
        .filter(|(_, _, up, _)| *up)
        .map(|(node, _, _, _)| node.clone())
        .collect();
    (running, of_service.len())
}

fn service_reason(status: &serde_json::Value, service: &str) -> String {
    status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == service)
        .map(|s| format!("{} {}", s["condition"], s["reason"]))
        .unwrap_or_default()
}

/// (reachable, down) of `node` in the daemon's status, once it has been observed.
fn node_state(status: &serde_json::Value, node: &str) -> Option<(bool, bool)> {
    let entry = status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == node)?;
    Some((entry["reachable"] == true, entry["down"] == true))
}

const ALIVE: &[&str] = &["n1", "n2"];
const EVERY: &[&str] = &["n1", "n2", "n3"];

/// Node loss as the daemon sees it, n3 taken away by `lose` and brought back
/// by `restore`. While n3 is only unreachable nothing of it is started
/// elsewhere (a one-shot `apply` does not either). Once it is down
/// (`--node-down-after`), web's replica there starts on another node while
/// db, which has a volume, waits for n3. When n3 is back, its older copy of
/// the web replica is removed: never two of one replica for more than a pass.
/// A webhook hears `node_down`, then `node_back`, for n3, and db's
/// `service_degraded` while it waits, then its `service_recovered`.
async fn node_loss(lose: &'static [&'static str], restore: &'static [&'static str]) {
    let bed = Bed::get();
    let manifest = format!(
        "{}services:\n  web:\n    image: {image}\n    command: sleep 3600\n    stop_grace_period: 1s\n    target_num_containers: 3\n    deployment_strategy: high_availability\n    tags: [app]\n  db:\n    image: {image}\n    command: sleep 3600\n    stop_grace_period: 1s\n    volumes: [\"/data\"]\n    tags: [db]\n",
        support::nodes_yaml(&bed, &[&["app"], &["app"], &["app", "db"]]),
        image = bed.base_image
    );
    let repo = support::UserRepo::new("loss", &manifest);
    let s = repo.stack.clone();
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let state = tempfile::tempdir().unwrap();
    let receiver = support::HookReceiver::start().await;
    let notify = state.path().join("notify.yaml");
    std::fs::write(
        &notify,
        format!(
            "degraded_after: 1s\ntargets:\n  hook:\n    webhook: {{ url: '{}' }}\n    events: [node_down, node_back, service_degraded, service_recovered]\n",
            receiver.url
        ),
    )
    .unwrap();
    let start = |down_after: &str| {
        support::Daemon::start(
            &bed,
            repo.dir.path().to_str().unwrap(),
            &s,
            state.path(),
            &support::DaemonOptions::default()
                .arg("--engine-timeout", "2s")
                .arg("--node-down-after", down_after)
                .arg("--notify", notify.to_str().unwrap()),
        )
    };
    // Each event as `kind subject`: n3's, and db's (web may be degraded
    // for a moment while it moves).
    let events = || {
        receiver
            .taken()
            .iter()
            .map(|hook| {
                let body = hook.json();
                let subject = body["node"].as_str().or(body["service"].as_str());
                format!(
                    "{} {}",
                    body["event"].as_str().unwrap_or(""),
                    subject.unwrap_or("")
                )
            })
            .filter(|e| e.ends_with(" n3") || e.ends_with(" db"))
            .collect::<Vec<_>>()
    };
    let timeout = Duration::from_secs(60);
    {
        let _lost = BedChange::make(lose, restore);
        let (code, stdout, stderr) = repo.pier(&bed, &["apply", "--engine-timeout", "2s"]);
        assert_eq!(code, 1, "{stdout}{stderr}");
        assert!(
            stdout.contains("waiting on node n3: it is unreachable"),
            "{stdout}"
        );
        assert_eq!(copies(&bed, &s, "web", ALIVE).await.0.len(), 2, "{stdout}");

        // Unreachable, not yet down: passes go on, nothing moves.
        let mut daemon = start("1h");
        let status = support::eventually("n3 reported unreachable", timeout, || async {
            let status = daemon.status().await;
            (node_state(&status, "n3") == Some((false, false))).then_some(status)
        })
        .await;
        let passes = daemon.passes().await;
        support::eventually("another pass", timeout, || async {
            (daemon.passes().await > passes).then_some(())
        })
        .await;
        assert!(
            service_reason(&status, "web").contains("waiting on node n3"),
            "{status}"
        );
        assert_eq!(copies(&bed, &s, "web", ALIVE).await.0.len(), 2);
        assert!(
            !events().iter().any(|e| e.starts_with("node_")),
            "unreachable is not down yet: {:?}",
            events()
        );
        daemon.kill();

        // Down after 2 s: web moves, db waits.
        let daemon = start("2s");
        let status = support::eventually("n3 given up as down", timeout, || async {
            let status = daemon.status().await;
            (node_state(&status, "n3") == Some((false, true))).then_some(status)
        })
        .await;
        let (running, _) = copies(&bed, &s, "web", ALIVE).await;
        assert_eq!(running.len(), 3, "{status}");
        assert!(running.iter().all(|n| n != "n3"), "{running:?}");
        assert!(
            service_reason(&status, "db").contains("waiting for node n3: it is down"),
            "{status}"
        );
        let heard = |wanted: [&'static str; 2]| {
            let events = &events;
            async move {
                let events = events();
                wanted
                    .iter()
                    .all(|w| events.iter().any(|e| e == w))
                    .then_some(())
            }
        };
        support::eventually("node_down and db degraded at the webhook", timeout, || {
            heard(["node_down n3", "service_degraded db"])
        })
        .await;
        // The daemon stays to see n3 come back (undoing the change twice is harmless).
        testbed(restore);
        let restored = support::eventually("n3 back, its older copy removed", timeout, || async {
            let back = node_state(&daemon.status().await, "n3") == Some((true, false));
            let (running, all) = copies(&bed, &s, "web", EVERY).await;
            (back && running.len() == 3 && all == 3).then_some(running)
        })
        .await;
        assert!(restored.iter().all(|n| n != "n3"), "{restored:?}");
        support::eventually("node_back and db recovered at the webhook", timeout, || {
            heard(["node_back n3", "service_recovered db"])
        })
        .await;
        let node: Vec<String> = events()
            .into_iter()
            .filter(|e| e.ends_with(" n3"))
            .collect();
        assert_eq!(node, ["node_down n3", "node_back n3"], "each once");
        drop(daemon);
    }
    support::remove_stack(&bed, &s).await;
}

#[tokio::test]
async fn a_dead_node_is_waited_for_then_its_movable_replicas_move() {
    let _turn = BED_CHANGES.lock().await;
    node_loss(&["kill-node", "n3"], &["start-node", "n3"]).await;
}

#[tokio::test]
async fn a_partitioned_node_is_waited_for_and_its_copy_removed_when_it_heals() {
    let _turn = BED_CHANGES.lock().await;
    node_loss(&["partition", "n3"], &["heal", "n3"]).await;
}

/// The addresses `name` resolves to inside `container` on n1, and how many
/// of them answer on `port` with `body`.
async fn resolved_and_answering(
    n1: &bollard::Docker,
    container: &str,
    name: &str,
    port: u16,
    body: &str,
) -> (usize, usize) {
    let (_, answer) = support::exec(n1, container, &["nslookup", name]).await;
    let addresses: Vec<String> = answer
        .lines()
        .filter(|line| line.starts_with("Address") && !line.contains("127.0.0.11"))
        .filter_map(|line| line.split_whitespace().last().map(str::to_string))
        .collect();
    let mut answering = 0;
    for address in &addresses {
        let ask = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {address} {port}");
        let (code, page) = support::exec(n1, container, &["sh", "-c", &ask]).await;
        if code == 0 && page.lines().last() == Some(body) {
            answering += 1;
        }
    }
    (addresses.len(), answering)
}

/// On an overlay network, a dead node leaves the others talking: its
/// replicas drop out of the service's name, and the one the daemon starts
/// elsewhere once the node is down (`--node-down-after`) answers to it,
/// from another host.
#[tokio::test]
async fn a_dead_node_on_an_overlay_leaves_the_others_talking() {
    let _turn = BED_CHANGES.lock().await;
    let bed = Bed::get();
    support::without_swarm(&bed).await;
    let manifest = format!(
        "{}services:\n  cache:\n    image: {image}\n    command: [\"sh\", \"-c\", \"mkdir -p /www && echo hi-from-cache > /www/index.html && exec httpd -f -p 6379 -h /www\"]\n    target_num_containers: 3\n    deployment_strategy: high_availability\n    tags: [app]\n    stop_grace_period: 1s\n  web:\n    image: {image}\n    command: sleep 3600\n    tags: [front]\n    links: [cache]\n    stop_grace_period: 1s\nnetworks:\n  default: {{ driver: overlay }}\n",
        support::nodes_yaml(&bed, &[&["app", "front"], &["app"], &["app"]]),
        image = bed.base_image
    );
    let repo = support::UserRepo::new("odead", &manifest);
    let s = repo.stack.clone();
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let n1 = support::engine(&bed.nodes[0]).await;
    let web = format!("{s}-web-1");
    let timeout = Duration::from_secs(90);
    assert_eq!(
        resolved_and_answering(&n1, &web, "cache", 6379, "hi-from-cache").await,
        (3, 3),
        "one replica on each node, all answering"
    );
    {
        let _lost = BedChange::make(&["kill-node", "n3"], &["start-node", "n3"]);
        let state = tempfile::tempdir().unwrap();
        let daemon = support::Daemon::start(
            &bed,
            repo.dir.path().to_str().unwrap(),
            &s,
            state.path(),
            &support::DaemonOptions::default()
                .arg("--engine-timeout", "2s")
                .arg("--node-down-after", "2s"),
        );
        support::eventually("cache's replica moved off n3", timeout, || async {
            let (running, _) = copies(&bed, &s, "cache", ALIVE).await;
            (running.len() == 3).then_some(())
        })
        .await;
        support::eventually(
            "cache resolving to its three live replicas, all answering",
            timeout,
            || async {
                let found = resolved_and_answering(&n1, &web, "cache", 6379, "hi-from-cache").await;
                (found == (3, 3)).then_some(())
            },
        )
        .await;
        drop(daemon);
    }
    support::remove_stack(&bed, &s).await;
    // The swarm stays formed: the engine tests that follow handle one, and
    // leaving it just after n3 came back is what the engines handle worst.
}

/// A node added to a stack while it is in another swarm is reported, never
/// left or joined: the stack's other nodes keep their swarm and run their
/// replicas, and the node keeps its swarm. Here, not with the other swarm
/// tests, because it takes engines out of their swarm (see the module's
/// doc).
#[tokio::test]
async fn a_node_in_another_swarm_is_reported_and_left_alone() {
    let _turn = BED_CHANGES.lock().await;
    let bed = Bed::get();
    support::without_swarm(&bed).await;
    let third = support::engine(&bed.nodes[2]).await;
    let init = bollard::models::SwarmInitRequest {
        listen_addr: Some("0.0.0.0:2377".into()),
        advertise_addr: Some(bed.nodes[2].addr.clone()),
        ..Default::default()
    };
    third.init_swarm(init).await.expect("a swarm of n3's own");
    let foreign = support::swarm_info(&third).await.cluster.and_then(|c| c.id);
    assert!(foreign.is_some(), "n3 manages its own swarm");

    let manifest = |nodes: &[&[&str]]| {
        format!(
            "{}services:\n  web:\n    image: {}\n    command: sleep 3600\n    deployment_strategy: every_node\n    stop_grace_period: 1s\nnetworks:\n  default: {{ driver: overlay }}\n",
            support::nodes_yaml(&bed, nodes),
            bed.base_image
        )
    };
    let repo = support::UserRepo::new("foreign", &manifest(&[&["a"], &["a"]]));
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    repo.commit(&manifest(&[&["a"], &["a"], &["a"]]), "n3 too");
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("node n3 cannot join: it is in another swarm"),
        "{stdout}"
    );
    assert!(stdout.contains("docker swarm leave"), "says how: {stdout}");
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(
        code, 1,
        "a node left out is not converged: {stdout}{stderr}"
    );
    assert!(
        stdout.contains("replica 3 on n3: n3 cannot join the stack's swarm"),
        "its replica waits, saying why: {stdout}"
    );
    let mut placed: Vec<String> = support::stack_containers(&bed, &repo.stack)
        .await
        .into_iter()
        .map(|(node, _, running)| format!("{node}:{running}"))
        .collect();
    placed.sort();
    assert_eq!(
        placed,
        ["n1:true", "n2:true"],
        "the others run their replicas"
    );
    let own = support::swarm_info(&third).await;
    assert_eq!(
        own.cluster.and_then(|c| c.id),
        foreign,
        "n3 keeps the swarm it was in"
    );
    let first = support::engine(&bed.nodes[0]).await;
    assert_eq!(
        support::swarm_info(&first).await.nodes,
        Some(2),
        "n1 and n2 formed a swarm of their own"
    );

    support::remove_stack(&bed, &repo.stack).await;
    support::without_swarm(&bed).await;
}

/// On an overlay network, a node that leaves the manifests is drained, then
/// leaves the stack's swarm (a manager is demoted first) and the managers
/// forget it; of the two managers left, one is demoted (two cannot lose
/// either). Declared again, it joins again. Here because engines leave
/// their swarm (see the module's doc).
#[tokio::test]
async fn daemon_takes_a_node_that_leaves_the_manifests_out_of_the_swarm() {
    let _turn = BED_CHANGES.lock().await;
    let bed = Bed::get();
    // From no swarm: three managers are formed, not found.
    support::without_swarm(&bed).await;
    let all = nodes_yaml(&bed, &[&["app"], &["app"], &["app"]]);
    let two = nodes_yaml(&bed, &[&["app"], &["app"]]);
    let manifest = |nodes: &str| {
        format!(
            "{nodes}services:\n{}networks:\n  default: {{ driver: overlay }}\n",
            sleeper(&bed, "web", 3, "    tags: [app]\n")
        )
    };
    let repo = UserRepo::new("dleave", &manifest(&all));
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &DaemonOptions::default(),
    );
    let placed = wait_running(&bed, &repo.stack, "web", 3).await;
    assert!(placed.iter().any(|r| r.starts_with("n3:")), "{placed:?}");
    let (manager, third) = (
        support::engine(&bed.nodes[0]).await,
        support::engine(&bed.nodes[2]).await,
    );
    let swarm = || support::swarm_info(&third);
    let id = swarm().await.node_id.expect("n3 is in the swarm");
    let known = |id: String| {
        let manager = manager.clone();
        async move {
            manager
                .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
                .await
                .expect("node list")
                .iter()
                .any(|n| n.id.as_deref() == Some(id.as_str()))
        }
    };
    assert!(known(id.clone()).await);

    repo.commit(&manifest(&two), "retire n3");
    eventually("n3 drained and out of the swarm", CONVERGE, || async {
        let on_n3 = stack_replicas(&bed, &repo.stack)
            .await
            .iter()
            .any(|r| r.0 == "n3");
        let state = swarm().await.local_node_state.map(|s| s.to_string());
        let forgotten = !known(id.clone()).await;
        (!on_n3 && state.as_deref() == Some("inactive") && forgotten).then_some(())
    })
    .await;
    let second = support::engine(&bed.nodes[1]).await;
    eventually("one manager left of two nodes", CONVERGE, || async {
        let managers = support::swarm_info(&manager).await.managers;
        let n2_manages = support::swarm_info(&second).await.control_available;
        (managers == Some(1) && n2_manages == Some(false)).then_some(())
    })
    .await;

    repo.commit(&manifest(&all), "n3 again");
    eventually("n3 back in the swarm", CONVERGE, || async {
        (swarm()
            .await
            .local_node_state
            .map(|s| s.to_string())
            .as_deref()
            == Some("active"))
        .then_some(())
    })
    .await;
    wait_running(&bed, &repo.stack, "web", 3).await;
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
    let _ = manager
        .remove_network(&format!("pier-{}-overlay", repo.stack))
        .await;
}
