//! Unit tests of carrying out a plan, on the in-memory runtime.

use super::*;
use crate::docker::fake::FakeRuntime;
use crate::manifest::{self, MemoryTree, SourceFile, Vars};
use crate::registry::CredentialStore;

/// A bare path takes the old volume; a path without a declaration is
/// added (an image `VOLUME`); a named volume or bind mount keeps its source.
#[test]
fn a_replacement_mounts_the_old_anonymous_volumes() {
    let mount = |kind: &str, source: &str, target: &str| docker::MountSpec {
        kind: kind.into(),
        source: source.into(),
        target: target.into(),
        read_only: false,
        ..Default::default()
    };
    let mut spec = docker::ContainerSpec {
        mounts: vec![
            mount("volume", "", "/data"),
            mount("volume", "s_named", "/named"),
            mount("bind", "/srv", "/srv"),
        ],
        ..Default::default()
    };
    let old = |name: &str, target: &str| AnonymousVolume {
        name: name.into(),
        target: target.into(),
    };
    inherit_volumes(
        &mut spec,
        &[
            old("a", "/data"),
            old("b", "/image-data"),
            old("c", "/named"),
            old("d", "/srv"),
        ],
    );
    assert_eq!(
        spec.mounts,
        [
            mount("volume", "a", "/data"),
            mount("volume", "s_named", "/named"),
            mount("bind", "/srv", "/srv"),
            mount("volume", "b", "/image-data"),
        ]
    );
}

/// Load `text`, plan against the fake engine on n1 and apply it, which
/// must succeed; the plan and what the apply did.
async fn converge_once(text: &str, engine: &FakeRuntime) -> (crate::plan::Plan, ApplyReport) {
    let files = [SourceFile {
        path: "pier/s.yml".into(),
        text: text.into(),
    }];
    let loaded = manifest::load_and_validate(&files, &Vars::new(), &MemoryTree::default());
    assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
    let digest = format!("sha256:{}", "1".repeat(64));
    let images = loaded
        .manifest
        .services
        .values()
        .map(|service| {
            let image = service.image.clone().unwrap_or_default();
            let pinned = crate::plan::desired::PinnedImage {
                pinned: format!("{image}@{digest}"),
                digest: digest.clone(),
            };
            (
                service.name.clone(),
                crate::plan::desired::ImageChoice::Pinned(pinned),
            )
        })
        .collect();
    let desired = crate::plan::desired::desired_state(&loaded.manifest, "s", "c0ffee", &images);
    let observed = crate::pass::observe::observe(
        "s",
        &BTreeMap::from([("n1".to_string(), Ok(engine.clone()))]),
        Duration::from_secs(1),
    )
    .await;
    let plan = crate::plan::plan(&desired, &observed, &Default::default());
    let engines = BTreeMap::from([("n1".to_string(), engine.clone())]);
    let report = apply(
        &desired,
        &plan,
        &engines,
        &CredentialStore::default(),
        &ApplySettings::default(),
        &|_| {},
    )
    .await;
    assert!(report.ok(), "{:?}", report.failures);
    (plan, report)
}

/// The router's configuration is live: written before it starts, read
/// back to see it is current, and rewritten and reloaded in place when
/// the routes change, never replacing the container.
#[tokio::test]
async fn a_route_change_reloads_the_router_in_place() {
    let manifest = |host: &str| {
        format!(
            "nodes:\n  n1: {{ endpoint: \"unix:///run/n1.sock\" }}\nrouter: {{ ports: [\"80:80\"] }}\nservices:\n  a: {{ image: \"r.example/app:1\", route: {{ host: {host}, port: 80 }} }}\n"
        )
    };
    let engine = FakeRuntime::new();
    let first = converge_once(&manifest("a.example.com"), &engine).await.0;
    assert_eq!(first.count(|c| matches!(c, Change::Create { .. })), 2);
    let router = |engine: &FakeRuntime| {
        engine
            .containers()
            .into_iter()
            .find(|c| c.name == "s-pier-router-1")
            .expect("the router runs")
    };
    let router_id = router(&engine).id;

    let again = converge_once(&manifest("a.example.com"), &engine).await.0;
    assert!(
        again.is_empty(),
        "the router's files are current: {again:?}"
    );
    assert!(engine.execs().is_empty());

    let changed = converge_once(&manifest("b.example.com"), &engine).await.0;
    assert_eq!(changed.count(|_| true), 1, "{changed:?}");
    assert_eq!(changed.count(|c| matches!(c, Change::Reload { .. })), 1);
    assert_eq!(router(&engine).id, router_id, "the same container");
    let execs = engine.execs();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0].0, router_id);
    assert_eq!(execs[0].1[..2], ["caddy", "reload"]);
    let config = router_config_of(&engine, &router_id).await;
    assert!(config.contains("http://b.example.com:80"), "{config}");
    assert!(
        converge_once(&manifest("b.example.com"), &engine)
            .await
            .0
            .is_empty()
    );
}

/// On an overlay network the engine cannot rename a running container,
/// so a start-first successor keeps the name it started under: a
/// replica's name alternates between two, it answers to the replica's
/// name on its networks all along, and the plan is empty afterwards.
#[tokio::test]
async fn a_start_first_successor_on_an_overlay_keeps_its_own_name() {
    let manifest = |version: &str| {
        format!(
            "nodes:\n  n1: {{ endpoint: \"unix:///run/n1.sock\" }}\nnetworks:\n  shared: {{ external: true }}\nservices:\n  a:\n    image: \"r.example/app:1\"\n    environment: {{ V: \"{version}\" }}\n    networks: [shared]\n    deploy: {{ update_config: {{ order: start-first }} }}\n"
        )
    };
    let engine = FakeRuntime::new();
    engine.add_network("shared", true);
    converge_once(&manifest("1"), &engine).await;
    let replica = |engine: &FakeRuntime| {
        let running: Vec<_> = engine
            .containers()
            .into_iter()
            .filter(|c| c.running)
            .collect();
        assert_eq!(running.len(), 1, "{running:?}");
        running[0].clone()
    };
    let first = replica(&engine);
    assert_eq!(first.name, "s-a-1");

    converge_once(&manifest("2"), &engine).await;
    let second = replica(&engine);
    assert_eq!(second.name, "s-a-1-pier-next", "it kept its name");
    assert_eq!(second.labels[docker::LABEL_REPLACES], first.id);
    let spec = engine.spec_of(&second.id).expect("its configuration");
    let aliases: Vec<&Vec<String>> = std::iter::once(&spec.aliases)
        .chain(spec.more_networks.iter().map(|(_, a)| a))
        .collect();
    assert!(
        aliases.iter().all(|a| a.contains(&"s-a-1".to_string())),
        "it answers to the replica's name on every network: {spec:?}"
    );
    assert!(
        converge_once(&manifest("2"), &engine).await.0.is_empty(),
        "a successor under its own name is the replica"
    );

    converge_once(&manifest("3"), &engine).await;
    let third = replica(&engine);
    assert_eq!(third.name, "s-a-1", "the name alternates back");
    assert_eq!(third.labels[docker::LABEL_REPLACES], second.id);
    assert!(converge_once(&manifest("3"), &engine).await.0.is_empty());
}

async fn router_config_of(engine: &FakeRuntime, id: &str) -> String {
    engine
        .read_file(id, manifest::router::CONFIG_PATH)
        .await
        .expect("read")
        .expect("the file is there")
}

/// Two services of one image on one node: one pull, both created and started.
#[tokio::test]
async fn one_pull_per_node_and_image() {
    let text = "nodes:\n  n1: { endpoint: \"unix:///run/n1.sock\" }\nservices:\n  a: { image: \"r.example/app:1\" }\n  b: { image: \"r.example/app:1\" }\n";
    let engine = FakeRuntime::new();
    let (_, report) = converge_once(text, &engine).await;
    let pulls = report
        .records
        .iter()
        .filter(|r| r.action == Action::Pull)
        .count();
    assert_eq!(pulls, 1);
    let running: Vec<String> = engine
        .containers()
        .into_iter()
        .filter(|c| c.running)
        .map(|c| c.name)
        .collect();
    assert_eq!(running, ["s-a-1", "s-b-1"]);
}
