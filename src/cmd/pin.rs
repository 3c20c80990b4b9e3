//! `pier pin` and `pier unpin`: a commit that pins a service's image to a
//! digest (`name:tag@sha256:…`, which no autoredeploy moves), or lets it
//! follow its tag again.

use std::process::ExitCode;

use pier::daemon::status::Status;
use pier::edit::Edit;

use super::client;
use crate::cli::{PinArgs, UnpinArgs};

pub async fn pin(args: PinArgs) -> ExitCode {
    let digest = match &args.digest {
        Some(digest) => digest.clone(),
        None => match running_digest(&args).await {
            Ok(digest) => digest,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    if !valid_digest(&digest) {
        eprintln!("error: `{digest}` is not a digest (sha256: and 64 hex digits)");
        return ExitCode::from(2);
    }
    let edit = Edit::Pin {
        service: args.service.clone(),
        digest,
    };
    super::edit::run(edit, args.commit).await
}

pub async fn unpin(args: UnpinArgs) -> ExitCode {
    super::edit::run(Edit::Unpin(args.service.clone()), args.commit).await
}

fn valid_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The digest the service runs now, as the daemon reports it; without a
/// daemon, what its tag points at in the registry now.
async fn running_digest(args: &PinArgs) -> Result<String, String> {
    if let Ok(address) = client::address(&args.reach)
        && let Ok(status) = client::read::<Status>(&address, "/api/v1/status").await
    {
        return status
            .services
            .iter()
            .find(|s| s.name == args.service)
            .map(|s| s.digest.clone())
            .filter(|d| valid_digest(d))
            .ok_or_else(|| {
                format!(
                    "the daemon reports no digest for `{}`; pass --digest",
                    args.service
                )
            });
    }
    let vars =
        pier::manifest::interpolate::admitted_from_process(&args.commit.nodes.policy.allow_env());
    let source = pier::validate::Source {
        repo: args.commit.repo.clone(),
        reference: args.commit.branch.clone().unwrap_or_else(|| "HEAD".into()),
        path: args.commit.path.clone(),
        cache_dir: args.commit.cache_dir.clone(),
    };
    let settings = super::nodes_settings(source, args.commit.nodes.clone());
    let loaded = pier::pass::load_for_deploy(&settings, &vars)
        .await
        .map_err(|e| e.to_string())?;
    let image = loaded
        .manifest
        .services
        .get(&args.service)
        .and_then(|s| s.image.clone())
        .ok_or_else(|| {
            format!(
                "no service `{}` with an image in the manifests",
                args.service
            )
        })?;
    let registry = pier::pass::registry(&settings);
    registry
        .resolve(&image)
        .await
        .map(|resolved| resolved.digest)
        .map_err(|e| format!("{e}; pass --digest"))
}
