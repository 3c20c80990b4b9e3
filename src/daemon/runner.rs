//! Pipeline runs of the daemon, for the branch it deploys (gating each new
//! commit) and for every other branch (tested and built, never deployed):
//! the run recorded in the store with its logs, the status updated, stage
//! containers of a run the daemon did not live to finish removed first.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::shared::Shared;
use super::status::PipelineStatus;
use super::store::StageRow;
use crate::docker::engine::Engine;
use crate::manifest::Vars;
use crate::pass::{self, Loaded};
use crate::pipeline::{self, RunState, archive};
use crate::registry::CredentialStore;
use crate::source::git::{GitSource, short_commit as short};

/// Everything a pipeline run needs from the daemon.
#[derive(Clone)]
pub struct PipelineRunner {
    pub shared: Arc<Shared>,
    pub repo: Arc<Mutex<GitSource>>,
    pub credentials: CredentialStore,
    /// The variables manifests may interpolate (`--allow-env`).
    pub vars: Vars,
    /// The daemon's whole environment, only to tell a variable the
    /// allow-list keeps out from one that is not set.
    pub environment: Vars,
    pub engine_timeout: Duration,
    /// The branch the daemon deploys: its runs are trusted.
    pub branch: String,
    /// What manifests may ask of the hosts, on every branch: read again
    /// from its file on SIGHUP.
    pub policy: Arc<std::sync::RwLock<Arc<crate::policy::Policy>>>,
    /// What bounds the stages of the branches it does not deploy.
    pub confinement: pipeline::Confinement,
    /// The age keys that open SOPS files: for the deploy branch only.
    pub keys: Arc<crate::manifest::sops::Keys>,
}

/// Where other branches' stages may run: the nodes and runner tags of the
/// deploy branch's last applied revision. The branch under test chooses
/// neither.
#[derive(Debug, Clone, Default)]
pub struct TrustedRunners {
    pub nodes: BTreeMap<String, crate::manifest::model::Node>,
    pub runner_tags: std::collections::BTreeSet<String>,
}

impl TrustedRunners {
    pub fn of(manifest: &crate::manifest::Manifest) -> Option<TrustedRunners> {
        let pipeline = manifest.pipeline.as_ref()?;
        Some(TrustedRunners {
            nodes: manifest.nodes.clone(),
            runner_tags: pipeline.runner_tags.clone(),
        })
    }
}

impl PipelineRunner {
    /// The runner of a daemon of `config`; `environment` is the process's
    /// own, of which only what `--allow-env` admits reaches manifests.
    pub fn new(
        shared: Arc<Shared>,
        repo: Arc<Mutex<GitSource>>,
        config: &super::shared::Config,
        registry: &crate::registry::Registry,
        environment: Vars,
    ) -> PipelineRunner {
        PipelineRunner {
            shared,
            repo,
            credentials: registry.credentials().clone(),
            vars: crate::manifest::interpolate::admitted(&environment, &config.settings.allow_env),
            environment,
            branch: config.branch.clone(),
            engine_timeout: config.settings.engine_timeout,
            policy: Arc::new(std::sync::RwLock::new(Arc::new(
                config.settings.policy.clone(),
            ))),
            confinement: config.untrusted.clone(),
            keys: config.settings.keys.clone(),
        }
    }

    /// Read and validate the manifests at `commit` with the variables the
    /// allow-list admits; a variable of the daemon's environment that it
    /// keeps out is named as such, not as unset.
    pub async fn load(
        &self,
        commit: &str,
        folder: &str,
        stack: &str,
    ) -> Result<Loaded, pass::PassError> {
        self.load_with(commit, folder, stack, self.vars.clone(), false)
            .await
    }

    /// [`Self::load`] for a branch under test: no variable at all, so no
    /// value of the daemon's environment reaches its stages.
    pub async fn load_untrusted(
        &self,
        commit: &str,
        folder: &str,
        stack: &str,
    ) -> Result<Loaded, pass::PassError> {
        self.load_with(commit, folder, stack, Vars::new(), true)
            .await
    }

    async fn load_with(
        &self,
        commit: &str,
        folder: &str,
        stack: &str,
        vars: Vars,
        untrusted: bool,
    ) -> Result<Loaded, pass::PassError> {
        let policy = self.policy.read().expect("policy lock").clone();
        let (repo, keys) = (self.repo.clone(), self.keys.clone());
        let (commit, folder, stack) = (commit.to_string(), folder.to_string(), stack.to_string());
        let loaded = tokio::task::spawn_blocking(move || {
            let repo = repo.lock().expect("repository lock");
            // A branch under test never has its SOPS files opened.
            let decrypt = if untrusted {
                crate::manifest::Decrypt::Never
            } else {
                crate::manifest::Decrypt::With(&keys)
            };
            let loaded = pass::load(
                &repo,
                &commit,
                &folder,
                Some(&stack),
                &vars,
                &policy,
                decrypt,
            );
            // A branch under test never gets the router's certificate.
            if untrusted {
                loaded
            } else {
                loaded.and_then(pass::with_router_certificate)
            }
        })
        .await
        .expect("loading manifests does not panic");
        loaded.map_err(|error| match error {
            pass::PassError::Invalid {
                commit,
                mut diagnostics,
            } => {
                for diagnostic in &mut diagnostics {
                    self.explain_denied(diagnostic, untrusted);
                }
                pass::PassError::Invalid {
                    commit,
                    diagnostics,
                }
            }
            other => other,
        })
    }

    fn explain_denied(&self, diagnostic: &mut crate::manifest::Diagnostic, untrusted: bool) {
        let named = diagnostic
            .message
            .split_whitespace()
            .skip_while(|w| *w != "variable")
            .nth(1)
            .map(str::to_string);
        let Some(name) = named.filter(|name| {
            diagnostic.message.contains("is not set") && self.environment.contains_key(name)
        }) else {
            return;
        };
        if untrusted {
            diagnostic.message = format!(
                "variable {name} is not available here: a branch other than `{}` gets no value of the daemon's environment",
                self.branch
            );
        } else if !self.vars.contains_key(&name) {
            diagnostic.message = format!(
                "variable {name} is not one manifests may use: the daemon passes them only the variables --allow-env (PIER_ALLOW_ENV) names, and never PIER_* by default"
            );
        }
    }

    /// Run the pipeline of `loaded` (a commit of `branch`), recording the run
    /// and its logs; it stops when `tip` moves away from the commit.
    pub async fn run(
        &self,
        loaded: &Loaded,
        branch: &str,
        tip: watch::Receiver<Option<String>>,
    ) -> pipeline::RunOutcome {
        let store = &self.shared.store;
        let (commit, on_branch) = (loaded.commit.clone(), branch.to_string());
        let run = store
            .call(move |store| store.start_run(&commit, &on_branch))
            .await
            .unwrap_or(-1);
        let status = |state: pipeline::RunStatus, summary: String| PipelineStatus {
            run,
            branch: branch.to_string(),
            commit: loaded.commit.clone(),
            state,
            summary,
        };
        self.publish(branch, status(pipeline::RunStatus::Running, String::new()));
        info!(branch, commit = %short(&loaded.commit), run, "pipeline started");
        let trusted = branch == self.branch;
        let untrusted = (CredentialStore::default(), Vars::new());
        let (credentials, environment) = if trusted {
            (&self.credentials, &self.vars)
        } else {
            (&untrusted.0, &untrusted.1)
        };
        let manifest = if trusted {
            Ok(loaded.manifest.clone())
        } else {
            self.on_trusted_runners(&loaded.manifest)
        };
        let secrets = if trusted {
            self.secrets(loaded)
        } else {
            Ok(self.credentials.passwords())
        };
        let prepared = match (manifest, secrets) {
            (Ok(manifest), Ok(secrets)) => {
                self.archives(loaded).await.map(|a| (manifest, a, secrets))
            }
            (Err(message), _) | (_, Err(message)) => Err(message),
        };
        let outcome = match prepared {
            Ok((
                manifest,
                archive::Archives {
                    workspace,
                    contexts,
                },
                secrets,
            )) => {
                let engines =
                    pass::reachable(pass::connect_all(&manifest, self.engine_timeout).await);
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
                    // Queued in order behind the run's other writes.
                    let (stage, text) = (stage.to_string(), text.to_string());
                    let shared = self.shared.clone();
                    store.write(move |store| {
                        let _ = store.append_stage_log(run, position, &stage, &text);
                        shared.changed();
                    });
                };
                let ctx = pipeline::Context {
                    stack: &loaded.stack,
                    commit: &loaded.commit,
                    manifest: &manifest,
                    engines: &engines,
                    credentials,
                    workspace,
                    contexts,
                    secrets,
                    environment,
                    tip,
                    on_output: &on_output,
                    trusted,
                    confinement: self.confinement.clone(),
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
            store.write(move |store| {
                if let Err(e) = store.finish_stage(run, position, &row) {
                    warn!(error = %e, "cannot record a pipeline stage");
                }
            });
        }
        let summary = outcome.failure_summary(10).unwrap_or_default();
        let (state, recorded) = (outcome.state, summary.clone());
        store.write(move |store| {
            let _ = store.finish_run(run, state, &recorded);
        });
        let on_branch = branch.to_string();
        let before = store
            .call(move |store| store.previous_run_state(&on_branch, run))
            .await
            .unwrap_or_default();
        self.shared.notifier.pipeline_finished(
            branch,
            &loaded.commit,
            state.into(),
            before,
            &summary,
        );
        info!(branch, commit = %short(&loaded.commit), run, state = outcome.state.as_str(), "pipeline finished");
        self.publish(branch, status(outcome.state.into(), summary));
        outcome
    }

    fn publish(&self, branch: &str, run: PipelineStatus) {
        {
            let mut status = self.shared.status.write().expect("status lock");
            if branch == status.branch {
                status.pipeline = Some(run.clone());
            }
            status.pipelines.insert(branch.to_string(), run);
        }
        self.shared.changed();
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

    /// `manifest` with the nodes and runner tags of the deploy branch's last
    /// applied revision in place of its own.
    fn on_trusted_runners(
        &self,
        manifest: &crate::manifest::Manifest,
    ) -> Result<crate::manifest::Manifest, String> {
        let trusted = self
            .shared
            .trusted_runners
            .lock()
            .expect("trusted runners lock")
            .clone()
            .ok_or_else(|| {
                format!(
                    "no trusted runner yet: other branches run on the runner nodes of the last revision of `{}` applied, and none with a pipeline was applied",
                    self.branch
                )
            })?;
        let mut manifest = manifest.clone();
        manifest.nodes = trusted.nodes;
        if let Some(pipeline) = manifest.pipeline.as_mut() {
            pipeline.runner_tags = trusted.runner_tags;
        }
        Ok(manifest)
    }

    /// Values no log line may show (see [`pipeline::pipeline_secrets`]).
    /// Other branches run on the runners of the deploy branch's applied
    /// revision: a branch pushed before the first one is applied waits
    /// for it rather than failing. (After one without a pipeline, the run
    /// fails saying so.) `true` when there is one at once; `false` after
    /// waiting (the branch may have moved meanwhile).
    async fn wait_for_trusted_runners(&self, branch: &str) -> bool {
        let known = self.shared.trusted_runners_known.notified();
        tokio::pin!(known);
        // Registered before the check, so a notification between the two
        // is not missed.
        known.as_mut().enable();
        let applied = self
            .shared
            .status
            .read()
            .expect("status lock")
            .revision
            .is_some();
        if applied {
            return true;
        }
        info!(
            branch,
            "waiting for the deploy branch's first applied revision, whose runners other branches use"
        );
        known.await;
        false
    }

    fn secrets(&self, loaded: &Loaded) -> Result<Vec<String>, String> {
        pipeline::pipeline_secrets(
            &loaded.manifest,
            &loaded.interpolated,
            &self.vars,
            self.credentials.passwords(),
        )
    }
}

/// Test (and build) the commits of branches the daemon does not deploy, one
/// run at a time; a run stops when its branch moves on.
pub async fn other_branches(runner: PipelineRunner, folder: String, stack: String) {
    loop {
        let (branch, commit) = runner.shared.branch_runs.next().await;
        // A standby (--ha) tests nothing: the leader does, once.
        let mut lease = runner.shared.lease.subscribe();
        let _ = lease
            .wait_for(|lease| lease.as_ref().is_none_or(|l| l.leads()))
            .await;
        let loaded = match runner.load_untrusted(&commit, &folder, &stack).await {
            Ok(loaded) if loaded.manifest.pipeline.is_some() => loaded,
            Ok(_) => continue,
            Err(e) => {
                let detail = match &e {
                    pass::PassError::Invalid { diagnostics, .. } => diagnostics
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => other.to_string(),
                };
                warn!(branch, commit = %short(&commit), error = %detail, "not testing a commit of another branch");
                continue;
            }
        };
        if !runner.wait_for_trusted_runners(&branch).await {
            // Tested later, at whatever the branch holds by then.
            runner.shared.branch_runs.send(branch, commit);
            continue;
        }
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
