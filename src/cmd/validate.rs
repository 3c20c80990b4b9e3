//! `pier validate`: every problem of the manifests at a commit.

use std::process::ExitCode;

use crate::cli;

pub fn validate(args: cli::ValidateArgs) -> ExitCode {
    let source = super::source(args.source);
    let vars = pier::manifest::interpolate::admitted_from_process(&args.policy.allow_env());
    let policy = args.policy.file.unwrap_or_default();
    match pier::validate::run(&source, &vars, &policy, &super::age_keys()) {
        Ok(report) => {
            match args.output {
                cli::Output::Human => eprint!("{}", report.human()),
                cli::Output::Json => println!("{}", report.json()),
            }
            if report.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}
