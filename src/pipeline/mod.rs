//! The pipeline: a commit's `pipeline.stages`, in order, in containers on a
//! runner node chosen by `runner_tags`.
//!
//! - A script stage creates a container from the stage image, uploads the
//!   commit's tree into it as a tar stream (so remote engines work; nothing
//!   of pier's disk is mounted), runs each `script` line with `sh -c` in
//!   order, and stops at the first non-zero exit.
//! - A build stage sends each listed service's build context (from the
//!   commit's tree, `.dockerignore` honoured) to the runner's engine, tags the
//!   image `<image>:<commit>` and with the tag the service follows, pushes
//!   both, and records the pushed digest, which the deploy then pins.
//!
//! Stage containers carry pier's pipeline label and are always removed. A
//! cancelled or failed run changes nothing that is running; secrets are
//! masked in every log line kept.

pub mod archive;
mod confine;
mod mask;
mod secrets;

pub use confine::{Confinement, untrusted_network};
pub use mask::{Masker, mask};

pub use secrets::{MIN_SECRET_LEN, pipeline_secrets};

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;

use crate::docker::engine::Engine;
use crate::docker::jobs::{JobSpec, LABEL_PIPELINE};
use crate::docker::{Credentials, Runtime};
use crate::manifest::Manifest;
use crate::manifest::model::Stage;
use crate::registry::{CredentialStore, Resolved};
use crate::source::git::short_commit;

/// Where job containers find the commit's tree.
pub const WORKSPACE: &str = "/workspace";
/// The script a script stage runs, placed beside the workspace.
const STAGE_SCRIPT: &str = "pier-stage.sh";
/// How long a stage may run when its manifest sets no `timeout`.
pub const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Passed,
    Failed,
    Cancelled,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        RunStatus::from(self).as_str()
    }
}

/// Where a recorded run stands: still running, or how it ended. What the
/// store keeps and the status document shows (in lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Passed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Passed => "passed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// The status written as `as_str` writes it.
    pub fn parse(text: &str) -> Option<RunStatus> {
        [
            RunStatus::Running,
            RunStatus::Passed,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

impl From<RunState> for RunStatus {
    fn from(state: RunState) -> RunStatus {
        match state {
            RunState::Passed => RunStatus::Passed,
            RunState::Failed => RunStatus::Failed,
            RunState::Cancelled => RunStatus::Cancelled,
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stage as it ran.
#[derive(Debug, Clone, Default)]
pub struct StageRecord {
    pub name: String,
    pub node: String,
    pub ok: bool,
    pub exit_code: Option<i64>,
    pub duration_ms: u64,
    /// Everything the stage printed, secrets masked.
    pub log: String,
    /// Why it failed, in a line.
    pub message: String,
}

/// One run of the pipeline for a commit.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub state: RunState,
    pub stages: Vec<StageRecord>,
    /// Images pushed by build stages: service → (its image reference, pushed digest).
    pub built: BTreeMap<String, (String, Resolved)>,
}

impl RunOutcome {
    /// The stage that failed and the end of its log, for status displays.
    pub fn failure_summary(&self, lines: usize) -> Option<String> {
        let stage = self.stages.iter().find(|s| !s.ok)?;
        let tail: Vec<&str> = stage.log.lines().rev().take(lines).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Some(format!(
            "stage `{}` failed: {}\n{}",
            stage.name,
            stage.message,
            tail.join("\n")
        ))
    }
}

/// What a run needs. Archives are made beforehand from the commit's tree.
pub struct Context<'a> {
    pub stack: &'a str,
    pub commit: &'a str,
    pub manifest: &'a Manifest,
    /// Reachable engines by node name.
    pub engines: &'a BTreeMap<String, Engine>,
    pub credentials: &'a CredentialStore,
    /// The whole tree under `workspace/`, for script stages, streamed from
    /// git to each.
    pub workspace: archive::Workspace,
    /// Build contexts by service.
    pub contexts: BTreeMap<String, Vec<u8>>,
    /// Values never to show in a log (stage secrets, registry passwords).
    pub secrets: Vec<String>,
    /// Environment for `env` entries given by name only.
    pub environment: &'a crate::manifest::Vars,
    /// The branch tip as last seen: the run stops when it moves elsewhere
    /// (a newer commit supersedes this one).
    pub tip: watch::Receiver<Option<String>>,
    /// Called with each piece of output as it arrives (stage name, masked text).
    pub on_output: &'a (dyn Fn(&str, &str) + Sync),
    /// A run of the deploy branch. Any other branch is untrusted: whoever
    /// can push one chooses what runs, so its build stages build without
    /// pushing (no tag production follows can change), and the caller gives
    /// it no credentials and no environment.
    pub trusted: bool,
    /// What bounds the stages when the run is not `trusted`.
    pub confinement: Confinement,
}

/// Run every stage in order; stop at the first failure or on cancellation.
pub async fn run(ctx: &Context<'_>) -> RunOutcome {
    let mut outcome = RunOutcome {
        state: RunState::Passed,
        stages: Vec::new(),
        built: BTreeMap::new(),
    };
    let Some(pipeline) = &ctx.manifest.pipeline else {
        return outcome;
    };
    let runner = match choose_runner(ctx, &pipeline.runner_tags).await {
        Ok(runner) => runner,
        Err(message) => {
            outcome.state = RunState::Failed;
            outcome.stages.push(StageRecord {
                name: pipeline
                    .stages
                    .first()
                    .map(stage_name)
                    .unwrap_or_default()
                    .to_string(),
                message,
                ..Default::default()
            });
            return outcome;
        }
    };
    let engine = &ctx.engines[&runner];
    for stage in &pipeline.stages {
        if superseded(ctx) {
            outcome.state = RunState::Cancelled;
            break;
        }
        let started = Instant::now();
        let mut record = StageRecord {
            name: stage_name(stage).to_string(),
            node: runner.clone(),
            ..Default::default()
        };
        let result = match stage {
            Stage::Script {
                name,
                image,
                script,
                env,
                timeout,
            } => {
                let timeout = ctx.stage_timeout(*timeout);
                script_stage(ctx, engine, name, image, script, env, timeout, &mut record).await
            }
            Stage::Build {
                name,
                services,
                timeout,
            } => {
                // The same deadline as a script stage's: builds and pushes
                // together. Dropping the build's request stops it on the engine.
                let timeout = ctx.stage_timeout(*timeout);
                let building =
                    build_stage(ctx, engine, name, services, &mut record, &mut outcome.built);
                tokio::time::timeout(timeout, building)
                    .await
                    .unwrap_or_else(|_| {
                        Err(StageError::Failed(format!(
                            "timed out after {}",
                            humantime::format_duration(timeout)
                        )))
                    })
            }
        };
        record.duration_ms = started.elapsed().as_millis() as u64;
        record.log = mask(&record.log, &ctx.secrets);
        match result {
            Ok(()) => record.ok = true,
            Err(StageError::Cancelled) => {
                record.message = "cancelled: a newer commit arrived".into();
                outcome.state = RunState::Cancelled;
            }
            Err(StageError::Failed(message)) => {
                record.message = mask(&message, &ctx.secrets);
                outcome.state = RunState::Failed;
            }
        }
        let stop = !record.ok;
        outcome.stages.push(record);
        if stop {
            break;
        }
    }
    outcome
}

/// Remove stage containers of `stack` left by a run that never finished
/// (the daemon was killed mid-stage); returns how many went.
pub async fn remove_leftovers(stack: &str, engines: &BTreeMap<String, Engine>) -> usize {
    let mut removed = 0;
    for engine in engines.values() {
        for id in engine
            .labelled(LABEL_PIPELINE, stack)
            .await
            .unwrap_or_default()
        {
            engine.remove_job(&id).await;
            removed += 1;
        }
    }
    removed
}

fn superseded(ctx: &Context<'_>) -> bool {
    ctx.tip
        .borrow()
        .as_deref()
        .is_some_and(|tip| tip != ctx.commit)
}

/// A stage's name, whatever its kind.
pub fn stage_name(stage: &Stage) -> &str {
    match stage {
        Stage::Script { name, .. } | Stage::Build { name, .. } => name,
    }
}

enum StageError {
    Failed(String),
    Cancelled,
}

/// The first node carrying every runner tag, with the fewest stage
/// containers running; ties by name.
async fn choose_runner(
    ctx: &Context<'_>,
    tags: &std::collections::BTreeSet<String>,
) -> Result<String, String> {
    let mut best: Option<(usize, String)> = None;
    for node in ctx.manifest.nodes.values() {
        if !tags.iter().all(|t| node.tags.contains(t)) {
            continue;
        }
        let Some(engine) = ctx.engines.get(&node.name) else {
            continue;
        };
        let Ok(jobs) = engine.labelled(LABEL_PIPELINE, ctx.stack).await else {
            continue;
        };
        if best.as_ref().is_none_or(|(n, _)| jobs.len() < *n) {
            best = Some((jobs.len(), node.name.clone()));
        }
    }
    best.map(|(_, name)| name).ok_or_else(|| {
        format!(
            "no reachable node carries the runner tags [{}]",
            tags.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    })
}

/// The shell script of a script stage: each line echoed, then run with
/// `sh -c`; the first non-zero exit ends the stage with that code.
pub fn stage_script(lines: &[String]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut script = format!("#!/bin/sh\ncd {WORKSPACE} || exit 1\n");
    for line in lines {
        script.push_str(&format!(
            "printf '$ %s\\n' {q}\nsh -c {q} || exit $?\n",
            q = quote(line)
        ));
    }
    script
}

fn credentials_for(ctx: &Context<'_>, image: &str) -> Option<Credentials> {
    ctx.credentials.for_image(image).cloned()
}

#[allow(clippy::too_many_arguments)]
async fn script_stage(
    ctx: &Context<'_>,
    engine: &Engine,
    name: &str,
    image: &str,
    script: &[String],
    env: &BTreeMap<String, Option<String>>,
    timeout: Duration,
    record: &mut StageRecord,
) -> Result<(), StageError> {
    let failed =
        |what: &str, e: crate::docker::RuntimeError| StageError::Failed(format!("{what}: {e}"));
    let limits = ctx.job_limits();
    let image = if let Some(limits) = &limits {
        // A branch under test runs only what it can pull itself, without
        // credentials: never a private image another run left on the node.
        engine
            .pull(image, None, None)
            .await
            .map_err(|e| failed(&format!("pulling {image} (a branch under test uses only images it can pull without credentials)"), e))?;
        engine
            .ensure_network(
                &limits.network,
                &BTreeMap::from([(LABEL_PIPELINE.to_string(), ctx.stack.to_string())]),
                false,
            )
            .await
            .map_err(|e| failed("creating the untrusted stages' network", e))?;
        // Run what was pulled, by its id, not whatever the tag names later.
        engine
            .image_id(image)
            .await
            .map_err(|e| failed(&format!("inspecting {image}"), e))?
            .ok_or_else(|| StageError::Failed(format!("{image} is gone right after its pull")))?
    } else {
        if engine.image_id(image).await.ok().flatten().is_none() {
            engine
                .pull(image, credentials_for(ctx, image).as_ref(), None)
                .await
                .map_err(|e| failed(&format!("pulling {image}"), e))?;
        }
        image.to_string()
    };
    let env: Vec<String> = env
        .iter()
        .filter_map(|(key, value)| match value {
            Some(value) => Some(format!("{key}={value}")),
            None => ctx.environment.get(key).map(|v| format!("{key}={v}")),
        })
        .collect();
    let short = short_commit(ctx.commit);
    let spec = JobSpec {
        image,
        limits,
        command: vec!["sh".into(), format!("/{STAGE_SCRIPT}")],
        env,
        working_dir: WORKSPACE.into(),
        labels: HashMap::from([
            (LABEL_PIPELINE.to_string(), ctx.stack.to_string()),
            (
                crate::docker::LABEL_COMMIT.to_string(),
                ctx.commit.to_string(),
            ),
            ("pier.stage".to_string(), name.to_string()),
        ]),
    };
    // Two runs may test the same commit at once (it is the tip of two
    // branches): the name carries a per-run suffix.
    let suffix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 0x10000)
        .unwrap_or(0);
    let container = format!("{}-pipeline-{short}-{name}-{suffix:04x}", ctx.stack);
    let id = engine
        .create_job(&container, &spec)
        .await
        .map_err(|e| failed("creating the stage container", e))?;
    let result = run_job(ctx, engine, &id, script, timeout, record).await;
    engine.remove_job(&id).await;
    result
}

async fn run_job(
    ctx: &Context<'_>,
    engine: &Engine,
    id: &str,
    script: &[String],
    timeout: Duration,
    record: &mut StageRecord,
) -> Result<(), StageError> {
    let failed =
        |what: &str, e: crate::docker::RuntimeError| StageError::Failed(format!("{what}: {e}"));
    // `timeout` bounds the stage from the upload of its tree to its exit.
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = || {
        StageError::Failed(format!(
            "timed out after {}",
            humantime::format_duration(timeout)
        ))
    };
    // The tree is streamed from git as it is uploaded; the stage's own
    // script goes in a second, one-file archive.
    let script_tar = one_file_archive(STAGE_SCRIPT, stage_script(script).as_bytes());
    let upload = async {
        engine
            .upload_stream(id, "/", ctx.workspace.stream())
            .await?;
        engine.upload(id, "/", script_tar.into()).await
    };
    tokio::time::timeout_at(deadline, upload)
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| failed("uploading the tree", e))?;
    engine
        .start_job(id)
        .await
        .map_err(|e| failed("starting the stage", e))?;
    let mut output = Box::pin(engine.follow_output(id));
    let mut tip = ctx.tip.clone();
    let commit = ctx.commit.to_string();
    let mut masker = Masker::new(&ctx.secrets);
    let follow = async {
        while let Some(chunk) = output.next().await {
            let Ok(chunk) = chunk else { break };
            let chunk = masker.push_bytes(&chunk);
            emit(ctx, record, &chunk);
        }
        let rest = masker.finish();
        emit(ctx, record, &rest);
        engine.wait_job(id).await
    };
    let exit = tokio::select! {
        exit = tokio::time::timeout_at(deadline, follow) => exit,
        // The guard `wait_for` returns is dropped at once, so the future stays `Send`.
        _ = async { tip.wait_for(|t| t.as_deref().is_some_and(|t| t != commit)).await.map(drop) } => {
            engine.kill_job(id).await;
            return Err(StageError::Cancelled);
        }
    };
    match exit {
        Err(_) => {
            engine.kill_job(id).await;
            Err(timed_out())
        }
        Ok(Err(e)) => Err(failed("waiting for the stage", e)),
        Ok(Ok(0)) => {
            record.exit_code = Some(0);
            Ok(())
        }
        Ok(Ok(code)) => {
            record.exit_code = Some(code);
            Err(StageError::Failed(format!("exit code {code}")))
        }
    }
}

/// How much of a stage's output a [`StageRecord`] keeps in memory: the end,
/// for failure summaries. The whole output goes to `on_output` as it comes.
const RECORD_LOG_TAIL: usize = 64 * 1024;

/// Show `text` (masked already) as the stage's output: to the caller at
/// once, and at the end of the record's log.
fn emit(ctx: &Context<'_>, record: &mut StageRecord, text: &str) {
    if text.is_empty() {
        return;
    }
    (ctx.on_output)(&record.name, text);
    push_tail(&mut record.log, text, RECORD_LOG_TAIL);
}

/// Append `text` to `log`, then drop whole characters from its front until
/// it holds at most `limit` bytes.
pub fn push_tail(log: &mut String, text: &str, limit: usize) {
    log.push_str(text);
    if log.len() > limit {
        let mut cut = log.len() - limit;
        while !log.is_char_boundary(cut) {
            cut += 1;
        }
        log.drain(..cut);
    }
}

/// A tar archive holding one executable file.
fn one_file_archive(path: &str, contents: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(0o755);
    header.set_mtime(0);
    builder
        .append_data(&mut header, path, contents)
        .expect("writing to memory");
    builder.into_inner().expect("writing to memory")
}

/// `registry/repo:tag` → (`registry/repo`, `tag`); the tag defaults to `latest`.
pub fn split_tag(image: &str) -> (&str, &str) {
    let name = image.split('@').next().unwrap_or(image);
    match name.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, tag),
        _ => (name, "latest"),
    }
}

async fn build_stage(
    ctx: &Context<'_>,
    engine: &Engine,
    name: &str,
    services: &[String],
    record: &mut StageRecord,
    built: &mut BTreeMap<String, (String, Resolved)>,
) -> Result<(), StageError> {
    for service_name in services {
        if superseded(ctx) {
            return Err(StageError::Cancelled);
        }
        let service = ctx.manifest.services.get(service_name).ok_or_else(|| {
            StageError::Failed(format!("stage `{name}`: no service `{service_name}`"))
        })?;
        let (Some(build), Some(image)) = (&service.build, &service.image) else {
            return Err(StageError::Failed(format!(
                "`{service_name}` needs both `build` and `image` (where to push) to be built"
            )));
        };
        let context = ctx.contexts.get(service_name).cloned().unwrap_or_default();
        let (repository, tag) = split_tag(image);
        let short = short_commit(ctx.commit);
        let commit_tag = format!("{repository}:{short}");
        let args: HashMap<String, String> = build
            .args
            .iter()
            .filter_map(|(k, v)| {
                v.clone()
                    .or_else(|| ctx.environment.get(k).cloned())
                    .map(|v| (k.clone(), v))
            })
            .collect();
        emit(
            ctx,
            record,
            &format!("$ build {service_name} → {commit_tag}\n"),
        );
        let limits = ctx.job_limits();
        if let Some(limits) = &limits {
            engine
                .ensure_network(
                    &limits.network,
                    &BTreeMap::from([(LABEL_PIPELINE.to_string(), ctx.stack.to_string())]),
                    false,
                )
                .await
                .map_err(|e| {
                    StageError::Failed(format!("creating the untrusted stages' network: {e}"))
                })?;
        }
        crate::docker::fence::check("an image build")
            .map_err(|e| StageError::Failed(format!("building {service_name}: {e}")))?;
        let mut output = Box::pin(engine.build(
            context,
            &commit_tag,
            &build.dockerfile,
            args,
            limits.as_ref(),
        ));
        // Build output comes in pieces as well: a secret split between two
        // is masked like one that is not.
        let mut masker = Masker::new(&ctx.secrets);
        while let Some(line) = output.next().await {
            let line =
                line.map_err(|e| StageError::Failed(format!("building {service_name}: {e}")))?;
            emit(ctx, record, &masker.push(&line));
        }
        emit(ctx, record, &masker.finish());
        if !ctx.trusted {
            emit(
                ctx,
                record,
                &format!("built {commit_tag}; not pushed: only the deploy branch pushes images\n"),
            );
            continue;
        }
        engine
            .tag(&commit_tag, repository, tag)
            .await
            .map_err(|e| StageError::Failed(format!("tagging {image}: {e}")))?;
        let credentials = credentials_for(ctx, image);
        let mut digest = String::new();
        for pushed_tag in [short, tag] {
            emit(ctx, record, &format!("$ push {repository}:{pushed_tag}\n"));
            digest = engine
                .push(repository, pushed_tag, credentials.as_ref())
                .await
                .map_err(|e| {
                    StageError::Failed(format!("pushing {repository}:{pushed_tag}: {e}"))
                })?;
        }
        emit(ctx, record, &format!("pushed {repository}@{digest}\n"));
        built.insert(
            service_name.clone(),
            (
                image.clone(),
                Resolved {
                    pinned: format!("{repository}@{digest}"),
                    digest,
                },
            ),
        );
    }
    record.exit_code = Some(0);
    Ok(())
}

#[cfg(test)]
mod tests;
