//! Command-line interface: clap types only. Parsing lives here, behaviour in
//! the library, and the mapping from outcomes to exit codes in `main.rs`.

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    Validate(ValidateArgs),
    /// Show what pier would change on the nodes, without changing anything
    ///
    /// Exit status: 0 no changes, 1 changes (or something blocked), 2 error;
    /// with --detailed-exitcode: 0 no changes, 2 changes, 1 error.
    Diff(DiffArgs),
    /// Converge the nodes to the manifests once
    Apply(ApplyArgs),
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
            Command::Validate(_) => "validate",
            Command::Diff(_) => "diff",
            Command::Apply(_) => "apply",
            Command::Daemon => "daemon",
            Command::Status => "status",
            Command::Scale => "scale",
            Command::Node => "node",
            Command::Logs => "logs",
        }
    }
}

/// Where the manifests are: a repository, a commit in it, a folder in that commit.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Git repository: a path inside a local one, or a URL (fetched into the cache folder)
    #[arg(long, env = "PIER_REPO", default_value = ".")]
    pub repo: String,
    /// Branch, tag or commit to read (default: the checked-out HEAD)
    #[arg(long = "ref", env = "PIER_REF", default_value = "HEAD")]
    pub reference: String,
    /// Folder of the manifests in the repository
    #[arg(long, env = "PIER_PATH", default_value = "pier")]
    pub path: String,
    /// Where remote repositories are fetched to
    #[arg(long, env = "PIER_CACHE_DIR", default_value_os_t = default_cache_dir())]
    pub cache_dir: std::path::PathBuf,
}

fn default_cache_dir() -> std::path::PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("pier")
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Text for people
    Human,
    /// JSON with a stable schema
    Json,
}

/// How to reach and name the deployment.
#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Name of this deployment, carried by every container as `pier.stack`
    /// (default: the repository's folder name)
    #[arg(long, env = "PIER_STACK")]
    pub stack: Option<String>,
    /// Registries served over plain HTTP, as `host:port` (comma-separated)
    #[arg(
        long = "insecure-registry",
        env = "PIER_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// How long a node's engine may take to answer before it counts as unreachable
    #[arg(long, env = "PIER_ENGINE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub engine_timeout: std::time::Duration,
    /// Allow manifests without services to remove every container of the stack
    #[arg(long)]
    pub allow_empty: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub deploy: DeployArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// Terraform's exit codes: 0 no changes, 2 changes, 1 error
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub deploy: DeployArgs,
    /// Apply without asking (always the case: pier never prompts)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How long a new container may take to become healthy
    #[arg(long, env = "PIER_HEALTH_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub health_timeout: std::time::Duration,
    /// Engine operations in flight per node
    #[arg(long, env = "PIER_NODE_PARALLELISM", default_value_t = pier::apply::ApplySettings::default().per_node)]
    pub node_parallelism: usize,
}
