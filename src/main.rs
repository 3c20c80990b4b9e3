//! The `pier` binary: parse the command line, run the command, map the outcome
//! to an exit code. No logic lives here.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        command @ (Command::Validate
        | Command::Diff
        | Command::Apply
        | Command::Daemon
        | Command::Status
        | Command::Scale
        | Command::Node
        | Command::Logs) => not_built_yet(command.name()),
    }
}

fn not_built_yet(name: &str) -> ExitCode {
    eprintln!("pier {name}: not built yet in this version of pier");
    ExitCode::FAILURE
}
