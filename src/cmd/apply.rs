//! `pier apply`: one pass, carried out with the plan and a progress bar on
//! the terminal; also how `pier pipeline run --deploy` deploys.

use std::process::ExitCode;

use pier::pass::apply::{ApplySettings, StepRecord};
use pier::pass::deploy::{Deployment, Verdict, Watch};
use pier::pass::{self, Loaded, PassInput, Planned, Settings};
use pier::plan::render::{self, Style};

use super::{apply_settings, report_diagnostics, report_pass_error, settings};
use crate::cli::ApplyArgs;

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
    let registry = pass::registry_in_background(&settings);
    let loaded = match pass::load_for_deploy(&settings, &vars).await {
        Ok(loaded) => loaded,
        Err(e) => {
            report_pass_error(&e);
            return ExitCode::from(2);
        }
    };
    report_diagnostics(&loaded.diagnostics);
    let registry = registry.await;
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
    let deployment = pier::pass::deploy::deploy(
        &pass::Engines,
        loaded,
        settings,
        registry,
        input,
        apply_settings,
        &terminal,
    )
    .await;
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
    for alert in &deployment.report.alerts {
        eprintln!("warning: {alert}");
    }
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
    if blocked == 0 && deployment.report.alerts.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
