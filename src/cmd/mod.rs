//! The command bodies, one file per command: each parses nothing (clap
//! did), calls one library function for its job, renders the outcome and
//! maps it to an exit code. What several share lives here: the settings
//! every command that reaches the nodes is built from, and the reporting
//! of a commit that cannot be deployed.

pub mod apply;
mod client;
pub mod daemon;
pub mod diff;
pub mod docs;
mod edit;
pub mod exec;
pub mod freeze;
pub mod history;
pub mod init;
pub mod logs;
pub mod node;
pub mod pin;
pub mod pipeline;
pub mod restart;
pub mod rollback;
pub mod run;
pub mod scale;
pub mod secret;
pub mod set;
pub mod status;
mod terminal;
pub mod validate;

use pier::pass::apply::ApplySettings;
use pier::pass::{PassError, Settings};

use crate::cli::{DeployArgs, NodesArgs, RolloutArgs, SourceArgs};

/// Where the manifests are, from the flags.
pub fn source(args: SourceArgs) -> pier::validate::Source {
    pier::validate::Source {
        repo: args.repo.repo,
        reference: args.reference,
        path: args.repo.path,
        cache_dir: args.repo.cache_dir,
    }
}

/// A deploying command's settings.
pub fn settings(args: DeployArgs) -> Settings {
    nodes_settings(source(args.source), args.nodes)
}

/// The one place settings are built from flags: every command that reaches
/// the nodes goes through here.
pub fn nodes_settings(source: pier::validate::Source, args: NodesArgs) -> Settings {
    Settings {
        source,
        stack: args.stack,
        insecure_registries: args
            .insecure_registries
            .into_iter()
            .filter(|r| !r.is_empty())
            .collect(),
        engine_timeout: args.engine_timeout,
        registry_timeout: args.registry_timeout,
        allow_empty: args.allow_empty,
        adopt: args.adopt,
        allow_env: args.policy.allow_env(),
        policy: args.policy.file.unwrap_or_default(),
        keys: std::sync::Arc::new(age_keys()),
    }
}

/// The age keys the environment names (as SOPS finds them). A key file
/// named but unreadable stops the command: running on without it would
/// report every SOPS file as needing a key.
pub fn age_keys() -> pier::manifest::sops::Keys {
    pier::manifest::sops::Keys::from_env().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    })
}

/// How a rollout goes, from the flags.
pub fn apply_settings(args: &RolloutArgs) -> ApplySettings {
    ApplySettings {
        health_timeout: args.health_timeout,
        per_node: args.node_parallelism.max(1),
        prune_volumes: args.prune_volumes,
        ..Default::default()
    }
}

/// Warnings and notices from a valid commit: shown before its plan, so
/// `diff` and `apply` say what `validate` would.
pub fn report_diagnostics(diagnostics: &[pier::manifest::Diagnostic]) {
    for diagnostic in diagnostics {
        eprintln!("{diagnostic}");
    }
}

/// Print why a commit cannot be deployed: its problems, then the error.
pub fn report_pass_error(error: &PassError) {
    if let PassError::Invalid { diagnostics, .. } = error {
        for diagnostic in diagnostics {
            eprintln!("{diagnostic}");
        }
    }
    eprintln!("error: {error}");
}
