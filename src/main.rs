//! The `pier` binary: parse the command line, run the command, map the outcome
//! to an exit code. No logic lives here.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => validate(args),
        command @ (Command::Diff
        | Command::Apply
        | Command::Daemon
        | Command::Status
        | Command::Scale
        | Command::Node
        | Command::Logs) => not_built_yet(command.name()),
    }
}

fn validate(args: cli::ValidateArgs) -> ExitCode {
    let source = pier::validate::Source {
        repo: args.source.repo,
        reference: args.source.reference,
        path: args.source.path,
        cache_dir: args.source.cache_dir,
    };
    let vars: pier::manifest::Vars = std::env::vars().collect();
    match pier::validate::run(&source, &vars) {
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

fn not_built_yet(name: &str) -> ExitCode {
    eprintln!("pier {name}: not built yet in this version of pier");
    ExitCode::FAILURE
}
