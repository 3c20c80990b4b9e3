//! [`Runtime`] over a real Docker engine with bollard: unix sockets, plain
//! TCP, TCP with TLS and SSH, API version negotiated with the engine (the
//! test bed's speak 1.41; newer engines work the same).
//!
//! Longer than the 700 lines a file is kept to, on purpose: most of it is
//! the one `impl Runtime` block, a method per engine call, each short; what
//! is more than a call lives beside it (`connect`, `create`, `events`,
//! `inside`, `session`, `lease`).

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

mod connect;
mod create;
mod events;
mod inside;
pub mod lease;
pub mod session;

pub use connect::install_crypto_provider;
#[allow(unused_imports)]
use connect::*;
#[allow(unused_imports)]
use create::*;
pub use events::ContainerEvent;

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

impl Engine {
    /// `docker swarm init`, listening on all addresses and advertising
    /// `advertise` (the engine chooses when `None`). Unfenced: the callers
    /// are [`Runtime::swarm_init`], which checks the fence first, and the
    /// `--ha` lease, which forms the swarm its term is kept in (an engine
    /// already in one refuses, and the lease looks again).
    pub async fn init_swarm(&self, advertise: Option<&str>) -> Result<(), RuntimeError> {
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

    /// Unpack a tar archive at the root of a container's file system.
    async fn unpack_at_root(&self, id: &str, archive: Vec<u8>) -> Result<(), RuntimeError> {
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
        platform: Option<&str>,
    ) -> Result<(), RuntimeError> {
        super::fence::check("an image pull")?;
        let mut options = CreateImageOptionsBuilder::default().from_image(reference);
        if let Some(platform) = platform {
            options = options.platform(platform);
        }
        let options = options.build();
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

    async fn wait(&self, id: &str) -> Result<i64, RuntimeError> {
        self.wait_exit(id).await
    }

    async fn log_tail(&self, id: &str, lines: usize) -> Result<String, RuntimeError> {
        self.log_tail_in(id, lines).await
    }

    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        super::fence::check("an image removal")?;
        let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
            .force(false)
            .build();
        self.within(
            "an image removal",
            Box::pin(self.docker.remove_image(reference, Some(options), None)),
        )
        .await?
        .map(drop)
        .map_err(classify)
    }

    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        internal: bool,
    ) -> Result<(), RuntimeError> {
        super::fence::check("a network creation")?;
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

    async fn platform(&self) -> Result<String, RuntimeError> {
        let info = self
            .within("a system info request", Box::pin(self.docker.info()))
            .await?
            .map_err(classify)?;
        Ok(docker_platform(
            info.os_type.as_deref().unwrap_or("linux"),
            info.architecture.as_deref().unwrap_or_default(),
        ))
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
        super::fence::check("a network connection")?;
        self.join(container, network, aliases, &[]).await
    }

    async fn disconnect(&self, container: &str, network: &str) -> Result<(), RuntimeError> {
        super::fence::check("a network disconnection")?;
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
        super::fence::check("a swarm leave")?;
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
        super::fence::check("a swarm node removal")?;
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
        super::fence::check("a swarm role change")?;
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
        super::fence::check("a swarm init")?;
        self.init_swarm(advertise).await
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
        super::fence::check("a swarm join")?;
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
        super::fence::check("an overlay network creation")?;
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
        super::fence::check("a container creation")?;
        let mut options = CreateContainerOptionsBuilder::default().name(name);
        if let Some(platform) = &spec.platform {
            options = options.platform(platform);
        }
        let options = options.build();
        let created = self
            .within(
                "a container creation",
                Box::pin(self.docker.create_container(Some(options), {
                    let mut body = create_body(spec);
                    body.labels = body.labels.map(super::fence::with_epoch);
                    body
                })),
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
        super::fence::check("a container start")?;
        self.within(
            "a container start",
            Box::pin(self.docker.start_container(id, None)),
        )
        .await?
        .map_err(classify)
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        super::fence::check("a container stop")?;
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
        super::fence::check("a container rename")?;
        let options = RenameContainerOptionsBuilder::default().name(name).build();
        self.within(
            "a container rename",
            Box::pin(self.docker.rename_container(id, options)),
        )
        .await?
        .map_err(classify)
    }

    async fn remove(&self, id: &str, volumes: Volumes) -> Result<(), RuntimeError> {
        super::fence::check("a container removal")?;
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

    async fn provide_files(
        &self,
        id: &str,
        files: &[crate::manifest::model::ProvidedFile],
    ) -> Result<(), RuntimeError> {
        super::fence::check("a file copy")?;
        let archive = provided_archive(files).map_err(|e| RuntimeError::Failed(e.to_string()))?;
        self.unpack_at_root(id, archive).await
    }

    async fn write_files(
        &self,
        id: &str,
        files: &BTreeMap<String, String>,
    ) -> Result<(), RuntimeError> {
        super::fence::check("a file copy")?;
        let archive = files_archive(files).map_err(|e| RuntimeError::Failed(e.to_string()))?;
        self.unpack_at_root(id, archive).await
    }

    async fn read_file(&self, id: &str, path: &str) -> Result<Option<String>, RuntimeError> {
        self.read_file_in(id, path).await
    }

    async fn exec(&self, id: &str, command: &[String]) -> Result<(i64, String), RuntimeError> {
        super::fence::check("an exec")?;
        let request = super::ExecRequest {
            command: command.to_vec(),
            ..Default::default()
        };
        self.exec_with(id, &request).await
    }

    async fn exec_with(
        &self,
        id: &str,
        request: &super::ExecRequest,
    ) -> Result<(i64, String), RuntimeError> {
        super::fence::check("an exec")?;
        self.exec_in(id, request).await
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

/// An engine's platform in Docker's names: the kernel's `x86_64` is
/// `amd64`, `aarch64` is `arm64`, `armv7l` is `arm/v7`.
pub fn docker_platform(os: &str, architecture: &str) -> String {
    let arch = match architecture {
        "x86_64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "armv7l" => "arm/v7",
        "armv6l" => "arm/v6",
        "i386" | "i686" => "386",
        other => other,
    };
    format!("{}/{arch}", os.to_ascii_lowercase())
}
