//! `pier diff`: load → observe → plan → render, touching nothing.

use std::process::ExitCode;

use pier::pass;
use pier::plan::render::{self, Style};

use super::{report_diagnostics, report_pass_error, settings};
use crate::cli::{DiffArgs, Output};

pub async fn diff(args: DiffArgs) -> ExitCode {
    let (output, detailed) = (args.output, args.detailed_exitcode);
    let settings = settings(args.deploy);
    let vars = settings.manifest_vars();
    let (no_changes, changes, error) = if detailed { (0, 2, 1) } else { (0, 1, 2) };
    let mut prepared = match pass::prepare(&settings, &vars).await {
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

/// The values pier's environment gave the manifests: of the variables
/// they interpolate, and of those an `environment`, stage `env` or build
/// arg entry names (a name-only entry takes its value from there); and
/// every value SOPS files gave.
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
        .chain(manifest.secret_values.0.iter().cloned())
        .filter(|value| !value.is_empty())
        .collect()
}
