//! Tests against the real Docker engines and registries of the test bed.
//!
//! All tests in this binary share one bed and run in parallel: each names its
//! containers uniquely and removes only what it created.

mod support;

#[path = "engine/daemon.rs"]
mod daemon;
#[path = "engine/dashboard.rs"]
mod dashboard;
#[path = "engine/files.rs"]
mod files;
#[path = "engine/ha.rs"]
mod ha;
#[path = "engine/image.rs"]
mod image;
#[path = "engine/operate.rs"]
mod operate;
#[path = "engine/remotes.rs"]
mod remotes;
#[path = "engine/rollback.rs"]
mod rollback;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use futures_util::TryStreamExt;
use support::{Bed, engine, eventually, http_get, unique};

const HTTPD_PORT: &str = "8080/tcp";

/// Every node answers over TCP at API 1.41, runs a busybox httpd container on a
/// published port, and that port serves the page to the host at the node's address.
#[tokio::test]
async fn every_node_serves_http_from_a_container() {
    let bed = Bed::get();
    assert!(bed.nodes.len() >= 2, "the bed has at least two nodes");
    for node in &bed.nodes {
        let docker = engine(node).await;
        assert_eq!(
            docker.client_version().to_string(),
            "1.41",
            "negotiated down to the engine's API"
        );

        let name = unique("bed-httpd");
        let marker = format!("hello from {} ({name})", node.name);
        let body = ContainerCreateBody {
            image: Some(bed.base_image.clone()),
            cmd: Some(vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "mkdir -p /www && echo '{marker}' > /www/index.html && exec httpd -f -p 8080 -h /www"
                ),
            ]),
            exposed_ports: Some(vec![HTTPD_PORT.to_string()]),
            host_config: Some(HostConfig {
                // An empty host port lets the engine choose one, so parallel tests never collide.
                port_bindings: Some(HashMap::from([(
                    HTTPD_PORT.to_string(),
                    Some(vec![PortBinding {
                        host_ip: None,
                        host_port: Some(String::new()),
                    }]),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        docker
            .create_container(Some(options), body)
            .await
            .expect("create httpd container");
        docker
            .start_container(&name, None)
            .await
            .expect("start httpd container");

        let inspect = docker
            .inspect_container(&name, None)
            .await
            .expect("inspect");
        let host_port: u16 = inspect
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|ports| ports.get(HTTPD_PORT).cloned().flatten())
            .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port))
            .and_then(|port| port.parse().ok())
            .expect("the engine published a host port");

        let (status, page) = eventually("httpd to answer", Duration::from_secs(20), || {
            http_get(&node.addr, host_port, "/")
        })
        .await;
        assert_eq!(status, 200);
        assert_eq!(page.trim(), marker);

        let force = RemoveContainerOptionsBuilder::default().force(true).build();
        docker
            .remove_container(&name, Some(force))
            .await
            .expect("remove container");
        assert!(
            docker.inspect_container(&name, None).await.is_err(),
            "the container is gone after removal"
        );
    }
}

/// The authenticated registry serves the base image to the right credentials
/// and refuses a wrong password.
#[tokio::test]
async fn authenticated_registry_pull_needs_the_right_password() {
    let bed = Bed::get();
    let node = &bed.nodes[1];
    let docker = engine(node).await;
    // A tag of our own, so removing it never disturbs another test's image.
    let image = bed.base_image_on_auth_registry();
    let credentials = |password: &str| DockerCredentials {
        username: Some(bed.registry_user.clone()),
        password: Some(password.to_string()),
        serveraddress: Some(bed.registry_auth.clone()),
        ..Default::default()
    };
    let pull = |password: String| {
        let docker = docker.clone();
        let options = CreateImageOptionsBuilder::default()
            .from_image(&image)
            .build();
        let creds = credentials(&password);
        async move {
            docker
                .create_image(Some(options), None, Some(creds))
                .try_collect::<Vec<_>>()
                .await
        }
    };

    let refused = pull(format!("{}-wrong", bed.registry_password)).await;
    let error = refused
        .expect_err("a wrong password is refused")
        .to_string();
    assert!(
        error.contains("unauthorized") || error.contains("authentication required"),
        "the refusal says why: {error}"
    );

    pull(bed.registry_password.clone())
        .await
        .expect("pull with the right password");
    let inspected = docker
        .inspect_image(&image)
        .await
        .expect("the pulled image is on the node");
    assert!(
        inspected.repo_tags.unwrap_or_default().contains(&image),
        "the node holds the image under the authenticated registry's name"
    );

    let no_prune = RemoveImageOptionsBuilder::default().noprune(true).build();
    docker
        .remove_image(&image, Some(no_prune), None)
        .await
        .expect("remove pulled tag");
}

fn web_manifest(
    bed: &Bed,
    replicas: u32,
    greeting: &str,
    port: Option<u16>,
    health_port: u16,
) -> String {
    let ports = port
        .map(|p| format!("    ports: [\"{p}:8080\"]\n"))
        .unwrap_or_default();
    format!(
        "{nodes}services:\n  web:\n    image: {image}\n    command: [\"sh\", \"-c\", \"mkdir -p /www && echo \\\"$$GREETING\\\" > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n    environment: {{ GREETING: {greeting} }}\n    target_num_containers: {replicas}\n    deployment_strategy: high_availability\n    tags: [web]\n    stop_grace_period: 1s\n{ports}    healthcheck: {{ test: [\"CMD\", \"wget\", \"-q\", \"-O-\", \"http://127.0.0.1:{health_port}/\"], interval: 1s, retries: 2 }}\n",
        nodes = support::nodes_yaml(bed, &[&["web"], &["web"], &["web"]]),
        image = bed.base_image,
    )
}

/// Two replicas of `web`, one on n1 and one on n2, publishing `port`.
fn on_n1_and_n2(bed: &Bed, greeting: &str, port: u16, health_port: u16) -> String {
    web_manifest(bed, 2, greeting, Some(port), health_port).replace(
        "tags: [web]\n    stop",
        "tags: [web]\n    deploy: { placement: { constraints: [\"node.name != n3\"] } }\n    stop",
    )
}

fn container_names(containers: &[(String, String, bool)]) -> Vec<String> {
    let mut names: Vec<String> = containers.iter().map(|(_, name, _)| name.clone()).collect();
    names.sort();
    names
}

/// From empty to 3 replicas, then 5, then 1; each time `diff` afterwards
/// says there is nothing left to do and a second `apply` plans nothing.
#[tokio::test]
async fn converge_from_empty_and_scale_3_5_1() {
    let bed = Bed::get();
    let repo = support::UserRepo::new("scale", &web_manifest(&bed, 3, "v1", None, 8080));
    let s = repo.stack.clone();

    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("Plan: 3 to create, 0 to replace, 0 to remove."),
        "{stdout}"
    );
    let running = support::stack_containers(&bed, &s).await;
    // Which node gets which replica depends on what else runs on the shared
    // bed; high_availability must put one on each node either way.
    let nodes: BTreeSet<&str> = running.iter().map(|(node, _, _)| node.as_str()).collect();
    assert_eq!(nodes.len(), 3, "one replica per node: {running:?}");
    assert_eq!(
        container_names(&running),
        [1, 2, 3].map(|r| format!("{s}-web-{r}"))
    );
    assert!(running.iter().all(|(_, _, up)| *up));

    let (code, stdout, _) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 0, "nothing to do after apply: {stdout}");
    let (code, stdout, _) = repo.pier(&bed, &["apply"]);
    assert_eq!(
        (code, stdout.starts_with("No changes.")),
        (0, true),
        "{stdout}"
    );

    repo.commit(&web_manifest(&bed, 5, "v1", None, 8080), "scale to 5");
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("Plan: 2 to create, 0 to replace, 0 to remove."),
        "{stdout}"
    );
    assert_eq!(support::stack_containers(&bed, &s).await.len(), 5);

    repo.commit(&web_manifest(&bed, 1, "v1", None, 8080), "scale to 1");
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("Plan: 0 to create, 0 to replace, 4 to remove."),
        "{stdout}"
    );
    assert_eq!(
        container_names(&support::stack_containers(&bed, &s).await),
        [format!("{s}-web-1")],
        "the lowest replica stays"
    );
    assert_eq!(repo.pier(&bed, &["diff"]).0, 0);
    support::remove_stack(&bed, &s).await;
}

/// Changing an env var replaces both replicas one after the other; the page
/// is served from at least one node the whole time.
#[tokio::test]
async fn env_change_rolls_through_replicas_while_serving() {
    let bed = Bed::get();
    let port = 21000 + (std::process::id() % 2000) as u16;
    let repo = support::UserRepo::new("roll", &on_n1_and_n2(&bed, "v1", port, 8080));
    let s = repo.stack.clone();
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for node in &bed.nodes[..2] {
        let page = eventually("v1 served", Duration::from_secs(20), || {
            http_get(&node.addr, port, "/")
        })
        .await;
        assert_eq!(page.1.trim(), "v1");
    }

    repo.commit(&on_n1_and_n2(&bed, "v2", port, 8080), "greet with v2");
    let (_, diff, _) = repo.pier(&bed, &["diff"]);
    assert!(
        diff.contains("Plan: 0 to create, 2 to replace, 0 to remove."),
        "{diff}"
    );
    assert!(
        diff.contains("env ~GREETING (value hidden)"),
        "the plan names the change, not the value: {diff}"
    );
    let (_, diff, _) = repo.pier(&bed, &["diff", "--show-values"]);
    assert!(
        diff.contains("env ~GREETING=\"v2\""),
        "--show-values shows a value written in the manifest: {diff}"
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, bed) = (stop.clone(), bed.clone());
        tokio::spawn(async move {
            let (mut checks, mut dark) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let a = http_get(&bed.nodes[0].addr, port, "/")
                    .await
                    .is_some_and(|(c, _)| c == 200);
                let b = http_get(&bed.nodes[1].addr, port, "/")
                    .await
                    .is_some_and(|(c, _)| c == 200);
                checks += 1;
                if !a && !b {
                    dark += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (checks, dark)
        })
    };
    let repo_dir = repo.dir.path().to_path_buf();
    let (code, stdout, stderr) = {
        let bed = bed.clone();
        let stack = s.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_pier"))
                .args(["apply", "--stack", &stack])
                .current_dir(repo_dir)
                .env("PIER_INSECURE_REGISTRIES", &bed.registry)
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .await
        .unwrap()
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (checks, dark) = watcher.await.unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        checks > 10,
        "the watcher ran during the rollout ({checks} checks)"
    );
    assert_eq!(
        dark, 0,
        "both nodes were dark at once in {dark} of {checks} checks"
    );
    let wait_order: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("wait-healthy"))
        .collect();
    assert_eq!(
        wait_order.len(),
        2,
        "each new replica passed its health gate: {stderr}"
    );
    for node in &bed.nodes[..2] {
        assert_eq!(
            http_get(&node.addr, port, "/").await.unwrap().1.trim(),
            "v2"
        );
    }
    support::remove_stack(&bed, &s).await;
}

/// A new version whose health check fails is rolled back: the old replicas
/// are back under their names and still serving, and apply says what failed.
#[tokio::test]
async fn failing_health_check_rolls_back() {
    let bed = Bed::get();
    let port = 23000 + (std::process::id() % 2000) as u16;
    let repo = support::UserRepo::new("rollback", &on_n1_and_n2(&bed, "good", port, 8080));
    let s = repo.stack.clone();
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let before = support::stack_containers(&bed, &s).await;

    // The new version checks a port nothing listens on: it never becomes healthy.
    repo.commit(
        &on_n1_and_n2(&bed, "bad", port, 9999),
        "broken health check",
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["apply", "--health-timeout", "30s"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("Apply failed:"), "{stderr}");
    let failure = stderr
        .lines()
        .find(|l| l.contains("web: replica 1 on n"))
        .unwrap_or_default();
    assert!(
        failure.ends_with("failed (health check failed); rolled back to the previous container"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("replica 2"),
        "the rollout stopped at the first failure: {stderr}"
    );

    assert_eq!(
        support::stack_containers(&bed, &s).await,
        before,
        "the same containers, running, under their names"
    );
    for node in &bed.nodes[..2] {
        let page = eventually("old version serving", Duration::from_secs(20), || {
            http_get(&node.addr, port, "/")
        })
        .await;
        assert_eq!(page.1.trim(), "good");
    }
    support::remove_stack(&bed, &s).await;
}

/// Removing a service removes its containers only: another service and an
/// unowned container with a look-alike name survive.
#[tokio::test]
async fn removed_services_are_pruned_and_unowned_containers_survive() {
    let bed = Bed::get();
    let service = |name: &str| {
        format!(
            "  {name}:\n    image: {}\n    command: sleep 3600\n    stop_grace_period: 1s\n",
            bed.base_image
        )
    };
    let nodes = support::nodes_yaml(&bed, &[&["a"], &["b"], &[]]);
    let repo = support::UserRepo::new(
        "prune",
        &format!("{nodes}services:\n{}{}", service("keep"), service("drop")),
    );
    let s = repo.stack.clone();
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    let docker = engine(&bed.nodes[0]).await;
    let lookalike = format!("{s}-drop-1-mine");
    let body = ContainerCreateBody {
        image: Some(bed.base_image.clone()),
        cmd: Some(vec!["sleep".into(), "3600".into()]),
        ..Default::default()
    };
    docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(&lookalike)
                    .build(),
            ),
            body,
        )
        .await
        .unwrap();

    repo.commit(
        &format!("{nodes}services:\n{}", service("keep")),
        "drop a service",
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("drop (no longer in the manifests)"),
        "{stdout}"
    );
    let left: Vec<String> = support::stack_containers(&bed, &s)
        .await
        .into_iter()
        .map(|(_, n, _)| n)
        .collect();
    assert_eq!(left, [format!("{s}-keep-1")]);
    assert!(
        docker.inspect_container(&lookalike, None).await.is_ok(),
        "the unowned container is untouched"
    );

    let force = RemoveContainerOptionsBuilder::default().force(true).build();
    docker
        .remove_container(&lookalike, Some(force))
        .await
        .unwrap();
    support::remove_stack(&bed, &s).await;
}

/// An invalid commit changes nothing and says where the problem is.
#[tokio::test]
async fn an_invalid_commit_changes_nothing() {
    let bed = Bed::get();
    let repo = support::UserRepo::new("invalid", &web_manifest(&bed, 1, "v1", None, 8080));
    let s = repo.stack.clone();
    assert_eq!(repo.pier(&bed, &["apply"]).0, 0);
    let before = support::stack_containers(&bed, &s).await;
    repo.commit(
        &web_manifest(&bed, 2, "v2", None, 8080)
            .replace("target_num_containers", "target_num_containerz"),
        "typo",
    );
    let (code, _, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("pier/stack.yml:"), "{stderr}");
    assert!(
        stderr.contains("did you mean `target_num_containers`?"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(support::stack_containers(&bed, &s).await, before);
    support::remove_stack(&bed, &s).await;
}

/// A node reached over mutual TLS (the bed's node 1 on :2376): `apply`
/// converges it with the client certificate its `tls: { secret }` names;
/// without that folder, or with a CA that did not sign the server, the node
/// is reported unreachable with the reason and nothing is done.
#[tokio::test]
async fn a_node_over_mutual_tls() {
    let bed = Bed::get();
    let manifest = one_node_manifest(&bed, &bed.tls_endpoint, ", tls: { secret: bed }");
    let repo = support::UserRepo::new("tls", &manifest);

    let (code, stdout, stderr) = repo.pier(&bed, &["apply", "--engine-timeout", "3s"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("set PIER_TLS_BED"), "{stdout}");

    let wrong = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("server-cert.pem", "ca.pem"),
        ("cert.pem", "cert.pem"),
        ("key.pem", "key.pem"),
    ] {
        std::fs::copy(format!("{}/{from}", bed.tls_dir), wrong.path().join(to)).unwrap();
    }
    let (code, stdout, stderr) = repo.pier_with_env(
        &bed,
        &["apply", "--engine-timeout", "3s"],
        &[("PIER_TLS_BED", wrong.path().to_str().unwrap())],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("unreachable"), "{stdout}");
    assert!(
        support::stack_containers(&bed, &repo.stack)
            .await
            .is_empty()
    );

    let tls = [("PIER_TLS_BED", bed.tls_dir.as_str())];
    converges_on_node_one(&bed, &repo, &tls, "through its TLS endpoint").await;
}

/// One service on one node, reached at `endpoint` (with `extra` node keys).
fn one_node_manifest(bed: &Bed, endpoint: &str, extra: &str) -> String {
    format!(
        "nodes:\n  remote: {{ endpoint: \"{endpoint}\"{extra} }}\nservices:\n  web:\n    image: {}\n    command: sleep 3600\n    stop_grace_period: 1s\n",
        bed.base_image
    )
}

/// `apply` with `env` creates `web` on node 1 alone, then `diff` has nothing
/// to do; the stack is removed afterwards.
async fn converges_on_node_one(
    bed: &Bed,
    repo: &support::UserRepo,
    env: &[(&str, &str)],
    how: &str,
) {
    let (code, stdout, stderr) = repo.pier_with_env(bed, &["apply"], env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        support::stack_containers(bed, &repo.stack).await,
        [("n1".to_string(), format!("{}-web-1", repo.stack), true)],
        "created on node 1, {how}"
    );
    let (code, stdout, _) = repo.pier_with_env(bed, &["diff"], env);
    assert_eq!(code, 0, "{stdout}");
    support::remove_stack(bed, &repo.stack).await;
}

/// A folder holding an `ssh` that uses only `key` and `known_hosts` (no
/// ssh configuration at all), for `PATH`.
fn ssh_with(folder: &std::path::Path, key: &std::path::Path, known_hosts: &std::path::Path) {
    let wrapper = folder.join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -F /dev/null -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null -i {} \"$@\"\n",
            known_hosts.display(),
            key.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
}

/// A node reached over SSH (`ssh://root@<node 1>`), the way the Docker CLI
/// does it: the system's ssh runs `docker system dial-stdio` on the host, so
/// the user's ssh configuration, agent and known hosts apply. A host whose
/// key is not known, or that refuses the key offered, is reported
/// unreachable with ssh's own words, and nothing is done.
#[tokio::test]
async fn a_node_over_ssh() {
    let bed = Bed::get();
    let repo = support::UserRepo::new("ssh", &one_node_manifest(&bed, &bed.ssh_endpoint, ""));
    let path_with = |folder: &std::path::Path| {
        format!(
            "{}:{}",
            folder.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    };
    let stranger = tempfile::tempdir().unwrap();
    let key = stranger.path().join("id_ed25519");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen runs");
    assert!(keygen.success());
    let bed_known_hosts = std::path::Path::new(&bed.ssh_path).join("../known_hosts");
    let no_known_hosts = stranger.path().join("known_hosts");
    std::fs::write(&no_known_hosts, "").unwrap();

    for (known_hosts, says) in [
        (&no_known_hosts, "Host key verification failed"),
        (&bed_known_hosts, "Permission denied (publickey)"),
    ] {
        ssh_with(stranger.path(), &key, known_hosts);
        let path = path_with(stranger.path());
        let (code, stdout, stderr) = repo.pier_with_env(
            &bed,
            &["apply", "--engine-timeout", "5s"],
            &[("PATH", path.as_str())],
        );
        assert_eq!(code, 1, "{stdout}{stderr}");
        assert!(
            stdout.contains("node remote is unreachable") && stdout.contains(says),
            "{stdout}"
        );
        assert!(
            support::stack_containers(&bed, &repo.stack)
                .await
                .is_empty()
        );
    }
    assert_eq!(
        std::fs::read_to_string(&no_known_hosts).unwrap(),
        "",
        "an unknown host is not trusted on first use"
    );

    let bed_path = path_with(std::path::Path::new(&bed.ssh_path));
    let with_key = [("PATH", bed_path.as_str())];
    converges_on_node_one(&bed, &repo, &with_key, "through ssh").await;
}

/// A stage's `timeout` stops it: `pier pipeline run` fails the stage with
/// the time it was given, and its container is removed.
#[tokio::test]
async fn a_stage_that_runs_past_its_timeout_is_stopped() {
    let bed = Bed::get();
    let manifest = format!(
        "{}pipeline:\n  runner_tags: [ci]\n  stages:\n    - name: slow\n      image: {}\n      timeout: 2s\n      script:\n        - echo started\n        - sleep 60\nservices:\n  web:\n    image: {}\n    command: sleep 3600\n",
        support::nodes_yaml(&bed, &[&[], &[], &["ci"]]),
        bed.base_image,
        bed.base_image
    );
    let repo = support::UserRepo::new("stagetimeout", &manifest);
    let (code, stdout, stderr) = repo.pier(&bed, &["pipeline", "run"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let output = format!("{stdout}{stderr}");
    assert!(output.contains("started"), "the stage ran: {output}");
    assert!(output.contains("timed out after 2s"), "{output}");
    let runner = support::engine(&bed.nodes[2]).await;
    let left = support::labelled(&runner, &format!("pier.pipeline={}", repo.stack)).await;
    assert!(left.is_empty(), "stage containers left: {left:?}");

    // A build stage has the same deadline, and its output shows as it comes.
    std::fs::create_dir_all(repo.dir.path().join("pier/app")).unwrap();
    std::fs::write(
        repo.dir.path().join("pier/app/Dockerfile"),
        format!(
            "FROM {}\nRUN echo building-the-app && sleep 120\n",
            bed.base_image
        ),
    )
    .unwrap();
    let building = format!(
        "{}pipeline:\n  runner_tags: [ci]\n  stages:\n    - name: image\n      build: [app]\n      timeout: 3s\nservices:\n  app:\n    build: ./app\n    image: {}/{}-app\n    command: sleep 3600\n",
        support::nodes_yaml(&bed, &[&[], &[], &["ci"]]),
        bed.registry,
        repo.stack
    );
    repo.commit(&building, "a slow build");
    let (code, stdout, stderr) = repo.pier(&bed, &["pipeline", "run"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let output = format!("{stdout}{stderr}");
    assert!(output.contains("$ build app"), "{output}");
    assert!(output.contains("building-the-app"), "{output}");
    assert!(output.contains("timed out after 3s"), "{output}");
}

/// `pier pipeline run --deploy` deploys only what passed: a failing
/// test stage deploys nothing; a passing run deploys the image its build
/// stage pushed, pinned to the digest it built.
#[tokio::test]
async fn pipeline_run_deploys_what_it_built_and_only_after_it_passed() {
    let bed = Bed::get();
    let pipeline = |test: &str| {
        format!(
            "{}pipeline:\n  runner_tags: [ci]\n  stages:\n    - name: test\n      image: {}\n      script: [\"{test}\"]\n    - name: image\n      build: [app]\nservices:\n  app:\n    build: ./app\n    image: {}/{{stack}}-app\n    command: sleep 3600\n",
            support::nodes_yaml(&bed, &[&[], &[], &["ci"]]),
            bed.base_image,
            bed.registry,
        )
    };
    let repo = support::UserRepo::new("deployafter", "services: {}\n");
    std::fs::create_dir_all(repo.dir.path().join("pier/app")).unwrap();
    std::fs::write(
        repo.dir.path().join("pier/app/Dockerfile"),
        format!("FROM {}\nRUN echo built > /built\n", bed.base_image),
    )
    .unwrap();
    let manifest = |test: &str| pipeline(test).replace("{stack}", &repo.stack);
    repo.commit(&manifest("exit 3"), "a failing test");
    let (code, stdout, stderr) = repo.pier(&bed, &["pipeline", "run", "--deploy"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("Pipeline failed."), "{stdout}{stderr}");
    assert!(
        support::stack_containers(&bed, &repo.stack)
            .await
            .is_empty(),
        "a failed run deploys nothing"
    );

    repo.commit(&manifest("true"), "a passing test");
    let (code, stdout, stderr) = repo.pier(&bed, &["pipeline", "run", "--deploy"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let built = stdout
        .lines()
        .find_map(|line| line.strip_prefix("built app: "))
        .unwrap_or_else(|| panic!("no built image: {stdout}"))
        .to_string();
    assert!(stdout.contains("Applied: 1 created"), "{stdout}{stderr}");
    let running = support::stack_containers(&bed, &repo.stack).await;
    assert_eq!(running.len(), 1, "{running:?}");
    let (node, name, _) = &running[0];
    let docker = support::engine(bed.nodes.iter().find(|n| &n.name == node).unwrap()).await;
    let inspect = docker.inspect_container(name, None).await.unwrap();
    assert_eq!(
        inspect.config.unwrap().image.as_deref(),
        Some(built.as_str()),
        "the container runs the digest the pipeline built"
    );
}

/// The anonymous volumes of `container` on `docker`: (mount path, volume name), sorted.
async fn anonymous_volumes(docker: &bollard::Docker, container: &str) -> Vec<(String, String)> {
    let inspect = docker
        .inspect_container(container, None)
        .await
        .expect("inspect");
    let mut volumes: Vec<(String, String)> = inspect
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.typ.as_deref() == Some("volume"))
        .map(|m| {
            (
                m.destination.unwrap_or_default(),
                m.name.unwrap_or_default(),
            )
        })
        .collect();
    volumes.sort();
    volumes
}

async fn volume_exists(docker: &bollard::Docker, name: &str) -> bool {
    docker.inspect_volume(name).await.is_ok()
}

/// A replacement takes over the old container's anonymous volumes, both a
/// bare `volumes: ["/data"]` entry and the image's own `VOLUME`, with the
/// data in them. Pruning keeps them unless `--prune-volumes` is given.
#[tokio::test]
async fn anonymous_volumes_survive_replace_and_prune_only_when_asked() {
    let bed = Bed::get();
    let node = &bed.nodes[0];
    let docker = engine(node).await;
    let tag = unique("vol");
    support::push_image_with_volumes(
        &bed,
        node,
        "pier-test/volumes",
        &tag,
        &tag,
        &["/image-data"],
    )
    .await;
    let manifest = |generation: u32| {
        format!(
            "{nodes}services:\n  db:\n    image: {registry}/pier-test/volumes:{tag}\n    command: [\"sh\", \"-c\", \"[ -f /data/first ] || echo $$GENERATION > /data/first; exec sleep 3600\"]\n    environment: {{ GENERATION: \"{generation}\" }}\n    volumes: [\"/data\"]\n    stop_grace_period: 1s\n    deploy: {{ placement: {{ constraints: [\"node.name == n1\"] }} }}\n",
            nodes = support::nodes_yaml(&bed, &[&[], &[]]),
            registry = bed.registry,
        )
    };
    let repo = support::UserRepo::new("volumes", &manifest(1));
    let s = repo.stack.clone();
    let name = format!("{s}-db-1");
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let first = anonymous_volumes(&docker, &name).await;
    assert_eq!(
        first
            .iter()
            .map(|(path, _)| path.as_str())
            .collect::<Vec<_>>(),
        ["/data", "/image-data"],
        "both anonymous volumes are mounted"
    );

    repo.commit(&manifest(2), "a new configuration");
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("~ {name} on n1")), "{stdout}");
    assert_eq!(
        anonymous_volumes(&docker, &name).await,
        first,
        "the replacement mounts the same volumes"
    );
    assert_eq!(
        support::exec(&docker, &name, &["cat", "/data/first"])
            .await
            .1
            .trim(),
        "1",
        "the data written by the first container is still there"
    );

    // Pruned without --prune-volumes: the container goes, its volumes stay.
    repo.commit(
        &support::nodes_yaml(&bed, &[&[], &[]]),
        "no services at all",
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["apply", "--allow-empty"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(support::stack_containers(&bed, &s).await.is_empty());
    for (_, volume) in &first {
        assert!(volume_exists(&docker, volume).await, "{volume} is kept");
    }

    // Pruned with --prune-volumes: a fresh container's volumes go with it.
    repo.commit(&manifest(3), "back again");
    assert_eq!(repo.pier(&bed, &["apply"]).0, 0);
    let second = anonymous_volumes(&docker, &name).await;
    assert!(
        second.iter().all(|v| !first.contains(v)),
        "a new container starts with new volumes"
    );
    repo.commit(&support::nodes_yaml(&bed, &[&[], &[]]), "gone again");
    let (code, stdout, stderr) = repo.pier(&bed, &["apply", "--allow-empty", "--prune-volumes"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for (_, volume) in &second {
        assert!(!volume_exists(&docker, volume).await, "{volume} is removed");
    }
    for (_, volume) in &first {
        assert!(
            volume_exists(&docker, volume).await,
            "{volume} is untouched"
        );
        docker
            .remove_volume(
                volume,
                None::<bollard::query_parameters::RemoveVolumeOptions>,
            )
            .await
            .expect("clean up");
    }
    support::remove_stack(&bed, &s).await;
}

/// The crash windows of a stop-first replacement, reached on purpose with
/// `PIER_FAULT_AT`: the next `apply` recovers each one with one copy of the
/// replica in the end. A foreign container under the set-aside name blocks
/// the replacement up front, and a new replica that never becomes healthy
/// is removed.
#[tokio::test]
async fn crash_windows_of_a_replacement_are_recovered() {
    let bed = Bed::get();
    let port = 25000 + (std::process::id() % 2000) as u16;
    let manifest = |greeting: &str, health_port: u16| {
        web_manifest(&bed, 1, greeting, Some(port), health_port).replace(
            "tags: [web]\n    stop",
            "tags: [web]\n    deploy: { placement: { constraints: [\"node.name == n1\"] } }\n    stop",
        )
    };
    let repo = support::UserRepo::new("crash", &manifest("v1", 8080));
    let s = repo.stack.clone();
    let name = format!("{s}-web-1");
    let docker = engine(&bed.nodes[0]).await;
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let crash = |point: &'static str| {
        let repo = &repo;
        let bed = &bed;
        move || {
            let (code, stdout, stderr) = repo.pier_with_env(
                bed,
                &["apply", "--health-timeout", "20s"],
                &[("PIER_FAULT_AT", point)],
            );
            assert_eq!(code, -1, "aborted at {point}: {stdout}{stderr}");
            assert!(
                stderr.contains(&format!("PIER_FAULT_AT={point}")),
                "{stderr}"
            );
        }
    };
    let original = docker
        .inspect_container(&name, None)
        .await
        .unwrap()
        .id
        .unwrap();

    // Crashed with the old container set aside: the next apply finishes the job.
    repo.commit(&manifest("v2", 8080), "v2");
    crash("replace:set-aside")();
    assert_eq!(
        support::stack_containers(&bed, &s).await,
        [("n1".to_string(), format!("{name}-pier-old"), false)]
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        support::stack_containers(&bed, &s).await,
        [("n1".to_string(), name.clone(), true)]
    );
    let page = eventually("v2 serving", Duration::from_secs(20), || {
        http_get(&bed.nodes[0].addr, port, "/")
    })
    .await;
    assert_eq!(page.1.trim(), "v2");

    // Crashed after creating a successor that is never healthy: the old
    // container aside is not pruned for it; it is put back and runs.
    let v2 = docker
        .inspect_container(&name, None)
        .await
        .unwrap()
        .id
        .unwrap();
    assert_ne!(v2, original);
    repo.commit(&manifest("v3", 9999), "v3 with a broken health check");
    crash("create:created")();
    let (code, stdout, stderr) = repo.pier(&bed, &["apply", "--health-timeout", "20s"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("rolled back to the previous container"),
        "{stderr}"
    );
    assert_eq!(
        support::stack_containers(&bed, &s).await,
        [("n1".to_string(), name.clone(), true)]
    );
    assert_eq!(
        docker
            .inspect_container(&name, None)
            .await
            .unwrap()
            .id
            .unwrap(),
        v2,
        "the v2 container itself runs again"
    );

    // A container pier does not own holds the set-aside name: blocked, untouched.
    let squatter = format!("{name}-pier-old");
    docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(&squatter)
                    .build(),
            ),
            ContainerCreateBody {
                image: Some(bed.base_image.clone()),
                cmd: Some(vec!["sleep".into(), "3600".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    repo.commit(&manifest("v4", 8080), "v4");
    let (code, stdout, _) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains(&format!("a container named `{squatter}` exists on n1")),
        "{stdout}"
    );
    assert_eq!(
        docker
            .inspect_container(&name, None)
            .await
            .unwrap()
            .id
            .unwrap(),
        v2
    );
    let force = RemoveContainerOptionsBuilder::default().force(true).build();
    docker
        .remove_container(&squatter, Some(force))
        .await
        .unwrap();
    support::remove_stack(&bed, &s).await;

    // A new replica that never becomes healthy is removed, not left restarting.
    let repo = support::UserRepo::new("unhealthy", &manifest("v1", 9999));
    let (code, stdout, stderr) = repo.pier(&bed, &["apply", "--health-timeout", "20s"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("did not become healthy"), "{stderr}");
    assert!(stderr.contains("removed it"), "{stderr}");
    assert!(
        support::stack_containers(&bed, &repo.stack)
            .await
            .is_empty()
    );
    support::remove_stack(&bed, &repo.stack).await;
}

/// A start-first replacement cut short while both copies run (fault point
/// `replace:beside`): the successor is recognised by its `pier.replaces`
/// label and goes, the old copy is replaced again, and one copy remains.
#[tokio::test]
async fn a_start_first_replacement_cut_short_is_redone() {
    let bed = Bed::get();
    let manifest = |greeting: &str| {
        web_manifest(&bed, 1, greeting, None, 8080).replace(
            "tags: [web]\n    stop",
            "tags: [web]\n    deploy: { placement: { constraints: [\"node.name == n1\"] }, update_config: { order: start-first } }\n    stop",
        )
    };
    let repo = support::UserRepo::new("beside", &manifest("v1"));
    let name = format!("{}-web-1", repo.stack);
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let docker = engine(&bed.nodes[0]).await;
    let id_of = |name: String| {
        let docker = docker.clone();
        async move {
            docker
                .inspect_container(&name, None)
                .await
                .ok()
                .and_then(|c| c.id)
        }
    };
    let v1 = id_of(name.clone()).await.expect("v1 runs");

    repo.commit(&manifest("v2"), "v2");
    let (code, stdout, stderr) =
        repo.pier_with_env(&bed, &["apply"], &[("PIER_FAULT_AT", "replace:beside")]);
    assert_eq!(code, -1, "aborted: {stdout}{stderr}");
    let next = format!("{name}-pier-next");
    assert_eq!(
        container_names(&support::stack_containers(&bed, &repo.stack).await),
        [name.clone(), next.clone()]
    );
    let successor = docker.inspect_container(&next, None).await.unwrap();
    assert_eq!(
        successor.config.and_then(|c| c.labels).unwrap_or_default()["pier.replaces"],
        v1
    );

    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("- {next} on n1")) && stdout.contains(&format!("~ {name} on n1")),
        "the unfinished successor goes and the old copy is replaced again: {stdout}"
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        support::stack_containers(&bed, &repo.stack).await,
        [("n1".to_string(), name.clone(), true)]
    );
    let now = id_of(name.clone()).await.expect("a replica runs");
    assert!(
        now != v1 && Some(now) != successor.id,
        "a new successor took over"
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    support::remove_stack(&bed, &repo.stack).await;
}

/// Credentials the registry rejects are an error that freezes the service,
/// never a fall-back to the image the node holds locally.
#[tokio::test]
async fn rejected_registry_credentials_never_fall_back_to_a_local_image() {
    let bed = Bed::get();
    let node = &bed.nodes[0];
    let docker = engine(node).await;
    let image = bed.base_image_on_auth_registry();
    let options = CreateImageOptionsBuilder::default()
        .from_image(&image)
        .build();
    let credentials = DockerCredentials {
        username: Some(bed.registry_user.clone()),
        password: Some(bed.registry_password.clone()),
        serveraddress: Some(bed.registry_auth.clone()),
        ..Default::default()
    };
    docker
        .create_image(Some(options), None, Some(credentials))
        .try_collect::<Vec<_>>()
        .await
        .expect("pull with the right password");
    let manifest = format!(
        "{}services:\n  web:\n    image: {image}\n    command: sleep 3600\n",
        support::nodes_yaml(&bed, &[&[]])
    );
    let repo = support::UserRepo::new("rejected", &manifest);
    let wrong = unique("wrong-password");
    let (code, stdout, stderr) = repo.pier_with_env(
        &bed,
        &["apply"],
        &[
            ("PIER_REGISTRY_HOST", &bed.registry_auth),
            ("PIER_REGISTRY_USER", &bed.registry_user),
            ("PIER_REGISTRY_PASSWORD", &wrong),
        ],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("the registry rejected the credentials"),
        "{stdout}{stderr}"
    );
    assert!(
        !format!("{stdout}{stderr}").contains(&wrong),
        "the password is never printed"
    );
    assert!(
        support::stack_containers(&bed, &repo.stack)
            .await
            .is_empty()
    );
}

/// Two repositories that happen to share a stack name on the same hosts:
/// the second refuses to touch the first one's containers, naming both,
/// until it is told to `--adopt` them; then they carry its source.
#[tokio::test]
async fn a_stack_of_another_repository_is_refused_unless_adopted() {
    let bed = Bed::get();
    let manifest = |greeting: &str| {
        format!(
            "{}services:\n  web:\n    image: {}\n    command: sleep 3600\n    environment: {{ GREETING: {greeting} }}\n    stop_grace_period: 1s\n",
            support::nodes_yaml(&bed, &[&[]]),
            bed.base_image
        )
    };
    let first = support::UserRepo::new("source", &manifest("one"));
    let (code, stdout, stderr) = first.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let sources = |label: &'static str| {
        let (bed, stack) = (&bed, first.stack.clone());
        async move {
            support::stack_replicas(bed, &stack)
                .await
                .into_iter()
                .map(|(_, _, _, labels)| labels.get(label).cloned().unwrap_or_default())
                .collect::<Vec<_>>()
        }
    };
    let before = sources("pier.source").await;
    assert_eq!(before.len(), 1);
    assert!(!before[0].is_empty(), "the container records its source");

    let mut second = support::UserRepo::new("other", &manifest("two"));
    second.stack = first.stack.clone();
    let (code, stdout, stderr) = second.pier(&bed, &["apply"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let first_path = first.dir.path().canonicalize().unwrap();
    let second_path = second.dir.path().canonicalize().unwrap();
    for path in [&first_path, &second_path] {
        assert!(
            stdout.contains(&format!("{}#pier", path.display())),
            "both sources are named: {stdout}"
        );
    }
    assert!(stdout.contains("--adopt"), "{stdout}");
    assert_eq!(sources("pier.source").await, before, "nothing was touched");

    let (code, stdout, stderr) = second.pier(&bed, &["apply", "--adopt"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        sources("pier.source-name").await,
        [format!("{}#pier", second_path.display())]
    );
    assert_eq!(second.pier(&bed, &["diff"]).0, 0, "adopted for good");
    support::remove_stack(&bed, &first.stack).await;
}

/// `depends_on` conditions on real engines: `web` starts only after the
/// `migrate` job exited with 0 and `db` is healthy; the exited job is not
/// replaced on the next pass, so `diff` afterwards has nothing to do. A job
/// that fails keeps its dependents from rolling out.
#[tokio::test]
async fn depends_on_conditions_wait_for_health_and_completion() {
    let bed = Bed::get();
    let manifest = |job: &str| {
        format!(
            "{nodes}services:\n  db:\n    image: {image}\n    command: [\"sh\", \"-c\", \"sleep 1; touch /ready; exec sleep 3600\"]\n    stop_grace_period: 1s\n    healthcheck: {{ test: [\"CMD\", \"test\", \"-f\", \"/ready\"], interval: 500ms }}\n  migrate:\n    image: {image}\n    command: [\"sh\", \"-c\", \"{job}\"]\n  web:\n    image: {image}\n    command: sleep 3600\n    stop_grace_period: 1s\n    depends_on:\n      db: {{ condition: service_healthy }}\n      migrate: {{ condition: service_completed_successfully }}\n",
            nodes = support::nodes_yaml(&bed, &[&[]]),
            image = bed.base_image
        )
    };
    let repo = support::UserRepo::new("conditions", &manifest("sleep 1; echo migrated"));
    let s = repo.stack.clone();
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let started = |name: &str| {
        let docker = engine(&bed.nodes[0]);
        let name = format!("{s}-{name}-1");
        async move {
            let state = docker
                .await
                .inspect_container(&name, None)
                .await
                .expect("inspect")
                .state
                .unwrap_or_default();
            (
                state.started_at.unwrap_or_default(),
                state.finished_at.unwrap_or_default(),
                state.exit_code,
            )
        }
    };
    let (_, job_finished, job_exit) = started("migrate").await;
    let (web_started, _, _) = started("web").await;
    assert_eq!(job_exit, Some(0));
    assert!(
        web_started > job_finished,
        "web started ({web_started}) after the job finished ({job_finished})"
    );
    let (code, stdout, _) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 0, "the finished job is left as it is: {stdout}");

    repo.commit(
        &manifest("exit 3").replace(
            "command: sleep 3600\n    stop_grace_period: 1s\n    depends_on",
            "command: sleep 3601\n    stop_grace_period: 1s\n    depends_on",
        ),
        "a failing job, and a new web",
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["apply", "--health-timeout", "20s"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("migrate: replica 1 on n1 failed (exited with code 3)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("web: not rolled out because `migrate` failed"),
        "{stderr}"
    );
    support::remove_stack(&bed, &s).await;
}

/// A registry that accepts connections and never answers costs a pass at
/// most its timeout: `apply` finishes, leaves the service as it is, and says
/// the registry is unreachable.
#[tokio::test]
async fn a_silent_registry_is_bounded_by_its_timeout() {
    let bed = Bed::get();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = listener.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            connections.push(socket);
        }
    });
    let manifest = format!(
        "{}services:\n  web:\n    image: {registry}/pier-test/silent:1\n    command: sleep 3600\n",
        support::nodes_yaml(&bed, &[&[]])
    );
    let repo = support::UserRepo::new("silent", &manifest);
    let pier = std::process::Command::new(env!("CARGO_BIN_EXE_pier"))
        .args(["apply", "--stack", &repo.stack, "--registry-timeout", "1s"])
        .args(["--insecure-registry", &registry])
        .current_dir(repo.dir.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || pier.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("is unreachable") && stdout.contains("web"),
        "{stdout}"
    );
    assert!(
        support::stack_containers(&bed, &repo.stack)
            .await
            .is_empty()
    );
    held.abort();
}

/// Environment values stay out of sight: `diff` hides every changed value,
/// `--show-values` shows only those written in the manifests (not one an
/// entry takes by name), and `PIER_LOG=debug` prints none. A name-only
/// entry never reaches pier's own `PIER_*` variables: the container does
/// not get the API token.
#[tokio::test]
async fn environment_values_are_hidden_in_diff_and_debug_logs() {
    let bed = Bed::get();
    let manifest = |plain: &str| {
        format!(
            "{}    environment:\n      PLAIN: {plain}\n      NOTE: ${{DEPLOY_NOTE}}\n      DB_URL:\n      PIER_API_TOKEN:\n",
            one_node_manifest(&bed, &bed.nodes[0].endpoint, "")
        )
    };
    let repo = support::UserRepo::new("hide", &manifest("one"));
    let token = support::unique("api-token");
    let env = [
        ("DEPLOY_NOTE", "note-alpha-71"),
        ("DB_URL", "db-alpha-71"),
        ("PIER_API_TOKEN", token.as_str()),
        ("PIER_LOG", "debug"),
    ];
    let (code, stdout, stderr) = repo.pier_with_env(&bed, &["apply"], &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        !stderr.contains("note-alpha-71") && !stdout.contains("note-alpha-71"),
        "a debug log shows an environment value: {stderr}"
    );
    let docker = support::engine(&bed.nodes[0]).await;
    let replica = support::stack_containers(&bed, &repo.stack).await[0]
        .1
        .clone();
    let container_env = support::container_env(&docker, &replica).await;
    assert!(
        container_env.contains(&"DB_URL=db-alpha-71".to_string()),
        "{container_env:?}"
    );
    assert!(
        !container_env
            .iter()
            .any(|e| e.contains(&token) || e.starts_with("PIER_API_TOKEN")),
        "pier's own variable reached the container: {container_env:?}"
    );

    repo.commit(&manifest("two"), "change both");
    let env = [("DEPLOY_NOTE", "note-bravo-72"), ("DB_URL", "db-bravo-72")];
    let (_, diff, _) = repo.pier_with_env(&bed, &["diff"], &env);
    assert!(diff.contains("env ~PLAIN (value hidden)"), "{diff}");
    assert!(diff.contains("env ~NOTE (value hidden)"), "{diff}");
    let (_, diff, _) = repo.pier_with_env(&bed, &["diff", "--show-values", "-o", "json"], &env);
    assert!(diff.contains("\"value\": \"two\""), "{diff}");
    let (_, diff, _) = repo.pier_with_env(&bed, &["diff", "--show-values"], &env);
    assert!(diff.contains("env ~PLAIN=\"two\""), "{diff}");
    assert!(diff.contains("env ~NOTE (value hidden)"), "{diff}");
    assert!(diff.contains("env ~DB_URL (value hidden)"), "{diff}");
    assert!(
        !diff.contains("note-bravo-72") && !diff.contains("db-bravo-72"),
        "{diff}"
    );
    support::remove_stack(&bed, &repo.stack).await;
}

/// `--policy` refuses what the manifests may not ask of the hosts: each
/// request at its file:line:col with the rule, and nothing is created. The
/// default policy refuses a bind of the Docker socket.
#[tokio::test]
async fn the_policy_refuses_requests_at_their_place_and_changes_nothing() {
    let bed = Bed::get();
    let manifest = format!(
        "{}    privileged: true\n    cap_add: [NET_ADMIN, SYS_ADMIN]\n    volumes: [\"/srv/app:/data\", \"/opt/etc:/host-etc:ro\"]\n    ports: [\"8080:80\", \"80:80\"]\n",
        one_node_manifest(&bed, &bed.nodes[0].endpoint, "")
    );
    let repo = support::UserRepo::new("policy", &manifest);
    let policy = repo.dir.path().join("../policy.yaml");
    std::fs::write(
        &policy,
        "privileged: false\ncap_add: [net_admin]\nbind_mounts: [/srv]\nhost_ports: [\"8000-8999\"]\nnode_endpoints: [\"ssh://*\"]\n",
    )
    .unwrap();
    let line_of = |key: &str| manifest.lines().position(|l| l.contains(key)).unwrap() + 1;
    let (code, stdout, stderr) = repo.pier(&bed, &["apply", "--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    for (key, refused, rule) in [
        (
            "privileged:",
            "a privileged container",
            "rule: privileged: false",
        ),
        (
            "cap_add:",
            "capability `SYS_ADMIN`",
            "rule: cap_add: [NET_ADMIN]",
        ),
        (
            "volumes:",
            "a bind mount of `/opt/etc`",
            "rule: bind_mounts: [/srv]",
        ),
        ("ports:", "host port 80 ", "rule: host_ports: [8000-8999]"),
        (
            "remote:",
            "node `remote`",
            "rule: node_endpoints: [ssh://*]",
        ),
    ] {
        let at = format!("pier/stack.yml:{}:", line_of(key));
        let found = stderr
            .lines()
            .skip_while(|l| !(l.starts_with(&at) && l.contains(refused)))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(found.contains(rule), "{key} {refused} ({rule}):\n{stderr}");
    }
    assert!(
        !stderr.contains("NET_ADMIN`"),
        "an allowed capability: {stderr}"
    );
    assert!(!stderr.contains("`/srv/app`"), "an allowed bind: {stderr}");
    assert!(
        support::stack_containers(&bed, &repo.stack)
            .await
            .is_empty(),
        "a refused commit created containers"
    );

    let socket = format!(
        "{}    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n",
        one_node_manifest(&bed, &bed.nodes[0].endpoint, "")
    );
    repo.commit(&socket, "mount the docker socket");
    let (code, _, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("a bind mount of `/var/run/docker.sock` is refused by the default policy"),
        "{stderr}"
    );
}

/// `env_file` is read from the commit in Compose's format: its variables
/// reach the container, under the service's own `environment`; a change to
/// the file replaces the replica.
#[tokio::test]
async fn env_files_reach_the_container_under_its_environment() {
    let bed = Bed::get();
    let manifest = format!(
        "{}    env_file: [common.env, app.env]\n    environment:\n      B: from-manifest\n",
        one_node_manifest(&bed, &bed.nodes[0].endpoint, "")
    );
    let repo = support::UserRepo::new("envfile", &manifest);
    let write = |name: &str, text: &str| {
        std::fs::write(repo.dir.path().join("pier").join(name), text).unwrap();
    };
    write(
        "common.env",
        "# shared\nexport A=from-common\nC=overridden\n",
    );
    write(
        "app.env",
        "B=from-file\nC=\"two words\" # later file wins\n",
    );
    repo.commit(&manifest, "env files");
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let env_of = || async {
        let docker = support::engine(&bed.nodes[0]).await;
        support::container_env(&docker, &format!("{}-web-1", repo.stack)).await
    };
    let env = env_of().await;
    for expected in ["A=from-common", "B=from-manifest", "C=two words"] {
        assert!(env.contains(&expected.to_string()), "{expected} in {env:?}");
    }

    write("app.env", "B=from-file\nC=changed\n");
    repo.commit(&manifest, "change an env file");
    let (_, diff, _) = repo.pier(&bed, &["diff"]);
    assert!(diff.contains("env ~C (value hidden)"), "{diff}");
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(env_of().await.contains(&"C=changed".to_string()));
    support::remove_stack(&bed, &repo.stack).await;
}

/// `update_config.monitor`: a new replica that is up at first but exits
/// within the monitor period fails the rollout, which puts the old one back.
#[tokio::test]
async fn a_replica_that_dies_within_the_monitor_period_is_rolled_back() {
    let bed = Bed::get();
    let manifest = |command: &str| {
        format!(
            "{}services:\n  web:\n    image: {}\n    command: {command}\n    restart: \"no\"\n    stop_grace_period: 1s\n    deploy:\n      update_config: {{ monitor: 4s }}\n",
            support::nodes_yaml(&bed, &[&[]]),
            bed.base_image
        )
    };
    let repo = support::UserRepo::new("monitor", &manifest("sleep 3600"));
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let before = support::stack_containers(&bed, &repo.stack).await;

    repo.commit(&manifest("sh -c 'sleep 1; exit 3'"), "dies after a second");
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("exited with code 3 within the monitor period of 4s"),
        "{stderr}"
    );
    assert_eq!(
        support::stack_containers(&bed, &repo.stack).await,
        before,
        "the old replica is back, running, under its name"
    );
    support::remove_stack(&bed, &repo.stack).await;
}

/// `pull_policy: never`: a node without the image is not made to pull it,
/// and the apply fails saying so; without the policy the same commit pulls.
#[tokio::test]
async fn pull_policy_never_never_pulls() {
    let bed = Bed::get();
    let path = format!("pier-test/{}", unique("neverpull"));
    support::push_image(&bed, &bed.nodes[0], &path, "1", "never").await;
    let repository = format!("{}/{path}", bed.registry);
    let manifest = |policy: &str| {
        format!(
            "nodes:\n  only: {{ endpoint: \"{}\" }}\nservices:\n  web:\n    image: {repository}:1\n    command: sleep 3600\n    stop_grace_period: 1s\n{policy}",
            bed.nodes[1].endpoint
        )
    };
    let repo = support::UserRepo::new("neverpull", &manifest("    pull_policy: never\n"));
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("`pull_policy: never` forbids pulling"),
        "{stderr}"
    );
    assert!(
        support::stack_containers(&bed, &repo.stack)
            .await
            .is_empty()
    );

    repo.commit(&manifest(""), "pulling allowed");
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(support::stack_containers(&bed, &repo.stack).await.len(), 1);
    support::remove_stack(&bed, &repo.stack).await;
}

/// `volumes_from`: a service's replicas go where the source service runs,
/// and mount its replica's volumes there (read-only when asked).
#[tokio::test]
async fn volumes_from_places_beside_the_source_and_mounts_its_volumes() {
    let bed = Bed::get();
    let manifest = format!(
        "{}services:\n  data:\n    image: {image}\n    command: sleep 3600\n    stop_grace_period: 1s\n    volumes: [/shared]\n    tags: [store]\n  web:\n    image: {image}\n    command: sleep 3600\n    stop_grace_period: 1s\n    volumes_from: [\"data:ro\"]\n",
        support::nodes_yaml(&bed, &[&[], &["store"], &[]]),
        image = bed.base_image
    );
    let repo = support::UserRepo::new("volfrom", &manifest);
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let placed = support::stack_containers(&bed, &repo.stack).await;
    assert_eq!(
        placed,
        [
            ("n2".to_string(), format!("{}-data-1", repo.stack), true),
            ("n2".to_string(), format!("{}-web-1", repo.stack), true),
        ],
        "web goes where data runs"
    );
    let docker = support::engine(&bed.nodes[1]).await;
    let shared = |name: String| {
        let docker = docker.clone();
        async move {
            let inspect = docker
                .inspect_container(&name, None)
                .await
                .expect("inspect");
            inspect
                .mounts
                .unwrap_or_default()
                .into_iter()
                .find(|m| m.destination.as_deref() == Some("/shared"))
                .map(|m| (m.name.unwrap_or_default(), m.rw.unwrap_or(true)))
                .expect("a volume at /shared")
        }
    };
    let (data_volume, data_rw) = shared(format!("{}-data-1", repo.stack)).await;
    let (web_volume, web_rw) = shared(format!("{}-web-1", repo.stack)).await;
    assert_eq!(web_volume, data_volume, "the same volume");
    assert!(data_rw && !web_rw, "read-only in web");
    assert_eq!(repo.pier(&bed, &["diff"]).0, 0, "converged");
    support::remove_stack(&bed, &repo.stack).await;
}

/// Compose keys that map onto the Engine API reach the container: each one
/// checked in `docker inspect`, and the container runs with them all.
#[tokio::test]
async fn engine_settings_reach_the_container() {
    let bed = Bed::get();
    let settings = [
        "init: true",
        "read_only: true",
        "tty: true",
        "stdin_open: true",
        "stop_signal: SIGINT",
        "shm_size: 32m",
        "dns: [10.213.77.53]",
        "dns_search: example.internal",
        "domainname: example.internal",
        "sysctls: { net.ipv4.tcp_keepalive_time: 300 }",
        "tmpfs: [\"/run:size=16m\"]",
        "group_add: [100]",
        "cpus: 0.5",
        "cpuset: \"0\"",
        "mem_limit: 64m",
        "mem_reservation: 16m",
        "memswap_limit: 128m",
        "oom_score_adj: 100",
        "ulimits: { nofile: { soft: 1024, hard: 2048 }, nproc: 512 }",
        "logging: { driver: json-file, options: { max-size: 1m, max-file: 2 } }",
    ];
    let manifest = format!(
        "{}{}  quota:\n    image: {image}\n    command: sleep 3600\n    cpu_quota: 25000\n    cpu_period: 100000\n    log_driver: local\n  limited:\n    image: {image}\n    command: sleep 3600\n    deploy:\n      resources:\n        limits: {{ cpus: \"0.25\", memory: 32m, pids: 64 }}\n        reservations: {{ memory: 8m }}\n      restart_policy: {{ condition: on-failure, max_attempts: 3 }}\n",
        one_node_manifest(&bed, &bed.nodes[0].endpoint, ""),
        settings
            .iter()
            .map(|s| format!("    {s}\n"))
            .collect::<String>(),
        image = bed.base_image
    );
    let repo = support::UserRepo::new("settings", &manifest);
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let docker = support::engine(&bed.nodes[0]).await;
    let inspect = docker
        .inspect_container(&format!("{}-web-1", repo.stack), None)
        .await
        .expect("inspect");
    let host = inspect.host_config.clone().unwrap_or_default();
    let config = inspect.config.clone().unwrap_or_default();
    let checks: Vec<(&str, bool)> = vec![
        ("init", host.init == Some(true)),
        ("read_only", host.readonly_rootfs == Some(true)),
        ("tty", config.tty == Some(true)),
        ("stdin_open", config.open_stdin == Some(true)),
        (
            "stop_signal",
            config.stop_signal.as_deref() == Some("SIGINT"),
        ),
        ("shm_size", host.shm_size == Some(32 << 20)),
        ("dns", host.dns == Some(vec!["10.213.77.53".to_string()])),
        (
            "dns_search",
            host.dns_search == Some(vec!["example.internal".to_string()]),
        ),
        (
            "domainname",
            config.domainname.as_deref() == Some("example.internal"),
        ),
        (
            "sysctls",
            host.sysctls
                .as_ref()
                .and_then(|s| s.get("net.ipv4.tcp_keepalive_time"))
                .map(String::as_str)
                == Some("300"),
        ),
        (
            "tmpfs",
            host.tmpfs
                .as_ref()
                .and_then(|t| t.get("/run"))
                .map(String::as_str)
                == Some("size=16m"),
        ),
        ("group_add", host.group_add == Some(vec!["100".to_string()])),
        ("cpus", host.nano_cpus == Some(500_000_000)),
        ("cpuset", host.cpuset_cpus.as_deref() == Some("0")),
        ("mem_reservation", host.memory_reservation == Some(16 << 20)),
        ("memswap_limit", host.memory_swap == Some(128 << 20)),
        ("oom_score_adj", host.oom_score_adj == Some(100)),
        (
            "ulimits",
            host.ulimits.as_ref().is_some_and(|limits| {
                let found = |name: &str| {
                    limits
                        .iter()
                        .find(|l| l.name.as_deref() == Some(name))
                        .map(|l| (l.soft, l.hard))
                };
                found("nofile") == Some((Some(1024), Some(2048)))
                    && found("nproc") == Some((Some(512), Some(512)))
            }),
        ),
        (
            "logging",
            host.log_config.as_ref().is_some_and(|log| {
                let options = log.config.clone().unwrap_or_default();
                log.typ.as_deref() == Some("json-file")
                    && options.get("max-size").map(String::as_str) == Some("1m")
                    && options.get("max-file").map(String::as_str) == Some("2")
            }),
        ),
        (
            "running",
            inspect.state.and_then(|s| s.running) == Some(true),
        ),
    ];
    let missing: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(key, _)| *key)
        .collect();
    assert!(
        missing.is_empty(),
        "not applied: {missing:?}\n{host:#?}\n{config:#?}"
    );
    let quota = docker
        .inspect_container(&format!("{}-quota-1", repo.stack), None)
        .await
        .expect("inspect")
        .host_config
        .unwrap_or_default();
    assert_eq!(
        (quota.cpu_quota, quota.cpu_period),
        (Some(25000), Some(100000))
    );
    assert_eq!(
        quota.log_config.and_then(|l| l.typ).as_deref(),
        Some("local"),
        "log_driver"
    );
    let limited = docker
        .inspect_container(&format!("{}-limited-1", repo.stack), None)
        .await
        .expect("inspect")
        .host_config
        .unwrap_or_default();
    let restart = limited.restart_policy.clone().unwrap_or_default();
    assert_eq!(
        (
            limited.nano_cpus,
            limited.memory,
            limited.pids_limit,
            limited.memory_reservation,
            restart.name.map(|n| n.to_string()),
            restart.maximum_retry_count,
        ),
        (
            Some(250_000_000),
            Some(32 << 20),
            Some(64),
            Some(8 << 20),
            Some("on-failure".to_string()),
            Some(3),
        ),
        "deploy.resources and deploy.restart_policy"
    );
    assert_eq!(repo.pier(&bed, &["diff"]).0, 0, "converged");
    support::remove_stack(&bed, &repo.stack).await;
}

/// Top-level `volumes`: `external: true` must exist on the node (never
/// created on use) and is mounted by its own name; `name` replaces
/// `<stack>_<key>`; `labels` and `driver_opts` are what a new volume is
/// created with. A mount's SELinux option (`ro,z`) reaches the engine.
#[tokio::test]
async fn top_level_volumes_and_mount_options_reach_the_engine() {
    let bed = Bed::get();
    let external = unique("ext");
    let named = unique("named");
    let manifest = format!(
        "{}    volumes: [\"{external}:/ext\", \"data:/data\", \"opts:/opts\", \"/tmp:/host:z,ro\"]\nvolumes:\n  {external}: {{ external: true }}\n  data: {{ name: {named} }}\n  opts:\n    labels: {{ team: storage }}\n    driver_opts: {{ type: tmpfs, device: tmpfs, o: \"size=1m\" }}\n",
        one_node_manifest(&bed, &bed.nodes[0].endpoint, "")
    );
    let repo = support::UserRepo::new("extvol", &manifest);
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "the external volume `{external}` does not exist on remote"
        )),
        "{stderr}"
    );
    assert!(
        support::stack_containers(&bed, &repo.stack)
            .await
            .is_empty()
    );
    let docker = support::engine(&bed.nodes[0]).await;
    assert!(
        docker.inspect_volume(&external).await.is_err(),
        "the external volume was not created on use"
    );

    docker
        .create_volume(bollard::models::VolumeCreateRequest {
            name: Some(external.clone()),
            ..Default::default()
        })
        .await
        .expect("docker volume create");
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let mounts = docker
        .inspect_container(&format!("{}-web-1", repo.stack), None)
        .await
        .expect("inspect")
        .mounts
        .unwrap_or_default();
    let volume_at = |path: &str| {
        mounts
            .iter()
            .find(|m| m.destination.as_deref() == Some(path))
            .and_then(|m| m.name.clone())
    };
    assert_eq!(volume_at("/ext"), Some(external.clone()));
    assert_eq!(volume_at("/data"), Some(named.clone()));
    let with_options = format!("{}_opts", repo.stack);
    let created = docker
        .inspect_volume(&with_options)
        .await
        .expect("the volume with options");
    assert_eq!(
        created.labels.get("team").map(String::as_str),
        Some("storage")
    );
    let options = created.options;
    assert_eq!(
        (
            options.get("type").map(String::as_str),
            options.get("o").map(String::as_str)
        ),
        (Some("tmpfs"), Some("size=1m"))
    );
    let binds = docker
        .inspect_container(&format!("{}-web-1", repo.stack), None)
        .await
        .expect("inspect")
        .host_config
        .and_then(|h| h.binds)
        .unwrap_or_default();
    assert_eq!(binds, ["/tmp:/host:ro,z"]);
    let host_mount = mounts
        .iter()
        .find(|m| m.destination.as_deref() == Some("/host"))
        .expect("the bind mount");
    assert_eq!(host_mount.rw, Some(false), "ro");
    assert_eq!(repo.pier(&bed, &["diff"]).0, 0, "converged");
    support::remove_stack(&bed, &repo.stack).await;
    for volume in [&external, &named, &with_options] {
        let _ = docker
            .remove_volume(
                volume,
                None::<bollard::query_parameters::RemoveVolumeOptions>,
            )
            .await;
    }
}

/// `container_name` names a one-replica service's container, and a
/// replacement keeps it; with more replicas it is an error.
#[tokio::test]
async fn container_name_names_the_one_replica() {
    let bed = Bed::get();
    let name = unique("named-app");
    let manifest = |extra: &str| {
        format!(
            "{}    container_name: {name}\n{extra}",
            one_node_manifest(&bed, &bed.nodes[0].endpoint, "")
        )
    };
    let repo = support::UserRepo::new("cname", &manifest(""));
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        support::stack_containers(&bed, &repo.stack).await,
        [("n1".to_string(), name.clone(), true)]
    );
    repo.commit(&manifest("    environment: { V: \"2\" }\n"), "change it");
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("1 replaced"), "{stdout}");
    assert_eq!(
        support::stack_containers(&bed, &repo.stack).await,
        [("n1".to_string(), name.clone(), true)],
        "the replacement keeps the name"
    );
    repo.commit(&manifest("    target_num_containers: 2\n"), "two replicas");
    let (code, _, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`container_name` names one container; this service runs 2"),
        "{stderr}"
    );
    support::remove_stack(&bed, &repo.stack).await;
}

/// `depends_on.<svc>.restart: true` replaces the dependent after its
/// dependency is replaced; `required: false` on a service not in the
/// manifests is a warning, and the rest deploys.
#[tokio::test]
async fn a_dependent_with_restart_follows_its_dependency() {
    let bed = Bed::get();
    let manifest = |version: &str| {
        format!(
            "{}    environment: {{ V: \"{version}\" }}\n  app:\n    image: {image}\n    command: sleep 3600\n    stop_grace_period: 1s\n    depends_on:\n      web: {{ restart: true }}\n      ghost: {{ required: false }}\n  bystander:\n    image: {image}\n    command: sleep 3600\n    stop_grace_period: 1s\n    depends_on: [web]\n",
            one_node_manifest(&bed, &bed.nodes[0].endpoint, ""),
            image = bed.base_image
        )
    };
    let repo = support::UserRepo::new("restartwith", &manifest("1"));
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: services.app.depends_on.ghost: `ghost` is not a service in the manifests; it is `required: false`"),
        "{stderr}"
    );
    let docker = support::engine(&bed.nodes[0]).await;
    let id_of = |service: &'static str| {
        let docker = docker.clone();
        let name = format!("{}-{service}-1", repo.stack);
        async move {
            docker
                .inspect_container(&name, None)
                .await
                .expect("inspect")
                .id
        }
    };
    let (app_before, bystander_before) = (id_of("app").await, id_of("bystander").await);

    repo.commit(&manifest("2"), "change web");
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("restarts_with"),
        "the plan says why app is replaced: {stdout}"
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_ne!(id_of("app").await, app_before, "app was replaced with web");
    assert_eq!(
        id_of("bystander").await,
        bystander_before,
        "a plain depends_on does not replace"
    );
    assert_eq!(repo.pier(&bed, &["diff"]).0, 0, "converged");
    support::remove_stack(&bed, &repo.stack).await;
}

/// Host namespaces, devices and security options reach the engine only
/// when the container policy allows them; without it each is refused at
/// its place with the rule that refuses it, and nothing is created.
#[tokio::test]
async fn host_access_reaches_the_engine_only_through_the_policy() {
    let bed = Bed::get();
    let manifest = format!(
        "{}    devices: [\"/dev/null:/dev/pier-null:r\"]\n    security_opt: [\"no-new-privileges:true\", \"label=disable\"]\n    pid: host\n    ipc: shareable\n  hostnet:\n    image: {image}\n    command: sleep 3600\n    stop_grace_period: 1s\n    network_mode: host\n",
        one_node_manifest(&bed, &bed.nodes[0].endpoint, ""),
        image = bed.base_image
    );
    let repo = support::UserRepo::new("hostaccess", &manifest);
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    for refused in [
        "host device `/dev/null` is refused by the default policy",
        "security option `label=disable` is refused by the default policy",
        "the host's pid namespace is refused by the default policy",
        "the host's network namespace is refused by the default policy",
        "rule: host_namespaces: [] (none)",
    ] {
        assert!(stderr.contains(refused), "{refused}: {stderr}");
    }
    assert!(
        !stderr.contains("security option `no-new-privileges"),
        "hardening is always allowed: {stderr}"
    );
    assert!(
        support::stack_containers(&bed, &repo.stack)
            .await
            .is_empty()
    );

    // Kept out of the commit: the policy is never the repository's.
    let policy = repo.dir.path().join(".git/pier-policy.yml");
    std::fs::write(
        &policy,
        "host_namespaces: [network, pid]\ndevices: [/dev/null]\nsecurity_opt: [label=disable]\n",
    )
    .unwrap();
    let policy = policy.to_string_lossy().into_owned();
    let (code, stdout, stderr) =
        repo.pier_with_env(&bed, &["apply"], &[("PIER_POLICY", policy.as_str())]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let docker = support::engine(&bed.nodes[0]).await;
    let host = |service: &'static str| {
        let docker = docker.clone();
        let name = format!("{}-{service}-1", repo.stack);
        async move {
            docker
                .inspect_container(&name, None)
                .await
                .expect("inspect")
                .host_config
                .unwrap_or_default()
        }
    };
    let web = host("web").await;
    let device = web.devices.clone().unwrap_or_default();
    assert_eq!(
        device
            .iter()
            .map(|d| (
                d.path_on_host.as_deref(),
                d.path_in_container.as_deref(),
                d.cgroup_permissions.as_deref()
            ))
            .collect::<Vec<_>>(),
        [(Some("/dev/null"), Some("/dev/pier-null"), Some("r"))]
    );
    assert_eq!(
        web.security_opt.clone().unwrap_or_default(),
        ["no-new-privileges:true", "label=disable"]
    );
    assert_eq!(
        (web.pid_mode.as_deref(), web.ipc_mode.as_deref()),
        (Some("host"), Some("shareable"))
    );
    assert_eq!(host("hostnet").await.network_mode.as_deref(), Some("host"));
    assert_eq!(
        repo.pier_with_env(&bed, &["diff"], &[("PIER_POLICY", policy.as_str())])
            .0,
        0,
        "converged"
    );
    support::remove_stack(&bed, &repo.stack).await;
}

/// Named networks, the Compose way: each service joins the networks it
/// lists, with its name, its link aliases and the aliases it gives each;
/// an `internal` network has no route out; an `external` one is used as it
/// is, never created; services on no common network cannot resolve each
/// other. A second diff plans nothing.
#[tokio::test]
async fn services_join_the_named_networks_they_list() {
    let bed = Bed::get();
    let docker = support::engine(&bed.nodes[0]).await;
    let external = support::unique("pier-ext");
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: external.clone(),
            ..Default::default()
        })
        .await
        .expect("an external network");
    let sleeper = |name: &str, networks: &str| {
        format!(
            "  {name}:\n    image: {}\n    command: sleep 3600\n    stop_grace_period: 1s\n    networks: {networks}\n",
            bed.base_image
        )
    };
    let manifest = format!(
        "{}networks:\n  front: {{}}\n  back: {{ internal: true }}\n  outside: {{ external: true, name: {external} }}\nservices:\n{}{}{}{}",
        support::nodes_yaml(&bed, &[&["a"]]),
        sleeper("proxy", "[front]"),
        sleeper("web", "{ front: { aliases: [app] }, back: }"),
        sleeper("db", "{ back: { aliases: [database] } }"),
        sleeper("tool", "[outside, default]"),
    );
    let repo = support::UserRepo::new("nets", &manifest);
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (front, back) = (
        format!("pier-{}_front", repo.stack),
        format!("pier-{}_back", repo.stack),
    );
    let container = |service: &str| format!("{}-{service}-1", repo.stack);
    let networks = |service: String| {
        let docker = docker.clone();
        async move {
            let inspect = docker.inspect_container(&service, None).await.unwrap();
            let mut joined: Vec<(String, Vec<String>)> = inspect
                .network_settings
                .and_then(|n| n.networks)
                .unwrap_or_default()
                .into_iter()
                .map(|(name, endpoint)| {
                    let mut aliases = endpoint.aliases.unwrap_or_default();
                    // The engine adds the container's short id.
                    aliases
                        .retain(|a| !(a.len() == 12 && a.chars().all(|c| c.is_ascii_hexdigit())));
                    aliases.sort();
                    (name, aliases)
                })
                .collect();
            joined.sort();
            joined
        }
    };
    assert_eq!(
        networks(container("web")).await,
        [
            (back.clone(), vec!["web".to_string()]),
            (front.clone(), vec!["app".to_string(), "web".to_string()]),
        ]
    );
    assert_eq!(
        networks(container("db")).await,
        [(back.clone(), vec!["database".to_string(), "db".to_string()])]
    );
    // On a network shared with other stacks, also `<service>.<stack>`.
    assert_eq!(
        networks(container("tool")).await,
        [
            (
                external.clone(),
                vec!["tool".to_string(), format!("tool.{}", repo.stack)],
            ),
            (format!("pier-{}", repo.stack), vec!["tool".to_string()]),
        ]
    );
    let inspect = docker
        .inspect_network(
            &back,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    assert_eq!(inspect.internal, Some(true), "back is internal");
    let outside = docker
        .inspect_network(
            &external,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    assert!(
        !outside
            .labels
            .unwrap_or_default()
            .contains_key("pier.stack"),
        "the external network is not pier's"
    );
    let reach = |from: &str, to: &str| {
        let (docker, from, to) = (docker.clone(), container(from), to.to_string());
        async move {
            support::exec(&docker, &from, &["ping", "-c", "1", "-W", "2", &to])
                .await
                .0
                == 0
        }
    };
    assert!(
        reach("web", "database").await,
        "web reaches db by its alias on back"
    );
    assert!(
        reach("proxy", "app").await,
        "proxy reaches web by its alias on front"
    );
    assert!(
        !reach("proxy", "db").await,
        "proxy is on no network with db"
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 0, "a second diff plans nothing: {stdout}{stderr}");
    support::remove_stack(&bed, &repo.stack).await;
    for network in [&front, &back, &external] {
        let _ = docker.remove_network(network).await;
    }
}

/// A named overlay network: pier forms the swarm for it (the stack's own
/// network stays a bridge), makes it internal as declared, and services
/// listing it reach each other across hosts by name.
#[tokio::test]
async fn a_named_overlay_network_reaches_across_hosts() {
    let _swarm = support::swarm_lock().await;
    let bed = Bed::get();
    let sleeper = |name: &str, tag: &str| {
        format!(
            "  {name}:\n    image: {}\n    command: sleep 3600\n    stop_grace_period: 1s\n    tags: [{tag}]\n    networks: [mesh]\n",
            bed.base_image
        )
    };
    let manifest = format!(
        "{}networks:\n  mesh: {{ driver: overlay, internal: true }}\nservices:\n{}{}",
        support::nodes_yaml(&bed, &[&["a"], &["b"]]),
        sleeper("web", "a"),
        sleeper("cache", "b"),
    );
    let repo = support::UserRepo::new("mesh", &manifest);
    let network = format!("pier-{}_mesh-overlay", repo.stack);
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "network create {network} (overlay, internal) on n1"
        )),
        "{stdout}"
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let first = support::engine(&bed.nodes[0]).await;
    let web = format!("{}-web-1", repo.stack);
    let (code, output) =
        support::exec(&first, &web, &["ping", "-c", "1", "-W", "5", "cache"]).await;
    assert_eq!(code, 0, "web on n1 reaches cache on n2: {output}");
    let inspect = first
        .inspect_network(
            &network,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    assert_eq!(inspect.internal, Some(true));
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 0, "a second diff plans nothing: {stdout}{stderr}");
    support::remove_stack(&bed, &repo.stack).await;
    let _ = first.remove_network(&network).await;
}

/// Docker Cloud's `service.stack` links: two stacks on one overlay network
/// made outside pier (`external: true`) reach each other across hosts.
/// There, each replica also answers to `<service>.<stack>`, and a link
/// `db.<stack>:database` makes `database` resolve, for the linking service
/// alone, to the other stack's replicas.
#[tokio::test]
async fn a_link_to_another_stack_resolves_on_a_shared_external_network() {
    let _swarm = support::swarm_lock().await;
    let bed = Bed::get();
    let shared = unique("shared");
    let stack_yaml = |network: &str, services: &str| {
        format!(
            "{}networks:\n  default: {{ driver: overlay }}\n{network}services:\n{services}",
            support::nodes_yaml(&bed, &[&["a"], &["b"]]),
        )
    };
    let external = format!("  shared: {{ external: true, name: {shared} }}\n");
    let db = |networks: &str| {
        format!(
            "  db:\n    image: {}\n    command: [\"sh\", \"-c\", \"mkdir -p /www && echo hi-from-db > /www/index.html && exec httpd -f -p 6379 -h /www\"]\n    deploy: {{ replicas: 2 }}\n    tags: [b]\n    stop_grace_period: 1s\n{networks}",
            bed.base_image
        )
    };
    // The other stack first, on its own: it forms the swarm the shared
    // network is made in.
    let other = support::UserRepo::new("dbs", &stack_yaml("", &db("")));
    let (code, stdout, stderr) = other.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let first = support::engine(&bed.nodes[0]).await;
    first
        .create_network(bollard::models::NetworkCreateRequest {
            name: shared.clone(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            ..Default::default()
        })
        .await
        .expect("the shared network, made outside pier");
    other.commit(
        &stack_yaml(&external, &db("    networks: [default, shared]\n")),
        "db on the shared network",
    );
    let (code, stdout, stderr) = other.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    let link = format!("db.{}", other.stack);
    let web = format!(
        "  web:\n    image: {}\n    command: sleep 3600\n    tags: [a]\n    stop_grace_period: 1s\n    networks: [default, shared]\n    links: [\"{link}:database\"]\n",
        bed.base_image
    );
    let repo = support::UserRepo::new("webs", &stack_yaml(&external, &web));
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    let web = format!("{}-web-1", repo.stack);
    let (code, page) = support::exec(
        &first,
        &web,
        &[
            "sh",
            "-c",
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 database 6379",
        ],
    )
    .await;
    assert_eq!(
        (code, page.lines().last().unwrap_or_default()),
        (0, "hi-from-db"),
        "web on n1 asks the other stack's db on n2 by the link's alias: {page}"
    );
    for name in ["database", link.as_str()] {
        let (_, answer) = support::exec(&first, &web, &["nslookup", name]).await;
        let addresses = answer
            .lines()
            .filter(|line| line.starts_with("Address") && !line.contains("127.0.0.11"))
            .count();
        assert_eq!(
            addresses, 2,
            "{name} resolves to both db replicas: {answer}"
        );
    }
    let endpoint = first
        .inspect_container(&web, None)
        .await
        .unwrap()
        .network_settings
        .and_then(|s| s.networks)
        .and_then(|mut n| n.remove(&shared))
        .expect("web is on the shared network");
    assert_eq!(endpoint.links, Some(vec![format!("{link}:database")]));
    let second = support::engine(&bed.nodes[1]).await;
    let db_aliases = second
        .inspect_container(&format!("{}-db-1", other.stack), None)
        .await
        .unwrap()
        .network_settings
        .and_then(|s| s.networks)
        .and_then(|mut n| n.remove(&shared))
        .and_then(|e| e.aliases)
        .unwrap_or_default();
    assert!(db_aliases.contains(&link), "{db_aliases:?}");
    for stack in [&other, &repo] {
        let (code, stdout, stderr) = stack.pier(&bed, &["diff"]);
        assert_eq!(code, 0, "a second diff plans nothing: {stdout}{stderr}");
    }

    for stack in [&repo, &other] {
        support::remove_stack(&bed, &stack.stack).await;
        let _ = first
            .remove_network(&format!("pier-{}-overlay", stack.stack))
            .await;
    }
    let _ = first.remove_network(&shared).await;
}

/// `networks.default.driver: overlay`: pier forms a swarm of the stack's
/// nodes through the Engine API, makes the attachable overlay network on a
/// manager, and a service reaches another on a different host by its name
/// and by its link alias, with Tutum's link variables. A second diff plans
/// nothing. A start-first replacement there keeps the successor's own name
/// (the engine cannot rename it) and it answers to the replica's.
#[tokio::test]
async fn an_overlay_network_lets_services_reach_each_other_across_hosts() {
    let _swarm = support::swarm_lock().await;
    let bed = Bed::get();
    let manifest_scaled = |mode: &str, replicas: u32| {
        format!(
            "{}services:\n  cache:\n    image: {image}\n    command: [\"sh\", \"-c\", \"mkdir -p /www && echo hi-from-cache > /www/index.html && exec httpd -f -p 6379 -h /www\"]\n    deploy: {{ replicas: {replicas}, update_config: {{ order: start-first }} }}\n    tags: [b]\n    expose: [\"6379\"]\n    environment: {{ MODE: {mode}, REDIS_PASSWORD: hunter22 }}\n    stop_grace_period: 1s\n  web:\n    image: {image}\n    command: sleep 3600\n    tags: [a]\n    links: [\"cache:redis\"]\n    stop_grace_period: 1s\nnetworks:\n  default: {{ driver: overlay }}\n",
            support::nodes_yaml(&bed, &[&["a"], &["b"]]),
            image = bed.base_image
        )
    };
    let manifest = |mode: &str| manifest_scaled(mode, 2);
    let repo = support::UserRepo::new("overlay", &manifest("cache"));
    let first = support::engine(&bed.nodes[0]).await;
    let in_swarm = support::swarm_info(&first)
        .await
        .local_node_state
        .is_some_and(|s| s.to_string() == "active");
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let network = format!("pier-{}-overlay", repo.stack);
    assert!(
        stdout.contains(&format!("network create {network} (overlay) on n1")),
        "{stdout}"
    );
    if !in_swarm {
        assert!(stdout.contains("swarm init n1"), "{stdout}");
        assert!(stdout.contains("swarm join n2 via n1"), "{stdout}");
    }
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains("SWMTKN"), "no join token in the output");
    assert!(!stderr.contains("SWMTKN"), "no join token in the output");

    let web = format!("{}-web-1", repo.stack);
    let (_, on) = support::stack_containers(&bed, &repo.stack)
        .await
        .into_iter()
        .map(|(node, name, _)| (name, node))
        .find(|(name, _)| *name == web)
        .expect("web runs");
    assert_eq!(on, "n1");
    for name in ["cache", "redis"] {
        let (code, output) =
            support::exec(&first, &web, &["ping", "-c", "1", "-W", "5", name]).await;
        assert_eq!(code, 0, "web on n1 reaches `{name}` on n2: {output}");
    }
    // busybox's nc, not its wget: the bed's static wget cannot resolve
    // names through the engine's DNS.
    let (code, page) = support::exec(
        &first,
        &web,
        &[
            "sh",
            "-c",
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 redis 6379",
        ],
    )
    .await;
    assert_eq!(
        (code, page.lines().last().unwrap_or_default()),
        (0, "hi-from-cache"),
        "an HTTP request crosses hosts by the link alias: {page}"
    );
    let (_, answer) = support::exec(&first, &web, &["nslookup", "cache"]).await;
    let addresses = answer
        .lines()
        .filter(|line| line.starts_with("Address") && !line.contains("127.0.0.11"))
        .count();
    assert_eq!(addresses, 2, "the name resolves to both replicas: {answer}");
    let env = support::container_env(&first, &web).await;
    for expected in [
        "REDIS_PORT=tcp://redis:6379",
        "REDIS_NAME=/web/redis",
        "REDIS_PORT_6379_TCP=tcp://redis:6379",
        "REDIS_PORT_6379_TCP_ADDR=redis",
        "REDIS_PORT_6379_TCP_PORT=6379",
        "REDIS_PORT_6379_TCP_PROTO=tcp",
        "REDIS_ENV_MODE=cache",
    ] {
        assert!(env.iter().any(|e| e == expected), "{expected} in {env:?}");
    }
    for replica in [1, 2] {
        let cache = format!("{}-cache-{replica}", repo.stack);
        for expected in [
            format!("REDIS_{replica}_PORT_6379_TCP=tcp://{cache}:6379"),
            format!("REDIS_{replica}_PORT_6379_TCP_ADDR={cache}"),
            format!("REDIS_{replica}_NAME=/web/redis_{replica}"),
        ] {
            assert!(env.contains(&expected), "{expected} in {env:?}");
        }
    }
    // A replica's own name crosses hosts too, as its variables say.
    let second = format!("{}-cache-2", repo.stack);
    let (code, output) =
        support::exec(&first, &web, &["ping", "-c", "1", "-W", "5", &second]).await;
    assert_eq!(code, 0, "web reaches {second} by name: {output}");
    assert!(
        !env.iter().any(|e| e.contains("hunter22")),
        "a secret-looking value is not passed on: {env:?}"
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 0, "a second diff plans nothing: {stdout}{stderr}");

    // A replaced replica on the overlay answers again under its name, and
    // the linking service follows the linked one's environment.
    repo.commit(&manifest("store"), "cache changes mode");
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("~ {}-cache-1 on n2: env ~MODE", repo.stack)),
        "{stdout}"
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let env = support::container_env(&first, &web).await;
    assert!(env.iter().any(|e| e == "REDIS_ENV_MODE=store"), "{env:?}");
    let (code, output) =
        support::exec(&first, &web, &["ping", "-c", "1", "-W", "5", "redis"]).await;
    assert_eq!(code, 0, "the replaced cache answers: {output}");
    let cache_1 = format!("{}-cache-1", repo.stack);
    assert!(
        step_before(
            &stderr,
            &format!("cache: start {cache_1}-pier-next on n2 ok"),
            &format!("cache: stop {cache_1} on n2 ok"),
        ),
        "start-first: {stderr}"
    );
    let names: Vec<String> = support::stack_containers(&bed, &repo.stack)
        .await
        .into_iter()
        .filter(|(_, name, running)| *running && name.contains("-cache-"))
        .map(|(_, name, _)| name)
        .collect();
    assert!(
        names.contains(&format!("{cache_1}-pier-next")) && !names.contains(&cache_1),
        "the successor keeps the name it started under: {names:?}"
    );
    assert!(
        env.iter()
            .any(|e| *e == format!("REDIS_1_PORT_6379_TCP_ADDR={cache_1}")),
        "{env:?}"
    );
    let (code, output) =
        support::exec(&first, &web, &["ping", "-c", "1", "-W", "5", &cache_1]).await;
    assert_eq!(code, 0, "it answers to the replica's name: {output}");

    // A scale-up on n2 is resolvable on n1 as soon as `apply` returns.
    repo.commit(&manifest_scaled("store", 3), "a third cache");
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (_, answer) = support::exec(&first, &web, &["nslookup", "cache"]).await;
    let addresses = answer
        .lines()
        .filter(|line| line.starts_with("Address") && !line.contains("127.0.0.11"))
        .count();
    assert_eq!(addresses, 3, "the new replica resolves at once: {answer}");
    support::remove_stack(&bed, &repo.stack).await;
    let _ = first.remove_network(&network).await;
    // The engines stay in the swarm: forming it again soon after leaving
    // is what engines handle worst, and no test needs them outside one.
}

/// A stack on three nodes keeps three swarm managers: workers are promoted
/// (as in a stack grown from two nodes, or a manager demoted behind pier's
/// back), shown first in `diff`, and a second `diff` plans nothing while
/// the promoted engine is still on its way to acting as a manager.
#[tokio::test]
async fn a_three_node_overlay_stack_keeps_three_swarm_managers() {
    let _swarm = support::swarm_lock().await;
    let bed = Bed::get();
    let manifest = format!(
        "{}services:\n  idle:\n    image: {}\n    command: sleep 3600\n    stop_grace_period: 1s\nnetworks:\n  default: {{ driver: overlay }}\n",
        support::nodes_yaml(&bed, &[&[], &[], &[]]),
        bed.base_image
    );
    let repo = support::UserRepo::new("managers", &manifest);
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let manager = engine(&bed.nodes[0]).await;
    let third = engine(&bed.nodes[2]).await;
    let third_swarm = || support::swarm_info(&third);
    // When another test formed the swarm on two nodes, this apply promoted
    // a worker already. Otherwise a manager is demoted here: a swarm that
    // has just promoted one cannot demote it before it acts as a manager.
    if !stdout.contains("swarm promote") {
        eventually("n3 acts as a manager", Duration::from_secs(90), || async {
            (third_swarm().await.control_available == Some(true)).then_some(())
        })
        .await;
        let id = third_swarm().await.node_id.expect("n3's swarm node id");
        let node = manager.inspect_node(&id).await.expect("inspect n3");
        let spec = bollard::models::NodeSpec {
            role: Some(bollard::models::NodeSpecRoleEnum::WORKER),
            ..node.spec.unwrap()
        };
        let version = node.version.and_then(|v| v.index).unwrap() as i64;
        manager
            .update_node(
                &id,
                spec,
                bollard::query_parameters::UpdateNodeOptionsBuilder::default()
                    .version(version)
                    .build(),
            )
            .await
            .expect("demote n3");
        eventually("n3 is a worker", Duration::from_secs(30), || async {
            (third_swarm().await.control_available != Some(true)).then_some(())
        })
        .await;
        let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
        assert_eq!(code, 1, "{stdout}{stderr}");
        assert!(stdout.contains("swarm promote n3 via n1"), "{stdout}");
        let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
        assert_eq!(code, 0, "{stdout}{stderr}");
    }
    // The swarm's own view: a promoted engine acts as a manager only at its
    // next certificate renewal, half a minute later.
    for node in &bed.nodes {
        let id = support::swarm_info(&engine(node).await)
            .await
            .node_id
            .expect("a swarm node id");
        let role = manager
            .inspect_node(&id)
            .await
            .expect("inspect node")
            .spec
            .and_then(|s| s.role);
        assert_eq!(
            role,
            Some(bollard::models::NodeSpecRoleEnum::MANAGER),
            "{} is a manager",
            node.name
        );
    }
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 0, "a second diff plans nothing: {stdout}{stderr}");
    support::remove_stack(&bed, &repo.stack).await;
    let _ = manager
        .remove_network(&format!("pier-{}-overlay", repo.stack))
        .await;
}

/// The router on the edge node sends each host's requests to that service's
/// replicas on any host, over the overlay: `route` and Docker Cloud's
/// `VIRTUAL_HOST` alike, and 404 for a host without a route. A rolling
/// replacement of a two-replica service that stops gracefully loses no
/// request: start-first, as routed services are by default, on the overlay
/// too.
// Two threads: the client keeps asking while `pier apply` blocks one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_spreads_each_host_across_replicas_and_a_rollout_loses_no_request() {
    let _swarm = support::swarm_lock().await;
    let bed = Bed::get();
    const PORT: u16 = 18080;
    let serve = |text: &str, port: u16| graceful_httpd(&format!("{text} $(hostname)"), port);
    let manifest_routing = |version: &str, app_hosts: &str| {
        format!(
            "{nodes}router:\n  tags: [edge]\n  ports: [\"{PORT}:80\"]\n  image: {router}\nservices:\n  app:\n    image: {image}\n    command: {app}\n    deploy: {{ replicas: 2 }}\n    deployment_strategy: high_availability\n    tags: [app]\n    route: {{ hosts: [{app_hosts}], port: 8080 }}\n    stop_grace_period: 3s\n  other:\n    image: {image}\n    command: {other}\n    tags: [app]\n    expose: [\"8081\"]\n    environment: {{ VIRTUAL_HOST: \"http://other.test\" }}\n    stop_grace_period: 1s\nnetworks:\n  default: {{ driver: overlay }}\n",
            nodes = support::nodes_yaml(&bed, &[&["edge"], &["app"], &["app"]]),
            router = bed.router_image,
            image = bed.base_image,
            app = serve(version, 8080),
            other = serve("other", 8081),
        )
    };
    let manifest = |version: &str| manifest_routing(version, "app.test");
    let repo = support::UserRepo::new("router", &manifest("v1"));
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let edge = bed.nodes[0].addr.clone();

    let answers = |host: &'static str| {
        let edge = edge.clone();
        async move { support::http_get_host(&edge, PORT, host).await }
    };
    // Round robin across the replicas: a few requests see both.
    let replicas = std::sync::Mutex::new(BTreeSet::new());
    eventually(
        "the router answers for app.test from both replicas",
        Duration::from_secs(60),
        || async {
            if let Some((200, body)) = answers("app.test").await {
                assert!(body.starts_with("v1 "), "{body}");
                replicas.lock().unwrap().insert(body);
            }
            (replicas.lock().unwrap().len() == 2).then_some(())
        },
    )
    .await;
    let (status, body) = answers("other.test")
        .await
        .expect("an answer for other.test");
    assert_eq!(
        (status, body.split_whitespace().next()),
        (200, Some("other")),
        "{body}"
    );
    let (status, _) = answers("nowhere.test")
        .await
        .expect("an answer for nowhere.test");
    assert_eq!(status, 404, "a host without a route");
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 0, "a second diff plans nothing: {stdout}{stderr}");

    // A rollout while a client keeps asking: every request is answered.
    repo.commit(&manifest("v2"), "app v2");
    let ((code, stdout, stderr), outcomes) =
        while_asking(&edge, PORT, "app.test", || repo.pier(&bed, &["apply"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("0 created, 2 replaced"), "{stdout}");
    for replica in [1, 2] {
        let app = format!("{}-app-{replica}", repo.stack);
        assert!(
            step_before(
                &stderr,
                &format!("app: start {app}-pier-next on n"),
                &format!("app: stop {app} on n"),
            ),
            "replica {replica} is replaced start-first: {stderr}"
        );
    }
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o, Some((200, _))))
        .collect();
    assert!(
        outcomes.len() > 1,
        "the client kept asking during the rollout"
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        outcomes.len()
    );
    let (status, body) = answers("app.test")
        .await
        .expect("an answer after the rollout");
    assert_eq!(
        (status, body.split_whitespace().next()),
        (200, Some("v2")),
        "{body}"
    );

    // A route change reloads the router in place: the same container,
    // the new host served, and requests for the others answered all along.
    let router_id = || router_on_n1(&bed, &repo.stack);
    let before = router_id().await;
    repo.commit(
        &manifest_routing("v2", "app.test, more.test"),
        "more.test to app",
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("pier-router-1 on n1: configuration reloaded in place"),
        "{stdout}"
    );
    assert!(stdout.contains("0 to replace"), "{stdout}");
    let ((code, stdout, stderr), outcomes) =
        while_asking(&edge, PORT, "app.test", || repo.pier(&bed, &["apply"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (status, body) = answers("more.test").await.expect("an answer for more.test");
    assert_eq!(
        (status, body.split_whitespace().next()),
        (200, Some("v2")),
        "{body}"
    );
    // The listener never goes away: a request arriving at the very instant
    // Caddy switches may see its connection closed, but never two in a
    // row (a replaced router refuses every request for a second or more).
    let answered = |o: &Option<(u16, String)>| matches!(o, Some((200, _)));
    let failed = outcomes.iter().filter(|o| !answered(o)).count();
    let outage = outcomes
        .windows(2)
        .any(|w| !answered(&w[0]) && !answered(&w[1]));
    if outcomes.len() < 2 || outage {
        let logs = support::container_logs(&engine(&bed.nodes[0]).await, &before, 40).await;
        panic!(
            "{failed} of {} requests failed during the reload, some in a row: {outcomes:?}\n{stderr}\nrouter:\n{logs}",
            outcomes.len()
        );
    }
    assert_eq!(router_id().await, before, "the router was not replaced");
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 0, "the reloaded router is current: {stdout}{stderr}");

    support::remove_stack(&bed, &repo.stack).await;
    let manager = support::engine(&bed.nodes[0]).await;
    for network in ["overlay", "overlay-routes"] {
        let _ = manager
            .remove_network(&format!("pier-{}-{network}", repo.stack))
            .await;
    }
}

/// Whether `apply`'s step lines (its stderr) show `first` before `then`;
/// a line missing from them fails the test, naming it.
fn step_before(steps: &str, first: &str, then: &str) -> bool {
    let at = |line: &str| {
        steps
            .find(line)
            .unwrap_or_else(|| panic!("`{line}` in {steps}"))
    };
    at(first) < at(then)
}

/// The id of `stack`'s router container on n1.
async fn router_on_n1(bed: &Bed, stack: &str) -> String {
    support::labelled(&engine(&bed.nodes[0]).await, &format!("pier.stack={stack}"))
        .await
        .into_iter()
        .find(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get("pier.service"))
                .map(String::as_str)
                == Some("pier-router")
        })
        .and_then(|c| c.id)
        .expect("the router runs on n1")
}

/// A manifest `command` serving `text` on `port`, from an application that
/// stops gracefully, as the router's promise of no lost request asks of
/// it: on SIGTERM the listener goes (busybox httpd serves each connection
/// in a child of its own, which finishes), and the container ends a second
/// later. Give it a `stop_grace_period` over that second. (`httpd` as PID 1
/// ignores SIGTERM and is killed mid-request when the grace period ends.)
fn graceful_httpd(text: &str, port: u16) -> String {
    format!(
        "[\"sh\", \"-c\", \"mkdir -p /www && echo {text} > /www/index.html && httpd -f -p {port} -h /www & trap 'kill $$! && sleep 1 && exit 0' TERM; wait\"]"
    )
}

/// Run `work` (it may block: the test runs on two threads) while a client
/// keeps asking `addr:port` for `host`; what `work` returned, and every
/// answer the client got meanwhile.
async fn while_asking<T>(
    addr: &str,
    port: u16,
    host: &'static str,
    work: impl FnOnce() -> T,
) -> (T, Vec<Option<(u16, String)>>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let asking = std::sync::Arc::new(AtomicBool::new(true));
    let client = {
        let (asking, addr) = (asking.clone(), addr.to_string());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while asking.load(Ordering::Relaxed) {
                outcomes.push(support::http_get_host(&addr, port, host).await);
            }
            outcomes
        })
    };
    let result = work();
    asking.store(false, Ordering::Relaxed);
    (result, client.await.expect("the client"))
}

/// A routed replica is in rotation while it is running and healthy: one
/// whose health check fails stops getting requests, and gets them again
/// once it passes; its container stays all along. `pier apply` does it
/// when run, and the daemon on the engine's health events.
#[tokio::test]
async fn an_unhealthy_replica_leaves_the_rotation_and_returns_when_healthy() {
    let bed = Bed::get();
    const PORT: u16 = 18082;
    let manifest = format!(
        "{nodes}router:\n  tags: [edge]\n  ports: [\"{PORT}:80\"]\n  image: {router}\nservices:\n  app:\n    image: {image}\n    command: [\"sh\", \"-c\", \"mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n    deploy: {{ replicas: 2 }}\n    tags: [edge]\n    route: {{ host: app.test, port: 8080 }}\n    healthcheck: {{ test: [\"CMD-SHELL\", \"test ! -f /www/sick\"], interval: 1s, timeout: 1s, retries: 1 }}\n    stop_grace_period: 1s\n",
        nodes = support::nodes_yaml(&bed, &[&["edge"]]),
        router = bed.router_image,
        image = bed.base_image,
    );
    let repo = support::UserRepo::new("rotation", &manifest);
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let edge = bed.nodes[0].addr.clone();
    let docker = engine(&bed.nodes[0]).await;
    let hostname = |name: String| {
        let docker = docker.clone();
        async move {
            let inspect = docker
                .inspect_container(&name, None)
                .await
                .expect("inspect");
            inspect.config.and_then(|c| c.hostname).expect("a hostname")
        }
    };
    let (sick, well) = (
        format!("{}-app-1", repo.stack),
        format!("{}-app-2", repo.stack),
    );
    let (sick_host, well_host) = (hostname(sick.clone()).await, hostname(well.clone()).await);
    // Answers from the router until `wanted` replicas, and only those, were
    // seen in 8 answers in a row.
    let serves_only = |wanted: Vec<String>| {
        let edge = edge.clone();
        async move {
            let mut seen = BTreeSet::new();
            for _ in 0..8 {
                match support::http_get_host(&edge, PORT, "app.test").await {
                    Some((200, body)) => seen.insert(body.trim().to_string()),
                    _ => return None,
                };
            }
            (seen == wanted.iter().cloned().collect()).then_some(())
        }
    };
    let both = vec![sick_host.clone(), well_host.clone()];
    eventually("both replicas serve", Duration::from_secs(60), || {
        serves_only(both.clone())
    })
    .await;

    let health = |name: String| {
        let docker = docker.clone();
        async move {
            let inspect = docker
                .inspect_container(&name, None)
                .await
                .expect("inspect");
            inspect
                .state
                .and_then(|s| s.health)
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .unwrap_or_default()
        }
    };
    let (code, output) = support::exec(&docker, &sick, &["touch", "/www/sick"]).await;
    assert_eq!(code, 0, "{output}");
    eventually("app-1 is unhealthy", Duration::from_secs(30), || async {
        (health(sick.clone()).await == "unhealthy").then_some(())
    })
    .await;
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "{sick} on n1: out of rotation until its health check passes"
        )),
        "{stdout}"
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    eventually(
        "only the healthy replica serves",
        Duration::from_secs(30),
        || serves_only(vec![well_host.clone()]),
    )
    .await;

    let (code, output) = support::exec(&docker, &sick, &["rm", "/www/sick"]).await;
    assert_eq!(code, 0, "{output}");
    eventually(
        "app-1 is healthy again",
        Duration::from_secs(30),
        || async { (health(sick.clone()).await == "healthy").then_some(()) },
    )
    .await;
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{sick} on n1: into rotation")),
        "{stdout}"
    );
    eventually("both replicas serve again", Duration::from_secs(30), || {
        serves_only(both.clone())
    })
    .await;
    assert_eq!(
        hostname(sick.clone()).await,
        sick_host,
        "the same container"
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 0, "a second diff plans nothing: {stdout}{stderr}");

    // The daemon does the same by itself, on the engine's health events:
    // its resync is an hour away, and nothing else changes.
    let state = tempfile::tempdir().unwrap();
    let daemon = support::Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &support::DaemonOptions::default(),
    );
    let last_trigger = || async {
        daemon.status().await["last_pass"]["trigger"]
            .as_str()
            .map(str::to_string)
    };
    eventually("the daemon's first pass", Duration::from_secs(60), || {
        last_trigger()
    })
    .await;
    let (code, output) = support::exec(&docker, &sick, &["touch", "/www/sick"]).await;
    assert_eq!(code, 0, "{output}");
    eventually(
        "the daemon takes app-1 out of rotation",
        Duration::from_secs(30),
        || serves_only(vec![well_host.clone()]),
    )
    .await;
    // The pass that did it may still be finishing: it is over once the
    // status names it. Only a health event can have started it.
    eventually(
        "the pass a health event started",
        Duration::from_secs(30),
        || async { last_trigger().await.filter(|t| t.contains("event")) },
    )
    .await;
    // The status and the metrics count the route's backends in rotation.
    let backends = || async {
        let status = daemon.status().await;
        let app = status["services"]
            .as_array()
            .expect("services")
            .iter()
            .find(|s| s["name"] == "app")
            .cloned()
            .expect("app's status");
        let metric = daemon
            .metric("pier_route_backends{route=\"app.test\",service=\"app\"}")
            .await;
        (
            app["route"]["backends"].as_u64(),
            metric,
            app["running"].as_u64(),
        )
    };
    eventually(
        "one backend of two running, in the status",
        Duration::from_secs(30),
        || async { (backends().await == (Some(1), 1.0, Some(2))).then_some(()) },
    )
    .await;
    let (code, output) = support::exec(&docker, &sick, &["rm", "/www/sick"]).await;
    assert_eq!(code, 0, "{output}");
    eventually(
        "the daemon puts app-1 back",
        Duration::from_secs(30),
        || serves_only(both.clone()),
    )
    .await;
    eventually(
        "two backends in the status",
        Duration::from_secs(30),
        || async { (backends().await == (Some(2), 2.0, Some(2))).then_some(()) },
    )
    .await;
    drop(daemon);
    assert_eq!(hostname(sick.clone()).await, sick_host, "still the same");
    support::remove_stack(&bed, &repo.stack).await;
    for network in ["", "-routes"] {
        let _ = docker
            .remove_network(&format!("pier-{}{network}", repo.stack))
            .await;
    }
}

/// A routed service is replaced start-first by default on a bridge
/// network: a single replica's successor is in rotation before it stops,
/// so a client asking all along is answered every time (the application
/// stops gracefully: [`graceful_httpd`]), by the old version then the new,
/// and the successor takes the replica's name. A successor that never
/// becomes healthy never gets a request: the replica it was to replace
/// serves all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_replica_is_replaced_start_first_and_answers_all_along() {
    let bed = Bed::get();
    const PORT: u16 = 18083;
    let manifest_checked = |version: &str, check: &str| {
        format!(
            "{nodes}router:\n  tags: [edge]\n  ports: [\"{PORT}:80\"]\n  image: {router}\nservices:\n  app:\n    image: {image}\n    command: {command}\n    tags: [edge]\n    route: {{ host: app.test, port: 8080 }}\n    stop_grace_period: 3s\n{check}",
            nodes = support::nodes_yaml(&bed, &[&["edge"]]),
            router = bed.router_image,
            image = bed.base_image,
            command = graceful_httpd(version, 8080),
        )
    };
    let manifest = |version: &str| manifest_checked(version, "");
    let repo = support::UserRepo::new("startfirst", &manifest("v1"));
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let edge = bed.nodes[0].addr.clone();
    eventually("v1 served", Duration::from_secs(60), || async {
        let answer = support::http_get_host(&edge, PORT, "app.test").await;
        (answer.map(|(code, body)| (code, body.trim().to_string()))
            == Some((200, "v1".to_string())))
        .then_some(())
    })
    .await;

    repo.commit(&manifest("v2"), "app v2");
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("start-first"), "{stdout}");
    let ((code, stdout, stderr), outcomes) =
        while_asking(&edge, PORT, "app.test", || repo.pier(&bed, &["apply"])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let bodies: Vec<String> = outcomes
        .iter()
        .map(|o| match o {
            Some((200, body)) => body.trim().to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(
        bodies.len() > 1,
        "the client kept asking during the rollout"
    );
    assert!(
        bodies.iter().all(|b| b == "v1" || b == "v2") && bodies.last().unwrap() == "v2",
        "every request answered, by v1 or v2, v2 at the end: {bodies:?}"
    );
    // The successor started, under a name of its own, before the old one
    // stopped.
    let app = format!("{}-app-1", repo.stack);
    assert!(
        step_before(
            &stderr,
            &format!("app: start {app}-pier-next on n1 ok"),
            &format!("app: stop {app} on n1 ok"),
        ),
        "{stderr}"
    );
    let names = support::stack_containers(&bed, &repo.stack).await;
    assert!(
        names
            .iter()
            .any(|(_, name, running)| *name == format!("{}-app-1", repo.stack) && *running),
        "the successor has the replica's name: {names:?}"
    );
    let (code, stdout, stderr) = repo.pier(&bed, &["diff"]);
    assert_eq!(code, 0, "a second diff plans nothing: {stdout}{stderr}");

    // v3 never passes its health check: it is removed, and v2 answers
    // every request meanwhile.
    let v2 = names
        .iter()
        .find(|(_, name, running)| *running && name.contains("-app-"))
        .map(|(_, name, _)| name.clone())
        .expect("v2 runs");
    repo.commit(
        &manifest_checked(
            "v3",
            "    healthcheck: { test: [\"CMD\", \"false\"], interval: 1s, retries: 1 }\n",
        ),
        "app v3, never healthy",
    );
    let ((code, stdout, stderr), outcomes) = while_asking(&edge, PORT, "app.test", || {
        repo.pier(&bed, &["apply", "--health-timeout", "20s"])
    })
    .await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("the previous container keeps running"),
        "{stderr}"
    );
    assert!(outcomes.len() > 1, "the client kept asking");
    let other: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o, Some((200, body)) if body.trim() == "v2"))
        .collect();
    if !other.is_empty() {
        let router = format!("{}-pier-router-1", repo.stack);
        let logs = support::container_logs(&engine(&bed.nodes[0]).await, &router, 60).await;
        panic!("every request answered by v2: {other:?}\n{stderr}\nrouter:\n{logs}");
    }
    let after: Vec<String> = support::stack_containers(&bed, &repo.stack)
        .await
        .into_iter()
        .filter(|(_, name, _)| name.contains("-app-"))
        .map(|(_, name, _)| name)
        .collect();
    assert_eq!(after, [v2], "the successor is gone, the replica stays");
    support::remove_stack(&bed, &repo.stack).await;
    let docker = engine(&bed.nodes[0]).await;
    for network in ["", "-routes"] {
        let _ = docker
            .remove_network(&format!("pier-{}{network}", repo.stack))
            .await;
    }
}

/// `route: {tls: true}`: the router serves the host over HTTPS with the
/// certificate from the folder `PIER_ROUTER_TLS` names, and redirects plain
/// HTTP there. Without the variable nothing is deployed and the error names
/// the route and the variable; the key never shows in the output.
#[tokio::test]
async fn a_tls_route_is_served_over_https_with_the_certificate_from_the_environment() {
    let bed = Bed::get();
    const HTTPS: u16 = 18443;
    const HTTP: u16 = 18081;
    let certs = tempfile::tempdir().unwrap();
    let openssl = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=app.test",
            "-addext",
            "subjectAltName=DNS:app.test",
        ])
        .arg("-keyout")
        .arg(certs.path().join("key.pem"))
        .arg("-out")
        .arg(certs.path().join("cert.pem"))
        .output()
        .expect("openssl runs");
    assert!(openssl.status.success(), "{openssl:?}");
    let manifest = format!(
        "{nodes}router:\n  tags: [edge]\n  ports: [\"{HTTP}:80\", \"{HTTPS}:443\"]\n  image: {router}\nservices:\n  app:\n    image: {image}\n    command: [\"sh\", \"-c\", \"mkdir -p /www && echo secure > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n    tags: [edge]\n    route: {{ host: app.test, port: 8080, tls: true }}\n    stop_grace_period: 1s\n",
        nodes = support::nodes_yaml(&bed, &[&["edge"]]),
        router = bed.router_image,
        image = bed.base_image,
    );
    let repo = support::UserRepo::new("tls", &manifest);

    // The router reads the key: the manifest cannot choose its image.
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("pier/stack.yml:")
            && stderr.contains("the router holds TLS keys")
            && stderr.contains(&format!("PIER_ROUTER_IMAGE={}", bed.router_image)),
        "{stderr}"
    );
    let image = ("PIER_ROUTER_IMAGE", bed.router_image.as_str());
    let (code, stdout, stderr) = repo.pier_with_env(&bed, &["apply"], &[image]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("pier/stack.yml:") && stderr.contains("PIER_ROUTER_TLS is not set"),
        "{stderr}"
    );
    assert!(
        support::stack_containers(&bed, &repo.stack)
            .await
            .is_empty()
    );

    let folder = certs.path().to_str().unwrap();
    let (code, stdout, stderr) =
        repo.pier_with_env(&bed, &["apply"], &[("PIER_ROUTER_TLS", folder), image]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        !stdout.contains("PRIVATE KEY") && !stderr.contains("PRIVATE KEY"),
        "the key is never printed"
    );
    let edge = bed.nodes[0].addr.clone();
    let https = |url: String| {
        let (edge, cert) = (edge.clone(), certs.path().join("cert.pem"));
        async move {
            let out = tokio::process::Command::new("curl")
                .args(["-s", "--max-time", "10", "--cacert"])
                .arg(&cert)
                .args(["--resolve", &format!("app.test:{HTTPS}:{edge}")])
                .args(["-w", "\n%{http_code}", &url])
                .output()
                .await
                .expect("curl runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let answer = eventually(
        "app.test answers over HTTPS",
        Duration::from_secs(60),
        || {
            let https = &https;
            async move {
                let answer = https(format!("https://app.test:{HTTPS}/")).await;
                answer.ends_with("\n200").then_some(answer)
            }
        },
    )
    .await;
    assert!(answer.starts_with("secure"), "{answer}");
    let plain = http_get_raw(&edge, HTTP, "app.test").await;
    assert!(
        plain.starts_with("HTTP/1.")
            && plain.contains(" 308 ")
            && plain.contains("Location: https://app.test/"),
        "plain HTTP is redirected: {plain}"
    );
    let (code, stdout, stderr) =
        repo.pier_with_env(&bed, &["diff"], &[("PIER_ROUTER_TLS", folder), image]);
    assert_eq!(code, 0, "a second diff plans nothing: {stdout}{stderr}");
    support::remove_stack(&bed, &repo.stack).await;
}

/// `router.acme`: the router obtains its HTTPS certificate from an ACME CA
/// (Pebble, whose DNS answers every name with n1's address), answering the
/// CA's check itself, and keeps it in a volume: a replaced router serves
/// the same certificate.
#[tokio::test]
async fn an_acme_router_gets_its_certificate_from_the_ca_and_keeps_it() {
    let bed = Bed::get();
    const HTTPS: u16 = 18444;
    const HTTP: u16 = 18084;
    let edge = bed.nodes[0].addr.clone();
    let ca = support::Pebble::start(&bed, &edge, HTTP, HTTPS).await;
    let manifest = |more_ports: &str| {
        format!(
            "{nodes}router:\n  tags: [edge]\n  ports: [\"{HTTP}:80\", \"{HTTPS}:443\"{more_ports}]\n  image: {router}\n  acme: {{ email: ops@bed.test, ca: \"{directory}\" }}\nservices:\n  app:\n    image: {image}\n    command: [\"sh\", \"-c\", \"mkdir -p /www && echo certified > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n    tags: [edge]\n    route: {{ host: app.test, port: 8080, tls: true }}\n    stop_grace_period: 1s\n",
            nodes = support::nodes_yaml(&bed, &[&["edge"]]),
            router = bed.router_image,
            image = bed.base_image,
            directory = ca.directory,
        )
    };
    let repo = support::UserRepo::new("acme", &manifest(""));
    let root = ca.server_root.to_str().unwrap().to_string();
    let env = [
        ("PIER_ROUTER_ACME_CA_ROOT", root.as_str()),
        ("PIER_ROUTER_IMAGE", bed.router_image.as_str()),
    ];
    let (code, stdout, stderr) = repo.pier_with_env(&bed, &["apply"], &env);
    assert_eq!(code, 0, "{stdout}{stderr}");

    // The root of what Pebble issues is made at its start.
    let issued_root = tempfile::NamedTempFile::new().unwrap();
    let fetched = std::process::Command::new("curl")
        .args(["-sf", "--max-time", "10", "--cacert", &root, "-o"])
        .arg(issued_root.path())
        .arg(&ca.issued_roots)
        .status()
        .expect("curl runs");
    assert!(fetched.success(), "Pebble's root");
    let https = || {
        let (edge, issued_root) = (edge.clone(), issued_root.path().to_path_buf());
        async move {
            let out = tokio::process::Command::new("curl")
                .args(["-s", "--max-time", "10", "--cacert"])
                .arg(&issued_root)
                .args(["--resolve", &format!("app.test:{HTTPS}:{edge}")])
                .args([
                    "-w",
                    "\n%{http_code}",
                    &format!("https://app.test:{HTTPS}/"),
                ])
                .output()
                .await
                .expect("curl runs");
            let answer = String::from_utf8_lossy(&out.stdout).into_owned();
            answer.ends_with("\n200").then_some(answer)
        }
    };
    let answer = eventually(
        "app.test answers over HTTPS with a certificate from the CA",
        Duration::from_secs(90),
        https,
    )
    .await;
    assert!(answer.starts_with("certified"), "{answer}");
    let fingerprint = || {
        let edge = edge.clone();
        async move {
            let out = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "openssl s_client -connect {edge}:{HTTPS} -servername app.test </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
                ))
                .output()
                .await
                .expect("openssl runs");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    };
    let first = fingerprint().await;
    assert!(first.contains("Fingerprint="), "{first}");

    // A router replaced (another port) mounts its predecessor's volume,
    // and so serves the same certificate instead of asking for another.
    let router_id = || router_on_n1(&bed, &repo.stack);
    let before = router_id().await;
    repo.commit(&manifest(", \"18445:443\""), "one more port");
    let (code, stdout, stderr) = repo.pier_with_env(&bed, &["apply"], &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_ne!(router_id().await, before, "the router was replaced");
    eventually("the new router answers", Duration::from_secs(60), https).await;
    assert_eq!(fingerprint().await, first, "the same certificate");
    let (code, stdout, stderr) = repo.pier_with_env(&bed, &["diff"], &env);
    assert_eq!(code, 0, "a second diff plans nothing: {stdout}{stderr}");
    support::remove_stack(&bed, &repo.stack).await;
}

/// `platform` is pulled and run as given, and a node of another platform
/// refuses the plan, naming both, with nothing changed.
#[tokio::test]
async fn a_platform_is_pulled_and_a_node_of_another_is_refused() {
    let bed = Bed::get();
    let manifest = |platform: &str| {
        format!(
            "{}services:\n  app:\n    image: {}\n    command: sleep 3600\n    stop_grace_period: 1s\n    tags: [app]\n    platform: {platform}\n",
            support::nodes_yaml(&bed, &[&["app"], &[], &[]]),
            bed.base_image
        )
    };
    let repo = support::UserRepo::new("platform", &manifest("linux/amd64"));
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let running = support::wait_running(&bed, &repo.stack, "app", 1).await;
    let docker = support::engine(&bed.nodes[0]).await;
    let name = running[0].split_once(':').unwrap().1.to_string();
    let container = docker.inspect_container(&name, None).await.unwrap();
    let image = docker
        .inspect_image(container.image.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(image.architecture.as_deref(), Some("amd64"));

    repo.commit(&manifest("linux/arm64"), "run it on arm");
    let (code, stdout, stderr) = repo.pier(&bed, &["apply"]);
    assert_ne!(code, 0, "{stdout}{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains("asks for platform linux/arm64")
            && said.contains("node `n1`")
            && said.contains("linux/amd64"),
        "{said}"
    );
    assert_eq!(
        docker.inspect_container(&name, None).await.unwrap().id,
        container.id,
        "nothing changed"
    );
    support::remove_stack(&bed, &repo.stack).await;
}

/// The raw response head of a GET of `/` for `host`.
async fn http_get_raw(addr: &str, port: u16, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((addr, port))
        .await
        .expect("connect");
    let request = format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await;
    response
}
