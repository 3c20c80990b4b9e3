//! `pier scale web=5`: change replica counts by a commit.

use std::process::ExitCode;

use pier::edit::Edit;

use super::edit::{run, usage};
use crate::cli::ScaleArgs;

pub async fn scale(args: ScaleArgs) -> ExitCode {
    let mut targets = Vec::new();
    for target in &args.targets {
        let parsed = target
            .split_once('=')
            .and_then(|(service, count)| Some((service.to_string(), count.parse::<u32>().ok()?)));
        match parsed {
            Some(pair) => targets.push(pair),
            None => return usage(format!("`{target}`: expected SERVICE=COUNT, e.g. web=3")),
        }
    }
    run(Edit::Scale(targets), args.commit).await
}
