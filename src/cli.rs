//! Command-line interface: clap types only. Parsing lives here, behaviour in
//! the library, and the mapping from outcomes to exit codes in `main.rs`.
//!
//! Longer than the 700 lines a file is kept to, on purpose: it is the
//! command line's reference (every command, flag and `PIER_*` variable, with
//! the help text users read), easier to keep consistent in one place.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// GitOps for plain Docker hosts: commit YAML, pier tests, builds and
/// converges your containers.
#[derive(Debug, Parser)]
#[command(
    name = "pier",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PIER_COMMIT"), ")"),
    about,
    long_about = None,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How long a git server may take to accept a connection, and to answer
    /// each read of a fetch or push
    #[arg(long, global = true, env = "PIER_GIT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub git_timeout: std::time::Duration,
    /// How long one whole fetch may take, however steadily the server answers
    #[arg(long, global = true, env = "PIER_GIT_FETCH_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub git_fetch_timeout: std::time::Duration,
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
    Daemon(Box<DaemonArgs>),
    /// Show what the daemon has deployed and how each service is doing
    Status(StatusArgs),
    /// Change services' replica counts by committing to the manifests
    Scale(ScaleArgs),
    /// Add, remove or retag nodes by committing to the manifests
    #[command(subcommand)]
    Node(NodeCommand),
    /// Change a service's image or environment by committing to the manifests
    #[command(subcommand)]
    Set(SetCommand),
    /// Print the output of a service's replicas across the nodes (or, with
    /// --run, of a pipeline run the daemon recorded)
    Logs(LogsArgs),
    /// Run a command in a replica of a service, with a terminal when this is one
    Exec(ExecArgs),
    /// Run a one-off container from a service's current spec, then remove it
    Run(RunArgs),
    /// Run the pipeline (test and build stages) for a commit on demand
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// List the revisions deployed, newest first, with each service's digest
    History(HistoryArgs),
    /// Put back an earlier revision: one commit restoring its manifests with
    /// every image pinned to the digest that ran then (or, with --hold,
    /// hold the stack there without a commit)
    Rollback(RollbackArgs),
    /// Let a stack held by `pier rollback --hold` follow its branch again
    Resume(ControlArgs),
    /// Pin a service's image to a digest, by committing to the manifests
    Pin(PinArgs),
    /// Let a pinned service follow its tag again, by committing to the manifests
    Unpin(UnpinArgs),
    /// Keep services where they are: new commits and digests wait (daemon state, not a commit)
    Freeze(FreezeArgs),
    /// Lift a freeze
    Unfreeze(UnfreezeArgs),
    /// Restart a service's replicas in place, one batch at a time, each
    /// waited for to be healthy (done by the daemon; recorded as a restart)
    Restart(RestartArgs),
    /// Create and change SOPS files encrypted to age keys (the key comes
    /// from PIER_AGE_KEY_FILE, SOPS_AGE_KEY_FILE or SOPS_AGE_KEY, as for
    /// `sops`)
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Print a shell completion script: `pier completions bash >
    /// /etc/bash_completion.d/pier` (zsh: a `_pier` file in a folder of
    /// $fpath; fish: ~/.config/fish/completions/pier.fish)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `pier man | man -l -`; with --dir,
    /// write one page per command there (pier.1, pier-apply.1, …)
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
    /// Start a pier repository from a Compose file or Tutum stackfile in
    /// this folder: writes pier/ (the services as written, the nodes, a
    /// pipeline to fill in), validates it, and says what to run next
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The Compose file or stackfile (default: the first of compose.yaml,
    /// compose.yml, docker-compose.yml, docker-compose.yaml, docker-cloud.yml)
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// A node: NAME=ENDPOINT, optionally :TAG,TAG after it
    /// (`web1=tcp://10.0.0.11:2376:web,eu`); repeat for more. Default: one
    /// node from DOCKER_HOST (or the local socket), tagged for every service
    #[arg(long = "node", value_name = "NAME=ENDPOINT[:TAGS]")]
    pub nodes: Vec<String>,
    /// The folder to write (relative to this one)
    #[arg(long, default_value = "pier")]
    pub path: String,
    /// Overwrite files pier/ already has
    #[arg(long)]
    pub force: bool,
}

/// How to reach a running daemon: its API address, or the state folder it
/// writes the address (and keeps its store) in.
#[derive(Debug, Clone, Args)]
pub struct ReachArgs {
    /// The daemon's API, e.g. http://127.0.0.1:7878 (default: read from the state folder)
    #[arg(long, env = "PIER_ADDR")]
    pub addr: Option<String>,
    /// The daemon's state folder, where it writes the address it listens on
    #[arg(long, env = "PIER_STATE_DIR", default_value_os_t = default_state_dir())]
    pub state_dir: std::path::PathBuf,
}

/// Who acts on the daemon (sent with `PIER_API_TOKEN` from the environment).
#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    #[command(flatten)]
    pub reach: ReachArgs,
    /// Who asks, shown in the status and the notifications (default: $PIER_AUTHOR, else $USER)
    #[arg(long)]
    pub by: Option<String>,
    /// Why, shown beside it
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub reach: ReachArgs,
    /// How many revisions to show
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// Without a daemon: read the branch's commits from git and what runs
    /// from the containers' labels on the nodes
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Restore only these services' definitions (default: the whole manifests folder)
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
    /// The revision to put back: a commit (7+ digits) or a history number
    /// (default: the last one applied before what runs now)
    #[arg(long, value_name = "REV")]
    pub to: Option<String>,
    /// Hold the stack at the revision without a commit, until `pier resume`
    /// (when git itself is the problem)
    #[arg(long)]
    pub hold: bool,
    #[command(flatten)]
    pub control: ControlArgs,
    #[command(flatten)]
    pub commit: CommitArgs,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    pub service: String,
    /// The digest (`sha256:…`; default: the one the service runs now, as the
    /// daemon reports it, else what its tag points at in the registry)
    #[arg(long)]
    pub digest: Option<String>,
    #[command(flatten)]
    pub reach: ReachArgs,
    #[command(flatten)]
    pub commit: CommitArgs,
}

#[derive(Debug, Args)]
pub struct UnpinArgs {
    pub service: String,
    #[command(flatten)]
    pub commit: CommitArgs,
}

#[derive(Debug, Args)]
pub struct FreezeArgs {
    #[arg(value_name = "SERVICE", required_unless_present = "all")]
    pub services: Vec<String>,
    /// Every service of the stack
    #[arg(long, conflicts_with = "services")]
    pub all: bool,
    /// Thaw by itself after this long (e.g. 2h; default: until `pier unfreeze`)
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    #[arg(value_name = "SERVICE", required = true)]
    pub services: Vec<String>,
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(Debug, Args)]
pub struct UnfreezeArgs {
    #[arg(value_name = "SERVICE", required_unless_present = "all")]
    pub services: Vec<String>,
    /// Every freeze
    #[arg(long, conflicts_with = "services")]
    pub all: bool,
    #[command(flatten)]
    pub control: ControlArgs,
}

/// Where the manifests are: a repository and a folder in it.
#[derive(Debug, Args)]
pub struct RepoArgs {
    /// Git repository: a path inside a local one, or a URL (fetched into the cache folder)
    #[arg(long, env = "PIER_REPO", default_value = ".")]
    pub repo: String,
    /// Folder of the manifests in the repository
    #[arg(long, env = "PIER_PATH", default_value = "pier")]
    pub path: String,
    /// Where remote repositories are fetched to
    #[arg(long, env = "PIER_CACHE_DIR", default_value_os_t = default_cache_dir())]
    pub cache_dir: std::path::PathBuf,
}

/// Where the manifests are: a repository, a commit in it, a folder in that commit.
#[derive(Debug, Args)]
pub struct SourceArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Branch, tag or commit to read (default: the checked-out HEAD)
    #[arg(long = "ref", env = "PIER_REF", default_value = "HEAD")]
    pub reference: String,
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
    #[command(flatten)]
    pub policy: PolicyArgs,
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

/// Where the manifests are, and how to reach and name the deployment.
#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub nodes: NodesArgs,
}

/// How to reach and name the deployment.
#[derive(Debug, Clone, Args)]
pub struct NodesArgs {
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
    /// How long an image registry may take to connect or answer a read (a
    /// whole tag resolution gets four times that); past it the services
    /// that need the registry are left as they are
    #[arg(long, env = "PIER_REGISTRY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub registry_timeout: std::time::Duration,
    /// Allow manifests without services to remove every container of the stack
    #[arg(long)]
    pub allow_empty: bool,
    /// Take over containers of this stack that another repository or
    /// manifest folder deployed (otherwise pier refuses to touch them)
    #[arg(long, env = "PIER_ADOPT")]
    pub adopt: bool,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// The container policy.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// A YAML file saying what manifests may ask of the hosts: privileged,
    /// cap_add, bind_mounts, host_ports, node_endpoints, host_namespaces,
    /// devices, security_opt, volume_types, external_networks,
    /// external_volumes, max_replicas (default: what Compose allows, but
    /// what gives a container the host; see the README's Container policy)
    #[arg(long = "policy", env = "PIER_POLICY", value_parser = pier::policy::Policy::from_file)]
    pub file: Option<pier::policy::Policy>,
    /// Environment variables manifests may use (interpolation, name-only
    /// `environment` and stage `env` entries, build args), as globs with
    /// `*` (comma-separated; default: every variable but PIER_*). A PIER_*
    /// variable is reachable only when named exactly
    #[arg(long, env = "PIER_ALLOW_ENV", value_delimiter = ',')]
    pub allow_env: Vec<String>,
}

impl PolicyArgs {
    /// The allow-list without empty entries (`PIER_ALLOW_ENV=`).
    pub fn allow_env(&self) -> Vec<String> {
        self.allow_env
            .iter()
            .filter(|g| !g.is_empty())
            .cloned()
            .collect()
    }
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
    /// Show the new values of changed environment variables, except those
    /// taken from pier's environment and those whose names look secret
    #[arg(long)]
    pub show_values: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub deploy: DeployArgs,
    #[command(flatten)]
    pub rollout: RolloutArgs,
}

/// How changes are rolled out.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// How long a new container may take to become healthy
    #[arg(long, env = "PIER_HEALTH_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub health_timeout: std::time::Duration,
    /// Engine operations in flight per node
    #[arg(long, env = "PIER_NODE_PARALLELISM", default_value_t = pier::pass::apply::ApplySettings::default().per_node)]
    pub node_parallelism: usize,
    /// Also remove the anonymous volumes of containers removed for good
    /// (pruned, scaled down, moved off a node); replacements always keep them
    #[arg(long, env = "PIER_PRUNE_VOLUMES")]
    pub prune_volumes: bool,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Branch to deploy
    #[arg(long, env = "PIER_BRANCH", default_value = "main")]
    pub branch: String,
    #[command(flatten)]
    pub nodes: NodesArgs,
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// Folder for the daemon's lock, history database and API address
    #[arg(long, env = "PIER_STATE_DIR", default_value_os_t = default_state_dir())]
    pub state_dir: std::path::PathBuf,
    /// Address of the HTTP API, metrics and webhooks (port 0 picks a free port)
    #[arg(long, env = "PIER_LISTEN", default_value = "127.0.0.1:7878")]
    pub listen: std::net::SocketAddr,
    /// Serve the webhooks (/hooks/*) on this address instead, so the API
    /// and metrics can stay private
    #[arg(long, env = "PIER_HOOKS_LISTEN")]
    pub hooks_listen: Option<std::net::SocketAddr>,
    /// How long an HTTP client may take to send a request, from connecting
    /// to its last byte, and to be answered
    #[arg(long, env = "PIER_HTTP_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http_timeout: std::time::Duration,
    /// HTTP connections open at once, per listener; more are closed at once
    #[arg(long, env = "PIER_HTTP_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
    pub http_max_connections: u16,
    /// How often to check the branch tip (a local repository is also watched on disk)
    #[arg(long, env = "PIER_GIT_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub git_interval: std::time::Duration,
    /// How often to resolve the tags that `autoredeploy` services follow
    #[arg(long, env = "PIER_REGISTRY_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub registry_interval: std::time::Duration,
    /// How often to run a full pass even if nothing reported a change
    #[arg(long, env = "PIER_RESYNC_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub resync_interval: std::time::Duration,
    /// How long triggers that follow a pass closely wait for others to merge
    /// into the same pass (the first after a quiet period starts at once)
    #[arg(long, env = "PIER_DEBOUNCE", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub debounce: std::time::Duration,
    /// The longest wait between retries after a transient failure
    #[arg(long, env = "PIER_RETRY_MAX", default_value = "5m", value_parser = humantime::parse_duration)]
    pub retry_max: std::time::Duration,
    /// How long a node may stay unreachable before it counts as down and the
    /// replicas of services that can move are started on other nodes
    #[arg(long, env = "PIER_NODE_DOWN_AFTER", default_value = "1m", value_parser = humantime::parse_duration)]
    pub node_down_after: std::time::Duration,
    /// Images of this many recent revisions stay on the nodes, so a rollback
    /// needs no registry; older images pier pulled (and nothing uses) are
    /// removed. 0 removes none
    #[arg(long, env = "PIER_KEEP_IMAGES", default_value_t = 5)]
    pub keep_images: usize,
    /// Memory each stage of another branch may use (bytes, or with k, m, g)
    #[arg(long, env = "PIER_UNTRUSTED_MEMORY", default_value = "2g", value_parser = byte_size)]
    pub untrusted_memory: i64,
    /// Processes each stage of another branch may run at once
    #[arg(long, env = "PIER_UNTRUSTED_PIDS", default_value_t = 1024, value_parser = clap::value_parser!(i64).range(16..))]
    pub untrusted_pids: i64,
    /// CPUs each stage of another branch may use
    #[arg(long, env = "PIER_UNTRUSTED_CPUS", default_value_t = 1.0, value_parser = cpus)]
    pub untrusted_cpus: f64,
    /// The longest a stage of another branch may run, whatever its timeout says
    #[arg(long, env = "PIER_UNTRUSTED_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub untrusted_timeout: std::time::Duration,
    /// Passes kept in the state store's history
    #[arg(long, env = "PIER_PASS_HISTORY", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub pass_history: u32,
    /// Pipeline runs kept in the state store, with their logs
    #[arg(long, env = "PIER_RUN_HISTORY", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub run_history: u32,
    /// MiB of each pipeline stage's log kept (its end)
    #[arg(long, env = "PIER_STAGE_LOG_MIB", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub stage_log_mib: u32,
    /// Log format
    #[arg(long, env = "PIER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Notification targets and the events each hears (YAML; see
    /// docs/notifications.md)
    #[arg(long = "notify", env = "PIER_NOTIFY", value_name = "FILE")]
    pub notify: Option<String>,
    /// The URL users reach the daemon at, when a proxy serves it; with
    /// https:// the dashboard's session cookie is Secure
    #[arg(long, env = "PIER_PUBLIC_URL", value_name = "URL", value_parser = public_url)]
    pub public_url: Option<String>,
    /// Run as one of several daemons for the stack: only the holder of a
    /// lease kept in the nodes' swarm acts; the others stand by, read-only,
    /// and take over when it stops renewing (see docs/ha.md)
    #[arg(long, env = "PIER_HA")]
    pub ha: bool,
    /// How long the lease lasts unrenewed: a standby takes over this long
    /// after the leader's last renewal
    #[arg(long, env = "PIER_HA_LEASE", default_value = "15s", value_parser = humantime::parse_duration, requires = "ha")]
    pub ha_lease: std::time::Duration,
    /// How often the leader renews the lease (less than half of --ha-lease)
    #[arg(long, env = "PIER_HA_RENEW", default_value = "5s", value_parser = humantime::parse_duration, requires = "ha")]
    pub ha_renew: std::time::Duration,
    /// This daemon's name in the election [default: the host name and the
    /// state folder]
    #[arg(long, env = "PIER_HA_ID", value_name = "NAME", requires = "ha")]
    pub ha_id: Option<String>,
}

/// `512m`, `2g`, `1048576`: bytes, with binary k, m, g suffixes.
fn byte_size(text: &str) -> Result<i64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, shift) = match lower.strip_suffix('b').unwrap_or(&lower) {
        n if n.ends_with('k') => (&n[..n.len() - 1], 10),
        n if n.ends_with('m') => (&n[..n.len() - 1], 20),
        n if n.ends_with('g') => (&n[..n.len() - 1], 30),
        n => (n, 0),
    };
    let bytes = number
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("`{text}` is not a size such as 512m or 2g"))?;
    if bytes < 16 << 20 {
        return Err(format!("`{text}` is less than the 16m a stage needs"));
    }
    Ok(bytes)
}

/// A positive number of CPUs, such as `0.5` or `2`.
fn cpus(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(cpus) if (0.01..=1024.0).contains(&cpus) => Ok(cpus),
        _ => Err(format!("`{text}` is not a number of CPUs such as 0.5 or 2")),
    }
}

/// An `http://` or `https://` URL.
fn public_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{text}` is not an http:// or https:// URL"));
    }
    Ok(text.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

fn default_state_dir() -> std::path::PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("pier")
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The daemon's API, e.g. http://127.0.0.1:7878 (default: read from the state folder)
    #[arg(long, env = "PIER_ADDR")]
    pub addr: Option<String>,
    /// The daemon's state folder, where it writes the address it listens on
    #[arg(long, env = "PIER_STATE_DIR", default_value_os_t = default_state_dir())]
    pub state_dir: std::path::PathBuf,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

/// Where to commit an edit, and how.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Git repository: a path inside a local one, or a URL (fetched into the cache folder)
    #[arg(long, env = "PIER_REPO", default_value = ".")]
    pub repo: String,
    /// Branch to commit to (default: the checked-out branch of a local repository, `main` for a URL)
    #[arg(long, env = "PIER_BRANCH")]
    pub branch: Option<String>,
    /// Folder of the manifests in the repository
    #[arg(long, env = "PIER_PATH", default_value = "pier")]
    pub path: String,
    /// Where remote repositories are fetched to
    #[arg(long, env = "PIER_CACHE_DIR", default_value_os_t = default_cache_dir())]
    pub cache_dir: std::path::PathBuf,
    /// Commit message (default: one naming the change)
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// Commit author as `Name <mail>` (default: git config)
    #[arg(long, env = "PIER_AUTHOR")]
    pub author: Option<String>,
    /// Push the commit (default for a URL; for a local repository, to its `origin`)
    #[arg(long, overrides_with = "no_push")]
    pub push: bool,
    /// Do not push, also for a URL
    #[arg(long)]
    pub no_push: bool,
    /// Show the change and the plan it leads to; commit nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub nodes: NodesArgs,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// `SERVICE=COUNT`, one or more
    #[arg(required = true, value_name = "SERVICE=COUNT")]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub commit: CommitArgs,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Declare a new node
    Add {
        name: String,
        /// The node's Docker endpoint: unix:///path, tcp://host:port
        #[arg(long)]
        endpoint: String,
        /// A tag for placement (repeat for more)
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        commit: CommitArgs,
    },
    /// Remove a node from the manifests
    Rm {
        name: String,
        #[command(flatten)]
        commit: CommitArgs,
    },
    /// Add (+TAG) or remove (-TAG) tags of a node
    Tag {
        name: String,
        /// `+TAG` to add, `-TAG` to remove
        #[arg(required = true, allow_hyphen_values = true, value_name = "+TAG|-TAG")]
        changes: Vec<String>,
        #[command(flatten)]
        commit: CommitArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a SOPS file encrypted to age recipients, from the document on
    /// standard input (or, at a terminal, written in $EDITOR). Its name
    /// picks the format: .yaml/.yml, .json, .env, anything else binary
    New {
        file: std::path::PathBuf,
        /// An age recipient (age1…) the file is encrypted to; repeat for more
        #[arg(long = "age", value_name = "RECIPIENT", required = true)]
        recipients: Vec<String>,
    },
    /// Open the decrypted file in $EDITOR, then encrypt it again to the
    /// same recipients (unchanged: the file is left as it was)
    Edit { file: std::path::PathBuf },
    /// Set one value, read from standard input (never from an argument,
    /// which other users and shell history would see). KEY is a top-level
    /// key, or a dotted path into nested mappings (db.password)
    Set {
        file: std::path::PathBuf,
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SetCommand {
    /// Set a service's image: IMAGE[:TAG|@DIGEST]
    Image {
        service: String,
        image: String,
        #[command(flatten)]
        commit: CommitArgs,
    },
    /// Set (KEY=VALUE) or remove (KEY-) environment variables of a service
    Env {
        service: String,
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        vars: Vec<String>,
        #[command(flatten)]
        commit: CommitArgs,
    },
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Services whose replicas' output to show, merged by time, each line
    /// marked `service.N@node`
    #[arg(value_name = "SERVICE", required_unless_present = "run")]
    pub services: Vec<String>,
    /// Show a pipeline run the daemon recorded instead: a run id, or a
    /// commit (its first 4 or more characters: the latest run of it)
    #[arg(long, value_name = "COMMIT|RUN-ID", conflicts_with = "services")]
    pub run: Option<String>,
    /// With --run: only this stage
    #[arg(long, requires = "run")]
    pub stage: Option<String>,
    /// Keep printing what comes next (replicas that start later too; a node
    /// that stops answering is followed again when it answers)
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only output since this long ago (`10m`) or this time (RFC 3339)
    #[arg(long, value_parser = since)]
    pub since: Option<i64>,
    /// Only the last N lines of each replica
    #[arg(long)]
    pub tail: Option<usize>,
    /// Show each line's time
    #[arg(long, short = 't')]
    pub timestamps: bool,
    /// Only this replica number
    #[arg(long)]
    pub replica: Option<u32>,
    /// Only replicas on this node
    #[arg(long)]
    pub node: Option<String>,
    /// The daemon's state folder (for --run)
    #[arg(long, env = "PIER_STATE_DIR", default_value_os_t = default_state_dir())]
    pub state_dir: std::path::PathBuf,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

/// `10m` (that long ago) or an RFC 3339 time: seconds since the epoch.
fn since(text: &str) -> Result<i64, String> {
    let at = match humantime::parse_duration(text) {
        Ok(ago) => std::time::SystemTime::now()
            .checked_sub(ago)
            .ok_or("too long ago")?,
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|_| {
            format!("`{text}` is neither a duration (10m) nor a time (2026-12-05T10:00:00Z)")
        })?,
    };
    Ok(at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0))
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// `SERVICE` or `SERVICE.N` (default: its lowest-numbered running replica)
    #[arg(value_name = "SERVICE[.N]")]
    pub target: String,
    /// The replica on this node
    #[arg(long)]
    pub node: Option<String>,
    /// No terminal, even when this one is (`docker exec` without -t)
    #[arg(long, short = 'T')]
    pub no_tty: bool,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The service whose current spec (image digest, environment, networks,
    /// volumes) the one-off container takes
    pub service: String,
    /// The node to run on (default: where its lowest-numbered replica runs)
    #[arg(long)]
    pub node: Option<String>,
    /// Keep the container when it ends (default: removed, with its anonymous volumes)
    #[arg(long)]
    pub keep: bool,
    /// No terminal, even when this one is
    #[arg(long, short = 'T')]
    pub no_tty: bool,
    /// The command and its arguments (default: the service's own)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Run every stage for a commit, printing their output; deploy only with --deploy
    Run {
        #[command(flatten)]
        deploy: DeployArgs,
        /// Deploy the commit with the images just built when every stage passed
        #[arg(long = "deploy")]
        deploy_after: bool,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
}
