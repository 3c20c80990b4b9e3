//! Loading a commit for a pass: the manifests at a reference, validated
//! against every rule and the policy, and for a deploy the router's
//! certificate and image from the operator's environment.

use crate::manifest::Decrypt;
use crate::manifest::{self, Diagnostic, Location, Vars};
use crate::plan;
use crate::registry::Registry;
use crate::source::git::GitSource;

use super::{Loaded, PassError, Settings};

/// A registry client with the settings' timeout, insecure registries and
/// the credentials of pier's own environment.
pub fn registry(settings: &Settings) -> Registry {
    Registry::with_timeout(
        settings.insecure_registries.clone(),
        crate::registry::CredentialStore::from_environment(),
        settings.registry_timeout,
    )
}

/// [`registry`], made on a blocking thread while the caller goes on: its
/// HTTP client reads and parses the system's root certificates, a few
/// milliseconds of a one-shot command that loading the manifests (on
/// another thread) need not wait for.
pub fn registry_in_background(settings: &Settings) -> impl Future<Output = Registry> + use<> {
    let settings = settings.clone();
    let made = tokio::task::spawn_blocking(move || registry(&settings));
    async move {
        made.await
            .expect("making the registry client does not panic")
    }
}

/// The manifests at the settings' reference, validated, with the router's
/// certificate: what `diff` and `apply` deploy.
pub async fn load_for_deploy(settings: &Settings, vars: &Vars) -> Result<Loaded, PassError> {
    // libgit2 and the loader block: they run off the async runtime.
    let (source, stack, vars, policy, keys) = (
        settings.source.clone(),
        settings.stack.clone(),
        vars.clone(),
        settings.policy.clone(),
        settings.keys.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let repo = GitSource::open(&source.repo, &source.cache_dir)?;
        load(
            &repo,
            &source.reference,
            &source.path,
            stack.as_deref(),
            &vars,
            &policy,
            Decrypt::With(&keys),
        )
        .and_then(with_router_certificate)
    })
    .await
    .expect("loading the manifests does not panic")
}

/// `loaded`, to be deployed, with the router's certificate for its HTTPS
/// routes. Only for the deploy branch and `pier apply`/`diff`: a branch
/// under test never gets it.
pub fn with_router_certificate(mut loaded: Loaded) -> Result<Loaded, PassError> {
    let Some(at) = manifest::router::tls_route_at(&loaded.manifest) else {
        return Ok(loaded);
    };
    let operator_image = std::env::var(manifest::router::IMAGE_VAR)
        .ok()
        .filter(|image| !image.is_empty())
        .unwrap_or_else(|| manifest::router::DEFAULT_IMAGE.to_string());
    if let Err(refused) =
        manifest::router::use_operator_image(&mut loaded.manifest, &operator_image)
    {
        return Err(PassError::Invalid {
            commit: loaded.commit,
            diagnostics: vec![*refused],
        });
    }
    if manifest::router::uses_acme(&loaded.manifest) {
        return with_acme_root(loaded, at);
    }
    match router_certificate() {
        Ok((cert, key)) => {
            manifest::router::attach_tls(&mut loaded.manifest, cert, key);
            Ok(loaded)
        }
        Err(message) => Err(PassError::Invalid {
            commit: loaded.commit,
            diagnostics: vec![Diagnostic::error(at, message).help(format!(
                "set {} in pier's environment to a folder holding cert.pem (the chain) and key.pem",
                manifest::router::TLS_FOLDER_VAR
            ))],
        }),
    }
}

/// With `router.acme` the router obtains its certificates itself; it only
/// gets the root its CA's directory is served under, when pier's
/// environment names one (a private CA).
fn with_acme_root(mut loaded: Loaded, at: Location) -> Result<Loaded, PassError> {
    let var = manifest::router::ACME_CA_ROOT_VAR;
    let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) else {
        return Ok(loaded);
    };
    match std::fs::read_to_string(&path) {
        Ok(root) => {
            manifest::router::attach_acme_root(&mut loaded.manifest, root);
            Ok(loaded)
        }
        Err(e) => Err(PassError::Invalid {
            commit: loaded.commit,
            diagnostics: vec![Diagnostic::error(
                at,
                format!("cannot read {} (from {var}): {e}", std::path::Path::new(&path).display()),
            )
            .help(format!("set {var} to a PEM file with the CA's root certificate, or unset it to trust the system's roots"))],
        }),
    }
}

/// The router's certificate chain and key, from the folder the daemon's own
/// environment names: never from the repository or its `.env`.
fn router_certificate() -> Result<(String, String), String> {
    let var = manifest::router::TLS_FOLDER_VAR;
    let folder = std::env::var(var)
        .ok()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| format!("a route has `tls: true`, but {var} is not set"))?;
    let read = |name: &str| {
        let path = std::path::Path::new(&folder).join(name);
        std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {} (from {var}): {e}", path.display()))
    };
    Ok((read("cert.pem")?, read("key.pem")?))
}

/// Read and validate the manifests at `reference`.
pub fn load(
    repo: &GitSource,
    reference: &str,
    folder: &str,
    stack: Option<&str>,
    vars: &Vars,
    policy: &crate::policy::Policy,
    decrypt: Decrypt<'_>,
) -> Result<Loaded, PassError> {
    let snapshot = repo.manifests(reference, folder)?;
    let stack = stack.map(str::to_string).unwrap_or_else(|| repo.name());
    let loaded = crate::validate::load_checked(&snapshot, folder, vars, policy, decrypt);
    if !loaded.is_valid() {
        return Err(PassError::Invalid {
            commit: snapshot.commit,
            diagnostics: loaded.diagnostics,
        });
    }
    Ok(Loaded {
        commit: snapshot.commit,
        stack,
        source: plan::SourceId::new(&repo.identity(), folder),
        interpolated: loaded.interpolated,
        manifest: loaded.manifest,
        diagnostics: loaded.diagnostics,
    })
}
