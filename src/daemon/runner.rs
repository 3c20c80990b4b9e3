//! Pipeline runs of the daemon, for the branch it deploys (gating each new
//! commit) and for every other branch (tested and built, never deployed):
//! the run recorded in the store with its logs, the status updated, stage
//! containers of a run the daemon did not live to finish removed first.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::Shared;
use super::status::PipelineStatus;
use super::store::StageRow;
use crate::converge::{self, Loaded};
use crate::docker::engine::Engine;
use crate::manifest::Vars;
use crate::manifest::model::Stage;
use crate::pipeline::{self, RunState, archive};
use crate::registry::CredentialStore;
use crate::source::git::{GitSource, short_commit as short};

/// Everything a pipeline run needs from the daemon.
#[derive(Clone)]
pub struct PipelineRunner {
    pub shared: Arc<Shared>,
    pub repo: Arc<Mutex<GitSource>>,
    pub credentials: CredentialStore,
    pub vars: Vars,
    pub engine_timeout: Duration,
}

impl PipelineRunner {
    /// Run the pipeline of `loaded` (a commit of `branch`), recording the run
    /// and its logs; it stops when `tip` moves away from the commit.
    pub async fn run(
        &self,
        loaded: &Loaded,
        branch: &str,
        tip: watch::Receiver<Option<String>>,
    ) -> pipeline::RunOutcome {
        let store = &self.shared.store;
        let run = store.start_run(&loaded.commit, branch).unwrap_or(-1);
        let status = |state: &str, summary: String| PipelineStatus {
            run,
            branch: branch.to_string(),
            commit: loaded.commit.clone(),
            state: state.into(),
            summary,
        };
        self.publish(branch, status("running", String::new()));
        info!(branch, commit = %short(&loaded.commit), run, "pipeline started");
        let outcome = match self.archives(loaded).await {
            Ok(archive::Archives {
                workspace,
                contexts,
            }) => {
                let engines = converge::reachable(
                    converge::connect_all(&loaded.manifest, self.engine_timeout).await,
                );
                self.remove_leftovers_once(&loaded.stack, &engines).await;
                let positions: BTreeMap<String, usize> = loaded
                    .manifest
                    .pipeline
                    .iter()
                    .flat_map(|p| p.stages.iter())
                    .enumerate()
                    .map(|(i, stage)| (pipeline::stage_name(stage).to_string(), i))
                    .collect();
                let on_output = |stage: &str, text: &str| {
                    let position = positions.get(stage).copied().unwrap_or(0);
                    let _ = store.append_stage_log(run, position, stage, text);
                };
                let ctx = pipeline::Context {
                    stack: &loaded.stack,
                    commit: &loaded.commit,
                    manifest: &loaded.manifest,
                    engines: &engines,
                    credentials: &self.credentials,
                    workspace,
                    contexts,
                    secrets: self.secrets(loaded),
                    environment: &self.vars,
                    tip,
                    on_output: &on_output,
                };
                pipeline::run(&ctx).await
            }
            Err(message) => pipeline::RunOutcome {
                state: RunState::Failed,
                stages: vec![pipeline::StageRecord {
                    name: "checkout".into(),
                    message,
                    ..Default::default()
                }],
                built: BTreeMap::new(),
            },
        };
        for (position, stage) in outcome.stages.iter().enumerate() {
            let row = StageRow {
                name: stage.name.clone(),
                node: stage.node.clone(),
                state: if stage.ok { "passed" } else { "failed" }.into(),
                exit_code: stage.exit_code,
                duration_ms: stage.duration_ms,
                message: stage.message.clone(),
                log: stage.log.clone(),
            };
            if let Err(e) = store.finish_stage(run, position, &row) {
                warn!(error = %e, "cannot record a pipeline stage");
            }
        }
        let summary = outcome.failure_summary(10).unwrap_or_default();
        let _ = store.finish_run(run, outcome.state.as_str(), &summary);
        info!(branch, commit = %short(&loaded.commit), run, state = outcome.state.as_str(), "pipeline finished");
        self.publish(branch, status(outcome.state.as_str(), summary));
        outcome
    }

    fn publish(&self, branch: &str, run: PipelineStatus) {
        let mut status = self.shared.status.write().expect("status lock");
        if branch == status.branch {
            status.pipeline = Some(run.clone());
        }
        status.pipelines.insert(branch.to_string(), run);
    }

    /// Stage containers of the stack found before the daemon's first run
    /// were left by a daemon that died mid-stage. Every run waits for this
    /// cleanup, so it never removes a container of a run going on now.
    async fn remove_leftovers_once(&self, stack: &str, engines: &BTreeMap<String, Engine>) {
        self.shared
            .leftovers
            .get_or_init(|| async {
                let removed = pipeline::remove_leftovers(stack, engines).await;
                if removed > 0 {
                    info!(removed, "removed stage containers of an unfinished run");
                }
            })
            .await;
    }

    /// The commit's tree for script stages, and each build context.
    async fn archives(&self, loaded: &Loaded) -> Result<archive::Archives, String> {
        let (repo, commit, manifest) = (
            self.repo.clone(),
            loaded.commit.clone(),
            loaded.manifest.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let source = repo.lock().expect("repository lock");
            archive::for_pipeline(source.repository(), &commit, &manifest)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Values no log line may show: registry passwords and the stages'
    /// secrets (environment entries given by name only).
    fn secrets(&self, loaded: &Loaded) -> Vec<String> {
        let mut secrets = self.credentials.passwords();
        for stage in loaded
            .manifest
            .pipeline
            .iter()
            .flat_map(|p| p.stages.iter())
        {
            if let Stage::Script { env, .. } = stage {
                secrets.extend(
                    env.iter()
                        .filter(|(_, value)| value.is_none())
                        .filter_map(|(key, _)| self.vars.get(key).cloned()),
                );
            }
        }
        secrets
    }
}

/// Test (and build) the commits of branches the daemon does not deploy, one
/// run at a time; a run stops when its branch moves on.
pub async fn other_branches(
    mut queue: mpsc::UnboundedReceiver<(String, String)>,
    runner: PipelineRunner,
    folder: String,
    stack: String,
) {
    while let Some((branch, commit)) = queue.recv().await {
        let loaded = {
            let (repo, commit, folder, stack, vars) = (
                runner.repo.clone(),
                commit.clone(),
                folder.clone(),
                stack.clone(),
                runner.vars.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let repo = repo.lock().expect("repository lock");
                converge::load(&repo, &commit, &folder, Some(&stack), &vars)
            })
            .await
        };
        let loaded = match loaded {
            Ok(Ok(loaded)) if loaded.manifest.pipeline.is_some() => loaded,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => {
                warn!(branch, commit = %short(&commit), error = %e, "not testing a commit of another branch");
                continue;
            }
            Err(e) => {
                warn!(error = %e, "loading a commit of another branch failed");
                continue;
            }
        };
        let (tip_tx, tip) = watch::channel(Some(commit.clone()));
        let mut tips = runner.shared.branch_tips.subscribe();
        let follow = {
            let branch = branch.clone();
            tokio::spawn(async move {
                while tips.changed().await.is_ok() {
                    let now = tips.borrow().get(&branch).cloned();
                    if tip_tx.send(now).is_err() {
                        return;
                    }
                }
            })
        };
        runner.run(&loaded, &branch, tip).await;
        follow.abort();
    }
}
