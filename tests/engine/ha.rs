//! `pier daemon --ha`: two daemons for one stack, one lease in the nodes'
//! swarm. Only the holder acts; a standby refuses changes and names the
//! leader; a holder cut off from the lease store stops, and a standby
//! takes over a killed holder and heals.

use crate::support::{
    self, Bed, CONVERGE, Daemon, DaemonOptions, UserRepo, engine, eventually, force_remove,
    nodes_yaml, remove_stack, sleeper, stack_replicas, wait_running,
};

/// The `ha` part of a daemon's status document.
async fn ha(daemon: &Daemon) -> serde_json::Value {
    daemon.status().await["ha"].clone()
}

/// Wait until `daemon` leads; the epoch of its term.
async fn leads(daemon: &Daemon, what: &str) -> u64 {
    eventually(what, CONVERGE, || async {
        let ha = ha(daemon).await;
        (ha["role"] == "leader").then(|| ha["epoch"].as_u64().expect("an epoch"))
    })
    .await
}

/// The epochs of the running `web` replicas, sorted.
async fn web_epochs(bed: &Bed, stack: &str) -> Vec<String> {
    let mut epochs: Vec<String> = stack_replicas(bed, stack)
        .await
        .into_iter()
        .filter(|(_, _, up, labels)| *up && labels.get("pier.service").is_some_and(|s| s == "web"))
        .map(|(_, _, _, labels)| labels.get("pier.epoch").cloned().unwrap_or_default())
        .collect();
    epochs.sort();
    epochs
}

/// Whether `daemon` says `idle` is frozen by alice.
async fn frozen(daemon: &Daemon) -> bool {
    daemon.status().await["frozen"].as_array().is_some_and(|f| {
        f.iter()
            .any(|f| f["service"] == "idle" && f["by"] == "alice")
    })
}

/// Remove one running `web` replica, as a crash of it would.
async fn remove_a_replica(bed: &Bed, stack: &str) {
    let (node, name, _, _) = stack_replicas(bed, stack)
        .await
        .into_iter()
        .find(|(_, _, up, labels)| *up && labels.get("pier.service").is_some_and(|s| s == "web"))
        .expect("a running web replica");
    let node = bed.nodes.iter().find(|n| n.name == node).expect("its node");
    force_remove(&engine(node).await, &name).await;
}

/// Wait until both `web` replicas run, created in term `epoch`... or, for
/// the one left standing, an older one: `newest` counts those of `epoch`.
async fn healed_in(bed: &Bed, stack: &str, epoch: u64, newest: usize) {
    eventually(
        &format!("web healed by the leader of term {epoch}"),
        CONVERGE,
        || async {
            let epochs = web_epochs(bed, stack).await;
            let in_term = epochs.iter().filter(|e| **e == epoch.to_string()).count();
            (epochs.len() == 2 && in_term >= newest).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_daemons_acts_and_the_other_takes_over_when_it_is_cut_off_or_killed() {
    let bed = Bed::get();
    // The lease needs a swarm on the first node; none may be half-formed.
    let _swarm = support::swarm_lock().await;
    let manifest = format!(
        "{}services:\n{}",
        nodes_yaml(&bed, &[&["app"], &["app"]]),
        sleeper(&bed, "web", 2, "    tags: [app]\n")
            + &sleeper(&bed, "idle", 1, "    tags: [app]\n")
    );
    let repo = UserRepo::new("ha", &manifest);
    let repo_path = repo.dir.path().to_str().unwrap().to_string();
    let scratch = tempfile::tempdir().unwrap();
    let faults = |name: &str| scratch.path().join(format!("{name}.faults"));
    let options = |name: &str| {
        std::fs::write(faults(name), "").unwrap();
        DaemonOptions::default()
            .arg("--ha-lease", "3s")
            .arg("--ha-renew", "1s")
            .arg("--ha-id", name)
            .env("PIER_HA", "true")
            .env("PIER_API_TOKEN", "token")
            .env("PIER_FAULT_FILE", faults(name).to_str().unwrap())
    };
    let a = Daemon::start(
        &bed,
        &repo_path,
        &repo.stack,
        &scratch.path().join("a"),
        &options("a"),
    );
    let first = leads(&a, "a leads").await;
    let mut b = Daemon::start(
        &bed,
        &repo_path,
        &repo.stack,
        &scratch.path().join("b"),
        &options("b"),
    );
    eventually("b stands by, naming a", CONVERGE, || async {
        let ha = ha(&b).await;
        (ha["role"] == "standby" && ha["leader"] == "a").then_some(())
    })
    .await;
    wait_running(&bed, &repo.stack, "web", 2).await;
    assert_eq!(
        web_epochs(&bed, &repo.stack).await,
        vec![first.to_string(); 2],
        "the leader's containers carry its term"
    );

    // A change asked of the standby is refused, with where to ask.
    let (code, body) = b
        .request(
            "POST",
            "/api/v1/reconcile",
            &[("Authorization", "Bearer token")],
            b"",
        )
        .await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("a leads") && body.contains("http://127.0.0.1:"),
        "{body}"
    );

    // The operator's freeze, made on the leader, reaches the standby with
    // the lease, and so outlives the leader's term.
    wait_running(&bed, &repo.stack, "idle", 1).await;
    let freeze = br#"{"services":["idle"],"by":"alice","reason":"maintenance"}"#;
    let (code, body) = a
        .request(
            "POST",
            "/api/v1/freeze",
            &[("Authorization", "Bearer token")],
            freeze,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    eventually("b copies a's freeze", CONVERGE, || async {
        frozen(&b).await.then_some(())
    })
    .await;

    // Cut a off from the lease store (it still reaches every node): it
    // stops acting, and b takes over in a newer term.
    std::fs::write(faults("a"), "lease:unreachable\n").unwrap();
    let second = leads(&b, "b takes over from a, cut off").await;
    assert!(second > first, "term {second} after {first}");
    eventually("a stands by", CONVERGE, || async {
        (ha(&a).await["role"] != "leader").then_some(())
    })
    .await;
    remove_a_replica(&bed, &repo.stack).await;
    healed_in(&bed, &repo.stack, second, 1).await;
    assert!(frozen(&b).await, "the freeze holds under the new leader");
    let epochs = web_epochs(&bed, &repo.stack).await;
    assert!(
        epochs
            .iter()
            .all(|e| *e == first.to_string() || *e == second.to_string()),
        "only the two terms made containers: {epochs:?}"
    );

    // a can reach the store again; b is killed as a crash would. a takes
    // over once b's lease lapses, and heals.
    std::fs::write(faults("a"), "").unwrap();
    b.kill();
    remove_a_replica(&bed, &repo.stack).await;
    let third = leads(&a, "a takes over from b, killed").await;
    assert!(third > second, "term {third} after {second}");
    healed_in(&bed, &repo.stack, third, 1).await;
    for daemon in [&a, &b] {
        let log = daemon.log_text();
        assert!(
            !log.contains("not made: this daemon does not hold the lease"),
            "standing by, a daemon never even tries an engine change:\n{log}"
        );
    }

    drop(a);
    remove_stack(&bed, &repo.stack).await;
    let first_node = engine(&bed.nodes[0]).await;
    let _ = first_node
        .delete_config(&format!("pier-lease-{}", repo.stack))
        .await;
}
