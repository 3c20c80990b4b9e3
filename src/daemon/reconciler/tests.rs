//! The reconciler's rules, one test each: whole daemon passes over a real
//! git repository on disk and a real state store, reaching in-memory
//! engines ([`FakeRuntime`]) on tokio's paused clock, so a rule that waits
//! (a node's grace period, a health timeout) is tested without sleeping.
//! The engine tests on the bed stay the truth for the engine edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Outcome, Reconciler};
use crate::daemon::runner::PipelineRunner;
use crate::daemon::shared::{Config, Secrets, Shared, Trigger};
use crate::daemon::store::{Retention, Store};
use crate::docker::fake::FakeRuntime;
use crate::docker::{ContainerInfo, Runtime, RuntimeError};
use crate::manifest::model::Node;
use crate::pass::Connect;
use crate::plan::container::{LABEL_COMMIT, LABEL_SERVICE};
use crate::registry::{CredentialStore, Registry};
use crate::source::git::GitSource;

/// How long an unreachable node may stay so before it counts as down.
const DOWN_AFTER: Duration = Duration::from_secs(60);

/// In-memory engines by node name; a node without one does not answer.
#[derive(Clone, Default)]
struct Fleet(BTreeMap<String, FakeRuntime>);

impl Connect for Fleet {
    type Runtime = FakeRuntime;

    async fn connect(&self, node: &Node, _timeout: Duration) -> Result<FakeRuntime, RuntimeError> {
        self.0
            .get(&node.name)
            .cloned()
            .ok_or_else(|| RuntimeError::Unreachable(format!("{}: connection refused", node.name)))
    }
}

/// An image pinned by digest: resolved without a registry.
fn image(name: &str, n: u8) -> String {
    format!("r.example/{name}@sha256:{}", format!("{n:02x}").repeat(32))
}

/// A manifest of `nodes` and services `(name, image, replicas)`.
fn manifest(nodes: &[&str], services: &[(&str, &str, u32)]) -> String {
    let mut text = String::from("nodes:\n");
    for node in nodes {
        text.push_str(&format!(
            "  {node}: {{ endpoint: \"unix:///run/{node}.sock\" }}\n"
        ));
    }
    text.push_str("services:\n");
    for (name, image, replicas) in services {
        text.push_str(&format!(
            "  {name}: {{ image: \"{image}\", target_num_containers: {replicas} }}\n"
        ));
    }
    text
}

/// A daemon's reconciler deploying the `main` branch of a repository of
/// its own to a fleet of in-memory engines.
struct Daemon {
    _dir: tempfile::TempDir,
    repo: git2::Repository,
    fleet: Fleet,
    reconciler: Reconciler<Fleet>,
}

impl Daemon {
    async fn start(nodes: &[&str], first: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let repo = git2::Repository::init(dir.path().join("repo")).expect("git init");
        commit_to(&repo, first);
        let fleet = Fleet(
            nodes
                .iter()
                .map(|n| (n.to_string(), FakeRuntime::new()))
                .collect(),
        );
        let config = config(dir.path());
        let store = Store::open(&dir.path().join("pier.db"), Retention::default()).expect("store");
        let shared = Arc::new(Shared::new(&config, "s", store, Secrets::default()));
        let source = GitSource::open(
            &config.settings.source.repo,
            &config.settings.source.cache_dir,
        )
        .expect("the repository opens");
        let registry = Arc::new(Registry::with_timeout(
            Vec::new(),
            CredentialStore::default(),
            config.settings.registry_timeout,
        ));
        let runner = PipelineRunner::new(
            shared,
            Arc::new(Mutex::new(source)),
            &config,
            &registry,
            Default::default(),
        );
        let reconciler = Reconciler::new(fleet.clone(), config, "s".into(), registry, runner).await;
        Daemon {
            _dir: dir,
            repo,
            fleet,
            reconciler,
        }
    }

    /// Commit `text` as the manifest on `main`; the new commit's id.
    fn commit(&self, text: &str) -> String {
        commit_to(&self.repo, text)
    }

    async fn pass(&mut self) -> Outcome {
        self.reconciler.pass(&BTreeSet::from([Trigger::Git])).await
    }

    fn engine(&self, node: &str) -> &FakeRuntime {
        &self.fleet.0[node]
    }

    /// The running containers of `service` on `node`.
    fn running(&self, node: &str, service: &str) -> Vec<ContainerInfo> {
        self.engine(node)
            .containers()
            .into_iter()
            .filter(|c| {
                c.running && c.labels.get(LABEL_SERVICE).map(String::as_str) == Some(service)
            })
            .collect()
    }

    /// The image of the one running replica of `service` on `node`.
    fn only_image(&self, node: &str, service: &str) -> String {
        let running = self.running(node, service);
        assert_eq!(running.len(), 1, "one replica runs: {running:?}");
        self.image_of(node, &running[0])
    }

    /// Remove a running replica of `service` on `node`, as if it were lost.
    async fn lose_one(&self, node: &str, service: &str) {
        let lost = self.running(node, service)[0].clone();
        self.engine(node)
            .remove(&lost.id, crate::docker::Volumes::Keep)
            .await
            .expect("removed");
    }

    /// The image a container was created from.
    fn image_of(&self, node: &str, container: &ContainerInfo) -> String {
        self.engine(node)
            .spec_of(&container.id)
            .expect("the fake keeps every spec")
            .image
    }
}

fn config(dir: &Path) -> Config {
    let settings = crate::pass::Settings {
        source: crate::validate::Source {
            repo: dir.join("repo").display().to_string(),
            reference: "main".into(),
            path: ".".into(),
            cache_dir: dir.join("cache"),
        },
        stack: Some("s".into()),
        insecure_registries: Vec::new(),
        engine_timeout: Duration::from_secs(5),
        registry_timeout: Duration::from_secs(5),
        allow_empty: false,
        adopt: false,
        policy: Default::default(),
        allow_env: Vec::new(),
        keys: Arc::new(crate::manifest::sops::Keys::none()),
    };
    Config {
        settings,
        branch: "main".into(),
        state_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("an address"),
        hooks_listen: None,
        http: crate::daemon::api::HttpLimits {
            request_timeout: Duration::from_secs(30),
            max_connections: 16,
        },
        git_interval: Duration::from_secs(30),
        registry_interval: Duration::from_secs(30),
        resync_interval: Duration::from_secs(300),
        debounce: Duration::from_millis(200),
        retry_max: Duration::from_secs(60),
        node_down_after: DOWN_AFTER,
        keep_images: 0,
        apply: crate::pass::apply::ApplySettings {
            health_timeout: Duration::from_secs(30),
            ..Default::default()
        },
        retention: Retention::default(),
        notify: Default::default(),
        notify_file: None,
        public_url: None,
        untrusted: Default::default(),
        ha: None,
    }
}

/// Commit `text` as `pier.yml`, the whole tree, onto `main`.
fn commit_to(repo: &git2::Repository, text: &str) -> String {
    let blob = repo.blob(text.as_bytes()).expect("blob");
    let mut tree = repo.treebuilder(None).expect("tree builder");
    tree.insert("pier.yml", blob, 0o100644).expect("tree entry");
    let tree = repo.find_tree(tree.write().expect("tree")).expect("tree");
    let signature = git2::Signature::now("pier", "pier@example.test").expect("signature");
    let parent = repo
        .find_reference("refs/heads/main")
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let id = repo
        .commit(
            Some("refs/heads/main"),
            &signature,
            &signature,
            "change",
            &tree,
            &parents,
        )
        .expect("commit");
    repo.set_head("refs/heads/main").expect("HEAD");
    id.to_string()
}

/// A rollout that fails its health check is rolled back, and the service
/// stays frozen at that commit: later passes leave the restored replica
/// alone instead of trying the broken image again, until a new commit.
#[tokio::test(start_paused = true)]
async fn a_rolled_back_rollout_freezes_the_service_until_a_new_commit() {
    let (good, broken, fixed) = (image("web", 1), image("web", 2), image("web", 3));
    let mut daemon = Daemon::start(&["n1"], &manifest(&["n1"], &[("web", &good, 1)])).await;
    assert_eq!(daemon.pass().await, Outcome::Done);
    daemon.engine("n1").mark_unhealthy(&broken);

    daemon.commit(&manifest(&["n1"], &[("web", &broken, 1)]));
    let outcome = daemon.pass().await;
    assert!(matches!(outcome, Outcome::Permanent(_)), "{outcome:?}");
    assert_eq!(daemon.only_image("n1", "web"), good, "rolled back");
    let restored = daemon.running("n1", "web")[0].id.clone();

    let made = daemon.engine("n1").made();
    for _ in 0..3 {
        daemon.pass().await;
    }
    assert_eq!(
        daemon.engine("n1").made(),
        made,
        "no pass tried the broken image again"
    );
    assert_eq!(daemon.running("n1", "web")[0].id, restored);

    daemon.commit(&manifest(&["n1"], &[("web", &fixed, 1)]));
    assert_eq!(daemon.pass().await, Outcome::Done);
    assert_eq!(
        daemon.only_image("n1", "web"),
        fixed,
        "a new commit ends the freeze"
    );
}

/// A head whose manifests do not validate is refused as a whole, and the
/// nodes are healed towards the last revision applied in full: a lost
/// replica comes back as that revision declared it.
#[tokio::test(start_paused = true)]
async fn an_invalid_head_heals_towards_the_last_good_revision() {
    let good = image("web", 1);
    let mut daemon = Daemon::start(&["n1"], &manifest(&["n1"], &[("web", &good, 2)])).await;
    assert_eq!(daemon.pass().await, Outcome::Done);
    let applied = daemon.running("n1", "web")[0].labels[LABEL_COMMIT].clone();

    daemon.commit(&format!(
        "{}no_such_key: true\n",
        manifest(&["n1"], &[("web", &image("web", 2), 2)])
    ));
    daemon.lose_one("n1", "web").await;
    let outcome = daemon.pass().await;
    let Outcome::Permanent(reason) = &outcome else {
        panic!("the head is refused: {outcome:?}")
    };
    assert!(reason.contains("no_such_key"), "{reason}");

    let running = daemon.running("n1", "web");
    assert_eq!(running.len(), 2, "the lost replica is back: {running:?}");
    for container in &running {
        assert_eq!(daemon.image_of("n1", container), good);
        assert_eq!(container.labels[LABEL_COMMIT], applied);
    }
}

/// An unreachable node is not empty: its replicas are not started
/// elsewhere until it has been unreachable for the grace period; then
/// they are.
#[tokio::test(start_paused = true)]
async fn a_node_counts_as_down_only_after_the_grace_period() {
    let web = image("web", 1);
    let nodes = ["n1", "n2"];
    let mut daemon = Daemon::start(&nodes, &manifest(&nodes, &[("web", &web, 2)])).await;
    assert_eq!(daemon.pass().await, Outcome::Done);
    let placed: Vec<usize> = nodes
        .iter()
        .map(|n| daemon.running(n, "web").len())
        .collect();
    assert_eq!(placed, [1, 1], "one replica per node");

    daemon.engine("n2").set_unreachable(true);
    let outcome = daemon.pass().await;
    assert!(matches!(outcome, Outcome::Transient(_)), "{outcome:?}");
    tokio::time::advance(DOWN_AFTER - Duration::from_secs(1)).await;
    daemon.pass().await;
    assert_eq!(
        daemon.running("n1", "web").len(),
        1,
        "within the grace period nothing moves"
    );

    tokio::time::advance(Duration::from_secs(1)).await;
    daemon.pass().await;
    assert_eq!(
        daemon.running("n1", "web").len(),
        2,
        "past it, the down node's replica starts on the other"
    );
}

/// Healing the revision already applied is never frozen: a lost replica
/// that fails to come back is a transient failure, tried again by the
/// next pass, where a new commit's failed rollout would be rolled back
/// and left alone.
#[tokio::test(start_paused = true)]
async fn a_failed_heal_of_the_applied_revision_is_retried_not_frozen() {
    let web = image("web", 1);
    let mut daemon = Daemon::start(&["n1"], &manifest(&["n1"], &[("web", &web, 1)])).await;
    assert_eq!(daemon.pass().await, Outcome::Done);
    daemon.lose_one("n1", "web").await;
    let engine = daemon.engine("n1").clone();
    engine.mark_unhealthy(&web);

    let outcome = daemon.pass().await;
    assert!(matches!(outcome, Outcome::Transient(_)), "{outcome:?}");
    let made = engine.made();
    let outcome = daemon.pass().await;
    assert!(matches!(outcome, Outcome::Transient(_)), "{outcome:?}");
    assert!(engine.made() > made, "the next pass tried again");
}

/// A hold (`pier rollback`) puts the stack back at an applied revision,
/// with the digests it ran, and keeps it there whatever the branch does
/// next, until it is resumed.
#[tokio::test(start_paused = true)]
async fn a_held_stack_stays_at_its_revision_until_resumed() {
    let image_at = |n| image("web", n);
    let mut daemon = Daemon::start(&["n1"], &manifest(&["n1"], &[("web", &image_at(1), 1)])).await;
    assert_eq!(daemon.pass().await, Outcome::Done);
    let first = daemon.running("n1", "web")[0].labels[LABEL_COMMIT].clone();
    daemon.commit(&manifest(&["n1"], &[("web", &image_at(2), 1)]));
    assert_eq!(daemon.pass().await, Outcome::Done);
    let runs = |daemon: &Daemon| daemon.only_image("n1", "web");
    assert_eq!(runs(&daemon), image_at(2));

    let shared = daemon.reconciler.shared.clone();
    crate::daemon::control::hold(&shared, &first, None, "test", "a bad release")
        .await
        .expect("held");
    assert_eq!(daemon.pass().await, Outcome::Done);
    assert_eq!(runs(&daemon), image_at(1), "back at the held revision");

    daemon.commit(&manifest(&["n1"], &[("web", &image_at(3), 1)]));
    daemon.pass().await;
    assert_eq!(runs(&daemon), image_at(1), "a new commit does not move it");

    assert!(
        crate::daemon::control::resume(&shared, "test")
            .await
            .expect("resumed")
    );
    assert_eq!(daemon.pass().await, Outcome::Done);
    assert_eq!(runs(&daemon), image_at(3), "resumed, it follows the branch");
}
