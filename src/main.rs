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
    pier::docker::engine::install_crypto_provider();
    pier::source::git::bound_network_waits(cli.git_timeout, cli.git_fetch_timeout);
    match cli.command {
        Command::Validate(args) => validate(args),
        Command::Diff(args) => run(commands::diff(args)),
        Command::Apply(args) => run(commands::apply(args)),
        Command::Daemon(args) => run(commands::daemon(*args)),
        Command::Status(args) => run(commands::status(args)),
        Command::Scale(args) => run(edits::scale(args)),
        Command::Node(command) => run(edits::node(command)),
        Command::Set(command) => run(edits::set(command)),
        Command::Logs(args) => run(runs::logs(args)),
        Command::Pipeline(command) => run(runs::pipeline(command)),
    }
}

/// Run a command to its end. Blocking work still going on then (a git
/// fetch or an engine call stuck until its own timeout) is abandoned after
/// a moment rather than waited for: the command has already decided.
fn run(command: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = runtime.block_on(command);
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

fn validate(args: cli::ValidateArgs) -> ExitCode {
    let source = commands::source(args.source);
    let vars = pier::manifest::interpolate::admitted_from_process(&args.policy.allow_env());
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
