//! `pier daemon`: logging, the daemon's configuration from its flags, and
//! the process's exit.

use std::process::ExitCode;

use super::{apply_settings, nodes_settings};
use crate::cli::{DaemonArgs, LogFormat};

/// Libraries that log request and response bodies at debug level: the
/// Engine API's carry containers' environment values, the registry's its
/// tokens. They stay at `info` unless `PIER_LOG` names them itself.
const BODY_LOGGERS: [&str; 2] = ["bollard", "oci_client"];

fn init_logging(format: LogFormat) {
    let asked = std::env::var("PIER_LOG")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "info".into());
    let mut filter = tracing_subscriber::EnvFilter::try_new(&asked)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for target in BODY_LOGGERS.iter().filter(|t| !asked.contains(*t)) {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub async fn daemon(args: DaemonArgs) -> ExitCode {
    let notify = match args
        .notify
        .as_deref()
        .map(pier::daemon::notify::NotifyConfig::from_file)
    {
        None => Default::default(),
        Some(Ok(notify)) => notify,
        Some(Err(error)) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let ha = match ha_config(&args) {
        Ok(ha) => ha,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(args.log_format);
    let source = pier::validate::Source {
        repo: args.repo.repo,
        reference: args.branch.clone(),
        path: args.repo.path,
        cache_dir: args.repo.cache_dir,
    };
    let config = pier::daemon::Config {
        settings: nodes_settings(source, args.nodes),
        branch: args.branch,
        state_dir: args.state_dir,
        listen: args.listen,
        hooks_listen: args.hooks_listen,
        http: pier::daemon::api::HttpLimits {
            request_timeout: args.http_timeout,
            max_connections: args.http_max_connections.into(),
        },
        git_interval: args.git_interval,
        registry_interval: args.registry_interval,
        resync_interval: args.resync_interval,
        debounce: args.debounce,
        retry_max: args.retry_max,
        node_down_after: args.node_down_after,
        keep_images: args.keep_images,
        apply: apply_settings(&args.rollout),
        retention: pier::daemon::store::Retention {
            passes: args.pass_history as usize,
            runs: args.run_history as usize,
            stage_log_bytes: (args.stage_log_mib as usize) << 20,
        },
        notify,
        notify_file: args.notify.clone(),
        public_url: args.public_url,
        untrusted: pier::pipeline::Confinement {
            memory_bytes: args.untrusted_memory,
            pids: args.untrusted_pids,
            nano_cpus: (args.untrusted_cpus * 1e9) as i64,
            max_timeout: args.untrusted_timeout,
        },
        ha,
    };
    match pier::daemon::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// What `--ha` and its flags ask for: the timing checked, the name in the
/// election (by default the host's name and a digest of the state folder,
/// unique per daemon since the folder is locked), and the URL the others
/// are told (`--public-url`; without it, the address listened on).
fn ha_config(args: &DaemonArgs) -> Result<Option<pier::daemon::lease::swarm::HaConfig>, String> {
    use sha2::Digest as _;
    if !args.ha {
        return Ok(None);
    }
    let timing = pier::daemon::lease::Timing::new(args.ha_lease, args.ha_renew)?;
    let identity = match &args.ha_id {
        Some(id) if !id.trim().is_empty() => id.trim().to_string(),
        Some(_) => return Err("--ha-id is empty: give this daemon a name".into()),
        None => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "pier".into());
            let folder = std::path::absolute(&args.state_dir).unwrap_or(args.state_dir.clone());
            let digest = sha2::Sha256::digest(folder.as_os_str().as_encoded_bytes());
            let short: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
            format!("{host}-{short}")
        }
    };
    Ok(Some(pier::daemon::lease::swarm::HaConfig {
        timing,
        identity,
        url: args.public_url.clone(),
    }))
}
