//! `pier diff` and `pier apply`: run a pass, render it, map it to an exit code.

use std::process::ExitCode;

use pier::apply::{self, ApplySettings, StepRecord};
use pier::converge::{self, PassError, Settings};
use pier::manifest::Vars;
use pier::plan::render::{self, Style};

use crate::cli::{ApplyArgs, DeployArgs, DiffArgs, Output, SourceArgs};

pub fn source(args: SourceArgs) -> pier::validate::Source {
    pier::validate::Source {
        repo: args.repo,
        reference: args.reference,
        path: args.path,
        cache_dir: args.cache_dir,
    }
}

fn settings(args: DeployArgs) -> Settings {
    Settings {
        source: source(args.source),
        stack: args.stack,
        insecure_registries: args
            .insecure_registries
            .into_iter()
            .filter(|r| !r.is_empty())
            .collect(),
        engine_timeout: args.engine_timeout,
        allow_empty: args.allow_empty,
    }
}

fn report_pass_error(error: &PassError) {
    if let PassError::Invalid { diagnostics, .. } = error {
        for diagnostic in diagnostics {
            eprintln!("{diagnostic}");
        }
    }
    eprintln!("error: {error}");
}

pub async fn diff(args: DiffArgs) -> ExitCode {
    let (output, detailed) = (args.output, args.detailed_exitcode);
    let vars: Vars = std::env::vars().collect();
    let (no_changes, changes, error) = if detailed { (0, 2, 1) } else { (0, 1, 2) };
    let prepared = match converge::prepare(&settings(args.deploy), &vars).await {
        Ok(prepared) => prepared,
        Err(e) => {
            report_pass_error(&e);
            return ExitCode::from(error);
        }
    };
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

fn print_step(record: &StepRecord) {
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
    eprintln!(
        "  {service}{} {} on {} {mark} ({:.2}s){detail}",
        record.action,
        record.target,
        record.node,
        took.as_secs_f64()
    );
}

pub async fn apply(args: ApplyArgs) -> ExitCode {
    let apply_settings = ApplySettings {
        health_timeout: args.health_timeout,
        per_node: args.node_parallelism.max(1),
        ..Default::default()
    };
    let vars: Vars = std::env::vars().collect();
    let prepared = match converge::prepare(&settings(args.deploy), &vars).await {
        Ok(prepared) => prepared,
        Err(e) => {
            report_pass_error(&e);
            return ExitCode::from(2);
        }
    };
    let style = Style::for_stdout();
    print!(
        "{}",
        render::human(&prepared.plan, &prepared.desired, style)
    );
    if !prepared.plan.refused.is_empty() {
        return ExitCode::FAILURE;
    }
    let blocked = prepared.plan.blocked_count();
    if prepared.plan.is_empty() {
        return if blocked == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    eprintln!("\nApplying:");
    let report = apply::apply(
        &prepared.desired,
        &prepared.plan,
        &prepared.engines,
        prepared.registry.credentials(),
        &apply_settings,
        &print_step,
    )
    .await;
    let summary = render::summary(&prepared.plan);
    if report.ok() {
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
        if blocked == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    } else {
        eprintln!("\nApply failed:");
        for failure in &report.failures {
            eprintln!("  {failure}");
        }
        ExitCode::FAILURE
    }
}
