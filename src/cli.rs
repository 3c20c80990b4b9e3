//! Command-line interface: clap types only. Parsing lives here, behaviour in
//! the library, and the mapping from outcomes to exit codes in `main.rs`.

use clap::{Parser, Subcommand};

/// GitOps for plain Docker hosts: commit YAML, pier tests, builds and
/// converges your containers.
#[derive(Debug, Parser)]
#[command(name = "pier", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the manifests at a commit and print every problem found
    Validate,
    /// Show what pier would change on the nodes, without changing anything
    Diff,
    /// Converge the nodes to the manifests once
    Apply,
    /// Keep the nodes converged to a branch: watch git, the registry and the engines
    Daemon,
    /// Show what is deployed and how each service is doing
    Status,
    /// Change a service's replica count by committing to the manifests
    Scale,
    /// Add, remove or retag nodes by committing to the manifests
    Node,
    /// Print the logs of a pipeline run
    Logs,
}

impl Command {
    /// The name the user typed, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Validate => "validate",
            Command::Diff => "diff",
            Command::Apply => "apply",
            Command::Daemon => "daemon",
            Command::Status => "status",
            Command::Scale => "scale",
            Command::Node => "node",
            Command::Logs => "logs",
        }
    }
}
