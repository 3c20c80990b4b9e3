//! pier's own container image: built as the Dockerfile's final stage says
//! (FROM scratch, the root `contrib/image-root` lays out) from this
//! build's binary, and run as `pier daemon` in a container on one bed
//! node, deploying to another.

use crate::support::{Bed, UserRepo, engine, nodes_yaml, remove_stack, unique, wait_running};

/// The Dockerfile's final stage, reading from the build context (what
/// `contrib/image-root` wrote) instead of the build stage.
fn final_stage() -> String {
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let start = dockerfile
        .rfind("\nFROM scratch")
        .expect("a FROM scratch final stage");
    dockerfile[start..].replace("--from=build /out/", "")
}

async fn build_image(docker: &bollard::Docker, tag: &str) {
    use futures_util::TryStreamExt;
    let context = tempfile::tempdir().unwrap();
    let out =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/image-root"))
            .arg(env!("CARGO_BIN_EXE_pier"))
            .arg(context.path())
            .output()
            .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(context.path().join("Dockerfile"), final_stage()).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    // The engine reads no GNU sparse entries.
    tar.sparse(false);
    tar.append_dir_all(".", context.path()).unwrap();
    let body = tar.into_inner().unwrap();
    let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
        .t(tag)
        .rm(true)
        .build();
    let said: Vec<_> = docker
        .build_image(options, None, Some(bollard::body_full(body.into())))
        .try_collect()
        .await
        .expect("the image builds");
    assert!(
        said.iter().all(|info| info.error_detail.is_none()),
        "{said:?}"
    );
}

#[tokio::test]
async fn pier_daemon_runs_from_its_image_on_one_node_and_deploys_to_another() {
    let bed = Bed::get();
    let manifest = format!(
        "{}services:\n  app:\n    image: {}\n    command: sleep 3600\n    stop_grace_period: 1s\n    tags: [worker]\n",
        nodes_yaml(&bed, &[&["pier"], &["worker"], &[]]),
        bed.base_image
    );
    let repo = UserRepo::new("image", &manifest);
    // The daemon runs as the image's user, which owns what it reads.
    let owned = std::process::Command::new("chown")
        .args(["-R", "10001:10001"])
        .arg(repo.dir.path())
        .status()
        .unwrap();
    assert!(owned.success());

    let n1 = engine(&bed.nodes[0]).await;
    let image = format!("pier-test/pier:{}", unique("image"));
    build_image(&n1, &image).await;
    let name = unique("pier-daemon");
    let body = bollard::models::ContainerCreateBody {
        image: Some(image.clone()),
        cmd: Some(
            [
                "daemon",
                "--repo",
                "/repo",
                "--stack",
                &repo.stack,
                "--git-interval",
                "1h",
                "--resync-interval",
                "1h",
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(vec![format!(
            "PIER_INSECURE_REGISTRIES={},{}",
            bed.registry, bed.registry_auth
        )]),
        host_config: Some(bollard::models::HostConfig {
            binds: Some(vec![format!("{}:/repo", repo.dir.path().display())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    n1.create_container(
        Some(
            bollard::query_parameters::CreateContainerOptionsBuilder::default()
                .name(&name)
                .build(),
        ),
        body,
    )
    .await
    .unwrap();
    n1.start_container(&name, None).await.unwrap();

    let replicas = wait_running(&bed, &repo.stack, "app", 1).await;
    assert!(replicas[0].starts_with("n2:"), "{replicas:?}");
    let daemon = n1.inspect_container(&name, None).await.unwrap();
    assert_eq!(
        daemon.config.and_then(|c| c.user).as_deref(),
        Some("10001:10001")
    );
    assert_eq!(daemon.state.and_then(|s| s.running), Some(true));

    let _ = n1
        .remove_container(
            &name,
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await;
    let _ = n1
        .remove_image(
            &image,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
    remove_stack(&bed, &repo.stack).await;
}
