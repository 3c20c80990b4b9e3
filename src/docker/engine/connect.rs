//! Reaching an engine: one client per endpoint (unix, tcp, tcp with
//! mutual TLS, ssh), the API version negotiated down, each connection
//! bounded by the engine timeout.

#[allow(unused_imports)]
use super::*;

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
pub(super) static CLIENTS: std::sync::LazyLock<std::sync::Mutex<HashMap<String, Docker>>> =
    std::sync::LazyLock::new(Default::default);

/// What a client is made from: the endpoint, and for TLS the files with
/// their modification times, so a renewed certificate makes a new client.
pub(super) fn client_key(node: &Node) -> String {
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

pub(super) fn tls_paths(tls: &Tls) -> Result<(PathBuf, PathBuf, PathBuf), RuntimeError> {
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

    pub(super) async fn connect_new(
        node: &Node,
        timeout: Duration,
    ) -> Result<Engine, RuntimeError> {
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
            (Endpoint::Ssh { user, host, port }, _) => crate::docker::ssh::connect(
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
    pub(super) async fn inspect(
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
