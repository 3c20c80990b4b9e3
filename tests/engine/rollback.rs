//! History, rollback, hold, freeze and pin against a running daemon on the
//! bed: what each puts back, and that it stays put.

use crate::support::{
    Bed, CONVERGE, Daemon, DaemonOptions, UserRepo, engine, eventually, head_commit, nodes_yaml,
    push_image, reconcile, remove_stack, stack_replicas, unique,
};

/// `(digest, MODE)` of every running replica of `web`, sorted.
async fn web_runs(bed: &Bed, stack: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (node, name, up, labels) in stack_replicas(bed, stack).await {
        if !up || labels.get("pier.service").map(String::as_str) != Some("web") {
            continue;
        }
        let node = bed.nodes.iter().find(|n| n.name == node).unwrap();
        // A replica replaced between the listing and here is skipped: the
        // caller looks again.
        let Ok(inspected) = engine(node).await.inspect_container(&name, None).await else {
            continue;
        };
        let env = inspected.config.and_then(|c| c.env).unwrap_or_default();
        let mode = env
            .iter()
            .find_map(|e| e.strip_prefix("MODE="))
            .unwrap_or_default()
            .to_string();
        out.push((
            labels.get("pier.image-digest").cloned().unwrap_or_default(),
            mode,
        ));
    }
    out.sort();
    out
}

/// Wait until both replicas of `web` run `digest` with `MODE=mode`.
async fn web_reaches(bed: &Bed, stack: &str, digest: &str, mode: &str) {
    let wanted = vec![(digest.to_string(), mode.to_string()); 2];
    eventually(
        &format!("web runs {digest} with MODE={mode}"),
        CONVERGE,
        || async { (web_runs(bed, stack).await == wanted).then_some(()) },
    )
    .await;
}

/// The pier binary with this environment (no `--stack` added).
fn pier(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pier"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("pier runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Ask for a pass twice: the second began after the first request, so
/// whatever that request should have changed, a pass has seen it.
async fn pass_after(daemon: &Daemon, token: &str) {
    reconcile(daemon, token).await;
    reconcile(daemon, token).await;
}

fn web(image: &str, mode: &str, extra: &str) -> String {
    format!(
        "  web:\n    image: {image}\n    command: sleep 3600\n    stop_grace_period: 1s\n    target_num_containers: 2\n    deployment_strategy: high_availability\n    tags: [app]\n    environment: {{ MODE: {mode} }}\n{extra}"
    )
}

/// v1 → v2 (and a new digest of its tag) → `pier rollback --to v1`: one
/// commit, deployed without running the pipeline again, after which every
/// replica runs v1's digest and environment; it stays so across a resync
/// and a push of a new digest to the tag; `pier history` tells it as a
/// rollback.
#[tokio::test]
async fn a_rollback_commit_restores_what_ran_and_stays_put() {
    let bed = Bed::get();
    let repository = format!("pier-test/{}", unique("rollback"));
    let image = format!("{}/{repository}:latest", bed.registry);
    let one = push_image(&bed, &bed.nodes[0], &repository, "latest", "one").await;
    let nodes = nodes_yaml(&bed, &[&["app"], &["app"], &["ci"]]);
    let manifest = |mode: &str| {
        format!(
            "{nodes}pipeline:\n  branches: [main]\n  runner_tags: [ci]\n  stages:\n    - name: test\n      image: {}\n      script: [\"echo tested\"]\nservices:\n{}",
            bed.base_image,
            web(&image, mode, "    autoredeploy: true\n")
        )
    };
    let repo = UserRepo::new("rb", &manifest("one"));
    let v1 = head_commit(repo.dir.path());
    let state = tempfile::tempdir().unwrap();
    let token = unique("token");
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &DaemonOptions::default()
            .env("PIER_API_TOKEN", &token)
            .arg("--registry-interval", "300ms"),
    );
    web_reaches(&bed, &repo.stack, &one, "one").await;
    repo.commit(&manifest("two"), "version two");
    web_reaches(&bed, &repo.stack, &one, "two").await;
    let two = push_image(&bed, &bed.nodes[0], &repository, "latest", "two").await;
    web_reaches(&bed, &repo.stack, &two, "two").await;

    let state_dir = state.path().to_str().unwrap();
    let (code, out, err) = pier(
        &[
            "rollback",
            "--to",
            &v1[..12],
            "--state-dir",
            state_dir,
            "--stack",
            &repo.stack,
        ],
        &[],
        repo.dir.path(),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Committed"), "{out}");
    let rollback = head_commit(repo.dir.path());
    web_reaches(&bed, &repo.stack, &one, "one").await;
    let manifest_now = std::fs::read_to_string(repo.dir.path().join("pier/stack.yml")).unwrap();
    assert!(
        manifest_now.contains(&format!("{image}@{one}")),
        "the image is pinned in the commit: {manifest_now}"
    );

    // Not tested again: the rollback commit has no pipeline run.
    let (code, _, err) = pier(
        &["logs", "--run", &rollback, "--state-dir", state_dir],
        &[],
        repo.dir.path(),
    );
    assert_ne!(code, 0, "a pipeline ran for the rollback commit");
    assert!(err.contains("no pipeline run"), "{err}");

    // It stays: a resync, and a new digest of the tag, move nothing.
    let three = push_image(&bed, &bed.nodes[0], &repository, "latest", "three").await;
    assert_ne!(three, one);
    pass_after(&daemon, &token).await;
    assert_eq!(
        web_runs(&bed, &repo.stack).await,
        vec![(one.clone(), "one".to_string()); 2],
        "{}",
        daemon.log_text()
    );

    // The history tells it as a rollback, with the digest it runs.
    let history = eventually("the rollback is in the history", CONVERGE, || async {
        let (code, body) = daemon.request("GET", "/api/v1/history", &[], b"").await;
        assert_eq!(code, 200, "{body}");
        let document: serde_json::Value = serde_json::from_str(&body).unwrap();
        (document["revisions"][0]["commit"] == rollback.as_str()).then_some(document)
    })
    .await;
    let newest = &history["revisions"][0];
    assert_eq!(newest["cause"], "rollback", "{history}");
    assert_eq!(newest["verdict"], "applied", "{history}");
    assert_eq!(
        newest["services"]["web"]["digest"],
        one.as_str(),
        "{history}"
    );
    let causes: Vec<&str> = history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["cause"].as_str())
        .collect();
    assert!(causes.contains(&"autoredeploy"), "{history}");
    let (code, out, err) = pier(&["history", "--state-dir", state_dir], &[], repo.dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&rollback[..12]) && out.contains("rollback"),
        "{out}"
    );
    // Without the daemon: git, and the labels of what runs.
    drop(daemon);
    let (code, out, err) = pier(
        &["history", "--offline", "--stack", &repo.stack],
        &[("PIER_INSECURE_REGISTRIES", &bed.registry)],
        repo.dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let newest = out.lines().nth(1).unwrap_or_default();
    assert!(
        newest.starts_with(&rollback[..12]) && newest.contains(&format!("web×2 {}", &one[..19])),
        "{out}"
    );
    remove_stack(&bed, &repo.stack).await;
}

/// `pier rollback --hold` puts an earlier revision back without a commit:
/// a new commit waits (also across a restart of the daemon) until `pier
/// resume`. A frozen service waits for a new commit until unfrozen. A
/// pinned service stays on its digest when its tag moves, and follows
/// the tag again once unpinned.
#[tokio::test]
async fn hold_freeze_and_pin_keep_services_where_they_are() {
    let bed = Bed::get();
    let repository = format!("pier-test/{}", unique("hold"));
    let image = format!("{}/{repository}:latest", bed.registry);
    let one = push_image(&bed, &bed.nodes[0], &repository, "latest", "one").await;
    let nodes = nodes_yaml(&bed, &[&["app"], &["app"], &[]]);
    let manifest = |mode: &str| {
        format!(
            "{nodes}services:\n{}",
            web(&image, mode, "    autoredeploy: true\n")
        )
    };
    let repo = UserRepo::new("hold", &manifest("one"));
    let v1 = head_commit(repo.dir.path());
    let state = tempfile::tempdir().unwrap();
    let token = unique("token");
    let options = DaemonOptions::default()
        .env("PIER_API_TOKEN", &token)
        .arg("--registry-interval", "300ms");
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
    let state_dir = state.path().to_str().unwrap().to_string();
    let acting = [
        ("PIER_API_TOKEN", token.as_str()),
        ("PIER_AUTHOR", "Alice <alice@example.com>"),
    ];
    let cli = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--state-dir", &state_dir]);
        pier(&all, &acting, repo.dir.path())
    };
    web_reaches(&bed, &repo.stack, &one, "one").await;
    repo.commit(&manifest("two"), "version two");
    web_reaches(&bed, &repo.stack, &one, "two").await;

    // Held at v1: v1 runs again, and a new commit waits.
    let (code, out, err) = cli(&[
        "rollback",
        "--hold",
        "--to",
        &v1[..12],
        "--reason",
        "bad release",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    web_reaches(&bed, &repo.stack, &one, "one").await;
    let status = daemon.status().await;
    assert_eq!(status["held"]["commit"], v1.as_str(), "{status}");
    assert_eq!(
        status["held"]["by"], "Alice <alice@example.com>",
        "{status}"
    );
    assert_eq!(daemon.metric("pier_stack_held").await, 1.0);
    repo.commit(&manifest("three"), "version three");
    let three = head_commit(repo.dir.path());
    eventually("the daemon sees version three", CONVERGE, || async {
        (daemon.status().await["head"] == three.as_str()).then_some(())
    })
    .await;
    pass_after(&daemon, &token).await;
    assert_eq!(
        web_runs(&bed, &repo.stack).await,
        vec![(one.clone(), "one".into()); 2]
    );

    // The hold survives a restart.
    daemon.kill();
    daemon = start();
    eventually("the restarted daemon passes", CONVERGE, || async {
        (daemon.passes().await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(daemon.status().await["held"]["commit"], v1.as_str());
    assert_eq!(
        web_runs(&bed, &repo.stack).await,
        vec![(one.clone(), "one".into()); 2]
    );
    let (code, out, err) = cli(&["resume"]);
    assert_eq!(code, 0, "{out}\n{err}");
    web_reaches(&bed, &repo.stack, &one, "three").await;
    assert!(daemon.status().await["held"].is_null());

    // Frozen: a new commit waits until unfrozen.
    let (code, out, err) = cli(&["freeze", "web", "--for", "1h", "--reason", "migration"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("web by Alice <alice@example.com> until"),
        "{out}"
    );
    repo.commit(&manifest("four"), "version four");
    let four = head_commit(repo.dir.path());
    eventually("the daemon sees version four", CONVERGE, || async {
        (daemon.status().await["head"] == four.as_str()).then_some(())
    })
    .await;
    pass_after(&daemon, &token).await;
    assert_eq!(
        web_runs(&bed, &repo.stack).await,
        vec![(one.clone(), "three".into()); 2]
    );
    let status = daemon.status().await;
    assert_eq!(status["frozen"][0]["service"], "web", "{status}");
    let (code, out, err) = cli(&["unfreeze", "web"]);
    assert_eq!(code, 0, "{out}\n{err}");
    web_reaches(&bed, &repo.stack, &one, "four").await;

    // Pinned: a new digest of the tag does not move it; unpinned, it does.
    let (code, out, err) = cli(&["pin", "web", "--stack", &repo.stack]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("@{one}")), "{out}");
    let pinned = head_commit(repo.dir.path());
    eventually("the pin is applied", CONVERGE, || async {
        (daemon.status().await["revision"] == pinned.as_str()).then_some(())
    })
    .await;
    let five = push_image(&bed, &bed.nodes[0], &repository, "latest", "five").await;
    pass_after(&daemon, &token).await;
    assert_eq!(
        web_runs(&bed, &repo.stack).await,
        vec![(one.clone(), "four".into()); 2]
    );
    let (code, out, err) = pier(
        &["unpin", "web", "--stack", &repo.stack],
        &[],
        repo.dir.path(),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    web_reaches(&bed, &repo.stack, &five, "four").await;
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

/// With `--keep-images 1`, the images of older revisions that pier pulled
/// are removed from the nodes once nothing uses them; the newest stays, and
/// an image pier did not pull (built on another node) is never touched.
#[tokio::test]
async fn images_of_old_revisions_pier_pulled_are_removed_beyond_those_kept() {
    let bed = Bed::get();
    let repository = format!("pier-test/{}", unique("keep"));
    let mut digests = Vec::new();
    for tag in ["1", "2", "3"] {
        digests.push(push_image(&bed, &bed.nodes[0], &repository, tag, tag).await);
    }
    let nodes = nodes_yaml(&bed, &[&[], &["app"], &[]]);
    let manifest = |tag: &str| {
        format!(
            "{nodes}services:\n  web:\n    image: {}/{repository}:{tag}\n    command: sleep 3600\n    stop_grace_period: 1s\n    tags: [app]\n",
            bed.registry
        )
    };
    let repo = UserRepo::new("keep", &manifest("1"));
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &DaemonOptions::default().arg("--keep-images", "1"),
    );
    let runs = |digest: String| {
        let (bed, stack) = (&bed, &repo.stack);
        async move {
            let all = stack_replicas(bed, stack).await;
            (all.len() == 1 && all[0].2 && all[0].3.get("pier.image-digest") == Some(&digest))
                .then_some(())
        }
    };
    eventually("v1 runs", CONVERGE, || runs(digests[0].clone())).await;
    repo.commit(&manifest("2"), "v2");
    eventually("v2 runs", CONVERGE, || runs(digests[1].clone())).await;
    repo.commit(&manifest("3"), "v3");
    eventually("v3 runs", CONVERGE, || runs(digests[2].clone())).await;
    let n2 = engine(&bed.nodes[1]).await;
    let on_n2 = |digest: &str| format!("{}/{repository}@{digest}", bed.registry);
    eventually("the images of v1 and v2 leave n2", CONVERGE, || async {
        let mut gone = true;
        for digest in &digests[..2] {
            gone &= n2.inspect_image(&on_n2(digest)).await.is_err();
        }
        gone.then_some(())
    })
    .await;
    assert!(
        n2.inspect_image(&on_n2(&digests[2])).await.is_ok(),
        "the image of the revision kept stays"
    );
    let n1 = engine(&bed.nodes[0]).await;
    assert!(
        n1.inspect_image(&format!("{}/{repository}:1", bed.registry))
            .await
            .is_ok(),
        "an image pier did not pull stays: {}",
        daemon.log_text()
    );
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}
