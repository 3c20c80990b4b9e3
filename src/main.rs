//! The `pier` binary: parse the command line, run the command, map the outcome
//! to an exit code. No logic lives here.

mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    pier::docker::engine::install_crypto_provider();
    pier::source::git::bound_network_waits(cli.git_timeout, cli.git_fetch_timeout);
    match cli.command {
        Command::Validate(args) => cmd::validate::validate(args),
        Command::Diff(args) => run(cmd::diff::diff(args)),
        Command::Apply(args) => run(cmd::apply::apply(args)),
        Command::Daemon(args) => run(cmd::daemon::daemon(*args)),
        Command::Status(args) => run(cmd::status::status(args)),
        Command::Scale(args) => run(cmd::scale::scale(args)),
        Command::Node(command) => run(cmd::node::node(command)),
        Command::Set(command) => run(cmd::set::set(command)),
        Command::Logs(args) => run(cmd::logs::logs(args)),
        Command::Exec(args) => run(cmd::exec::exec(args)),
        Command::Run(args) => run(cmd::run::run(args)),
        Command::Pipeline(command) => run(cmd::pipeline::pipeline(command)),
        Command::History(args) => run(cmd::history::history(args)),
        Command::Rollback(args) => run(cmd::rollback::rollback(args)),
        Command::Resume(args) => run(cmd::rollback::resume(args)),
        Command::Pin(args) => run(cmd::pin::pin(args)),
        Command::Unpin(args) => run(cmd::pin::unpin(args)),
        Command::Freeze(args) => run(cmd::freeze::freeze(args)),
        Command::Unfreeze(args) => run(cmd::freeze::unfreeze(args)),
        Command::Restart(args) => run(cmd::restart::restart(args)),
        Command::Secret(command) => cmd::secret::secret(command),
        Command::Completions { shell } => cmd::docs::completions(shell),
        Command::Man { dir } => cmd::docs::man(dir),
        Command::Init(args) => cmd::init::init(args),
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
