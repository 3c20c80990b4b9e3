//! Image references → digests, through the registry (oci-client).
//!
//! Every tag is resolved once per pass (one HEAD per distinct reference), so
//! all replicas run the same bits and a moving tag shows up as a new digest.
//! Credentials come from pier's environment or Docker's `config.json`, never
//! from manifests, and are never logged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::docker::Credentials;

/// Why a reference could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("`{reference}` is not a valid image reference: {reason}")]
    Invalid { reference: String, reason: String },
    /// Permanent for this commit: fix the manifest or push the image.
    #[error("image `{reference}` was not found in its registry")]
    NotFound { reference: String },
    #[error(
        "the registry refused access to `{reference}`; set credentials (PIER_REGISTRY_USER / PIER_REGISTRY_PASSWORD for PIER_REGISTRY_HOST, or docker login)"
    )]
    Unauthorized { reference: String },
    /// The credentials pier sent were refused: permanent until they are
    /// fixed, and never a reason to fall back to an image on the nodes.
    #[error(
        "the registry rejected the credentials for `{reference}` (user `{username}`); fix PIER_REGISTRY_USER / PIER_REGISTRY_PASSWORD or the docker login for its host"
    )]
    CredentialsRejected { reference: String, username: String },
    /// Transient: retry later, change nothing.
    #[error("the registry for `{reference}` is unreachable: {reason}")]
    Unreachable { reference: String, reason: String },
}

impl ResolveError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ResolveError::Unreachable { .. })
    }
}

/// A tag resolved to a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `registry/repository@sha256:…`, what containers are created from.
    pub pinned: String,
    pub digest: String,
}

/// Where credentials for registries come from.
#[derive(Debug, Clone, Default)]
pub struct CredentialStore {
    by_host: BTreeMap<String, Credentials>,
}

impl CredentialStore {
    /// `PIER_REGISTRY_HOST` + `PIER_REGISTRY_USER` + `PIER_REGISTRY_PASSWORD`,
    /// then `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`).
    pub fn from_environment() -> Self {
        let mut store = CredentialStore::default();
        if let Some(path) = docker_config_path()
            && let Ok(text) = std::fs::read_to_string(path)
        {
            store.add_docker_config(&text);
        }
        if let (Ok(host), Ok(username), Ok(password)) = (
            std::env::var("PIER_REGISTRY_HOST"),
            std::env::var("PIER_REGISTRY_USER"),
            std::env::var("PIER_REGISTRY_PASSWORD"),
        ) {
            store
                .by_host
                .insert(host, Credentials { username, password });
        }
        store
    }

    /// Every password held, for masking in logs.
    pub fn passwords(&self) -> Vec<String> {
        self.by_host.values().map(|c| c.password.clone()).collect()
    }

    pub fn insert(&mut self, host: &str, credentials: Credentials) {
        self.by_host.insert(host.to_string(), credentials);
    }

    /// Entries of a Docker `config.json` `auths` map (`auth` is base64 `user:password`).
    fn add_docker_config(&mut self, text: &str) {
        let Ok(config) = serde_json::from_str::<serde_json::Value>(text) else {
            return;
        };
        let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
            return;
        };
        for (host, entry) in auths {
            let decoded = entry
                .get("auth")
                .and_then(|a| a.as_str())
                .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
                .and_then(|bytes| String::from_utf8(bytes).ok());
            if let Some((username, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                let host = host
                    .trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/');
                self.by_host.insert(
                    host.to_string(),
                    Credentials {
                        username: username.into(),
                        password: password.into(),
                    },
                );
            }
        }
    }

    /// Credentials for an image reference's registry, if any.
    pub fn for_image(&self, image: &str) -> Option<&Credentials> {
        let reference: Reference = image.parse().ok()?;
        self.by_host
            .get(reference.resolve_registry())
            .or_else(|| self.by_host.get(reference.registry()))
    }
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// Called once per request to a registry with its outcome (`ok`,
/// `not_found`, `unauthorized`, `unreachable`), for metrics.
pub type RequestObserver = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Resolves tags to digests, reusing its HTTP client (and bearer tokens) across calls.
pub struct Registry {
    client: Client,
    credentials: CredentialStore,
    observer: Option<RequestObserver>,
    /// Bounds each request; four times it bounds a whole resolution.
    timeout: Duration,
}

/// How long the registry may take to connect or answer a read, by default
/// (`--registry-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Registry {
    /// `insecure`: `host:port` of registries served over plain HTTP
    /// (`PIER_INSECURE_REGISTRIES`, like Docker's `insecure-registries`).
    pub fn new(insecure: Vec<String>, credentials: CredentialStore) -> Registry {
        Registry::with_timeout(insecure, credentials, DEFAULT_TIMEOUT)
    }

    /// [`Registry::new`] with `timeout` bounding connecting, each read, and
    /// (four times over, for the token exchange and redirects) a whole
    /// resolution: a registry that accepts connections and never answers
    /// costs a pass at most that, and freezes only the services it serves.
    pub fn with_timeout(
        insecure: Vec<String>,
        credentials: CredentialStore,
        timeout: Duration,
    ) -> Registry {
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure),
            connect_timeout: Some(timeout),
            read_timeout: Some(timeout),
            ..Default::default()
        };
        Registry {
            client: Client::new(config),
            credentials,
            observer: None,
            timeout,
        }
    }

    /// Report every request's outcome to `observer`.
    pub fn with_observer(mut self, observer: RequestObserver) -> Registry {
        self.observer = Some(observer);
        self
    }

    pub fn credentials(&self) -> &CredentialStore {
        &self.credentials
    }

    /// Resolve one reference. A reference already pinned by digest is kept as is.
    pub async fn resolve(&self, image: &str) -> Result<Resolved, ResolveError> {
        let reference: Reference =
            image
                .parse()
                .map_err(|e: oci_client::ParseError| ResolveError::Invalid {
                    reference: image.to_string(),
                    reason: e.to_string(),
                })?;
        let repository = format!("{}/{}", reference.registry(), reference.repository());
        if let Some(digest) = reference.digest() {
            return Ok(Resolved {
                pinned: format!("{repository}@{digest}"),
                digest: digest.to_string(),
            });
        }
        let auth = match self.credentials.for_image(image) {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let bound = self.timeout * 4;
        let outcome =
            tokio::time::timeout(bound, self.client.fetch_manifest_digest(&reference, &auth))
                .await
                .unwrap_or_else(|_| {
                    Err(OciDistributionError::GenericError(Some(format!(
                        "no answer within {bound:?}"
                    ))))
                })
                .map_err(|e| match (classify(image, e), &auth) {
                    (
                        ResolveError::Unauthorized { reference },
                        RegistryAuth::Basic(username, _),
                    ) => ResolveError::CredentialsRejected {
                        reference,
                        username: username.clone(),
                    },
                    (other, _) => other,
                });
        if let Some(observer) = &self.observer {
            observer(match &outcome {
                Ok(_) => "ok",
                Err(ResolveError::NotFound { .. }) => "not_found",
                Err(
                    ResolveError::Unauthorized { .. } | ResolveError::CredentialsRejected { .. },
                ) => "unauthorized",
                Err(_) => "unreachable",
            });
        }
        let digest = outcome?;
        Ok(Resolved {
            pinned: format!("{repository}@{digest}"),
            digest,
        })
    }
}

fn classify(image: &str, error: OciDistributionError) -> ResolveError {
    let reference = image.to_string();
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => ResolveError::NotFound { reference },
        OciDistributionError::ServerError { code: 404, .. } => ResolveError::NotFound { reference },
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| format!("{:?}", e.code).contains("Unknown")) =>
        {
            ResolveError::NotFound { reference }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            ResolveError::Unauthorized { reference }
        }
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => ResolveError::Unauthorized { reference },
        other => ResolveError::Unreachable {
            reference,
            reason: other.to_string(),
        },
    }
}

/// Compile the image reference parser's pattern now (it is compiled once per
/// process, on first use), so a caller can do it off its critical path.
pub fn prepare_reference_parser() {
    let _ = "busybox".parse::<Reference>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auths_are_read_and_matched_by_host() {
        let mut store = CredentialStore::default();
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        store.add_docker_config(&format!(
            r#"{{"auths": {{"https://registry.example.com/": {{"auth": "{auth}"}}}}}}"#
        ));
        let c = store
            .for_image("registry.example.com/team/web:1")
            .expect("credentials");
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "s3cret")
        );
        assert!(store.for_image("other.example.com/web:1").is_none());
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "passwords never show in Debug"
        );
    }

    #[tokio::test]
    async fn pinned_references_need_no_registry() {
        let registry = Registry::new(vec![], CredentialStore::default());
        let digest = format!("sha256:{}", "a".repeat(64));
        let resolved = registry
            .resolve(&format!("example.com/web@{digest}"))
            .await
            .unwrap();
        assert_eq!(resolved.pinned, format!("example.com/web@{digest}"));
    }
}
