//! `pier logs`, `pier exec` and `pier run` against the bed's engines.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};

use crate::support::{
    Bed, CONVERGE, UserRepo, engine, eventually, labelled, nodes_yaml, remove_stack,
    stack_replicas, wait_running,
};

/// A service of 2 replicas, one on each of two nodes, each printing a
/// counted line every 100 ms.
fn talker(bed: &Bed) -> String {
    format!(
        "{}services:\n  talker:\n    image: {}\n    command: [\"sh\", \"-c\", \"i=0; while true; do echo tick $$i; i=$$((i+1)); sleep 0.1; done\"]\n    stop_grace_period: 1s\n    target_num_containers: 2\n    deployment_strategy: high_availability\n    environment: {{ MODE: chatty }}\n    tags: [app]\n",
        nodes_yaml(bed, &[&["app"], &["app"], &[]]),
        bed.base_image
    )
}

/// Containers of `stack` on every node that carry the label `key`.
async fn carrying(bed: &Bed, stack: &str, key: &str) -> usize {
    let mut count = 0;
    for node in &bed.nodes {
        count += labelled(&engine(node).await, &format!("pier.stack={stack}"))
            .await
            .iter()
            .filter(|c| c.labels.as_ref().is_some_and(|l| l.contains_key(key)))
            .count();
    }
    count
}

fn pier(repo: &UserRepo, bed: &Bed) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pier"));
    command
        .current_dir(repo.dir.path())
        .env("PIER_STACK", &repo.stack)
        .env(
            "PIER_INSECURE_REGISTRIES",
            format!("{},{}", bed.registry, bed.registry_auth),
        )
        .env("NO_COLOR", "1");
    command
}

/// `pier logs` merges both replicas' lines in time order, each marked
/// `talker.N@node`; `--follow` goes on with a replica that starts later.
#[tokio::test]
async fn logs_merge_replicas_across_nodes_and_follow_new_ones() {
    let bed = Bed::get();
    let repo = UserRepo::new("logs", &talker(&bed));
    let (code, out, err) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{out}{err}");
    let replicas = wait_running(&bed, &repo.stack, "talker", 2).await;
    let nodes: Vec<&str> = replicas
        .iter()
        .map(|r| r.split(':').next().unwrap())
        .collect();

    let out = eventually("both replicas have printed", CONVERGE, || async {
        let out = pier(&repo, &bed)
            .args(["logs", "talker", "--tail", "5", "--timestamps"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let marks: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        (marks.len() == 2 && text.lines().count() == 10).then_some(text)
    })
    .await;
    for line in out.lines() {
        let mark = line.split_whitespace().next().unwrap();
        assert!(
            nodes.iter().any(|n| mark.ends_with(&format!("@{n}"))) && mark.starts_with("talker."),
            "{out}"
        );
        assert!(line.contains("| tick "), "{out}");
    }
    let stamps: Vec<std::time::SystemTime> = out
        .lines()
        .map(|l| humantime::parse_rfc3339_weak(l.split_whitespace().nth(1).unwrap()).unwrap())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]),
        "in time order:\n{out}"
    );

    // Followed: a replica that starts later (here: one more) is followed too.
    let mut follower = pier(&repo, &bed)
        .args(["logs", "talker", "--follow", "--tail", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    std::fs::write(
        repo.dir.path().join("pier/stack.yml"),
        talker(&bed).replace("target_num_containers: 2", "target_num_containers: 3"),
    )
    .unwrap();
    repo.git(&["commit", "-qam", "three talkers"]);
    let (code, out, err) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{out}{err}");
    let deadline = std::time::Instant::now() + CONVERGE;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 {
        let line = received
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("lines from all three replicas while following");
        if let Some(mark) = line.split_whitespace().next() {
            seen.insert(mark.split('@').next().unwrap().to_string());
        }
    }
    assert!(seen.contains("talker.3"), "{seen:?}");
    follower.kill().unwrap();
    let _ = follower.wait();
    remove_stack(&bed, &repo.stack).await;
}

/// `pier exec` runs in a replica with this process's stdin, and exits
/// with the command's code; `pier run` makes a one-off from the service's
/// spec (its environment), exits with its code and leaves nothing behind;
/// a kept one-off is not the stack's: `pier apply` does not touch it.
#[tokio::test]
async fn exec_and_run_reach_a_service_over_the_engine_api() {
    let bed = Bed::get();
    let repo = UserRepo::new("exec", &talker(&bed));
    let (code, out, err) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_running(&bed, &repo.stack, "talker", 2).await;

    let mut exec = pier(&repo, &bed)
        .args([
            "exec",
            "talker.2",
            "--",
            "sh",
            "-c",
            "read line; echo got $line from $MODE; exit 3",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    exec.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = exec.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "got hello from chatty"
    );

    let out = pier(&repo, &bed)
        .args([
            "run",
            "talker",
            "--",
            "sh",
            "-c",
            "echo one-off $MODE; exit 4",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "one-off chatty"
    );
    let left = carrying(&bed, &repo.stack, "pier.run").await;
    assert_eq!(left, 0, "the one-off is removed");

    let out = pier(&repo, &bed)
        .args(["run", "--keep", "talker", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, out, err) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{out}{err}");
    let kept: Vec<(String, String)> = stack_replicas(&bed, &repo.stack)
        .await
        .into_iter()
        .filter(|r| r.3.contains_key("pier.run"))
        .map(|r| (r.0, r.1))
        .collect();
    assert_eq!(kept.len(), 1, "a kept one-off is left alone by apply");
    // Its input closes when the terminal's does (as `docker run -i`): else
    // the engine closes the attached output instead, and what the command
    // still had to print is lost.
    let (node, name) = &kept[0];
    let node = bed
        .nodes
        .iter()
        .find(|n| &n.name == node)
        .expect("its node");
    let config = engine(node)
        .await
        .inspect_container(name, None)
        .await
        .expect("inspect the one-off")
        .config
        .expect("its configuration");
    assert_eq!(config.open_stdin, Some(true), "{config:?}");
    assert_eq!(config.stdin_once, Some(true), "{config:?}");
    remove_stack(&bed, &repo.stack).await;
}

/// Deploy hooks: a `pre_deploy` migration runs in a one-off of the new
/// spec (its environment and volumes) before the new version starts (which
/// refuses to start unmigrated), `post_deploy` after; neither runs again
/// for the same revision; a failing `pre_deploy` stops the rollout with
/// the old version still running, its output in the error; no hook
/// container is left behind.
#[tokio::test]
async fn deploy_hooks_migrate_before_the_new_version_and_a_failure_keeps_the_old() {
    let bed = Bed::get();
    let nodes = nodes_yaml(&bed, &[&["app"], &[], &[]]);
    let manifest = |version: u32, hooks: &str| {
        format!(
            "{nodes}volumes:\n  data:\nservices:\n  app:\n    image: {}\n    command: [\"sh\", \"-c\", \"[ $$VERSION = 1 ] || grep -q \\\"pre_deploy apply $$VERSION\\\" /data/migrations || exit 1; exec sleep 3600\"]\n    stop_grace_period: 1s\n    tags: [app]\n    volumes: [\"data:/data\"]\n    environment: {{ VERSION: \"{version}\" }}\n{hooks}",
            bed.base_image
        )
    };
    let hooks = "    hooks:\n      pre_deploy:\n        command: [\"sh\", \"-c\", \"echo $$PIER_HOOK $$PIER_TRIGGER $$VERSION prev=$$PIER_PREVIOUS_REVISION >> /data/migrations\"]\n        timeout: 1m\n      post_deploy:\n        command: [\"sh\", \"-c\", \"echo post $$VERSION >> /data/migrations\"]\n";
    let repo = UserRepo::new("hooks", &manifest(1, ""));
    let v1 = crate::support::head_commit(repo.dir.path());
    let (code, out, err) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_running(&bed, &repo.stack, "app", 1).await;

    repo.commit(&manifest(2, hooks), "version 2, migrated first");
    let (code, out, err) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{out}{err}");
    let replica = wait_running(&bed, &repo.stack, "app", 1).await;
    let read_migrations = || {
        pier(&repo, &bed)
            .args(["exec", "app", "--", "cat", "/data/migrations"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = read_migrations();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("pre_deploy apply 2 prev={v1}\npost 2\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing changed: no hook runs again.
    let (code, out, err) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        String::from_utf8_lossy(&read_migrations().stdout)
            .lines()
            .count(),
        2
    );

    // A failing migration: nothing replaced, its output in the error.
    let failing = hooks.replace(
        "echo $$PIER_HOOK $$PIER_TRIGGER $$VERSION prev=$$PIER_PREVIOUS_REVISION >> /data/migrations",
        "echo the migration failed; exit 5",
    );
    repo.commit(&manifest(3, &failing), "version 3, its migration fails");
    let (code, out, err) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("pre_deploy hook failed") && err.contains("the migration failed"),
        "{err}"
    );
    assert_eq!(
        wait_running(&bed, &repo.stack, "app", 1).await,
        replica,
        "the old one runs on"
    );
    let hooks_left = carrying(&bed, &repo.stack, "pier.hook").await;
    assert_eq!(hooks_left, 0, "hook containers are removed");
    remove_stack(&bed, &repo.stack).await;
    for node in &bed.nodes {
        let _ = engine(node)
            .await
            .remove_volume(
                &format!("{}_data", repo.stack),
                None::<bollard::query_parameters::RemoveVolumeOptions>,
            )
            .await;
    }
}

/// `pier restart` through the daemon: every replica restarted in place
/// (same container, started again), one at a time, and recorded in the
/// history as a restart, not a revision.
#[tokio::test]
async fn restart_restarts_replicas_in_place_and_is_recorded() {
    let bed = Bed::get();
    let repo = UserRepo::new("restart", &talker(&bed));
    let state = tempfile::tempdir().unwrap();
    let token = crate::support::unique("token");
    let daemon = crate::support::Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &crate::support::DaemonOptions::default().env("PIER_API_TOKEN", &token),
    );
    let replicas = wait_running(&bed, &repo.stack, "talker", 2).await;
    let started = |replicas: Vec<String>| {
        let bed = &bed;
        async move {
            let mut out = Vec::new();
            for replica in replicas {
                let (node, name) = replica.split_once(':').unwrap();
                let node = bed.nodes.iter().find(|n| n.name == node).unwrap();
                let inspected = engine(node)
                    .await
                    .inspect_container(name, None)
                    .await
                    .unwrap();
                out.push((
                    inspected.id.unwrap(),
                    inspected.state.unwrap().started_at.unwrap(),
                ));
            }
            out
        }
    };
    let before = started(replicas.clone()).await;
    let out = pier(&repo, &bed)
        .args([
            "restart",
            "talker",
            "--state-dir",
            state.path().to_str().unwrap(),
        ])
        .env("PIER_API_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history = eventually("the restart in the history", CONVERGE, || async {
        let (_, body) = daemon.request("GET", "/api/v1/history", &[], b"").await;
        let document: serde_json::Value = serde_json::from_str(&body).unwrap();
        (document["revisions"][0]["cause"] == "restart").then_some(document)
    })
    .await;
    assert_eq!(history["revisions"][0]["verdict"], "applied", "{history}");
    let after = started(wait_running(&bed, &repo.stack, "talker", 2).await).await;
    for ((id_before, at_before), (id_after, at_after)) in before.iter().zip(&after) {
        assert_eq!(id_before, id_after, "restarted in place");
        assert_ne!(at_before, at_after, "started again");
    }
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}

/// Compose's `post_start` runs in each new container (as its `user`, with
/// its `environment`), `pre_stop` in the old one before a replacement
/// stops it: seen in that order.
#[tokio::test]
async fn post_start_and_pre_stop_run_in_the_containers_in_order() {
    let bed = Bed::get();
    let nodes = nodes_yaml(&bed, &[&["app"], &[], &[]]);
    let manifest = |version: u32| {
        format!(
            "{nodes}volumes:\n  events:\nservices:\n  app:\n    image: {}\n    command: sleep 3600\n    stop_grace_period: 1s\n    tags: [app]\n    volumes: [\"events:/data\"]\n    environment: {{ VERSION: \"{version}\" }}\n    post_start:\n      - command: [\"sh\", \"-c\", \"echo post_start $$VERSION $$GREETING as $$(id -u) >> /data/events\"]\n        user: \"0\"\n        environment: {{ GREETING: hi }}\n    pre_stop:\n      - command: sh -c 'echo pre_stop $$VERSION >> /data/events'\n",
            bed.base_image
        )
    };
    let repo = UserRepo::new("lifecycle", &manifest(1));
    let (code, out, err) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{out}{err}");
    repo.commit(&manifest(2), "version 2");
    let (code, out, err) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_running(&bed, &repo.stack, "app", 1).await;
    let out = pier(&repo, &bed)
        .args(["exec", "app", "--", "cat", "/data/events"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "post_start 1 hi as 0\npre_stop 1\npost_start 2 hi as 0\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    remove_stack(&bed, &repo.stack).await;
}
