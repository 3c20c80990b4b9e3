//! Tests against the real Docker engines and registries of the test bed.
//!
//! All tests in this binary share one bed and run in parallel: each names its
//! containers uniquely and removes only what it created.

mod support;

use std::collections::HashMap;
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
    let image = format!(
        "{}/{}",
        bed.registry_auth,
        bed.base_image.split_once('/').unwrap().1
    );
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
