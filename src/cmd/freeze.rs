//! `pier freeze` and `pier unfreeze`: the daemon keeps services where they
//! are (new commits and digests wait) until unfrozen or the time given.
//! Daemon state, not a commit: it says who, why and until when.

use std::process::ExitCode;

use pier::daemon::api::ControlRequest;
use pier::daemon::status::describe_freeze;
use pier::daemon::store::Freeze;

use super::client;
use crate::cli::{FreezeArgs, UnfreezeArgs};

fn services(named: &[String], all: bool) -> Vec<String> {
    if all {
        vec!["*".into()]
    } else {
        named.to_vec()
    }
}

pub async fn freeze(args: FreezeArgs) -> ExitCode {
    let request = ControlRequest {
        services: services(&args.services, args.all),
        for_seconds: args.duration.map(|d| d.as_secs().max(1)),
        ..Default::default()
    };
    match client::control::<Vec<Freeze>>(&args.control, "/api/v1/freeze", request).await {
        Ok(freezes) => {
            for freeze in &freezes {
                println!("{}", describe_freeze(freeze));
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

pub async fn unfreeze(args: UnfreezeArgs) -> ExitCode {
    let request = ControlRequest {
        services: services(&args.services, args.all),
        ..Default::default()
    };
    match client::control::<Vec<String>>(&args.control, "/api/v1/unfreeze", request).await {
        Ok(lifted) if lifted.is_empty() => {
            println!("Nothing was frozen; nothing changed.");
            ExitCode::SUCCESS
        }
        Ok(lifted) => {
            println!("Unfrozen: {}.", lifted.join(", "));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
