//! `pier daemon` as a real subprocess against the bed: commits, the
//! registry, container events, webhooks and crashes.

use std::time::{Duration, Instant};

use crate::support::{
    Bed, CONVERGE, Daemon, DaemonOptions, HookReceiver, SmtpServer, UserRepo, eventually, git,
    head_commit, nodes_yaml, passes_reach, push_image, reconcile, remove_stack, running, sleeper,
    stack_replicas, unique, wait_running,
};

/// A commit converges at once through the refs watcher (the git interval is
/// an hour here); a removed replica is back within 5 s; an invalid commit
/// changes nothing and shows as Stalled with its file:line; the next valid
/// commit deploys.
#[tokio::test]
async fn daemon_follows_commits_heals_and_refuses_invalid_manifests() {
    let bed = Bed::get();
    let nodes = nodes_yaml(&bed, &[&["app"], &["app"], &[]]);
    let manifest =
        |replicas: u32| format!("{nodes}services:\n{}", sleeper(&bed, "web", replicas, ""));
    let repo = UserRepo::new("dmn", &manifest(1));
    let state = tempfile::tempdir().unwrap();
    let policy = state.path().join("policy.yaml");
    std::fs::write(&policy, "privileged: false\n").unwrap();
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &DaemonOptions::default().arg("--policy", policy.to_str().unwrap()),
    );
    wait_running(&bed, &repo.stack, "web", 1).await;

    repo.commit(&manifest(3), "scale web to 3");
    let replicas = wait_running(&bed, &repo.stack, "web", 3).await;
    let status = daemon.status().await;
    assert_eq!(status["services"][0]["condition"], "Ready", "{status}");
    assert_eq!(status["services"][0]["running"], 3, "{status}");

    // Self-heal: remove one replica behind pier's back.
    let (node, name) = replicas[0].split_once(':').unwrap();
    let node = bed.nodes.iter().find(|n| n.name == node).unwrap();
    crate::support::force_remove(&crate::support::engine(node).await, name).await;
    // Events bring it back in well under a second; the bound only keeps a
    // broken daemon from hanging the test, with room for a loaded machine.
    eventually(
        "the removed replica is back",
        Duration::from_secs(20),
        || async {
            running(&bed, &repo.stack, "web")
                .await
                .contains(&replicas[0])
                .then_some(())
        },
    )
    .await;

    // An invalid commit: an unknown key on line 2 of the service.
    let ids_before = stack_replicas(&bed, &repo.stack).await;
    let broken = manifest(1).replace("    command:", "    comand: oops\n    command:");
    let line = broken.lines().position(|l| l.contains("comand:")).unwrap() + 1;
    repo.commit(&broken, "a typo");
    let status = eventually("status shows the refused commit", CONVERGE, || async {
        let status = daemon.status().await;
        status["stalled"].as_str().is_some().then_some(status)
    })
    .await;
    let stalled = status["stalled"].as_str().unwrap();
    assert!(
        stalled.contains(&format!("pier/stack.yml:{line}:")) && stalled.contains("comand"),
        "{stalled}"
    );
    assert_eq!(status["services"][0]["condition"], "Stalled", "{status}");
    assert_eq!(
        stack_replicas(&bed, &repo.stack)
            .await
            .iter()
            .map(|r| (&r.1, r.2))
            .collect::<Vec<_>>(),
        ids_before.iter().map(|r| (&r.1, r.2)).collect::<Vec<_>>(),
        "the refused commit changed nothing"
    );

    repo.commit(&manifest(2), "fix the typo, scale to 2");
    wait_running(&bed, &repo.stack, "web", 2).await;
    let status = eventually("status is Ready again", CONVERGE, || async {
        let status = daemon.status().await;
        (status["stalled"].is_null() && status["services"][0]["condition"] == "Ready")
            .then_some(status)
    })
    .await;
    assert_eq!(status["revision"], status["head"]);

    // `pier scale` commits to the repository; the daemon deploys the commit.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pier"))
        .args(["scale", "web=3"])
        .current_dir(repo.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_running(&bed, &repo.stack, "web", 3).await;

    // The daemon's policy refuses a commit as it refuses invalid manifests.
    let privileged = manifest(3).replace("    command:", "    privileged: true\n    command:");
    let line = privileged
        .lines()
        .position(|l| l.contains("privileged:"))
        .unwrap()
        + 1;
    repo.commit(&privileged, "ask for a privileged container");
    let status = eventually("status shows the refused commit", CONVERGE, || async {
        let status = daemon.status().await;
        status["stalled"].as_str().is_some().then_some(status)
    })
    .await;
    let stalled = status["stalled"].as_str().unwrap();
    assert!(
        stalled.contains(&format!("pier/stack.yml:{line}:"))
            && stalled.contains("a privileged container is refused by the policy"),
        "{stalled}"
    );
    assert_eq!(running(&bed, &repo.stack, "web").await.len(), 3);
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

/// A remote repository is polled: one cheap check per interval, a fetch only
/// when the tip moved, and the commit converges within the interval.
#[tokio::test]
async fn daemon_polls_a_remote_and_fetches_only_when_it_moved() {
    let bed = Bed::get();
    let nodes = nodes_yaml(&bed, &[&["app"], &["app"], &[]]);
    let manifest =
        |replicas: u32| format!("{nodes}services:\n{}", sleeper(&bed, "web", replicas, ""));
    let repo = UserRepo::new("dmr", &manifest(1));
    let bare = tempfile::tempdir().unwrap();
    git(
        bare.path(),
        &[
            "clone",
            "-q",
            "--bare",
            repo.dir.path().to_str().unwrap(),
            ".",
        ],
    );
    repo.git(&["remote", "add", "origin", bare.path().to_str().unwrap()]);
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &bed,
        &format!("file://{}", bare.path().display()),
        &repo.stack,
        state.path(),
        &DaemonOptions::default().arg("--git-interval", "500ms"),
    );
    wait_running(&bed, &repo.stack, "web", 1).await;
    eventually("several checks", CONVERGE, || async {
        (daemon.metric("pier_git_checks_total").await >= 3.0).then_some(())
    })
    .await;
    assert_eq!(
        daemon.metric("pier_git_fetches_total").await,
        0.0,
        "no fetch while nothing moved"
    );

    repo.commit(&manifest(2), "scale to 2");
    let pushed_at = Instant::now();
    repo.git(&["push", "-q", "origin", "main"]);
    wait_running(&bed, &repo.stack, "web", 2).await;
    assert!(
        pushed_at.elapsed() < Duration::from_secs(15),
        "converged {:?} after the push",
        pushed_at.elapsed()
    );
    assert_eq!(daemon.metric("pier_git_fetches_total").await, 1.0);
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

/// A new digest under a followed tag replaces only the `autoredeploy`
/// service, pinned by the new digest; the other keeps its digest.
#[tokio::test]
async fn daemon_redeploys_only_autoredeploy_services_on_a_new_digest() {
    let bed = Bed::get();
    let repository = format!("pier-test/{}", unique("follow"));
    let first = push_image(&bed, &bed.nodes[0], &repository, "latest", "one").await;
    let image = format!("{}/{repository}:latest", bed.registry);
    let nodes = nodes_yaml(&bed, &[&["app"], &["app"], &[]]);
    let service = |name: &str, follow: bool| {
        format!(
            "  {name}:\n    image: {image}\n    stop_grace_period: 1s\n    target_num_containers: 2\n    deployment_strategy: high_availability\n    autoredeploy: {follow}\n"
        )
    };
    let manifest = format!(
        "{nodes}services:\n{}{}",
        service("follows", true),
        service("pinned", false)
    );
    let repo = UserRepo::new("dma", &manifest);
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &DaemonOptions::default().arg("--registry-interval", "500ms"),
    );
    wait_running(&bed, &repo.stack, "follows", 2).await;
    wait_running(&bed, &repo.stack, "pinned", 2).await;
    let digests = |service: &'static str| {
        let (bed, stack) = (&bed, &repo.stack);
        async move {
            stack_replicas(bed, stack)
                .await
                .into_iter()
                .filter(|r| r.3.get("pier.service").map(String::as_str) == Some(service))
                .map(|r| {
                    (
                        r.1,
                        r.3.get("pier.image-digest").cloned().unwrap_or_default(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert!(digests("pinned").await.iter().all(|(_, d)| *d == first));
    let pinned_before = stack_replicas(&bed, &repo.stack).await;

    let second = push_image(&bed, &bed.nodes[0], &repository, "latest", "two").await;
    assert_ne!(first, second);
    eventually("`follows` runs the new digest", CONVERGE, || async {
        let now = digests("follows").await;
        (now.len() == 2 && now.iter().all(|(_, d)| *d == second)).then_some(())
    })
    .await;
    wait_running(&bed, &repo.stack, "follows", 2).await;
    let pinned_after = stack_replicas(&bed, &repo.stack).await;
    let pinned_ids = |all: &Vec<(
        String,
        String,
        bool,
        std::collections::HashMap<String, String>,
    )>| {
        all.iter()
            .filter(|r| r.3.get("pier.service").map(String::as_str) == Some("pinned"))
            .map(|r| (r.1.clone(), r.3.get("pier.image-digest").cloned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        pinned_ids(&pinned_after),
        pinned_ids(&pinned_before),
        "`pinned` untouched"
    );
    let status = daemon.status().await;
    let follows = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "follows")
        .unwrap();
    assert_eq!(follows["digest"], second.as_str(), "{status}");
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

/// Webhooks: a bad signature gets 401 and runs no pass; a good one runs a
/// pass; unset secrets disable their hook; big bodies are refused; the
/// reconcile call needs the API token; secrets never reach the log.
#[tokio::test]
async fn daemon_webhooks_check_signatures_and_tokens() {
    let bed = Bed::get();
    let nodes = nodes_yaml(&bed, &[&["app"], &[], &[]]);
    let repo = UserRepo::new(
        "dmw",
        &format!("{nodes}services:\n{}", sleeper(&bed, "web", 1, "")),
    );
    let state = tempfile::tempdir().unwrap();
    let (github_secret, api_token) = (unique("gh-secret"), unique("api-token"));
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &DaemonOptions::default()
            .env("PIER_GITHUB_SECRET", &github_secret)
            .env("PIER_API_TOKEN", &api_token),
    );
    wait_running(&bed, &repo.stack, "web", 1).await;
    let (code, _) = daemon.request("GET", "/readyz", &[], b"").await;
    assert_eq!(code, 200);
    let passes = daemon.passes().await;
    assert!(passes >= 1.0);

    let body = br#"{"ref":"refs/heads/main"}"#;
    let bad = "sha256=0000000000000000000000000000000000000000000000000000000000000000";
    let (code, _) = daemon
        .request(
            "POST",
            "/hooks/github",
            &[("X-Hub-Signature-256", bad), ("X-GitHub-Event", "push")],
            body,
        )
        .await;
    assert_eq!(code, 401);
    let (code, _) = daemon
        .request(
            "POST",
            "/api/v1/reconcile",
            &[("Authorization", "Bearer wrong")],
            b"",
        )
        .await;
    assert_eq!(code, 401);
    let (code, text) = daemon
        .request("POST", "/hooks/gitlab", &[("X-Gitlab-Token", "x")], b"")
        .await;
    assert_eq!(code, 404, "an unset secret disables its hook: {text}");
    let (code, _) = daemon
        .request(
            "POST",
            "/hooks/github",
            &[("X-Hub-Signature-256", bad)],
            &vec![b'x'; 2 << 20],
        )
        .await;
    assert_eq!(code, 413);

    // The bad calls ran no pass. A good signature does.
    let good = {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(github_secret.as_bytes()).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    // Passes are counted when they finish; give a wrongly started one time to show.
    let (code, _) = daemon
        .request(
            "POST",
            "/api/v1/reconcile",
            &[("Authorization", &format!("Bearer {api_token}"))],
            b"",
        )
        .await;
    assert_eq!(code, 202);
    eventually("the API call runs a pass", CONVERGE, || async {
        (daemon.passes().await == passes + 1.0).then_some(())
    })
    .await;
    assert_eq!(
        daemon
            .metric("pier_passes_total{trigger=\"webhook\",result=\"ok\"}")
            .await,
        0.0
    );
    let (code, _) = daemon
        .request(
            "POST",
            "/hooks/github",
            &[("X-Hub-Signature-256", &good), ("X-GitHub-Event", "push")],
            body,
        )
        .await;
    assert_eq!(code, 202);
    // A pass merges the triggers that arrive within its debounce window
    // (`git+webhook`): every label naming the webhook counts.
    let webhook_passes = || async {
        let (_, metrics) = daemon.request("GET", "/metrics", &[], b"").await;
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("pier_passes_total{")
                    && l.contains("webhook")
                    && l.contains("result=\"ok\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    eventually("the webhook runs a pass", CONVERGE, || async {
        (webhook_passes().await == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        daemon.passes().await,
        passes + 2.0,
        "only the two valid calls ran passes"
    );

    let log = daemon.log_text();
    assert!(
        !log.contains(&github_secret) && !log.contains(&api_token),
        "a secret reached the log"
    );
    let db = std::fs::read(state.path().join("pier.db")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&db).contains(&api_token));
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

/// `kill -9` in the middle of a rolling replace, then a restart: the stack
/// converges with no duplicate and no missing replica; SIGTERM then exits
/// cleanly; a second daemon on the same state folder is refused.
#[tokio::test]
async fn daemon_recovers_from_a_crash_mid_rollout() {
    let bed = Bed::get();
    let nodes = nodes_yaml(&bed, &[&["app"], &["app"], &[]]);
    // Each new replica takes about a second to report healthy, so the rollout
    // of two replicas one at a time is still running when the daemon dies.
    let health = "    healthcheck:\n      test: [\"CMD\", \"sh\", \"-c\", \"test -f /up\"]\n      interval: 300ms\n      start_period: 5s\n    sequential_deployment: true\n";
    let manifest = |version: &str| {
        let service = sleeper(&bed, "web", 2, health).replace(
            "command: sleep 3600",
            "command: [\"sh\", \"-c\", \"sleep 1; touch /up; exec sleep 3600\"]",
        );
        format!("{nodes}services:\n{service}    environment:\n      VERSION: \"{version}\"\n")
    };
    let repo = UserRepo::new("dmk", &manifest("1"));
    let state = tempfile::tempdir().unwrap();
    let path = repo.dir.path().to_str().unwrap().to_string();
    let mut daemon = Daemon::start(
        &bed,
        &path,
        &repo.stack,
        state.path(),
        &DaemonOptions::default(),
    );
    wait_running(&bed, &repo.stack, "web", 2).await;

    let old_hash = stack_replicas(&bed, &repo.stack).await[0].3["pier.spec-hash"].clone();
    repo.commit(&manifest("2"), "version 2");
    eventually("the rollout has begun", CONVERGE, || async {
        stack_replicas(&bed, &repo.stack)
            .await
            .iter()
            .any(|r| r.1.ends_with("-pier-old") || r.3["pier.spec-hash"] != old_hash)
            .then_some(())
    })
    .await;
    daemon.kill();

    let second = Daemon::start(
        &bed,
        &path,
        &repo.stack,
        state.path(),
        &DaemonOptions::default(),
    );
    let head = head_commit(repo.dir.path());
    let replicas = eventually(
        "two replicas of version 2, nothing else",
        CONVERGE,
        || async {
            let all = stack_replicas(&bed, &repo.stack).await;
            (all.len() == 2
                && all
                    .iter()
                    .all(|r| r.2 && r.3.get("pier.commit") == Some(&head)))
            .then_some(all)
        },
    )
    .await;
    let mut names: Vec<&str> = replicas.iter().map(|r| r.1.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!("{}-web-1", repo.stack),
            format!("{}-web-2", repo.stack)
        ]
    );

    // A second daemon on the same state folder is refused.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pier"))
        .args([
            "daemon",
            "--repo",
            &path,
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(state.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another pier daemon"));

    let mut second = second;
    let exit = second.terminate();
    assert!(
        exit.success(),
        "SIGTERM exits cleanly: {exit:?}\n{}",
        second.log_text()
    );
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

/// Stage containers of `stack` on every node.
async fn stage_containers(bed: &Bed, stack: &str) -> usize {
    let mut count = 0;
    for node in &bed.nodes {
        let docker = crate::support::engine(node).await;
        count += crate::support::labelled(&docker, &format!("pier.pipeline={stack}"))
            .await
            .len();
    }
    count
}

/// Each commit is tested on the `ci` node before it is deployed; a commit
/// arriving while the previous one's pipeline runs cancels that run (its
/// stage container goes) and is itself tested and deployed; a commit on
/// another branch is tested and never deployed.
#[tokio::test]
async fn daemon_tests_each_commit_cancels_superseded_runs_and_only_tests_other_branches() {
    let bed = Bed::get();
    let nodes = nodes_yaml(&bed, &[&["app"], &["app"], &["ci"]]);
    let manifest = |replicas: u32| {
        format!(
            "{nodes}pipeline:\n  branches: [main]\n  runner_tags: [ci]\n  stages:\n    - name: test\n      image: {}\n      script:\n        - \"if [ -f SLOW ]; then echo slow test; sleep 300; fi\"\n        - echo tested $(cat VERSION)\nservices:\n{}",
            bed.base_image,
            sleeper(&bed, "web", replicas, "    tags: [app]\n")
        )
    };
    let repo = UserRepo::new("dmp", &manifest(1));
    std::fs::write(repo.dir.path().join("SLOW"), "").unwrap();
    std::fs::write(repo.dir.path().join("VERSION"), "1").unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "a slow test"]);
    let slow = head_commit(repo.dir.path());
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &DaemonOptions::default(),
    );
    let pier_logs = |commit: &str| crate::support::run_log(state.path(), commit);
    eventually("the slow test is running", CONVERGE, || async {
        pier_logs(&slow).contains("slow test").then_some(())
    })
    .await;
    assert_eq!(stage_containers(&bed, &repo.stack).await, 1);
    assert!(
        running(&bed, &repo.stack, "web").await.is_empty(),
        "nothing deployed before the test passed"
    );

    std::fs::remove_file(repo.dir.path().join("SLOW")).unwrap();
    std::fs::write(repo.dir.path().join("VERSION"), "2").unwrap();
    repo.commit(&manifest(2), "a quick test, two replicas");
    let fast = head_commit(repo.dir.path());
    let committed = Instant::now();
    wait_running(&bed, &repo.stack, "web", 2).await;
    assert!(
        committed.elapsed() < Duration::from_secs(60),
        "the slow run was not waited for"
    );

    let slow_logs = pier_logs(&slow);
    assert!(slow_logs.contains("cancelled"), "{slow_logs}");
    let fast_logs = pier_logs(&fast);
    assert!(
        fast_logs.contains("tested 2") && fast_logs.contains("== test passed on n3"),
        "{fast_logs}"
    );
    assert_eq!(
        stage_containers(&bed, &repo.stack).await,
        0,
        "stage containers are removed"
    );
    let status = daemon.status().await;
    assert_eq!(status["pipeline"]["state"], "passed", "{status}");

    // A commit on another branch is tested, never deployed.
    repo.git(&["checkout", "-q", "-b", "feature"]);
    std::fs::write(repo.dir.path().join("VERSION"), "3").unwrap();
    repo.commit(&manifest(3), "three replicas, on a feature branch");
    let feature = head_commit(repo.dir.path());
    eventually("the feature branch is tested", CONVERGE, || async {
        let status = daemon.status().await;
        (status["pipelines"]["feature"]["state"] == "passed"
            && status["pipelines"]["feature"]["commit"] == feature.as_str())
        .then_some(())
    })
    .await;
    assert!(pier_logs(&feature).contains("tested 3"));
    let status = daemon.status().await;
    assert_eq!(
        status["head"],
        fast.as_str(),
        "the daemon deploys main only: {status}"
    );
    assert_eq!(
        running(&bed, &repo.stack, "web").await.len(),
        2,
        "not deployed"
    );
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

async fn pipeline_failed(daemon: &Daemon) {
    eventually("the pipeline fails", CONVERGE, || async {
        let status = daemon.status().await;
        (status["pipeline"]["state"] == "failed").then_some(())
    })
    .await
}

/// A first commit whose pipeline fails is never deployed, whatever starts
/// the next pass: an API reconcile, a restart of the daemon, or a restart
/// with its state store gone (the pipeline runs again and fails again).
/// The deploy branch's stage that names the daemon's API token in its
/// `env` does not get it: `--allow-env` is the only door, and no glob
/// opens it to `PIER_*`.
#[tokio::test]
async fn daemon_never_deploys_a_commit_whose_pipeline_failed() {
    let bed = Bed::get();
    let nodes = nodes_yaml(&bed, &[&["app"], &["app"], &["ci"]]);
    let manifest = format!(
        "{nodes}pipeline:\n  branches: [main]\n  runner_tags: [ci]\n  stages:\n    - name: test\n      image: {}\n      env: {{ PIER_API_TOKEN: , PIER_GIT_TOKEN: }}\n      script: [\"echo token:$${{PIER_API_TOKEN:-none}} git:$${{PIER_GIT_TOKEN:-none}}\", \"echo failing on purpose\", \"false\"]\nservices:\n{}",
        bed.base_image,
        sleeper(&bed, "web", 1, "    tags: [app]\n")
    );
    let repo = UserRepo::new("dgate", &manifest);
    let state = tempfile::tempdir().unwrap();
    let token = unique("token");
    let options = DaemonOptions::default()
        .env("PIER_API_TOKEN", &token)
        .env("PIER_GIT_TOKEN", "git-token-value")
        .env("PIER_ALLOW_ENV", "*,PIER_*");
    let start = || {
        Daemon::start(
            &bed,
            repo.dir.path().to_str().unwrap(),
            &repo.stack,
            state.path(),
            &options,
        )
    };
    let mut daemon = start();
    pipeline_failed(&daemon).await;
    let logs = std::process::Command::new(env!("CARGO_BIN_EXE_pier"))
        .args([
            "logs",
            "--run",
            &head_commit(repo.dir.path()),
            "--state-dir",
        ])
        .arg(state.path())
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.contains("token:none git:none"),
        "a stage got pier's own variables: {logs}"
    );
    reconcile(&daemon, &token).await;
    assert!(
        stack_replicas(&bed, &repo.stack).await.is_empty(),
        "a reconcile deploys nothing: {}",
        daemon.log_text()
    );
    let status = daemon.status().await;
    assert!(
        status["stalled"]
            .as_str()
            .is_some_and(|s| s.contains("pipeline")),
        "{status}"
    );

    // A restart reads the refusal from the store and deploys nothing.
    daemon.kill();
    let daemon = start();
    passes_reach(&daemon, 1.0).await;
    assert!(stack_replicas(&bed, &repo.stack).await.is_empty());
    drop(daemon);

    // Without its store the daemon tests the commit again before anything.
    for entry in std::fs::read_dir(state.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("pier.db")
        {
            std::fs::remove_file(path).unwrap();
        }
    }
    let daemon = start();
    pipeline_failed(&daemon).await;
    assert!(stack_replicas(&bed, &repo.stack).await.is_empty());
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

/// Tutum's `autodestroy: on-success`: the daemon removes the replica once it
/// exited with 0 and does not run it again at that configuration.
#[tokio::test]
async fn daemon_removes_an_autodestroy_job_once_it_succeeded_and_does_not_rerun_it() {
    let bed = Bed::get();
    let manifest = format!(
        "{}services:\n  once:\n    image: {}\n    command: [\"sh\", \"-c\", \"sleep 1\"]\n    autodestroy: on-success\n",
        nodes_yaml(&bed, &[&["app"]]),
        bed.base_image
    );
    let repo = UserRepo::new("dauto", &manifest);
    let state = tempfile::tempdir().unwrap();
    let token = unique("token");
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &DaemonOptions::default().env("PIER_API_TOKEN", &token),
    );
    let created = || {
        daemon
            .log_text()
            .lines()
            .filter(|l| l.contains("step ok") && l.contains("action=create"))
            .count()
    };
    // The job's exit triggers a pass through the engine's events; a pass
    // asked for here covers an exit that came before the events were watched.
    eventually("the job ran and was removed", CONVERGE, || async {
        let done = created() == 1 && stack_replicas(&bed, &repo.stack).await.is_empty();
        if !done {
            reconcile(&daemon, &token).await;
        }
        done.then_some(())
    })
    .await;
    for _ in 0..2 {
        reconcile(&daemon, &token).await;
    }
    assert_eq!(created(), 1, "not run again: {}", daemon.log_text());
    assert!(stack_replicas(&bed, &repo.stack).await.is_empty());
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

/// A branch under test chooses no node and gets no secret: a feature
/// branch that tags a node of its own as runner still runs on the deploy
/// branch's runner, its name-only `env` entry is empty, its build stage
/// pushes nothing, its HTTPS route never asks for the router's certificate
/// (the daemon has none: the deploy branch would be refused), and a
/// manifest that interpolates a `PIER_*` variable is refused, naming it.
#[tokio::test]
async fn other_branches_run_on_trusted_runners_without_secrets_or_pushes() {
    let bed = Bed::get();
    let image = format!("{}/pier-test/{}", bed.registry, unique("trust"));
    let manifest = |nodes: &str, runner: &str, script: &str| {
        format!(
            "{nodes}pipeline:\n  branches: [main]\n  runner_tags: [{runner}]\n  stages:\n    - name: test\n      image: {base}\n      env: [SECRET_TOKEN]\n      script: [\"{script}\"]\n    - name: build\n      build: [app]\nservices:\n  app:\n    image: {image}:latest\n    build: ../app\n    command: sleep 3600\n    stop_grace_period: 1s\n    tags: [app]\n",
            base = bed.base_image,
        )
    };
    let trusted_nodes = nodes_yaml(&bed, &[&["app"], &["app"], &["ci"]]);
    let repo = UserRepo::new(
        "dtrust",
        &manifest(&trusted_nodes, "ci", "echo token=$SECRET_TOKEN"),
    );
    std::fs::create_dir_all(repo.dir.path().join("app")).unwrap();
    std::fs::write(
        repo.dir.path().join("app/Dockerfile"),
        format!("FROM {}\nCOPY hello /hello\n", bed.base_image),
    )
    .unwrap();
    std::fs::write(repo.dir.path().join("app/hello"), "hello\n").unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "an app to build"]);
    let main = head_commit(repo.dir.path());
    let secret = unique("s3cret-value");
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &DaemonOptions::default()
            .env("SECRET_TOKEN", &secret)
            .arg("--untrusted-memory", "256m")
            .arg("--untrusted-pids", "64"),
    );
    wait_running(&bed, &repo.stack, "app", 1).await;
    // The bed's engines listen on plain tcp://: the runner is warned about.
    eventually("the plain-tcp runner warning", CONVERGE, || async {
        daemon
            .log_text()
            .contains("node `n3` runs pipeline stages")
            .then_some(())
    })
    .await;
    let pier_logs = |commit: &str| crate::support::run_log(state.path(), commit);
    let main_logs = pier_logs(&main);
    assert!(
        main_logs.contains("token=***"),
        "the deploy branch gets it, masked: {main_logs}"
    );
    let tags = || async {
        let repository = image.split_once('/').unwrap().1;
        let (_, body) = support_http_get(&bed, &format!("/v2/{repository}/tags/list")).await;
        body
    };
    assert!(tags().await.contains(&main[..12]), "{}", tags().await);

    // A feature branch that makes n1 its own runner, and routes its app
    // over HTTPS.
    repo.git(&["checkout", "-q", "-b", "feature"]);
    let own_nodes = nodes_yaml(&bed, &[&["app", "evil"], &["app"], &["ci"]]);
    // The stage prints the bounds the kernel holds it to (cgroup v1 or v2).
    let limits = "mem=$$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null) pids=$$(cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null)";
    let routed = manifest(
        &own_nodes,
        "evil",
        &format!("echo token=$$SECRET_TOKEN {limits}"),
    )
    .replace(
        "    tags: [app]\n",
        "    tags: [app]\n    route: { host: app.test, port: 8080, tls: true }\n",
    ) + "router:\n  tags: [edge]\n  ports: [\"18444:443\"]\n";
    repo.commit(&routed, "run on my node, routed over HTTPS");
    let feature = head_commit(repo.dir.path());
    eventually("the feature branch is tested", CONVERGE, || async {
        let status = daemon.status().await;
        (status["pipelines"]["feature"]["commit"] == feature.as_str()
            && status["pipelines"]["feature"]["state"] == "passed")
            .then_some(())
    })
    .await;
    let logs = pier_logs(&feature);
    assert!(
        logs.contains("== test passed on n3"),
        "the trusted runner: {logs}"
    );
    assert!(
        logs.contains("token= mem=268435456 pids=64\n"),
        "no secret for a branch under test, and the operator's bounds: {logs}"
    );
    let runner = crate::support::engine(&bed.nodes[2]).await;
    let network = runner
        .inspect_network(
            &format!("pier-{}-untrusted", repo.stack),
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .expect("the untrusted stages' own network");
    assert_eq!(network.driver.as_deref(), Some("bridge"));
    assert!(!logs.contains(&secret));
    assert!(logs.contains("not pushed"), "{logs}");
    assert!(!tags().await.contains(&feature[..12]), "{}", tags().await);

    // A branch under test runs only images it can pull: not one that is
    // on the runner already and in no registry.
    let local_only = format!("pier-local-only/{}", unique("base"));
    runner
        .tag_image(
            &bed.base_image,
            Some(
                bollard::query_parameters::TagImageOptionsBuilder::default()
                    .repo(&local_only)
                    .tag("1")
                    .build(),
            ),
        )
        .await
        .unwrap();
    repo.commit(
        &manifest(&own_nodes, "ci", "echo ran")
            .replace(&bed.base_image, &format!("{local_only}:1")),
        "use an image already on the runner",
    );
    let local = head_commit(repo.dir.path());
    eventually("the local-only image is refused", CONVERGE, || async {
        let status = daemon.status().await;
        (status["pipelines"]["feature"]["commit"] == local.as_str()
            && status["pipelines"]["feature"]["state"] == "failed")
            .then_some(())
    })
    .await;
    let logs = pier_logs(&local);
    assert!(
        logs.contains("without credentials") && !logs.contains("ran\n"),
        "{logs}"
    );
    // Nor does it build on one: its base image is pulled, not taken from
    // the runner's store.
    std::fs::write(
        repo.dir.path().join("app/Dockerfile"),
        format!("FROM {local_only}:1\nCOPY hello /hello\n"),
    )
    .unwrap();
    repo.commit(
        &manifest(&own_nodes, "ci", "echo ran"),
        "build on an image already on the runner",
    );
    let local_base = head_commit(repo.dir.path());
    eventually("the local-only base is refused", CONVERGE, || async {
        let status = daemon.status().await;
        (status["pipelines"]["feature"]["commit"] == local_base.as_str()
            && status["pipelines"]["feature"]["state"] == "failed")
            .then_some(())
    })
    .await;
    let logs = pier_logs(&local_base);
    assert!(
        logs.contains("ran\n") && !logs.contains("not pushed"),
        "the test stage ran, the build did not: {logs}"
    );

    // A branch under test may interpolate no variable of the daemon's.
    repo.commit(
        &manifest(&own_nodes, "ci", "echo ${SECRET_TOKEN}"),
        "read the daemon's secret",
    );
    eventually("the refusal is logged", CONVERGE, || async {
        daemon
            .log_text()
            .contains("variable SECRET_TOKEN is not available here")
            .then_some(())
    })
    .await;

    // The deploy branch may interpolate what --allow-env allows: no PIER_* by default.
    repo.git(&["checkout", "-q", "main"]);
    repo.commit(
        &manifest(&trusted_nodes, "ci", "echo ${PIER_INSECURE_REGISTRIES}"),
        "read the daemon's settings",
    );
    eventually("the deploy branch's refusal", CONVERGE, || async {
        let status = daemon.status().await;
        status["stalled"]
            .as_str()
            .is_some_and(|s| {
                s.contains("variable PIER_INSECURE_REGISTRIES is not one manifests may use")
                    && s.contains("pier/stack.yml:")
            })
            .then_some(())
    })
    .await;
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

async fn support_http_get(bed: &Bed, path: &str) -> (u16, String) {
    let (host, port) = bed.registry.split_once(':').unwrap();
    crate::support::http_get(host, port.parse().unwrap(), path)
        .await
        .unwrap_or_default()
}

/// A node removed from the manifests is drained: its replicas are removed
/// while it answers and started on the nodes that remain, never orphaned.
#[tokio::test]
async fn daemon_drains_a_node_that_leaves_the_manifests() {
    let bed = Bed::get();
    let both = nodes_yaml(&bed, &[&["app"], &["app"]]);
    let only_n1 = nodes_yaml(&bed, &[&["app"]]);
    let manifest = |nodes: &str| {
        format!(
            "{nodes}services:\n{}",
            sleeper(&bed, "web", 2, "    tags: [app]\n")
        )
    };
    let repo = UserRepo::new("ddrain", &manifest(&both));
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &DaemonOptions::default(),
    );
    let placed = wait_running(&bed, &repo.stack, "web", 2).await;
    assert!(placed.iter().any(|r| r.starts_with("n2:")), "{placed:?}");

    repo.commit(&manifest(&only_n1), "retire n2");
    eventually("both replicas on n1, none left on n2", CONVERGE, || async {
        let all = stack_replicas(&bed, &repo.stack).await;
        (all.len() == 2 && all.iter().all(|r| r.0 == "n1" && r.2)).then_some(())
    })
    .await;
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

/// `PIER_LOG=debug` shows pier's own debugging, never the Engine API's
/// request bodies, which carry containers' environment values.
#[tokio::test]
async fn debug_logs_never_show_environment_values() {
    let bed = Bed::get();
    let value = unique("env-value");
    let manifest = format!(
        "{}services:\n{}    environment: {{ TOKEN: {value} }}\n",
        nodes_yaml(&bed, &[&["app"]]),
        sleeper(&bed, "web", 1, "    tags: [app]\n")
    );
    let repo = UserRepo::new("dlog", &manifest);
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &DaemonOptions::default().env("PIER_LOG", "debug"),
    );
    wait_running(&bed, &repo.stack, "web", 1).await;
    let log = daemon.log_text();
    assert!(log.contains("DEBUG"), "debug logging is on: {log}");
    assert!(!log.contains(&value), "an environment value was logged");
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

/// The HTTP surface: with `PIER_STATUS_TOKEN` set, the status document and
/// the metrics need it; a body announced over the limit is refused before
/// it is sent; the registry hook checks its token before reading a body.
#[tokio::test]
async fn daemon_http_reads_need_the_status_token_and_bodies_are_bounded() {
    let bed = Bed::get();
    let repo = UserRepo::new(
        "dhttp",
        &format!(
            "{}services:\n{}",
            nodes_yaml(&bed, &[&["app"]]),
            sleeper(&bed, "web", 1, "")
        ),
    );
    let state = tempfile::tempdir().unwrap();
    let (status_token, hook_token) = (unique("status-token"), unique("hook-token"));
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &DaemonOptions::default()
            .env("PIER_STATUS_TOKEN", &status_token)
            .env("PIER_REGISTRY_HOOK_TOKEN", &hook_token)
            .arg("--public-url", "HTTPS://pier.example.com/"),
    );
    let bearer = format!("Bearer {status_token}");
    // Users reach it over HTTPS: the session cookie is Secure.
    let (_, head, _) = daemon
        .request_with_head(
            "POST",
            "/ui/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("token={status_token}&name=&email=").as_bytes(),
        )
        .await;
    assert!(
        head.contains("pier_session=") && head.contains("; Secure;"),
        "{head}"
    );
    for path in ["/api/v1/status", "/metrics"] {
        assert_eq!(daemon.request("GET", path, &[], b"").await.0, 401, "{path}");
        let (code, body) = daemon
            .request("GET", path, &[("Authorization", &bearer)], b"")
            .await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (code, _) = daemon.request("GET", "/healthz", &[], b"").await;
    assert_eq!(code, 200, "liveness needs no token");

    // Announced as 1 GiB, never sent: answered at once, not waited for.
    let raw = |request: String| {
        let address = daemon.address();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = vec![0u8; 64];
            let read = stream.read(&mut response).await.unwrap();
            String::from_utf8_lossy(&response[..read]).into_owned()
        }
    };
    let announced = |authorization: &str| {
        format!(
            "POST /hooks/registry HTTP/1.1\r\nHost: pier\r\nAuthorization: {authorization}\r\nContent-Length: 1073741824\r\n\r\n"
        )
    };
    let answer = tokio::time::timeout(CONVERGE, raw(announced(&format!("Bearer {hook_token}"))))
        .await
        .expect("an answer without the body");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let answer = raw(announced("Bearer wrong")).await;
    assert!(
        answer.starts_with("HTTP/1.1 413") || answer.starts_with("HTTP/1.1 401"),
        "{answer}"
    );
    let (code, _) = daemon
        .request(
            "POST",
            "/hooks/registry",
            &[("Authorization", "Bearer wrong")],
            br#"{"events": []}"#,
        )
        .await;
    assert_eq!(code, 401);

    // Guessing: the address is refused, even with the right token, once it
    // sent 10 wrong ones within a minute. The two reads without a token
    // above count; the hooks' wrong tokens do not (their senders share
    // addresses), and the probes still answer.
    let guess = [("Authorization", "Bearer guess")];
    let mut wrong = 2;
    loop {
        let (code, body) = daemon.request("GET", "/api/v1/status", &guess, b"").await;
        if code == 429 {
            assert!(body.contains("too many wrong tokens"), "{body}");
            break;
        }
        assert_eq!(code, 401, "{body}");
        wrong += 1;
        assert!(wrong <= 10, "still not refused after {wrong} wrong tokens");
    }
    assert_eq!(wrong, 10, "refused right after the tenth");
    let (code, _) = daemon
        .request("GET", "/metrics", &[("Authorization", &bearer)], b"")
        .await;
    assert_eq!(code, 429, "refused with the right token too, for now");
    assert_eq!(daemon.request("GET", "/healthz", &[], b"").await.0, 200);
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

/// A pipeline runs beside the passes, not inside one: while a slow test
/// stage runs, a removed replica of the deployed revision is healed; SIGTERM
/// does not wait for the run, and the next start removes its stage container.
#[tokio::test]
async fn healing_goes_on_while_a_pipeline_runs() {
    let bed = Bed::get();
    let nodes = nodes_yaml(&bed, &[&["app"], &["app"], &["ci"]]);
    let manifest = format!(
        "{nodes}pipeline:\n  branches: [main]\n  runner_tags: [ci]\n  stages:\n    - name: test\n      image: {}\n      script: [\"if [ -f SLOW ]; then echo slow test; sleep 300; fi\"]\nservices:\n{}",
        bed.base_image,
        sleeper(&bed, "web", 1, "    tags: [app]\n")
    );
    let repo = UserRepo::new("dheal", &manifest);
    let state = tempfile::tempdir().unwrap();
    let start = || {
        Daemon::start(
            &bed,
            repo.dir.path().to_str().unwrap(),
            &repo.stack,
            state.path(),
            &DaemonOptions::default(),
        )
    };
    let mut daemon = start();
    let deployed = wait_running(&bed, &repo.stack, "web", 1).await;

    std::fs::write(repo.dir.path().join("SLOW"), "").unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "a slow test"]);
    eventually("the slow test runs", CONVERGE, || async {
        (stage_containers(&bed, &repo.stack).await == 1).then_some(())
    })
    .await;

    let (node, name) = deployed[0].split_once(':').unwrap();
    let node = bed.nodes.iter().find(|n| n.name == node).unwrap();
    let force = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
        .force(true)
        .build();
    crate::support::engine(node)
        .await
        .remove_container(name, Some(force))
        .await
        .unwrap();
    wait_running(&bed, &repo.stack, "web", 1).await;
    assert_eq!(
        stage_containers(&bed, &repo.stack).await,
        1,
        "healed while the run still goes on"
    );

    let ci = crate::support::engine(&bed.nodes[2]).await;
    let stage_ids = || async {
        crate::support::labelled(&ci, &format!("pier.pipeline={}", repo.stack))
            .await
            .into_iter()
            .filter_map(|c| c.id)
            .collect::<Vec<_>>()
    };
    let left = stage_ids().await;
    let exit = daemon.terminate();
    assert!(exit.success(), "{exit:?}\n{}", daemon.log_text());
    drop(daemon);
    let daemon = start();
    eventually(
        "the left stage container is removed and the run starts again",
        CONVERGE,
        || async {
            let now = stage_ids().await;
            (now.len() == 1 && !left.contains(&now[0])).then_some(())
        },
    )
    .await;
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
    let docker = crate::support::engine(&bed.nodes[2]).await;
    for c in crate::support::labelled(&docker, &format!("pier.pipeline={}", repo.stack)).await {
        let _ = docker
            .remove_container(
                &c.id.unwrap_or_default(),
                Some(
                    bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .build(),
                ),
            )
            .await;
    }
}

/// Send `request` on a new connection to `address` and read until the
/// daemon closes it; what it answered (empty: closed without an answer).
async fn exchange(address: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    // A guard against a hang, far above any timeout the daemon is given.
    let read = tokio::time::timeout(CONVERGE, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the daemon kept the connection open");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A daemon with no node: its HTTP side is all these tests look at.
fn idle_daemon(bed: &Bed, state: &std::path::Path, options: DaemonOptions) -> (UserRepo, Daemon) {
    let repo = UserRepo::new(
        "dlisten",
        &format!("services:\n{}", sleeper(bed, "web", 1, "")),
    );
    let daemon = Daemon::start(
        bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state,
        &options,
    );
    (repo, daemon)
}

/// Slow clients are cut off at `--http-timeout`, whether they stall in the
/// headers or in the body.
#[tokio::test]
async fn daemon_http_cuts_off_slow_clients() {
    let bed = Bed::get();
    let state = tempfile::tempdir().unwrap();
    let options = DaemonOptions::default()
        .arg("--http-timeout", "1s")
        .env("PIER_GITHUB_SECRET", &unique("github-secret"));
    let (_repo, daemon) = idle_daemon(&bed, state.path(), options);
    let address = daemon.address();
    assert!(
        exchange(&address, b"GET /healthz HTTP/1.1\r\nHost: pier\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let stalled_in_headers = exchange(&address, b"GET /healthz HTTP/1.1\r\nHost: pi").await;
    assert_eq!(stalled_in_headers, "", "closed unanswered");
    // The GitHub hook reads the whole body: its signature covers it.
    let stalled_in_body = exchange(
        &address,
        b"POST /hooks/github HTTP/1.1\r\nHost: pier\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: 100\r\n\r\n{\"a\"",
    )
    .await;
    assert_eq!(stalled_in_body, "", "closed unanswered");
}

/// At most `--http-max-connections` are open at once: one more is closed
/// unanswered, and served again once the others are gone. `--hooks-listen`
/// moves the webhooks to their own address, which serves nothing else.
#[tokio::test]
async fn daemon_http_limits_connections_and_serves_hooks_apart() {
    let bed = Bed::get();
    let state = tempfile::tempdir().unwrap();
    let gitlab_token = unique("gitlab-token");
    let options = DaemonOptions::default()
        .arg("--http-timeout", "5m")
        .arg("--http-max-connections", "2")
        .arg("--hooks-listen", "127.0.0.1:0")
        .env("PIER_GITLAB_TOKEN", &gitlab_token);
    let (_repo, daemon) = idle_daemon(&bed, state.path(), options);
    let address = daemon.address();
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: pier\r\n\r\n";

    let held = [
        tokio::net::TcpStream::connect(&address).await.unwrap(),
        tokio::net::TcpStream::connect(&address).await.unwrap(),
    ];
    assert_eq!(
        exchange(&address, healthz).await,
        "",
        "a third connection is served"
    );
    drop(held);
    eventually("a connection served again", CONVERGE, || async {
        exchange(&address, healthz)
            .await
            .starts_with("HTTP/1.1 200")
            .then_some(())
    })
    .await;

    let hooks = std::fs::read_to_string(state.path().join("hooks-listen")).unwrap();
    let gitlab = |token: &str| {
        format!(
            "POST /hooks/gitlab HTTP/1.1\r\nHost: pier\r\nX-Gitlab-Token: {token}\r\nContent-Length: 2\r\n\r\n{{}}"
        )
    };
    let status_line = |answer: String| answer.lines().next().unwrap_or_default().to_string();
    assert_eq!(
        status_line(exchange(&hooks, gitlab("wrong").as_bytes()).await),
        "HTTP/1.1 401 Unauthorized"
    );
    assert_eq!(
        status_line(exchange(&hooks, gitlab(&gitlab_token).as_bytes()).await),
        "HTTP/1.1 202 Accepted"
    );
    assert_eq!(
        status_line(exchange(&address, gitlab(&gitlab_token).as_bytes()).await),
        "HTTP/1.1 404 Not Found",
        "the API listener no longer serves hooks"
    );
    assert_eq!(
        status_line(exchange(&hooks, b"GET /api/v1/status HTTP/1.1\r\nHost: pier\r\n\r\n").await),
        "HTTP/1.1 404 Not Found",
        "the hooks listener serves no status"
    );
}

/// A registry that accepts connections and never answers holds up only the
/// service that needs it: that one is `Degraded`, while a removed replica
/// of another service is healed as usual.
#[tokio::test]
async fn a_silent_registry_degrades_only_its_service() {
    let bed = Bed::get();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            connections.push(socket);
        }
    });
    let repo = UserRepo::new(
        "dsilent",
        &format!(
            "{}services:\n{}  stuck:\n    image: {silent}/pier-test/silent:1\n    command: sleep 3600\n",
            nodes_yaml(&bed, &[&["app"]]),
            sleeper(&bed, "other", 1, "")
        ),
    );
    let state = tempfile::tempdir().unwrap();
    let registries = format!("{},{},{silent}", bed.registry, bed.registry_auth);
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        // Default settings: a resolution may take 40 s against a registry
        // that never answers.
        &DaemonOptions::default().arg("--insecure-registry", &registries),
    );
    let replicas = wait_running(&bed, &repo.stack, "other", 1).await;
    let condition_of = |status: &serde_json::Value, service: &str| {
        status["services"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == service))
            .map(|s| s["condition"].as_str().unwrap_or_default().to_string())
    };
    eventually("the stuck service shows Degraded", CONVERGE, || async {
        let status = daemon.status().await;
        (condition_of(&status, "stuck").as_deref() == Some("Degraded")).then_some(())
    })
    .await;

    let (node, name) = replicas[0].split_once(':').unwrap();
    let node = bed.nodes.iter().find(|n| n.name == node).unwrap();
    crate::support::force_remove(&crate::support::engine(node).await, name).await;
    wait_running(&bed, &repo.stack, "other", 1).await;
    let status = daemon.status().await;
    assert_eq!(
        condition_of(&status, "other").as_deref(),
        Some("Ready"),
        "{status}"
    );
    assert_eq!(
        condition_of(&status, "stuck").as_deref(),
        Some("Degraded"),
        "{status}"
    );
    // The heal did not wait for the silent registry: its resolution is
    // still going on in the background.
    let stuck_reason = status["services"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == "stuck"))
        .map(|s| s["reason"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    assert!(stuck_reason.contains("has not answered yet"), "{status}");
    held.abort();
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

/// Healing the revision already applied is retried, never frozen: while
/// the engine refuses to recreate a lost replica (here its bind's host
/// folder is gone; in the wild, a removal still holding the name), the
/// service is Degraded with the engine's reason, and once the cause clears a retry brings the
/// replica back without a new commit.
#[tokio::test]
async fn a_heal_refused_by_the_engine_is_retried_not_frozen() {
    let bed = Bed::get();
    let nodes = nodes_yaml(&bed, &[&["app"]]);
    // The bed's engines share this machine's file system.
    let host = tempfile::tempdir().unwrap();
    let folder = host.path().join("data");
    std::fs::create_dir(&folder).unwrap();
    let volume = format!("    volumes:\n      - {}:/data\n", folder.display());
    let repo = UserRepo::new(
        "dhr",
        &format!("{nodes}services:\n{}", sleeper(&bed, "web", 1, &volume)),
    );
    let state = tempfile::tempdir().unwrap();
    let path = repo.dir.path().to_str().unwrap().to_string();
    let daemon = Daemon::start(
        &bed,
        &path,
        &repo.stack,
        state.path(),
        &DaemonOptions::default(),
    );
    let replica = wait_running(&bed, &repo.stack, "web", 1).await.remove(0);

    std::fs::remove_dir(&folder).unwrap();
    let (node, name) = replica.split_once(':').unwrap();
    let docker = crate::support::engine(bed.nodes.iter().find(|n| n.name == node).unwrap()).await;
    crate::support::force_remove(&docker, name).await;
    eventually("the engine refuses the heal", CONVERGE, || async {
        daemon
            .log_text()
            .contains("bind source path does not exist")
            .then_some(())
    })
    .await;
    let status = eventually("status shows web Degraded", CONVERGE, || async {
        let status = daemon.status().await;
        (status["services"][0]["condition"] == "Degraded").then_some(status)
    })
    .await;
    assert!(
        status["services"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("bind source path does not exist")),
        "{status}"
    );

    std::fs::create_dir(&folder).unwrap();
    eventually("a retry brings the replica back", CONVERGE, || async {
        running(&bed, &repo.stack, "web")
            .await
            .contains(&replica)
            .then_some(())
    })
    .await;
    let status = eventually("status shows web Ready again", CONVERGE, || async {
        let status = daemon.status().await;
        (status["services"][0]["condition"] == "Ready").then_some(status)
    })
    .await;
    assert!(status["stalled"].is_null(), "{status}");
    remove_stack(&bed, &repo.stack).await;
}

/// Notifications reach a real webhook receiver, signed, and a real SMTP
/// server; each target hears only its events; a target that cannot be
/// reached is retried, shows in the status and holds up no deploy.
#[tokio::test]
async fn daemon_notifies_pipeline_and_deploy_events_and_a_dead_target_blocks_nothing() {
    let bed = Bed::get();
    let nodes = nodes_yaml(&bed, &[&["app"], &["ci"]]);
    let manifest = |script: &str| {
        format!(
            "{nodes}pipeline:\n  branches: [main]\n  runner_tags: [ci]\n  stages:\n    - name: test\n      image: {}\n      script: [{script}]\nservices:\n{}",
            bed.base_image,
            sleeper(&bed, "web", 1, "    tags: [app]\n")
        )
    };
    let repo = UserRepo::new(
        "dnotify",
        &manifest("\"echo broken on purpose\", \"false\""),
    );
    let receiver = HookReceiver::start().await;
    let chat = HookReceiver::start().await;
    let smtp = SmtpServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let notify = state.path().join("notify.yaml");
    std::fs::write(
        &notify,
        format!(
            "attempts: 2\nretry_max: 100ms\ntimeout: 5s\ntargets:\n  hook:\n    webhook: {{ url: '{}', secret_env: NOTIFY_TEST_SECRET }}\n  mail:\n    smtp: {{ host: 127.0.0.1, port: {}, security: none, from: pier@bed.test, to: [oncall@bed.test] }}\n    events: [pipeline_failed]\n  chat:\n    slack: {{ url: '{}' }}\n    events: [deploy_finished, commit_refused]\n  dead:\n    webhook: {{ url: 'http://127.0.0.1:1/hook' }}\n",
            receiver.url, smtp.port, chat.url
        ),
    )
    .unwrap();
    let secret = unique("notify-secret");
    let options = DaemonOptions::default()
        .arg("--notify", notify.to_str().unwrap())
        .env("NOTIFY_TEST_SECRET", &secret);
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &options,
    );
    let broken = head_commit(repo.dir.path());

    let failed = eventually("pipeline_failed at the webhook", CONVERGE, || async {
        receiver
            .taken()
            .into_iter()
            .find(|h| h.json()["event"] == "pipeline_failed")
    })
    .await;
    let signature = failed.headers["x-pier-signature-256"].to_str().unwrap();
    assert!(
        pier::daemon::api::github_signature_valid(&secret, &failed.body, signature.as_bytes()),
        "the body is signed with the secret"
    );
    let body = failed.json();
    assert_eq!(body["commit"], broken.as_str());
    assert_eq!(body["stack"], repo.stack.as_str());
    assert!(
        body["details"]
            .as_str()
            .unwrap()
            .contains("broken on purpose"),
        "{body}"
    );
    let mail = eventually("the mail of the failure", CONVERGE, || async {
        smtp.mails().into_iter().next()
    })
    .await;
    assert!(
        mail.contains(&format!("Subject: [pier {}] the pipeline of", repo.stack))
            && mail.contains("failed"),
        "{mail}"
    );

    repo.commit(&manifest("\"true\""), "fix the test");
    let fixed = head_commit(repo.dir.path());
    eventually("deploy_finished at the webhook", CONVERGE, || async {
        receiver
            .events()
            .contains(&"deploy_finished".to_string())
            .then_some(())
    })
    .await;
    assert_eq!(
        receiver.events(),
        [
            "pipeline_failed",
            "pipeline_passed_after_failure",
            "deploy_started",
            "deploy_finished"
        ],
        "{}",
        daemon.log_text()
    );
    let finished = receiver.taken().pop().unwrap().json();
    assert_eq!(finished["commit"], fixed.as_str());
    assert_eq!(stack_replicas(&bed, &repo.stack).await.len(), 1);
    let text = eventually("the Slack message of the deploy", CONVERGE, || async {
        chat.taken()
            .first()
            .map(|h| h.json()["text"].as_str().unwrap_or_default().to_string())
    })
    .await;
    assert_eq!(
        text,
        format!("*pier · {}* {} is deployed", repo.stack, &fixed[..12])
    );

    // An invalid commit is refused, and said so with where it is wrong.
    repo.commit(
        &format!(
            "{}  broken: {{ image: x, prots: [1] }}\n",
            manifest("\"true\"")
        ),
        "a typo",
    );
    let refused = eventually("commit_refused at the webhook", CONVERGE, || async {
        receiver
            .taken()
            .into_iter()
            .find(|h| h.json()["event"] == "commit_refused")
    })
    .await
    .json();
    assert_eq!(refused["commit"], head_commit(repo.dir.path()).as_str());
    let details = refused["details"].as_str().unwrap_or_default();
    assert!(
        details.contains("stack.yml:") && details.contains("unknown key `prots`"),
        "{details}"
    );

    let targets = eventually("the dead target to give up", CONVERGE, || async {
        let status = daemon.status().await;
        let targets = status["notifications"].as_array()?.clone();
        let dead = targets.iter().find(|t| t["name"] == "dead")?;
        (dead["pending"] == 0 && dead["failed"].as_u64()? >= 5).then_some(targets)
    })
    .await;
    let target = |name: &str| targets.iter().find(|t| t["name"] == name).unwrap().clone();
    assert_eq!(target("dead")["delivered"], 0);
    assert!(!target("dead")["last_error"].as_str().unwrap().is_empty());
    assert_eq!(target("hook")["delivered"], 5);
    assert_eq!(target("chat")["delivered"], 2, "chat hears two events");
    assert_eq!(
        target("mail")["delivered"],
        1,
        "mail hears pipeline_failed only"
    );
    assert_eq!(smtp.mails().len(), 1);
    assert!(
        daemon
            .metric("pier_notifications_total{target=\"dead\",result=\"failed\"}")
            .await
            >= 5.0
    );
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

/// Under systemd (`Type=notify`): READY once listening, RELOADING then
/// READY around a SIGHUP, which reads the policy file again for the next
/// pass (a stricter one refuses what the old one let through), and
/// STOPPING on SIGTERM.
#[tokio::test]
async fn the_daemon_tells_systemd_its_state_and_reads_its_policy_again_on_sighup() {
    let bed = Bed::get();
    let manifest = format!(
        "{}services:\n  app:\n    image: {}\n    command: sleep 3600\n    stop_grace_period: 1s\n    tags: [app]\n    deploy: {{ replicas: 2 }}\n",
        nodes_yaml(&bed, &[&["app"], &[], &[]]),
        bed.base_image
    );
    let repo = UserRepo::new("dhup", &manifest);
    let state = tempfile::tempdir().unwrap();
    let policy = state.path().join("policy.yml");
    std::fs::write(&policy, "max_replicas: 3\n").unwrap();
    let socket_path = state.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(CONVERGE)).unwrap();
    let said = || {
        let mut buf = [0u8; 512];
        let n = socket
            .recv(&mut buf)
            .expect("a notification within the bound");
        String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
    };
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &DaemonOptions::default()
            .arg("--policy", policy.to_str().unwrap())
            .env("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
    );
    assert_eq!(said(), "READY=1");
    let running = wait_running(&bed, &repo.stack, "app", 2).await;

    std::fs::write(&policy, "max_replicas: 1\n").unwrap();
    daemon.signal("HUP");
    let reloading = said();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(said(), "READY=1");
    eventually("the stricter policy refuses the pass", CONVERGE, || async {
        daemon.log_text().contains("max_replicas: 1").then_some(())
    })
    .await;
    assert!(daemon.log_text().contains("policy read again"));
    assert_eq!(
        wait_running(&bed, &repo.stack, "app", 2).await,
        running,
        "a refused pass changes nothing"
    );
    // A policy file that no longer reads keeps the one in use.
    std::fs::write(&policy, "max_replicas: [\n").unwrap();
    daemon.signal("HUP");
    assert!(said().starts_with("RELOADING=1"));
    assert_eq!(said(), "READY=1");
    assert!(daemon.log_text().contains("policy not read again"));

    daemon.signal("TERM");
    assert_eq!(said(), "STOPPING=1");
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}
