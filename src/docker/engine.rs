//! [`Runtime`] over a real Docker engine with bollard: unix sockets, plain
//! TCP, TCP with TLS and SSH, API version negotiated with the engine (the
//! test bed's speak 1.41; newer engines work the same).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig, Mount,
    MountType, NetworkCreateRequest, NetworkingConfig, PortBinding as BollardPortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::TryStreamExt;

use super::{
    AnonymousVolume, ContainerInfo, ContainerSpec, Credentials, Health, Runtime, RuntimeError,
    Volumes,
};
use crate::manifest::model::{Endpoint, Node, Tls};

/// The HTTP client's own cap on any request, the long-running ones (builds,
/// job waits, log streams) included. Short requests are bounded much more
/// tightly by the engine timeout given to [`Engine::connect`].
const REQUEST_TIMEOUT_S: u64 = 600;

/// A pull fails when the engine reports no progress for this long (or for
/// the engine timeout, if longer): committing a large layer can leave a
/// healthy engine silent for a while, so the engine timeout alone is too tight.
const PULL_SILENCE_FLOOR: Duration = Duration::from_secs(60);

/// One node's engine.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    /// How long a short request (list, inspect, create, start, rename,
    /// remove) may go unanswered before the engine counts as unreachable.
    timeout: Duration,
}

/// Both of rustls's crypto back ends are linked (bollard and lettre ask for
/// ring, oci-client for aws-lc-rs), so rustls cannot pick one by itself:
/// pier names aws-lc-rs, once per process, before the first TLS connection
/// (the binary at start; the engine client again, for library users).
pub fn install_crypto_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // An error means some provider is installed already, which is as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// Where a node's TLS files are.
/// Negotiated clients, by [`client_key`].
static CLIENTS: std::sync::LazyLock<std::sync::Mutex<HashMap<String, Docker>>> =
    std::sync::LazyLock::new(Default::default);

/// What a client is made from: the endpoint, and for TLS the files with
/// their modification times, so a renewed certificate makes a new client.
fn client_key(node: &Node) -> String {
    let mut key = node.endpoint.to_string();
    if let Some(tls) = &node.tls {
        match tls_paths(tls) {
            Ok((ca, cert, private)) => {
                for path in [ca, cert, private] {
                    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                    key.push_str(&format!("|{}@{modified:?}", path.display()));
                }
            }
            // Not cached in a usable way: connecting reports the error.
            Err(_) => key.push_str(&format!("|{tls:?}")),
        }
    }
    key
}

fn tls_paths(tls: &Tls) -> Result<(PathBuf, PathBuf, PathBuf), RuntimeError> {
    match tls {
        Tls::Paths { ca, cert, key } => Ok((ca.into(), cert.into(), key.into())),
        Tls::Secret { name } => {
            let var = format!("PIER_TLS_{}", name.to_ascii_uppercase().replace('-', "_"));
            let folder = std::env::var_os(&var).map(PathBuf::from).ok_or_else(|| {
                RuntimeError::Failed(format!(
                    "TLS secret `{name}`: set {var} to a folder holding ca.pem, cert.pem and key.pem"
                ))
            })?;
            Ok((
                folder.join("ca.pem"),
                folder.join("cert.pem"),
                folder.join("key.pem"),
            ))
        }
    }
}

impl Engine {
    /// The bollard client, for the operations beyond [`Runtime`] (jobs, builds).
    pub(crate) fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The engine's version (`docker version`'s server version), if it says.
    pub async fn server_version(&self) -> Option<String> {
        tokio::time::timeout(self.timeout, self.docker.version())
            .await
            .ok()?
            .ok()?
            .version
    }

    /// Connect to a node and negotiate the API version.
    /// `timeout` bounds the version handshake, which decides whether the node
    /// is reachable at all, and every later short request: an engine that
    /// accepts connections but stops answering fails the step that met it
    /// (as unreachable, so it is retried) instead of holding the whole pass.
    ///
    /// Clients are kept per endpoint for the life of the process, so each
    /// pass reuses their open connections and TLS files are read once (again
    /// when one of them changes on disk); a kept client is checked with a
    /// ping, and dropped when that fails.
    pub async fn connect(node: &Node, timeout: Duration) -> Result<Engine, RuntimeError> {
        let key = client_key(node);
        let kept = CLIENTS.lock().expect("clients lock").get(&key).cloned();
        if let Some(docker) = kept {
            return match tokio::time::timeout(timeout, docker.ping()).await {
                Ok(Ok(_)) => Ok(Engine { docker, timeout }),
                Ok(Err(e)) => {
                    CLIENTS.lock().expect("clients lock").remove(&key);
                    Err(RuntimeError::Unreachable(format!(
                        "{}: {}",
                        node.endpoint,
                        with_causes(&e)
                    )))
                }
                Err(_) => {
                    CLIENTS.lock().expect("clients lock").remove(&key);
                    Err(RuntimeError::Unreachable(format!(
                        "{} did not answer within {timeout:?}",
                        node.endpoint
                    )))
                }
            };
        }
        let engine = Engine::connect_new(node, timeout).await?;
        CLIENTS
            .lock()
            .expect("clients lock")
            .insert(key, engine.docker.clone());
        Ok(engine)
    }

    async fn connect_new(node: &Node, timeout: Duration) -> Result<Engine, RuntimeError> {
        let secs = REQUEST_TIMEOUT_S;
        let version = bollard::API_DEFAULT_VERSION;
        let docker = match (&node.endpoint, &node.tls) {
            (Endpoint::Unix { path }, _) => Docker::connect_with_unix(path, secs, version),
            (Endpoint::Tcp { host, port }, None) => {
                Docker::connect_with_http(&format!("tcp://{host}:{port}"), secs, version)
            }
            (Endpoint::Tcp { host, port }, Some(tls)) => {
                let (ca, cert, key) = tls_paths(tls)?;
                install_crypto_provider();
                Docker::connect_with_ssl(
                    &format!("tcp://{host}:{port}"),
                    &key,
                    &cert,
                    &ca,
                    secs,
                    version,
                )
            }
            // Port 22 is left to ssh's configuration, which may say otherwise.
            (Endpoint::Ssh { user, host, port }, _) => super::ssh::connect(
                user.as_deref(),
                host,
                (*port != 22).then_some(*port),
                secs,
                version,
            ),
        }
        .map_err(|e| RuntimeError::Failed(e.to_string()))?;
        let docker = tokio::time::timeout(timeout, docker.negotiate_version())
            .await
            .map_err(|_| {
                RuntimeError::Unreachable(format!(
                    "{} did not answer within {timeout:?}",
                    node.endpoint
                ))
            })?
            .map_err(|e| {
                RuntimeError::Unreachable(format!("{}: {}", node.endpoint, with_causes(&e)))
            })?;
        Ok(Engine { docker, timeout })
    }

    /// One container's inspection, bounded by the engine timeout.
    async fn inspect(
        &self,
        id: &str,
    ) -> Result<bollard::models::ContainerInspectResponse, RuntimeError> {
        self.within(
            "a container inspection",
            Box::pin(self.docker.inspect_container(id, None)),
        )
        .await?
        .map_err(classify)
    }

    /// Await one short engine request, bounded by the engine timeout.
    ///
    /// Callers pass bollard's futures boxed: each is several KiB, and a
    /// rollout holds one future per replica change waiting for its node's
    /// turn, so inline they would cost that much per replica of the fleet.
    pub(crate) async fn within<T>(
        &self,
        what: &str,
        request: impl Future<Output = T>,
    ) -> Result<T, RuntimeError> {
        self.within_plus(Duration::ZERO, what, request).await
    }

    /// Await an engine request that legitimately takes `expected` (a stop's
    /// grace period) plus the engine timeout.
    pub(crate) async fn within_plus<T>(
        &self,
        expected: Duration,
        what: &str,
        request: impl Future<Output = T>,
    ) -> Result<T, RuntimeError> {
        let bound = expected + self.timeout;
        tokio::time::timeout(bound, request).await.map_err(|_| {
            RuntimeError::Unreachable(format!("the engine did not answer {what} within {bound:?}"))
        })
    }
}

/// A container of the stack stopped or disappeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// `die`, `destroy` or `oom`.
    pub action: String,
    pub container: String,
    pub service: Option<String>,
}

impl Engine {
    /// Events that may leave a replica of `stack` missing: a container of
    /// the stack died, was removed or ran out of memory. The stream ends when
    /// the connection breaks; the caller reconnects.
    pub fn container_events(
        &self,
        stack: &str,
    ) -> impl futures_util::Stream<Item = Result<ContainerEvent, RuntimeError>> + use<> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{}={stack}", super::LABEL_STACK)],
            ),
            (
                "event".to_string(),
                // A replica whose health changes moves in or out of rotation.
                vec![
                    "die".into(),
                    "destroy".into(),
                    "oom".into(),
                    "health_status".into(),
                ],
            ),
        ]);
        let options = bollard::query_parameters::EventsOptionsBuilder::new()
            .filters(&filters)
            .build();
        self.docker
            .events(Some(options))
            .map_ok(|message| {
                let actor = message.actor.unwrap_or_default();
                let attributes = actor.attributes.unwrap_or_default();
                ContainerEvent {
                    action: message.action.unwrap_or_default(),
                    container: attributes
                        .get("name")
                        .cloned()
                        .or(actor.id)
                        .unwrap_or_default(),
                    service: attributes.get(super::LABEL_SERVICE).cloned(),
                }
            })
            .map_err(classify)
    }
}

/// An error with its chain of causes: hyper's "client error (Connect)"
/// means little without the TLS or network failure behind it.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = inner.source();
    }
    text
}

/// The exit code in an engine's one-line status, `Exited (137) 5 seconds ago`.
fn exit_code(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest.split_once(')')?.0.parse().ok()
}

fn classify(error: bollard::errors::Error) -> RuntimeError {
    use bollard::errors::Error as E;
    match error {
        E::DockerResponseServerError {
            status_code: 404,
            message,
        } => RuntimeError::NotFound(message),
        E::DockerResponseServerError {
            status_code: 409,
            message,
        } => RuntimeError::Conflict(message),
        E::DockerResponseServerError { message, .. } => RuntimeError::Failed(message),
        E::RequestTimeoutError => RuntimeError::Unreachable("request timed out".into()),
        E::HyperResponseError { .. } | E::IOError { .. } => {
            RuntimeError::Unreachable(with_causes(&error))
        }
        other => RuntimeError::Failed(other.to_string()),
    }
}

/// Labels and driver options for a named volume the engine creates on
/// first use (Compose's top-level `labels` and `driver_opts`).
fn volume_options(mount: &crate::docker::MountSpec) -> Option<bollard::models::MountVolumeOptions> {
    if mount.labels.is_empty() && mount.driver_opts.is_empty() {
        return None;
    }
    Some(bollard::models::MountVolumeOptions {
        labels: Some(mount.labels.clone().into_iter().collect()),
        driver_config: (!mount.driver_opts.is_empty()).then(|| {
            bollard::models::MountVolumeOptionsDriverConfig {
                name: Some("local".into()),
                options: Some(mount.driver_opts.clone().into_iter().collect()),
            }
        }),
        ..Default::default()
    })
}

impl Engine {
    /// Attach a container to `network`, answering to `aliases` there, with
    /// `links` (`name:alias`) resolving `alias` to `name` for it alone.
    async fn join(
        &self,
        container: &str,
        network: &str,
        aliases: &[String],
        links: &[String],
    ) -> Result<(), RuntimeError> {
        let request = bollard::models::NetworkConnectRequest {
            container: container.to_string(),
            endpoint_config: Some(bollard::models::EndpointSettings {
                aliases: Some(aliases.to_vec()),
                links: (!links.is_empty()).then(|| links.to_vec()),
                ..Default::default()
            }),
        };
        self.within(
            "a network connect",
            Box::pin(self.docker.connect_network(network, request)),
        )
        .await?
        .map_err(classify)
    }

    /// Create a network; one that exists already (another pass, or another
    /// stack's apply, made it meanwhile) counts as created.
    async fn create_network(&self, request: NetworkCreateRequest) -> Result<(), RuntimeError> {
        match self
            .within(
                "a network creation",
                Box::pin(self.docker.create_network(request)),
            )
            .await?
        {
            Ok(_) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }
}

/// The largest live configuration file (and command output) pier reads back.
const MAX_LIVE_FILE: usize = 1 << 20;

/// The contents of the first regular file in a tar archive.
fn first_file(archive: &[u8]) -> std::io::Result<Option<String>> {
    use std::io::Read as _;
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type().is_file() {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            return Ok(Some(text));
        }
    }
    Ok(None)
}

/// A tar archive of `files` (absolute path → contents), to unpack at `/`.
/// The engine makes the folders they need, as it does for the pipeline's
/// workspace archives.
fn files_archive(files: &BTreeMap<String, String>) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(contents.len() as u64);
        archive.append_data(
            &mut header,
            path.trim_start_matches('/'),
            contents.as_bytes(),
        )?;
    }
    archive.into_inner()
}

fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut port_bindings: HashMap<String, Option<Vec<BollardPortBinding>>> = HashMap::new();
    for binding in &spec.ports {
        port_bindings
            .entry(binding.container.clone())
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(BollardPortBinding {
                host_ip: binding.host_ip.clone(),
                host_port: Some(binding.host_port.map(|p| p.to_string()).unwrap_or_default()),
            });
    }
    let mut exposed: Vec<String> = spec.exposed.clone();
    exposed.extend(spec.ports.iter().map(|p| p.container.clone()));
    exposed.sort();
    exposed.dedup();
    let binds: Vec<String> = spec
        .mounts
        .iter()
        .filter_map(|m| {
            let relabel = m.relabel?;
            let mode = if m.read_only { "ro" } else { "rw" };
            Some(format!("{}:{}:{mode},{relabel}", m.source, m.target))
        })
        .collect();
    let mounts = spec
        .mounts
        .iter()
        .filter(|m| m.relabel.is_none())
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: (!m.source.is_empty()).then(|| m.source.clone()),
            typ: Some(if m.kind == "bind" {
                MountType::BIND
            } else {
                MountType::VOLUME
            }),
            read_only: Some(m.read_only),
            volume_options: volume_options(m),
            ..Default::default()
        })
        .collect();
    let (restart_name, retries) = &spec.restart;
    let restart = RestartPolicy {
        name: Some(match restart_name.as_str() {
            "always" => RestartPolicyNameEnum::ALWAYS,
            "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            _ => RestartPolicyNameEnum::NO,
        }),
        maximum_retry_count: retries.map(i64::from),
    };
    let nanos = |d: Option<Duration>| d.map(|d| d.as_nanos() as i64);
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(spec.env.clone()),
        exposed_ports: Some(exposed),
        labels: Some(spec.labels.clone().into_iter().collect()),
        hostname: spec.hostname.clone(),
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        stop_timeout: spec.stop_timeout.map(|d| d.as_secs() as i64),
        stop_signal: spec.stop_signal.clone(),
        tty: spec.tty.then_some(true),
        open_stdin: spec.stdin_open.then_some(true),
        domainname: spec.domainname.clone(),
        healthcheck: spec.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: nanos(h.interval),
            timeout: nanos(h.timeout),
            retries: h.retries.map(i64::from),
            start_period: nanos(h.start_period),
            ..Default::default()
        }),
        host_config: Some(HostConfig {
            port_bindings: Some(port_bindings),
            mounts: Some(mounts),
            binds: (!binds.is_empty()).then_some(binds),
            privileged: Some(spec.privileged),
            restart_policy: Some(restart),
            memory: spec.memory.map(|m| m as i64),
            cpu_shares: spec.cpu_shares.map(i64::from),
            cap_add: Some(spec.cap_add.clone()),
            cap_drop: Some(spec.cap_drop.clone()),
            extra_hosts: Some(spec.extra_hosts.clone()),
            network_mode: Some(spec.network.clone()),
            volumes_from: (!spec.volumes_from.is_empty()).then(|| spec.volumes_from.clone()),
            nano_cpus: spec.nano_cpus,
            cpu_quota: spec.cpu_quota,
            cpu_period: spec.cpu_period,
            cpuset_cpus: spec.cpuset.clone(),
            memory_reservation: spec.memory_reservation.map(|m| m as i64),
            memory_swap: spec.memory_swap,
            oom_score_adj: spec.oom_score_adj,
            pids_limit: spec.pids_limit,
            ulimits: (!spec.ulimits.is_empty()).then(|| {
                spec.ulimits
                    .iter()
                    .map(|(name, (soft, hard))| bollard::models::ResourcesUlimits {
                        name: Some(name.clone()),
                        soft: Some(*soft),
                        hard: Some(*hard),
                    })
                    .collect()
            }),
            log_config: spec.logging.as_ref().map(|(driver, options)| {
                bollard::models::HostConfigLogConfig {
                    typ: Some(driver.clone()),
                    config: Some(options.clone().into_iter().collect()),
                }
            }),
            init: spec.init,
            readonly_rootfs: spec.read_only.then_some(true),
            shm_size: spec.shm_size.map(|s| s as i64),
            dns: (!spec.dns.is_empty()).then(|| spec.dns.clone()),
            dns_search: (!spec.dns_search.is_empty()).then(|| spec.dns_search.clone()),
            sysctls: (!spec.sysctls.is_empty()).then(|| spec.sysctls.clone().into_iter().collect()),
            tmpfs: (!spec.tmpfs.is_empty()).then(|| {
                spec.tmpfs
                    .iter()
                    .map(|entry| {
                        let (path, options) = entry.split_once(':').unwrap_or((entry, ""));
                        (path.to_string(), options.to_string())
                    })
                    .collect()
            }),
            group_add: (!spec.group_add.is_empty()).then(|| spec.group_add.clone()),
            devices: (!spec.devices.is_empty()).then(|| {
                spec.devices
                    .iter()
                    .map(
                        |(host, container, permissions)| bollard::models::DeviceMapping {
                            path_on_host: Some(host.clone()),
                            path_in_container: Some(container.clone()),
                            cgroup_permissions: Some(permissions.clone()),
                        },
                    )
                    .collect()
            }),
            security_opt: (!spec.security_opt.is_empty()).then(|| spec.security_opt.clone()),
            pid_mode: spec.pid_mode.clone(),
            ipc_mode: spec.ipc_mode.clone(),
            ..Default::default()
        }),
        // Aliases exist only on a user-defined network.
        networking_config: spec.on_stack_network().then(|| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                spec.network.clone(),
                EndpointSettings {
                    aliases: Some(spec.aliases.clone()),
                    links: spec.network_links.get(&spec.network).cloned(),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

impl Runtime for Engine {
    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let options = ListContainersOptionsBuilder::default().all(true).build();
        let containers = self
            .within(
                "the container list",
                Box::pin(self.docker.list_containers(Some(options))),
            )
            .await?
            .map_err(classify)?;
        Ok(containers
            .into_iter()
            // A container being removed is as good as gone; planning around it
            // would only race its removal.
            .filter(|c| c.state.is_none_or(|s| s.to_string() != "removing"))
            .map(|c| ContainerInfo {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                created: c.created.unwrap_or_default(),
                // The engine's one-line status, e.g. "Up 3 seconds (health: starting)".
                unhealthy: c
                    .status
                    .as_deref()
                    .is_some_and(|s| s.contains("(unhealthy)") || s.contains("(health: starting)")),
                exit_code: c.status.as_deref().and_then(exit_code),
                in_rotation: c
                    .network_settings
                    .as_ref()
                    .and_then(|s| s.networks.as_ref())
                    .is_some_and(|networks| {
                        networks
                            .keys()
                            .any(|n| n.ends_with(crate::manifest::model::ROUTES_SUFFIX))
                    }),
                // A restarting container is the engine honouring its restart
                // policy (`autorestart`); pier does not race it with a replacement.
                running: c
                    .state
                    .is_some_and(|s| matches!(s.to_string().as_str(), "running" | "restarting")),
            })
            .collect())
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>, RuntimeError> {
        match self
            .within(
                "an image inspection",
                Box::pin(self.docker.inspect_image(reference)),
            )
            .await?
        {
            Ok(image) => Ok(image.id),
            Err(e) => match classify(e) {
                RuntimeError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn pull(
        &self,
        reference: &str,
        credentials: Option<&Credentials>,
    ) -> Result<(), RuntimeError> {
        let options = CreateImageOptionsBuilder::default()
            .from_image(reference)
            .build();
        let credentials = credentials.map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            ..Default::default()
        });
        let silence = self.timeout.max(PULL_SILENCE_FLOOR);
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        loop {
            match tokio::time::timeout(silence, progress.try_next()).await {
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(classify(e)),
                Err(_) => {
                    return Err(RuntimeError::Unreachable(format!(
                        "the pull of {reference} made no progress for {silence:?}"
                    )));
                }
            }
        }
    }

    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        internal: bool,
    ) -> Result<(), RuntimeError> {
        if self.network_exists(name).await? {
            return Ok(());
        }
        self.create_network(NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            internal: internal.then_some(true),
            labels: Some(labels.clone().into_iter().collect()),
            ..Default::default()
        })
        .await
    }

    async fn swarm(&self) -> Result<crate::plan::swarm::SwarmMembership, RuntimeError> {
        let info = self
            .within("a system info request", Box::pin(self.docker.info()))
            .await?
            .map_err(classify)?;
        let swarm = info.swarm.unwrap_or_default();
        Ok(crate::plan::swarm::SwarmMembership {
            state: swarm
                .local_node_state
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "inactive".into()),
            cluster: swarm.cluster.and_then(|c| c.id),
            manager: swarm.control_available.unwrap_or(false),
            managers: swarm
                .remote_managers
                .unwrap_or_default()
                .into_iter()
                .filter_map(|peer| peer.addr)
                .collect(),
            address: swarm.node_addr.filter(|a| !a.is_empty()),
            node_id: swarm.node_id.filter(|id| !id.is_empty()),
            promoted: false,
        })
    }

    async fn connect(
        &self,
        container: &str,
        network: &str,
        aliases: &[String],
    ) -> Result<(), RuntimeError> {
        self.join(container, network, aliases, &[]).await
    }

    async fn disconnect(&self, container: &str, network: &str) -> Result<(), RuntimeError> {
        let request = bollard::models::NetworkDisconnectRequest {
            container: container.to_string(),
            force: Some(true),
        };
        self.within(
            "a network disconnect",
            Box::pin(self.docker.disconnect_network(network, request)),
        )
        .await?
        .map_err(classify)
    }

    async fn swarm_manager_ids(&self) -> Result<std::collections::BTreeSet<String>, RuntimeError> {
        let nodes = self
            .within(
                "a swarm node list",
                Box::pin(
                    self.docker
                        .list_nodes(None::<bollard::query_parameters::ListNodesOptions>),
                ),
            )
            .await?
            .map_err(classify)?;
        Ok(nodes
            .into_iter()
            .filter(|node| {
                node.spec.as_ref().and_then(|s| s.role)
                    == Some(bollard::models::NodeSpecRoleEnum::MANAGER)
            })
            .filter_map(|node| node.id)
            .collect())
    }

    async fn swarm_leave(&self) -> Result<(), RuntimeError> {
        let options = bollard::query_parameters::LeaveSwarmOptionsBuilder::default()
            .force(false)
            .build();
        self.within(
            "a swarm leave",
            Box::pin(self.docker.leave_swarm(Some(options))),
        )
        .await?
        .map_err(classify)
    }

    async fn swarm_forget(&self, node_id: &str) -> Result<(), RuntimeError> {
        // It left already; the manager may not have seen it go down yet.
        let options = bollard::query_parameters::DeleteNodeOptionsBuilder::default()
            .force(true)
            .build();
        self.within(
            "a swarm node removal",
            Box::pin(self.docker.delete_node(node_id, Some(options))),
        )
        .await?
        .map_err(classify)
    }

    async fn overlay_containers(&self) -> Result<Vec<String>, RuntimeError> {
        let filters = HashMap::from([("driver".to_string(), vec!["overlay".to_string()])]);
        let options = bollard::query_parameters::ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let networks = self
            .within(
                "a network list",
                Box::pin(self.docker.list_networks(Some(options))),
            )
            .await?
            .map_err(classify)?;
        let mut containers = Vec::new();
        for network in networks.into_iter().filter_map(|n| n.id) {
            let inspect = self
                .within(
                    "a network inspection",
                    Box::pin(self.docker.inspect_network(
                        &network,
                        None::<bollard::query_parameters::InspectNetworkOptions>,
                    )),
                )
                .await?;
            let Ok(inspect) = inspect else { continue };
            // Keyed by container id; the engine's own endpoints (`lb-<network>`,
            // `ingress-sbox`) are not containers anyone runs.
            containers.extend(
                inspect
                    .containers
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(id, _)| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                    .filter_map(|(_, c)| c.name),
            );
        }
        Ok(containers)
    }

    async fn swarm_set_role(&self, node_id: &str, manager: bool) -> Result<(), RuntimeError> {
        let node = self
            .within(
                "a swarm node inspection",
                Box::pin(self.docker.inspect_node(node_id)),
            )
            .await?
            .map_err(classify)?;
        let version = node
            .version
            .and_then(|v| v.index)
            .ok_or_else(|| RuntimeError::Failed(format!("swarm node {node_id} has no version")))?;
        let role = if manager {
            bollard::models::NodeSpecRoleEnum::MANAGER
        } else {
            bollard::models::NodeSpecRoleEnum::WORKER
        };
        let spec = bollard::models::NodeSpec {
            role: Some(role),
            ..node.spec.unwrap_or_default()
        };
        let options = bollard::query_parameters::UpdateNodeOptionsBuilder::default()
            .version(version as i64)
            .build();
        self.within(
            "a swarm node update",
            Box::pin(self.docker.update_node(node_id, spec, options)),
        )
        .await?
        .map_err(classify)
    }

    async fn swarm_init(&self, advertise: Option<&str>) -> Result<(), RuntimeError> {
        let request = bollard::models::SwarmInitRequest {
            listen_addr: Some("0.0.0.0:2377".into()),
            advertise_addr: advertise.map(str::to_string),
            ..Default::default()
        };
        self.within("a swarm init", Box::pin(self.docker.init_swarm(request)))
            .await?
            .map(|_| ())
            .map_err(classify)
    }

    async fn swarm_tokens(&self) -> Result<(String, String), RuntimeError> {
        let swarm = self
            .within("a swarm inspection", Box::pin(self.docker.inspect_swarm()))
            .await?
            .map_err(classify)?;
        let tokens = swarm.join_tokens.unwrap_or_default();
        match (tokens.worker, tokens.manager) {
            (Some(worker), Some(manager)) => Ok((worker, manager)),
            _ => Err(RuntimeError::Failed(
                "the manager gave no join tokens".into(),
            )),
        }
    }

    async fn swarm_join(
        &self,
        advertise: Option<&str>,
        manager: &str,
        token: &str,
    ) -> Result<(), RuntimeError> {
        let request = bollard::models::SwarmJoinRequest {
            listen_addr: Some("0.0.0.0:2377".into()),
            advertise_addr: advertise.map(str::to_string),
            remote_addrs: Some(vec![manager.to_string()]),
            join_token: Some(token.to_string()),
            ..Default::default()
        };
        // Joining waits for the manager to admit the node: allow it longer.
        self.within_plus(
            Duration::from_secs(20),
            "a swarm join",
            Box::pin(self.docker.join_swarm(request)),
        )
        .await?
        .map_err(classify)
    }

    async fn network_exists(&self, name: &str) -> Result<bool, RuntimeError> {
        match self
            .within(
                "a network inspection",
                Box::pin(self.docker.inspect_network(name, None)),
            )
            .await?
        {
            Ok(_) => Ok(true),
            Err(e) => match classify(e) {
                RuntimeError::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn create_overlay(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        encrypted: bool,
        internal: bool,
    ) -> Result<(), RuntimeError> {
        let mut options = HashMap::new();
        if encrypted {
            options.insert("encrypted".to_string(), String::new());
        }
        self.create_network(NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            internal: internal.then_some(true),
            labels: Some(labels.clone().into_iter().collect()),
            options: Some(options),
            ..Default::default()
        })
        .await
    }

    async fn volume_exists(&self, name: &str) -> Result<bool, RuntimeError> {
        match self
            .within(
                "a volume inspection",
                Box::pin(self.docker.inspect_volume(name)),
            )
            .await?
        {
            Ok(_) => Ok(true),
            Err(e) => match classify(e) {
                RuntimeError::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn create(&self, name: &str, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let created = self
            .within(
                "a container creation",
                Box::pin(
                    self.docker
                        .create_container(Some(options), create_body(spec)),
                ),
            )
            .await?
            .map_err(classify)?;
        // The engine takes one network at creation; the others are joined
        // before the container first starts. One that cannot be joined
        // takes the container with it: never a replica half-networked.
        for (network, aliases) in &spec.more_networks {
            let links = spec
                .network_links
                .get(network)
                .map_or(&[][..], Vec::as_slice);
            if let Err(error) = self.join(&created.id, network, aliases, links).await {
                // Its volumes stay: a replacement's may be its predecessor's.
                let _ = self.remove(&created.id, super::Volumes::Keep).await;
                return Err(RuntimeError::Failed(format!(
                    "cannot join network {network}: {error}"
                )));
            }
        }
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.within(
            "a container start",
            Box::pin(self.docker.start_container(id, None)),
        )
        .await?
        .map_err(classify)
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let options = StopContainerOptionsBuilder::default()
            .t(timeout.as_secs() as i32)
            .build();
        let request = Box::pin(self.docker.stop_container(id, Some(options)));
        match self
            .within_plus(timeout, "a container stop", request)
            .await?
        {
            // 304: already stopped.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        let options = RenameContainerOptionsBuilder::default().name(name).build();
        self.within(
            "a container rename",
            Box::pin(self.docker.rename_container(id, options)),
        )
        .await?
        .map_err(classify)
    }

    async fn remove(&self, id: &str, volumes: Volumes) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(volumes == Volumes::Remove)
            .build();
        let request = Box::pin(self.docker.remove_container(id, Some(options)));
        match self.within("a container removal", request).await? {
            Ok(()) => Ok(()),
            Err(e) => match classify(e) {
                RuntimeError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn anonymous_volumes(&self, id: &str) -> Result<Vec<AnonymousVolume>, RuntimeError> {
        Ok(self
            .inspect(id)
            .await?
            .mounts
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.typ.as_deref() == Some("volume"))
            .filter_map(|m| {
                let name = m.name.filter(|n| super::is_generated_volume_name(n))?;
                Some(AnonymousVolume {
                    name,
                    target: m.destination?,
                })
            })
            .collect())
    }

    async fn write_files(
        &self,
        id: &str,
        files: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let archive = files_archive(files).map_err(|e| RuntimeError::Failed(e.to_string()))?;
        let options = bollard::query_parameters::UploadToContainerOptionsBuilder::default()
            .path("/")
            .build();
        self.within(
            "a file upload",
            Box::pin(self.docker.upload_to_container(
                id,
                Some(options),
                bollard::body_full(archive.into()),
            )),
        )
        .await?
        .map_err(classify)
    }

    async fn read_file(&self, id: &str, path: &str) -> Result<Option<String>, RuntimeError> {
        let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let download = async {
            let mut archive = Vec::new();
            let mut chunks = self.docker.download_from_container(id, Some(options));
            while let Some(chunk) = futures_util::StreamExt::next(&mut chunks).await {
                archive.extend_from_slice(&chunk?);
                if archive.len() > MAX_LIVE_FILE {
                    return Ok::<_, bollard::errors::Error>(None);
                }
            }
            Ok(Some(archive))
        };
        let archive = match self
            .within("a file download", Box::pin(download))
            .await?
            .map_err(classify)
        {
            Ok(Some(archive)) => archive,
            Ok(None) => {
                return Err(RuntimeError::Failed(format!(
                    "{path} is larger than {MAX_LIVE_FILE} bytes"
                )));
            }
            Err(RuntimeError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        first_file(&archive).map_err(|e| RuntimeError::Failed(format!("reading {path}: {e}")))
    }

    async fn exec(&self, id: &str, command: &[String]) -> Result<(i64, String), RuntimeError> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let run = async {
            let exec = self
                .docker
                .create_exec(
                    id,
                    CreateExecOptions {
                        cmd: Some(command.to_vec()),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await?;
            let mut output = String::new();
            if let StartExecResults::Attached {
                output: mut stream, ..
            } = self.docker.start_exec(&exec.id, None).await?
            {
                while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                    if output.len() < MAX_LIVE_FILE {
                        output.push_str(&chunk?.to_string());
                    }
                }
            }
            let code = self.docker.inspect_exec(&exec.id).await?.exit_code;
            Ok::<_, bollard::errors::Error>((code.unwrap_or(-1), output))
        };
        self.within("a command in a container", Box::pin(run))
            .await?
            .map_err(classify)
    }

    async fn health(&self, id: &str) -> Result<Health, RuntimeError> {
        let state = self.inspect(id).await?.state.unwrap_or_default();
        if !state.running.unwrap_or(false) {
            return Ok(Health::Exited(state.exit_code));
        }
        Ok(match state.health.and_then(|h| h.status) {
            Some(HealthStatusEnum::STARTING) => Health::Starting,
            Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
            _ => Health::Healthy,
        })
    }
}
