//! `pier set image|env`: change a service's image or environment by a commit.

use std::process::ExitCode;

use pier::edit::Edit;

use super::edit::{run, usage};
use crate::cli::SetCommand;

pub async fn set(command: SetCommand) -> ExitCode {
    match command {
        SetCommand::Image {
            service,
            image,
            commit,
        } => run(Edit::SetImage { service, image }, commit).await,
        SetCommand::Env {
            service,
            vars,
            commit,
        } => {
            let mut parsed = Vec::new();
            for var in vars {
                if let Some((key, value)) = var.split_once('=') {
                    parsed.push((key.to_string(), Some(value.to_string())));
                } else if let Some(key) = var.strip_suffix('-') {
                    parsed.push((key.to_string(), None));
                } else {
                    return usage(format!(
                        "`{var}`: expected KEY=VALUE to set or KEY- to remove"
                    ));
                }
            }
            run(
                Edit::SetEnv {
                    service,
                    vars: parsed,
                },
                commit,
            )
            .await
        }
    }
}
