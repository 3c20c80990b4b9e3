//! Compose's `configs` and `secrets` on the bed's engines: written into the
//! containers with their owner and mode, never in an inspect field, and a
//! new value rolls the service.

use crate::support::{
    Bed, UserRepo, engine, nodes_yaml, remove_stack, stack_replicas, wait_running,
};

#[tokio::test]
async fn configs_and_secrets_are_written_with_owner_and_mode_and_rotate() {
    let bed = Bed::get();
    let manifest = format!(
        "{}configs:\n  app_conf: {{ file: ./app.conf }}\nsecrets:\n  db_password: {{ environment: DB_PASSWORD }}\n  api_key: {{ content: inline-secret-value }}\nservices:\n  app:\n    image: {}\n    command: sleep 3600\n    stop_grace_period: 1s\n    tags: [app]\n    configs: [{{ source: app_conf, target: /etc/app.conf, uid: \"1000\", gid: \"1000\", mode: \"0440\" }}]\n    secrets: [db_password, {{ source: api_key, target: api, mode: \"0400\" }}]\n",
        nodes_yaml(&bed, &[&["app"], &[], &[]]),
        bed.base_image
    );
    let repo = UserRepo::new("files", &manifest);
    std::fs::write(repo.dir.path().join("pier/app.conf"), "greeting = hello\n").unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-qm", "the app's configuration"]);

    // Not admitted: refused at the service's entry, nothing deployed.
    let (code, out, err) = repo.pier_with_env(
        &bed,
        &["apply", "--allow-env", "APP_*"],
        &[("DB_PASSWORD", "s3cr3t-value")],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("`DB_PASSWORD`") && err.contains("pier/stack.yml:"),
        "{err}"
    );
    assert!(stack_replicas(&bed, &repo.stack).await.is_empty());

    let apply = |password: &str| {
        repo.pier_with_env(
            &bed,
            &["apply", "--allow-env", "DB_PASSWORD"],
            &[("DB_PASSWORD", password)],
        )
    };
    let (code, out, err) = apply("s3cr3t-value");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains("s3cr3t-value") && !err.contains("s3cr3t-value"),
        "{out}{err}"
    );
    let replica = wait_running(&bed, &repo.stack, "app", 1).await;
    let (node, name) = replica[0].split_once(':').unwrap();
    let node = bed.nodes.iter().find(|n| n.name == node).unwrap();
    let docker = engine(node).await;
    let run = |command: &'static str| {
        let (docker, name) = (docker.clone(), name.to_string());
        async move {
            crate::support::exec(&docker, &name, &["sh", "-c", command])
                .await
                .1
        }
    };
    assert_eq!(
        run("stat -c '%a %u %g' /etc/app.conf").await.trim(),
        "440 1000 1000"
    );
    assert_eq!(run("cat /etc/app.conf").await, "greeting = hello\n");
    assert_eq!(run("cat /run/secrets/db_password").await, "s3cr3t-value");
    assert_eq!(
        run("stat -c '%a %u' /run/secrets/api").await.trim(),
        "400 0"
    );
    assert_eq!(run("cat /run/secrets/api").await, "inline-secret-value");
    let inspected = docker.inspect_container(name, None).await.unwrap();
    let visible = format!(
        "{:?} {:?}",
        inspected.config.as_ref().and_then(|c| c.env.clone()),
        inspected.config.as_ref().and_then(|c| c.labels.clone())
    );
    assert!(
        !visible.contains("s3cr3t-value") && !visible.contains("inline-secret-value"),
        "{visible}"
    );

    // A new value of the secret replaces the replica, which has it.
    let (code, out, err) = apply("rotated-value");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replace"), "{out}");
    let replica = wait_running(&bed, &repo.stack, "app", 1).await;
    let name = replica[0].split_once(':').unwrap().1.to_string();
    let id_after = docker.inspect_container(&name, None).await.unwrap().id;
    assert_ne!(id_after, inspected.id, "replaced");
    assert_eq!(
        crate::support::exec(&docker, &name, &["cat", "/run/secrets/db_password"])
            .await
            .1,
        "rotated-value"
    );
    remove_stack(&bed, &repo.stack).await;
}
