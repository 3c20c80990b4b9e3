//! The `pier` binary: parse the command line, run the command, map the outcome
//! to an exit code. No logic lives here.

mod cli;
mod commands;
mod edits;
mod runs;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    pier::source::git::bound_network_waits(cli.git_timeout);
    match cli.command {
        Command::Validate(args) => validate(args),
        Command::Diff(args) => runtime().block_on(commands::diff(args)),
        Command::Apply(args) => runtime().block_on(commands::apply(args)),
        Command::Daemon(args) => runtime().block_on(commands::daemon(args)),
        Command::Status(args) => runtime().block_on(commands::status(args)),
        Command::Scale(args) => runtime().block_on(edits::scale(args)),
        Command::Node(command) => runtime().block_on(edits::node(command)),
        Command::Set(command) => runtime().block_on(edits::set(command)),
        Command::Logs(args) => runtime().block_on(runs::logs(args)),
        Command::Pipeline(command) => runtime().block_on(runs::pipeline(command)),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn validate(args: cli::ValidateArgs) -> ExitCode {
    let source = commands::source(args.source);
    let vars: pier::manifest::Vars = std::env::vars().collect();
    let policy = args.policy.file.unwrap_or_default();
    match pier::validate::run(&source, &vars, &policy) {
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
