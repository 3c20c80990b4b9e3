//! `pier diff` and `pier apply`: run a pass, render it, map it to an exit code.

use std::process::ExitCode;

use pier::apply::{ApplySettings, StepRecord};
use pier::deploy::{Deployment, Verdict, Watch};
use pier::plan::render::{self, Style};
use pier::prepare::{self, Loaded, PassError, PassInput, Planned, Settings};

use crate::cli::{
    ApplyArgs, DaemonArgs, DeployArgs, DiffArgs, LogFormat, NodesArgs, Output, RolloutArgs,
    SourceArgs, StatusArgs,
};

pub fn source(args: SourceArgs) -> pier::validate::Source {
    pier::validate::Source {
        repo: args.repo.repo,
        reference: args.reference,
        path: args.repo.path,
        cache_dir: args.repo.cache_dir,
    }
}

pub fn settings(args: DeployArgs) -> Settings {
    nodes_settings(source(args.source), args.nodes)
}

fn nodes_settings(source: pier::validate::Source, args: NodesArgs) -> Settings {
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
    }
}

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
fn report_diagnostics(diagnostics: &[pier::manifest::Diagnostic]) {
    for diagnostic in diagnostics {
        eprintln!("{diagnostic}");
    }
}

/// The values pier's environment gave the manifests: of the variables
/// they interpolate, and of those an `environment`, stage `env` or build
/// arg entry names (a name-only entry takes its value from there).
/// `diff --show-values` never shows a value holding one of them.
fn values_from_environment(
    manifest: &pier::manifest::Manifest,
    interpolated: &std::collections::BTreeSet<String>,
    vars: &pier::manifest::Vars,
) -> Vec<String> {
    let service_keys = manifest.services.values().flat_map(|service| {
        service
            .environment
            .keys()
            .chain(service.build.iter().flat_map(|build| build.args.keys()))
    });
    let stage_keys = manifest
        .pipeline
        .iter()
        .flat_map(|pipeline| &pipeline.stages)
        .flat_map(|stage| match stage {
            pier::manifest::model::Stage::Script { env, .. } => env.keys().collect(),
            pier::manifest::model::Stage::Build { .. } => Vec::new(),
        });
    interpolated
        .iter()
        .chain(service_keys)
        .chain(stage_keys)
        .filter_map(|name| vars.get(name).cloned())
        .filter(|value| !value.is_empty())
        .collect()
}

pub fn report_pass_error(error: &PassError) {
    if let PassError::Invalid { diagnostics, .. } = error {
        for diagnostic in diagnostics {
            eprintln!("{diagnostic}");
        }
    }
    eprintln!("error: {error}");
}

pub async fn diff(args: DiffArgs) -> ExitCode {
    let (output, detailed) = (args.output, args.detailed_exitcode);
    let settings = settings(args.deploy);
    let vars = settings.manifest_vars();
    let (no_changes, changes, error) = if detailed { (0, 2, 1) } else { (0, 1, 2) };
    let mut prepared = match prepare::prepare(&settings, &vars).await {
        Ok(prepared) => prepared,
        Err(e) => {
            report_pass_error(&e);
            return ExitCode::from(error);
        }
    };
    report_diagnostics(&prepared.diagnostics);
    if args.show_values {
        let environment =
            values_from_environment(&prepared.manifest, &prepared.interpolated, &vars);
        render::reveal_env_values(&mut prepared.plan, &prepared.desired, &environment);
    }
    match output {
        Output::Human => print!(
            "{}",
            render::human(&prepared.plan, &prepared.desired, Style::for_stdout())
        ),
        Output::Json => println!("{}", render::json(&prepared.plan)),
    }
    let plan = &prepared.plan;
    if !plan.refused.is_empty() {
        return ExitCode::from(error);
    }
    if plan.is_empty() && plan.blocked_count() == 0 {
        ExitCode::from(no_changes)
    } else {
        ExitCode::from(changes)
    }
}

/// One line per engine call: what, on which node, how it went.
fn step_line(record: &StepRecord) -> String {
    let took = record
        .ended
        .duration_since(record.started)
        .unwrap_or_default();
    let mark = if record.ok { "ok" } else { "FAILED" };
    let service = if record.service.is_empty() {
        String::new()
    } else {
        format!("{}: ", record.service)
    };
    let detail = if record.ok {
        String::new()
    } else {
        format!(": {}", record.message)
    };
    format!(
        "  {service}{} {} on {} {mark} ({:.2}s){detail}",
        record.action,
        record.target,
        record.node,
        took.as_secs_f64()
    )
}

pub fn print_step(record: &StepRecord) {
    eprintln!("{}", step_line(record));
}

/// Step lines, and on a terminal a progress bar of the plan's steps kept
/// below them.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(plan: &pier::plan::Plan) -> Progress {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Progress { bar: None };
        }
        let bar = indicatif::ProgressBar::new(expected_steps(plan));
        bar.set_style(
            indicatif::ProgressStyle::with_template("  [{bar:30}] {pos}/{len} steps  {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        Progress { bar: Some(bar) }
    }

    fn step(&self, record: &StepRecord) {
        let Some(bar) = &self.bar else {
            return print_step(record);
        };
        bar.println(step_line(record));
        bar.inc(1);
        if bar.position() > bar.length().unwrap_or(0) {
            bar.set_length(bar.position());
        }
        bar.set_message(format!(
            "{} {} on {}",
            record.action, record.target, record.node
        ));
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// About how many engine calls a plan takes: networks and pulls once per
/// node, then per change its create/start or stop/rename/remove calls (and a
/// health wait). An estimate for the bar; it grows if the apply takes more.
fn expected_steps(plan: &pier::plan::Plan) -> u64 {
    use pier::plan::Change;
    let nodes: std::collections::BTreeSet<&str> = plan
        .services
        .iter()
        .flat_map(|s| s.changes.iter().map(Change::node))
        .collect();
    let changes: u64 = plan
        .services
        .iter()
        .flat_map(|s| &s.changes)
        .map(|change| match change {
            Change::Create { .. } => 3,
            Change::Replace { .. } => 6,
            Change::Remove { .. } | Change::Reload { .. } => 2,
            Change::Rotate { .. } => 1,
        })
        .sum();
    changes + 2 * nodes.len() as u64
}

pub async fn apply(args: ApplyArgs) -> ExitCode {
    let settings = settings(args.deploy);
    let vars = settings.manifest_vars();
    let loaded = match prepare::load_for_deploy(&settings, &vars).await {
        Ok(loaded) => loaded,
        Err(e) => {
            report_pass_error(&e);
            return ExitCode::from(2);
        }
    };
    report_diagnostics(&loaded.diagnostics);
    let registry = prepare::registry(&settings);
    deploy(
        &loaded,
        &settings,
        &registry,
        &PassInput::default(),
        &apply_settings(&args.rollout),
    )
    .await
}

/// Deploy with the plan and a progress bar on the terminal, and report: the
/// one way `apply` and `pipeline run --deploy` deploy. Exit status: 0
/// applied with nothing blocked, 1 refused, blocked or failed.
pub async fn deploy(
    loaded: &Loaded,
    settings: &Settings,
    registry: &pier::registry::Registry,
    input: &PassInput,
    apply_settings: &ApplySettings,
) -> ExitCode {
    let terminal = Terminal::default();
    let deployment =
        pier::deploy::deploy(loaded, settings, registry, input, apply_settings, &terminal).await;
    terminal.finish();
    report_deployment(&deployment)
}

/// A deploy as a terminal shows it: the plan, then a line per engine call.
#[derive(Default)]
struct Terminal {
    progress: std::sync::OnceLock<Progress>,
}

impl Watch for Terminal {
    fn planned(&self, planned: &Planned) {
        print!(
            "{}",
            render::human(&planned.plan, &planned.desired, Style::for_stdout())
        );
        if planned.plan.refused.is_empty() && !planned.plan.is_empty() {
            eprintln!("\nApplying:");
            let _ = self.progress.set(Progress::new(&planned.plan));
        }
    }

    fn step(&self, record: &StepRecord) {
        match self.progress.get() {
            Some(progress) => progress.step(record),
            None => print_step(record),
        }
    }
}

impl Terminal {
    fn finish(&self) {
        if let Some(progress) = self.progress.get() {
            progress.finish();
        }
    }
}

fn report_deployment(deployment: &Deployment) -> ExitCode {
    let blocked = match deployment.verdict() {
        Verdict::Refused => return ExitCode::FAILURE,
        Verdict::Failed => {
            eprintln!("\nApply failed:");
            for failure in &deployment.report.failures {
                eprintln!("  {failure}");
            }
            return ExitCode::FAILURE;
        }
        Verdict::Blocked(blocked) => blocked,
        Verdict::Converged => 0,
    };
    if deployment.acted() {
        let summary = render::summary(&deployment.planned.plan);
        println!(
            "\nApplied: {} created, {} replaced, {} removed{}.",
            summary.create,
            summary.replace,
            summary.remove,
            if blocked > 0 {
                format!("; {blocked} blocked (see above)")
            } else {
                String::new()
            }
        );
    }
    if blocked == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

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
        apply: apply_settings(&args.rollout),
        retention: pier::daemon::store::Retention {
            passes: args.pass_history as usize,
            runs: args.run_history as usize,
            stage_log_bytes: (args.stage_log_mib as usize) << 20,
        },
        notify,
        public_url: args.public_url,
        untrusted: pier::pipeline::Confinement {
            memory_bytes: args.untrusted_memory,
            pids: args.untrusted_pids,
            nano_cpus: (args.untrusted_cpus * 1e9) as i64,
            max_timeout: args.untrusted_timeout,
        },
    };
    match pier::daemon::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

pub async fn status(args: StatusArgs) -> ExitCode {
    let address = match args.addr {
        Some(address) => address,
        None => match std::fs::read_to_string(args.state_dir.join("listen")) {
            Ok(address) => format!("http://{}", address.trim()),
            Err(_) => {
                eprintln!(
                    "error: no daemon address in {}; is `pier daemon` running? Pass --addr or --state-dir",
                    args.state_dir.display()
                );
                return ExitCode::from(2);
            }
        },
    };
    let url = format!("{}/api/v1/status", address.trim_end_matches('/'));
    let mut request = reqwest::Client::new().get(&url);
    if let Some(token) = std::env::var("PIER_STATUS_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(response) if response.status().is_success() => response,
        Ok(response) => {
            eprintln!("error: {url} answered {}", response.status());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: cannot reach the daemon at {url}: {e}");
            return ExitCode::from(2);
        }
    };
    let text = match response.text().await {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: reading {url}: {e}");
            return ExitCode::from(2);
        }
    };
    let status: pier::daemon::status::Status = match serde_json::from_str(&text) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("error: {url} did not answer with a status document: {e}");
            return ExitCode::from(2);
        }
    };
    match args.output {
        Output::Json => println!("{text}"),
        Output::Human => print!("{}", pier::daemon::status::render(&status)),
    }
    let healthy = status.stalled.is_none()
        && status
            .services
            .iter()
            .all(|s| s.condition == pier::daemon::status::Condition::Ready);
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
