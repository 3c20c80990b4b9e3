//! `pier node add|rm|tag`: change the nodes by a commit.

use std::process::ExitCode;

use pier::edit::Edit;

use super::edit::{run, usage};
use crate::cli::NodeCommand;

pub async fn node(command: NodeCommand) -> ExitCode {
    match command {
        NodeCommand::Add {
            name,
            endpoint,
            tags,
            commit,
        } => {
            run(
                Edit::NodeAdd {
                    name,
                    endpoint,
                    tags,
                },
                commit,
            )
            .await
        }
        NodeCommand::Rm { name, commit } => run(Edit::NodeRemove(name), commit).await,
        NodeCommand::Tag {
            name,
            changes,
            commit,
        } => {
            let (mut add, mut remove) = (Vec::new(), Vec::new());
            for change in changes {
                match change.split_at_checked(1) {
                    Some(("+", tag)) if !tag.is_empty() => add.push(tag.to_string()),
                    Some(("-", tag)) if !tag.is_empty() => remove.push(tag.to_string()),
                    _ if change.starts_with("--") => {
                        return usage(format!(
                            "`{change}`: put options before the tag changes, e.g. `pier node tag --repo R {name} +ssd -hdd`"
                        ));
                    }
                    _ => return usage(format!("`{change}`: expected +TAG or -TAG")),
                }
            }
            run(Edit::NodeTag { name, add, remove }, commit).await
        }
    }
}
