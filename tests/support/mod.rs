//! Shared helpers for tests that run against the test bed (`tests/testbed`).
//!
//! The bed's coordinates come from the `PIER_TB_*` environment variables that
//! `tests/testbed up` prints, or, when they are not set, from the state file it
//! writes. Docker-backed tests never skip: without a bed they fail and say how
//! to start one.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::Docker;

const DEFAULT_BED_DIR: &str = "/tmp/pier-testbed";
const ENGINE_TIMEOUT_S: u64 = 30;

/// One Docker host of the bed.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// `tcp://<addr>:2375`
    pub endpoint: String,
    /// The host's address, where its published ports answer.
    pub addr: String,
}

/// The running test bed.
#[derive(Debug, Clone)]
pub struct Bed {
    pub nodes: Vec<Node>,
    pub registry: String,
    pub registry_auth: String,
    pub registry_user: String,
    pub registry_password: String,
    pub base_image: String,
    /// Caddy, FROM scratch, on every node.
    pub router_image: String,
    /// Node 1 over mutual TLS: `tcp://<addr>:2376`.
    pub tls_endpoint: String,
    /// The client's `ca.pem`, `cert.pem` and `key.pem`.
    pub tls_dir: String,
    /// Node 1 over SSH: `ssh://root@<addr>`.
    pub ssh_endpoint: String,
    /// A folder holding an `ssh` that uses the bed's key and known hosts;
    /// put it first in PATH.
    pub ssh_path: String,
    /// The bed's state folder (`PIER_TB_DIR`).
    pub dir: String,
}

impl Bed {
    /// The bed this test runs against; panics with instructions when there is none.
    pub fn get() -> Bed {
        let vars = bed_vars();
        let var = |key: &str| -> String {
            vars.get(key).cloned().unwrap_or_else(|| {
                panic!(
                    "the Docker test bed is not running ({key} is not set).\n\
                     Run the whole suite with `tests/run` (as root), or start a bed with\n\
                     `eval \"$(tests/testbed up)\"` and run `cargo test` in that shell."
                )
            })
        };
        let nodes = var("PIER_TB_NODES")
            .split(',')
            .map(|pair| {
                let (name, endpoint) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("PIER_TB_NODES entry {pair:?} is not name=endpoint"));
                let addr = endpoint
                    .trim_start_matches("tcp://")
                    .rsplit_once(':')
                    .map(|(host, _)| host.to_string())
                    .unwrap_or_else(|| panic!("node endpoint {endpoint:?} has no port"));
                Node {
                    name: name.into(),
                    endpoint: endpoint.into(),
                    addr,
                }
            })
            .collect();
        Bed {
            nodes,
            registry: var("PIER_TB_REGISTRY"),
            registry_auth: var("PIER_TB_REGISTRY_AUTH"),
            registry_user: var("PIER_TB_REGISTRY_USER"),
            registry_password: var("PIER_TB_REGISTRY_PASSWORD"),
            base_image: var("PIER_TB_BASE_IMAGE"),
            router_image: var("PIER_TB_ROUTER_IMAGE"),
            tls_endpoint: var("PIER_TB_TLS_NODE")
                .split_once('=')
                .map(|(_, endpoint)| endpoint.to_string())
                .unwrap_or_default(),
            tls_dir: var("PIER_TB_TLS_DIR"),
            ssh_endpoint: var("PIER_TB_SSH_NODE")
                .split_once('=')
                .map(|(_, endpoint)| endpoint.to_string())
                .unwrap_or_default(),
            ssh_path: var("PIER_TB_SSH_PATH"),
            dir: vars
                .get("PIER_TB_DIR")
                .cloned()
                .unwrap_or_else(|| DEFAULT_BED_DIR.into()),
        }
    }
}

/// `PIER_TB_*` from the environment, else from the state file of a running bed.
fn bed_vars() -> BTreeMap<String, String> {
    let from_env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PIER_TB_"))
        .collect();
    if from_env.contains_key("PIER_TB_NODES") {
        return from_env;
    }
    let dir = std::env::var("PIER_TB_DIR").unwrap_or_else(|_| DEFAULT_BED_DIR.into());
    let Ok(text) = std::fs::read_to_string(format!("{dir}/env")) else {
        return from_env;
    };
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

/// A client for one node over TCP, with the API version negotiated with the engine.
pub async fn engine(node: &Node) -> Docker {
    Docker::connect_with_http(
        &node.endpoint,
        ENGINE_TIMEOUT_S,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap_or_else(|e| panic!("client for {}: {e}", node.endpoint))
    .negotiate_version()
    .await
    .unwrap_or_else(|e| {
        panic!(
            "engine {} at {} does not answer: {e}\n\
                 Is the test bed up? (`eval \"$(tests/testbed up)\"`)",
            node.name, node.endpoint
        )
    })
}

/// An engine's place in a swarm, as `docker info` shows it.
pub async fn swarm_info(docker: &Docker) -> bollard::models::SwarmInfo {
    docker
        .info()
        .await
        .expect("docker info")
        .swarm
        .unwrap_or_default()
}

/// A container's environment, as `docker inspect` shows it.
pub async fn container_env(docker: &Docker, name: &str) -> Vec<String> {
    docker
        .inspect_container(name, None)
        .await
        .unwrap_or_else(|e| panic!("docker inspect {name}: {e}"))
        .config
        .and_then(|c| c.env)
        .unwrap_or_default()
}

/// `docker rm -f NAME`, behind pier's back; panics when the engine refuses.
pub async fn force_remove(docker: &Docker, name: &str) {
    let force = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
        .force(true)
        .build();
    docker
        .remove_container(name, Some(force))
        .await
        .unwrap_or_else(|e| panic!("docker rm -f {name}: {e}"));
}

/// The last `tail` lines a container printed (stdout and stderr), to
/// explain a failed assertion; what went wrong reading them otherwise.
pub async fn container_logs(docker: &Docker, name: &str, tail: usize) -> String {
    use futures_util::TryStreamExt;
    let options = bollard::query_parameters::LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&tail.to_string())
        .build();
    match docker
        .logs(name, Some(options))
        .map_ok(|chunk| String::from_utf8_lossy(&chunk.into_bytes()).into_owned())
        .try_collect::<Vec<_>>()
        .await
    {
        Ok(lines) => lines.concat(),
        Err(e) => format!("(docker logs {name}: {e})"),
    }
}

/// A name unique to this test run, for containers, stacks and networks.
/// Wait, up to `bound`, until something listens on loopback `port`.
pub fn wait_listening(port: u16, what: &str, bound: Duration) {
    let deadline = Instant::now() + bound;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A self-signed certificate for `subject_alt_name` (e.g. `IP:127.0.0.1`),
/// made by openssl's own tool in `dir`: (certificate, key).
pub fn self_signed(
    dir: &std::path::Path,
    name: &str,
    subject_alt_name: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName={subject_alt_name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (tests/run installs it)");
    assert!(made.status.success(), "{made:?}");
    (cert, key)
}

pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Poll `check` until it returns `Some`, or panic after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Serialises the tests that form (or extend) a swarm of the bed's
/// engines, so two never form one at the same time. The engines stay in
/// it afterwards: `tests/testbed down` ends it with them. After a test
/// that panicked holding it (its swarms may be in any shape, an engine in
/// a swarm of its own), the next one starts from no swarm at all.
///
/// A test that makes an engine leave a swarm belongs in `tests/chaos.rs`,
/// not here: the engine's name resolution on bridge networks that existed
/// before the leave stops (moby/moby#45144), under other tests' feet.
pub async fn swarm_lock() -> SwarmGuard {
    static SWARM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let lock = SWARM.lock().await;
    if SWARM_LEFT_BY_A_PANIC.swap(false, std::sync::atomic::Ordering::SeqCst) {
        without_swarm(&Bed::get()).await;
    }
    SwarmGuard { _lock: lock }
}

static SWARM_LEFT_BY_A_PANIC: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Held by a test while it forms or changes a swarm ([`swarm_lock`]).
pub struct SwarmGuard {
    _lock: tokio::sync::MutexGuard<'static, ()>,
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            SWARM_LEFT_BY_A_PANIC.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Every bed engine out of any swarm (forced), for a test that needs to
/// start from none. Take `swarm_lock` first.
pub async fn without_swarm(bed: &Bed) {
    for node in &bed.nodes {
        let docker = engine(node).await;
        let leave = bollard::query_parameters::LeaveSwarmOptionsBuilder::default()
            .force(true)
            .build();
        // An engine in no swarm refuses; what counts is the state after.
        let _ = docker.leave_swarm(Some(leave)).await;
        let state = swarm_info(&docker).await.local_node_state;
        assert_eq!(
            state.map(|s| s.to_string()).as_deref(),
            Some("inactive"),
            "{} left its swarm",
            node.name
        );
    }
    // An engine that just left still tears its cluster agent down for a
    // while ("invalid cluster node while attaching to network"): wait
    // until a container starts on a network of its own again, so no test
    // running beside this one meets that.
    for node in &bed.nodes {
        let docker = engine(node).await;
        eventually(
            &format!("{} to attach containers again", node.name),
            Duration::from_secs(60),
            || attaches(&docker, bed),
        )
        .await;
    }
}

/// Whether a container starts on a new bridge network (both removed after).
async fn attaches(docker: &Docker, bed: &Bed) -> Option<()> {
    use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest};
    use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
    let name = unique("attach-probe");
    docker
        .create_network(NetworkCreateRequest {
            name: name.clone(),
            ..Default::default()
        })
        .await
        .ok()?;
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            ContainerCreateBody {
                image: Some(bed.base_image.clone()),
                cmd: Some(vec!["true".into()]),
                host_config: Some(HostConfig {
                    network_mode: Some(name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await;
    let started = match &created {
        Ok(_) => docker.start_container(&name, None).await.is_ok(),
        Err(_) => false,
    };
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = docker.remove_container(&name, Some(remove)).await;
    let _ = docker.remove_network(&name).await;
    started.then_some(())
}

/// An HTTP/1.0 GET of `/` for `host` at `addr:port`, bounded by 30 s;
/// returns the status code and body, or `None` when no answer came.
pub async fn http_get_host(addr: &str, port: u16, host: &str) -> Option<(u16, String)> {
    tokio::time::timeout(Duration::from_secs(30), get(addr, port, host, "/"))
        .await
        .ok()
        .flatten()
}

/// A plain HTTP/1.0 GET; returns the status code and body, or `None` when the
/// server does not answer (yet).
pub async fn http_get(addr: &str, port: u16, path: &str) -> Option<(u16, String)> {
    get(addr, port, addr, path).await
}

async fn get(addr: &str, port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((addr, port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Run git in `dir` as a test author; panics when git fails.
pub fn git(dir: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=pier-test",
            "-c",
            "user.email=test@pier.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} failed");
}

/// The commit `HEAD` of the repository in `dir` points at.
pub fn head_commit(dir: &std::path::Path) -> String {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git rev-parse HEAD failed");
    String::from_utf8(out.stdout)
        .expect("a commit id")
        .trim()
        .to_string()
}

/// A user repository on disk with pier manifests, committed with real git.
pub struct UserRepo {
    pub dir: tempfile::TempDir,
    pub stack: String,
}

impl UserRepo {
    /// A new repository holding `pier/stack.yml`, committed.
    pub fn new(stack_prefix: &str, manifest: &str) -> UserRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = UserRepo {
            dir,
            stack: unique(stack_prefix),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        std::fs::create_dir(repo.dir.path().join("pier")).expect("pier folder");
        repo.commit(manifest, "initial manifests");
        repo
    }

    pub fn git(&self, args: &[&str]) {
        git(self.dir.path(), args);
    }

    /// Replace `pier/stack.yml` and commit it.
    pub fn commit(&self, manifest: &str, message: &str) {
        std::fs::write(self.dir.path().join("pier/stack.yml"), manifest).expect("write manifest");
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
    }

    /// Run the pier binary on this repository with this stack; returns (status, stdout, stderr).
    pub fn pier(&self, bed: &Bed, args: &[&str]) -> (i32, String, String) {
        self.pier_with_env(bed, args, &[])
    }

    /// [`UserRepo::pier`] with more environment.
    pub fn pier_with_env(
        &self,
        bed: &Bed,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (i32, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pier"))
            .envs(env.iter().copied())
            .args(args)
            .args(["--stack", &self.stack])
            .current_dir(self.dir.path())
            .env(
                "PIER_INSECURE_REGISTRIES",
                format!("{},{}", bed.registry, bed.registry_auth),
            )
            .env("NO_COLOR", "1")
            .output()
            .expect("pier runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Bed {
    /// The base image under the password-protected registry's name.
    pub fn base_image_on_auth_registry(&self) -> String {
        let (_, path) = self.base_image.split_once('/').expect("registry/path");
        format!("{}/{path}", self.registry_auth)
    }
}

/// The bed's nodes as a manifest `nodes:` block, each tagged as given.
pub fn nodes_yaml(bed: &Bed, tags: &[&[&str]]) -> String {
    let mut out = String::from("nodes:\n");
    for (node, tags) in bed.nodes.iter().zip(tags) {
        out.push_str(&format!(
            "  {}: {{ endpoint: \"{}\", tags: [{}] }}\n",
            node.name,
            node.endpoint,
            tags.join(", ")
        ));
    }
    out
}

/// (node, container name, running) of every container of `stack`, sorted.
pub async fn stack_containers(bed: &Bed, stack: &str) -> Vec<(String, String, bool)> {
    let mut out: Vec<(String, String, bool)> = stack_replicas(bed, stack)
        .await
        .into_iter()
        .map(|(node, name, running, _)| (node, name, running))
        .collect();
    out.sort();
    out
}

/// Every container (running or not) labelled with `stack` on one engine.
async fn containers_of(docker: &Docker, stack: &str) -> Vec<bollard::models::ContainerSummary> {
    labelled(docker, &format!("pier.stack={stack}")).await
}

/// Every container (running or not) carrying `label` (`key=value`) on one engine.
pub async fn labelled(docker: &Docker, label: &str) -> Vec<bollard::models::ContainerSummary> {
    let filters = std::collections::HashMap::from([("label", vec![label.to_string()])]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
}

/// Remove everything of `stack` from every node: its containers and its network.
pub async fn remove_stack(bed: &Bed, stack: &str) {
    use bollard::query_parameters::RemoveContainerOptionsBuilder;
    for node in &bed.nodes {
        let docker = engine(node).await;
        for c in containers_of(&docker, stack).await {
            let force = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            let _ = docker
                .remove_container(&c.id.unwrap_or_default(), Some(force))
                .await;
        }
        let _ = docker.remove_network(&format!("pier-{stack}")).await;
    }
}

/// `node:name` of the containers of `stack` on the named nodes only.
pub async fn stack_containers_on(bed: &Bed, stack: &str, nodes: &[&str]) -> Vec<String> {
    let only: Vec<Node> = bed
        .nodes
        .iter()
        .filter(|n| nodes.contains(&n.name.as_str()))
        .cloned()
        .collect();
    let partial = Bed {
        nodes: only,
        ..bed.clone()
    };
    stack_containers(&partial, stack)
        .await
        .into_iter()
        .map(|(node, name, _)| format!("{node}:{name}"))
        .collect()
}

/// A `pier daemon` subprocess on a user repository, with short intervals.
/// What `pier logs --run COMMIT` prints from a daemon's state folder.
pub fn run_log(state_dir: &std::path::Path, commit: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pier"))
        .args(["logs", "--run", commit, "--state-dir"])
        .arg(state_dir)
        .output()
        .expect("pier runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Killed (and its stack removed by the caller) when dropped.
pub struct Daemon {
    child: std::process::Child,
    pub state_dir: std::path::PathBuf,
    pub log: std::path::PathBuf,
    address: std::cell::OnceCell<String>,
}

/// What a test changes about a daemon's command line and environment.
#[derive(Default, Clone)]
pub struct DaemonOptions {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl DaemonOptions {
    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.args.extend([name.to_string(), value.to_string()]);
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }
}

impl Daemon {
    /// Start a daemon for `repo` (a path or URL) with stack `stack`,
    /// keeping its state in `state_dir`.
    pub fn start(
        bed: &Bed,
        repo: &str,
        stack: &str,
        state_dir: &std::path::Path,
        options: &DaemonOptions,
    ) -> Daemon {
        std::fs::create_dir_all(state_dir).expect("state dir");
        let _ = std::fs::remove_file(state_dir.join("listen"));
        let log = state_dir.join(format!("daemon-{}.log", unique("run")));
        let log_file = std::fs::File::create(&log).expect("daemon log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pier"))
            .args(["daemon", "--repo", repo, "--stack", stack])
            .arg("--state-dir")
            .arg(state_dir)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--git-interval",
                "1h",
                "--registry-interval",
                "1h",
                "--resync-interval",
                "1h",
                "--debounce",
                "100ms",
                "--retry-max",
                "2s",
                "--health-timeout",
                "30s",
                "--cache-dir",
            ])
            .arg(state_dir.join("cache"))
            .args(&options.args)
            .env(
                "PIER_INSECURE_REGISTRIES",
                format!("{},{}", bed.registry, bed.registry_auth),
            )
            .env("NO_COLOR", "1")
            .env("PIER_LOG", "info,pier=debug")
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file)
            .spawn()
            .expect("pier daemon starts");
        Daemon {
            child,
            state_dir: state_dir.to_path_buf(),
            log,
            address: std::cell::OnceCell::new(),
        }
    }

    /// `127.0.0.1:port` of the daemon's API, once it listens.
    pub fn address(&self) -> String {
        self.address
            .get_or_init(|| {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    if let Ok(address) = std::fs::read_to_string(self.state_dir.join("listen")) {
                        return address.trim().to_string();
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the daemon did not start listening; its log:\n{}",
                        self.log_text()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .clone()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A request to the daemon's API: (status, body).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let (status, _, body) = self.request_with_head(method, path, headers, body).await;
        (status, body)
    }

    /// [`Self::request`], with the response's head (status line and
    /// headers) too.
    pub async fn request_with_head(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.address();
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .unwrap_or_else(|e| panic!("daemon API at {address}: {e}\n{}", self.log_text()));
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        // A server may refuse a large body before reading it all.
        let _ = stream.write_all(body).await;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, rest) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, head.to_string(), rest.to_string())
    }

    /// The status document.
    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = self.request("GET", "/api/v1/status", &[], b"").await;
        assert_eq!(code, 200, "status: {body}");
        serde_json::from_str(&body).expect("status is JSON")
    }

    /// The value of one metric sample (`name{labels}` as printed), 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let (_, text) = self.request("GET", "/metrics", &[], b"").await;
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Completed passes so far.
    pub async fn passes(&self) -> f64 {
        let (_, text) = self.request("GET", "/metrics", &[], b"").await;
        text.lines()
            .filter(|l| l.starts_with("pier_passes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait up to `guard` for the exit status (`None`: still running).
    pub fn terminate_within(&mut self, guard: Duration) -> Option<std::process::ExitStatus> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + guard;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("daemon status") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Send a signal (`HUP`, `TERM`, …) without waiting.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// SIGTERM, and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.child.wait().expect("daemon exits")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- daemon log {} ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// How long a daemon test lets the daemon converge. A bound, not a wait:
/// on 2 shared cores with four tests at a time and the bed's engines busy,
/// a daemon's first pass has taken over a minute.
/// Wait until the daemon has finished `at_least` passes.
pub async fn passes_reach(daemon: &Daemon, at_least: f64) {
    eventually("a pass after the request", CONVERGE, || async {
        (daemon.passes().await >= at_least).then_some(())
    })
    .await
}

/// Ask for a pass through the API (`token` is `PIER_API_TOKEN`) and wait
/// until one more pass has finished.
pub async fn reconcile(daemon: &Daemon, token: &str) {
    let before = daemon.passes().await;
    let (code, body) = daemon
        .request(
            "POST",
            "/api/v1/reconcile",
            &[("Authorization", &format!("Bearer {token}"))],
            b"",
        )
        .await;
    assert_eq!(code, 202, "{body}");
    passes_reach(daemon, before + 1.0).await;
}

pub const CONVERGE: Duration = Duration::from_secs(120);

/// Manifest lines of a service of `replicas` sleeping containers.
pub fn sleeper(bed: &Bed, name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "  {name}:\n    image: {}\n    command: sleep 3600\n    stop_grace_period: 1s\n    target_num_containers: {replicas}\n    deployment_strategy: high_availability\n{extra}",
        bed.base_image
    )
}

/// Running replicas of `service` in `stack`, as `node:name`.
pub async fn running(bed: &Bed, stack: &str, service: &str) -> Vec<String> {
    stack_replicas(bed, stack)
        .await
        .into_iter()
        .filter(|(_, _, up, labels)| {
            *up && labels.get("pier.service").map(String::as_str) == Some(service)
        })
        .map(|(node, name, _, _)| format!("{node}:{name}"))
        .collect()
}

/// Wait for exactly `count` replicas of `service`, all running.
pub async fn wait_running(bed: &Bed, stack: &str, service: &str, count: usize) -> Vec<String> {
    eventually(
        &format!("{count} running replicas of {service}"),
        CONVERGE,
        || async {
            let up = running(bed, stack, service).await;
            let all = stack_replicas(bed, stack).await;
            let of_service = all
                .iter()
                .filter(|(_, _, _, l)| l.get("pier.service").map(String::as_str) == Some(service))
                .count();
            (up.len() == count && of_service == count).then_some(up)
        },
    )
    .await
}

/// Replica containers of `stack` with their labels: (node, name, running, labels).
pub async fn stack_replicas(
    bed: &Bed,
    stack: &str,
) -> Vec<(
    String,
    String,
    bool,
    std::collections::HashMap<String, String>,
)> {
    let mut out = Vec::new();
    for node in &bed.nodes {
        for c in containers_of(&engine(node).await, stack).await {
            let name = c
                .names
                .unwrap_or_default()
                .first()
                .cloned()
                .unwrap_or_default();
            out.push((
                node.name.clone(),
                name.trim_start_matches('/').to_string(),
                c.state.is_some_and(|s| s.to_string() == "running"),
                c.labels.unwrap_or_default(),
            ));
        }
    }
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

/// Push a new image to the open registry as `repository:tag`, built on
/// `node` from the base image with `marker` as a label (so each marker has
/// its own digest). Returns the pushed digest.
pub async fn push_image(
    bed: &Bed,
    node: &Node,
    repository: &str,
    tag: &str,
    marker: &str,
) -> String {
    push_image_with_volumes(bed, node, repository, tag, marker, &[]).await
}

/// [`push_image`] of an image that declares `volumes` (Dockerfile `VOLUME`).
pub async fn push_image_with_volumes(
    bed: &Bed,
    node: &Node,
    repository: &str,
    tag: &str,
    marker: &str,
    volumes: &[&str],
) -> String {
    use bollard::models::ContainerCreateBody;
    use bollard::query_parameters::{
        CommitContainerOptionsBuilder, CreateContainerOptionsBuilder, PushImageOptionsBuilder,
        RemoveContainerOptionsBuilder,
    };
    use futures_util::TryStreamExt;
    let docker = engine(node).await;
    let name = unique("push");
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            ContainerCreateBody {
                image: Some(bed.base_image.clone()),
                cmd: Some(vec!["true".into()]),
                ..Default::default()
            },
        )
        .await
        .expect("create a container to commit");
    let image = format!("{}/{repository}", bed.registry);
    docker
        .commit_container(
            CommitContainerOptionsBuilder::default()
                .container(&created.id)
                .repo(&image)
                .tag(tag)
                .build(),
            bollard::models::ContainerConfig {
                labels: Some(std::collections::HashMap::from([(
                    "pier-test.marker".to_string(),
                    marker.to_string(),
                )])),
                cmd: Some(vec!["sleep".into(), "3600".into()]),
                volumes: (!volumes.is_empty())
                    .then(|| volumes.iter().map(|v| v.to_string()).collect()),
                ..Default::default()
            },
        )
        .await
        .expect("commit");
    let _ = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
    let pushed: Vec<_> = docker
        .push_image(
            &image,
            Some(PushImageOptionsBuilder::default().tag(tag).build()),
            None,
        )
        .try_collect()
        .await
        .expect("push");
    pushed
        .iter()
        .find_map(|info| {
            // The last status line reads `<tag>: digest: sha256:… size: N`.
            let status = info.status.as_deref()?;
            let digest = status.split_once("digest: ")?.1.split_whitespace().next()?;
            Some(digest.to_string())
        })
        .unwrap_or_else(|| panic!("the push reported no digest: {pushed:?}"))
}

/// Run `command` in a container; returns (exit code, stdout and stderr).
pub async fn exec(docker: &bollard::Docker, container: &str, command: &[&str]) -> (i64, String) {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(command.iter().map(|part| part.to_string()).collect()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .expect("exec");
    let mut text = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&exec.id, None).await.expect("start exec")
    {
        while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut output).await {
            text.push_str(&chunk.to_string());
        }
    }
    let code = docker
        .inspect_exec(&exec.id)
        .await
        .expect("inspect exec")
        .exit_code
        .unwrap_or(-1);
    (code, text)
}

/// A request a [`HookReceiver`] took.
#[derive(Debug, Clone)]
pub struct Hook {
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Hook {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A real HTTP server on loopback that keeps every POST to `/hook`.
pub struct HookReceiver {
    pub url: String,
    taken: std::sync::Arc<std::sync::Mutex<Vec<Hook>>>,
    server: tokio::task::JoinHandle<()>,
}

impl HookReceiver {
    pub async fn start() -> HookReceiver {
        use axum::routing::post;
        let taken = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = taken.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                    keep.lock().unwrap().push(Hook {
                        headers,
                        body: body.to_vec(),
                    });
                    "ok"
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the hook receiver");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HookReceiver { url, taken, server }
    }

    pub fn taken(&self) -> Vec<Hook> {
        self.taken.lock().unwrap().clone()
    }

    /// The `x-pier-event` of each request taken, in order.
    pub fn events(&self) -> Vec<String> {
        self.taken()
            .iter()
            .filter_map(|h| {
                h.headers
                    .get("x-pier-event")?
                    .to_str()
                    .ok()
                    .map(String::from)
            })
            .collect()
    }
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A real SMTP server (Debian's python3-aiosmtpd) on a loopback port,
/// keeping what it receives in a Maildir.
pub struct SmtpServer {
    pub port: u16,
    maildir: tempfile::TempDir,
    child: std::process::Child,
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        let maildir = tempfile::tempdir().expect("a maildir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = std::process::Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            // A folder not there yet, which the Maildir then creates whole.
            .arg(maildir.path().join("mail"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect(
                "cannot start /usr/bin/python3; run tests/run, which installs python3-aiosmtpd",
            );
        let mut server = SmtpServer {
            port,
            maildir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "the SMTP server exited ({status}); run tests/run, which installs python3-aiosmtpd"
                );
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP server did not listen on {port} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// Every mail received, as text.
    pub fn mails(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.path().join("mail/new")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real ACME CA: Debian's Pebble (Let's Encrypt's test CA) on the bed's
/// bridge address, where the nodes' containers reach it, with its
/// challenge server answering every name with `answer`'s address, and the
/// CA's HTTP and TLS checks sent to the ports `http_port` and `tls_port`
/// of that address (a router's published ports).
pub struct Pebble {
    /// The ACME directory.
    pub directory: String,
    /// The root its directory is served under (PEM file).
    pub server_root: std::path::PathBuf,
    /// Where the root of the certificates it issues is served.
    pub issued_roots: String,
    _dir: tempfile::TempDir,
    children: Vec<std::process::Child>,
}

impl Pebble {
    pub async fn start(bed: &Bed, answer: &str, http_port: u16, tls_port: u16) -> Pebble {
        let dir = tempfile::tempdir().expect("a folder for pebble");
        let host = bed.registry.split(':').next().unwrap().to_string();
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port()
        };
        let (dns, management) = (free(), free());
        let (listen, admin) = {
            let on_host = |host: &str| {
                std::net::TcpListener::bind((host, 0))
                    .and_then(|l| l.local_addr())
                    .expect("a free port on the bed's bridge")
                    .port()
            };
            (on_host(&host), on_host(&host))
        };
        let (cert, key) = self_signed(dir.path(), "pebble", &format!("IP:{host}"));
        let config = dir.path().join("pebble.json");
        std::fs::write(
            &config,
            serde_json::json!({"pebble": {
                "listenAddress": format!("{host}:{listen}"),
                "managementListenAddress": format!("{host}:{admin}"),
                "certificate": cert,
                "privateKey": key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }})
            .to_string(),
        )
        .unwrap();
        let missing = "run tests/run, which installs Debian's pebble";
        let challenges = std::process::Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", answer, "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{management}")])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("pebble-challtestsrv: {e}; {missing}"));
        let ca = std::process::Command::new("pebble")
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // No pause before checking a challenge, no nonce refused on purpose.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("pebble: {e}; {missing}"));
        let pebble = Pebble {
            directory: format!("https://{host}:{listen}/dir"),
            server_root: cert,
            issued_roots: format!("https://{host}:{admin}/roots/0"),
            _dir: dir,
            children: vec![challenges, ca],
        };
        eventually("pebble's directory", Duration::from_secs(30), || async {
            let status = tokio::process::Command::new("curl")
                .args(["-sf", "--max-time", "5", "--cacert"])
                .arg(&pebble.server_root)
                .arg(&pebble.directory)
                .output()
                .await
                .expect("curl runs")
                .status;
            status.success().then_some(())
        })
        .await;
        pebble
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
