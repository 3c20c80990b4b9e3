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
        let reference = parse_reference(image).ok()?;
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
        let reference =
            parse_reference(image).map_err(|e: oci_client::ParseError| ResolveError::Invalid {
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
/// Parse an image reference as the distribution grammar (and
/// `oci_client`'s own parser) does, Docker Hub's defaults included
/// (`docker.io`, `library/`, `latest`), without its regular expression:
/// compiling that pattern cost every `pier apply` about 40 ms of CPU.
/// One difference: a tag is ASCII word characters, as Docker has it
/// (the pattern also took other Unicode letters).
pub fn parse_reference(text: &str) -> Result<Reference, oci_client::ParseError> {
    use oci_client::ParseError;
    if text.is_empty() {
        return Err(ParseError::NameEmpty);
    }
    let (name_and_tag, digest) = match text.split_once('@') {
        Some((before, digest)) => (before, Some(digest)),
        None => (text, None),
    };
    let last_part = name_and_tag.rfind('/').map_or(0, |slash| slash + 1);
    let (name, tag) = match name_and_tag[last_part..].rfind(':') {
        Some(colon) => (
            &name_and_tag[..last_part + colon],
            Some(&name_and_tag[last_part + colon + 1..]),
        ),
        None => (name_and_tag, None),
    };
    let well_formed = is_name(name) && tag.is_none_or(is_tag) && digest.is_none_or(is_digest);
    if !well_formed {
        return Err(ParseError::ReferenceInvalidFormat);
    }
    let (registry, repository) = split_domain(name);
    if repository.len() > 255 {
        return Err(ParseError::NameTooLong);
    }
    if let Some(digest) = digest {
        let expected = match digest.split_once(':') {
            Some(("sha256", _)) => 64,
            Some(("sha384", _)) => 96,
            Some(("sha512", _)) => 128,
            _ => return Err(ParseError::DigestUnsupported),
        };
        if digest.len() - digest.find(':').unwrap_or(0) - 1 != expected {
            return Err(ParseError::DigestInvalidLength);
        }
    }
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag.into(), digest.into())
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.into()),
        (tag, None) => Reference::with_tag(registry, repository, tag.unwrap_or("latest").into()),
    })
}

/// `[domain/]component(/component)*`.
fn is_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    let path_from = |start: usize| parts[start..].iter().all(|p| is_path_component(p));
    path_from(0) || (parts.len() > 1 && is_domain(parts[0]) && path_from(1))
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or any number of `-`.
fn is_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(&bytes[i]) {
            i += 1;
        }
        let separator = &part[start..i];
        let valid = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !valid {
            return false;
        }
    }
    true
}

/// A host (`a-b.example.com`, letters of either case) and an optional port.
fn is_domain(domain: &str) -> bool {
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    host.split('.').all(label)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|b| word(*b) || *b == b'.' || *b == b'-')
}

/// `algorithm:hex`, the algorithm `[A-Za-z][A-Za-z0-9]*` parts joined by
/// `-_+.`, at least 32 hex digits.
fn is_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let part = |p: &str| {
        let b = p.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(|c| c.is_ascii_alphanumeric())
    };
    algorithm.split(['-', '_', '+', '.']).all(part)
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Docker's defaults: a first part without `.` or `:` (and not
/// `localhost`) is a Docker Hub path, and one-part Hub paths are under
/// `library/`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((left, right)) if left.contains(['.', ':']) || left == "localhost" => {
            (left.to_string(), right.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".into();
    }
    if domain == "docker.io" && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written parser agrees with `oci_client`'s pattern.
    #[test]
    fn references_parse_as_the_distribution_pattern_parses_them() {
        let d64 = "a".repeat(64);
        let cases = [
            "busybox".to_string(),
            "busybox:1.36".into(),
            "library/busybox".into(),
            "index.docker.io/busybox".into(),
            "docker.io/team/app:v1.2_3-rc".into(),
            "localhost/app".into(),
            "localhost:5000/app:1".into(),
            "localhost:5000".into(),
            "10.213.77.1:5000/pier-test/base:1".into(),
            "Registry.Example.COM/app".into(),
            "registry.example.com:443/a/b/c:tag".into(),
            format!("app@sha256:{d64}"),
            format!("app:1@sha256:{d64}"),
            format!("reg.io/app@sha512:{}", "b".repeat(128)),
            format!("app@sha256:{}", "a".repeat(63)),
            format!("app@md5:{}", "a".repeat(32)),
            format!("app@sha256:{}", "g".repeat(64)),
            "a__b/c--d/e.f_g".into(),
            "a___b".into(),
            "a-".into(),
            "-a".into(),
            "a..b".into(),
            "App".into(),
            "app:".into(),
            ":tag".into(),
            "app:-tag".into(),
            format!("app:{}", "t".repeat(128)),
            format!("app:{}", "t".repeat(129)),
            "reg-.io/app".into(),
            "reg.io:/app".into(),
            "reg.io:x/app".into(),
            "reg.io/App".into(),
            "a/b:c/d".into(),
            "app@".into(),
            "app@sha256".into(),
            "@sha256:abc".into(),
            "a//b".into(),
            "a/".into(),
            format!("{}/x", "a".repeat(250)),
            format!("r.io/{}", "a".repeat(256)),
            "".into(),
        ];
        for text in cases {
            let ours = parse_reference(&text);
            let theirs = text.parse::<Reference>();
            assert_eq!(ours, theirs, "{text:?}");
        }
    }

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
