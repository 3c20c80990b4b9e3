//! `pier restart SERVICE…`: ask the daemon for a rolling restart. It runs
//! in the daemon's next pass, which holds the deploy slot, so no rollout
//! or heal races it; the history records it as a restart.

use std::process::ExitCode;

use pier::daemon::api::ControlRequest;

use super::client;
use crate::cli::RestartArgs;

pub async fn restart(args: RestartArgs) -> ExitCode {
    let request = ControlRequest {
        services: args.services.clone(),
        ..Default::default()
    };
    match client::control::<Vec<String>>(&args.control, "/api/v1/restart", request).await {
        Ok(services) => {
            println!(
                "The daemon restarts {} in its next pass, replica by replica, each waited for to be healthy; `pier history` records it.",
                services.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
