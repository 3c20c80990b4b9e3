//! `pier exec SERVICE[.N] -- CMD…`: run a command in a running replica,
//! with a terminal when this is one; the command's exit code is pier's.

use std::process::ExitCode;

use futures_util::FutureExt;
use pier::ops::{Reach, Selection, parse_target};

use super::terminal;
use crate::cli::ExecArgs;

pub async fn exec(args: ExecArgs) -> ExitCode {
    let (service, number) = parse_target(&args.target);
    let settings = super::settings(args.deploy);
    let reach = match Reach::connect(&settings).await {
        Ok(reach) => reach,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let selection = Selection {
        services: vec![service],
        replica: number,
        node: args.node.clone(),
    };
    let replica = match reach.one_running(&selection).await {
        Ok(replica) => replica,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let engine = reach
        .engine(&replica.node)
        .expect("a replica's node answered")
        .clone();
    let tty = terminal::wants_tty(args.no_tty);
    let (exec, attached) = match engine.exec_attached(&replica.id, args.command, tty).await {
        Ok(started) => started,
        Err(e) => {
            eprintln!("error: running the command in {}: {e}", replica.label());
            return ExitCode::from(2);
        }
    };
    let (resizer, id) = (engine.clone(), exec.clone());
    terminal::join(attached, tty, move |width, height| {
        let (engine, id) = (resizer.clone(), id.clone());
        async move {
            let _ = engine.resize_exec(&id, width, height).await;
        }
        .boxed()
    })
    .await;
    match engine.exec_exit_code(&exec).await {
        Ok(code) => terminal::exit_code(code),
        Err(e) => {
            eprintln!("error: reading the command's exit code: {e}");
            ExitCode::from(2)
        }
    }
}
