//! Engine operations of the pipeline: one-off job containers fed a tar
//! stream (so remote engines work: nothing is bind-mounted from pier's
//! disk), their logs and exit codes, and image build and push.

use std::collections::HashMap;

use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, PushImageOptionsBuilder,
    RemoveContainerOptionsBuilder, TagImageOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};

use super::engine::Engine;
use super::{Credentials, RuntimeError};

/// Marks a container as a pipeline job of a stack.
pub const LABEL_PIPELINE: &str = "pier.pipeline";

/// What a job container runs.
#[derive(Debug, Clone, Default)]
pub struct JobSpec {
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub labels: HashMap<String, String>,
    /// Bounds for a job of a branch under test; `None`: the engine's.
    pub limits: Option<JobLimits>,
}

/// What an untrusted job may use of its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLimits {
    pub memory_bytes: i64,
    pub pids: i64,
    /// Billionths of a CPU.
    pub nano_cpus: i64,
    /// The network it joins instead of the engine's default bridge.
    pub network: String,
}

impl JobLimits {
    fn host_config(&self) -> HostConfig {
        HostConfig {
            memory: Some(self.memory_bytes),
            // No swap beyond the memory bound.
            memory_swap: Some(self.memory_bytes),
            pids_limit: Some(self.pids),
            nano_cpus: Some(self.nano_cpus),
            network_mode: Some(self.network.clone()),
            // A job gains no privileges through setuid binaries.
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..Default::default()
        }
    }
}

fn failed(e: bollard::errors::Error) -> RuntimeError {
    RuntimeError::Failed(e.to_string())
}

fn registry_auth(credentials: Option<&Credentials>, server: &str) -> Option<DockerCredentials> {
    credentials.map(|c| DockerCredentials {
        username: Some(c.username.clone()),
        password: Some(c.password.clone()),
        serveraddress: Some(server.to_string()),
        ..Default::default()
    })
}

impl Engine {
    /// Create (not start) a job container.
    pub async fn create_job(&self, name: &str, spec: &JobSpec) -> Result<String, RuntimeError> {
        super::fence::check("a job container creation")?;
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.command.clone()),
            env: Some(spec.env.clone()),
            working_dir: Some(spec.working_dir.clone()),
            labels: Some(super::fence::with_epoch(spec.labels.clone())),
            host_config: Some(
                spec.limits
                    .as_ref()
                    .map_or_else(HostConfig::default, JobLimits::host_config),
            ),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        self.within(
            "a job container creation",
            self.docker().create_container(Some(options), body),
        )
        .await?
        .map(|r| r.id)
        .map_err(failed)
    }

    /// Unpack a tar archive into the container at `path`.
    pub async fn upload(&self, id: &str, path: &str, tar: Bytes) -> Result<(), RuntimeError> {
        let options = UploadToContainerOptionsBuilder::default()
            .path(path)
            .build();
        self.docker()
            .upload_to_container(id, Some(options), bollard::body_full(tar))
            .await
            .map_err(failed)
    }

    /// Upload a tar stream, unpacked at `path` in the container; an error
    /// in the stream fails the upload.
    pub async fn upload_stream(
        &self,
        id: &str,
        path: &str,
        tar: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    ) -> Result<(), RuntimeError> {
        let options = UploadToContainerOptionsBuilder::default()
            .path(path)
            .build();
        self.docker()
            .upload_to_container(id, Some(options), bollard::body_try_stream(tar))
            .await
            .map_err(failed)
    }

    pub async fn start_job(&self, id: &str) -> Result<(), RuntimeError> {
        super::fence::check("a job container start")?;
        let request = self
            .docker()
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>);
        self.within("a job container start", request)
            .await?
            .map_err(failed)
    }

    /// The job's output (stdout and stderr interleaved) until it exits.
    pub fn follow_output(
        &self,
        id: &str,
    ) -> impl Stream<Item = Result<bytes::Bytes, RuntimeError>> + use<> {
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        self.docker()
            .logs(id, Some(options))
            // Raw bytes: a character may be split between two chunks, and
            // only the masker, which sees both, can decode it whole.
            .map_ok(|chunk| chunk.into_bytes())
            .map_err(failed)
    }

    /// Wait for the job to exit; its exit code.
    pub async fn wait_job(&self, id: &str) -> Result<i64, RuntimeError> {
        let mut waits = Box::pin(self.docker().wait_container(id, None));
        match waits.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // A non-zero exit arrives as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(failed(e)),
            None => Err(RuntimeError::Failed(
                "the engine ended the wait without an exit code".into(),
            )),
        }
    }

    pub async fn kill_job(&self, id: &str) {
        let request = self
            .docker()
            .kill_container(id, Some(KillContainerOptionsBuilder::default().build()));
        let _ = self.within("a job container kill", request).await;
    }

    /// Remove a job container whatever its state.
    pub async fn remove_job(&self, id: &str) {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let request = self.docker().remove_container(id, Some(options));
        let _ = self.within("a job container removal", request).await;
    }

    /// Ids of the containers carrying `label=value`, running or not.
    pub async fn labelled(&self, label: &str, value: &str) -> Result<Vec<String>, RuntimeError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{label}={value}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        Ok(self
            .within(
                "the container list",
                self.docker().list_containers(Some(options)),
            )
            .await?
            .map_err(failed)?
            .into_iter()
            .filter_map(|c| c.id)
            .collect())
    }

    /// Build an image from a tar context; yields the build's output lines.
    pub fn build(
        &self,
        context: Vec<u8>,
        tag: &str,
        dockerfile: &str,
        args: HashMap<String, String>,
        limits: Option<&JobLimits>,
    ) -> impl Stream<Item = Result<String, RuntimeError>> + '_ {
        let mut options = BuildImageOptionsBuilder::default()
            .t(tag)
            .dockerfile(dockerfile)
            .rm(true)
            .forcerm(true)
            .buildargs(&args);
        if let Some(limits) = limits {
            // The build's steps run as containers bounded like a job's. The
            // build API's client takes memory as an i32: at most 2 GiB.
            let memory = limits.memory_bytes.min(i64::from(i32::MAX)) as i32;
            let quota = (limits.nano_cpus / 10_000).min(i64::from(i32::MAX)) as i32;
            // Base images are pulled, never taken from the engine's store:
            // an untrusted build must not build on a private image another
            // run left there.
            options = options
                .memory(memory)
                .memswap(memory)
                .cpuperiod(100_000)
                .cpuquota(quota)
                .networkmode(&limits.network)
                .pull("1");
        }
        let options = options.build();
        self.docker()
            .build_image(
                options,
                None,
                Some(bollard::body_full(Bytes::from(context))),
            )
            .map_err(failed)
            .and_then(|info| async move {
                match (info.error_detail, info.stream) {
                    (Some(detail), _) => Err(RuntimeError::Failed(
                        detail.message.unwrap_or_else(|| "the build failed".into()),
                    )),
                    (None, line) => Ok(line.unwrap_or_default()),
                }
            })
    }

    pub async fn tag(&self, image: &str, repository: &str, tag: &str) -> Result<(), RuntimeError> {
        super::fence::check("an image tag")?;
        let options = TagImageOptionsBuilder::default()
            .repo(repository)
            .tag(tag)
            .build();
        self.within(
            "an image tag",
            self.docker().tag_image(image, Some(options)),
        )
        .await?
        .map_err(failed)
    }

    /// Push `repository:tag`; returns the digest the registry stored.
    pub async fn push(
        &self,
        repository: &str,
        tag: &str,
        credentials: Option<&Credentials>,
    ) -> Result<String, RuntimeError> {
        super::fence::check("an image push")?;
        let server = repository.split('/').next().unwrap_or_default();
        let options = PushImageOptionsBuilder::default().tag(tag).build();
        let mut progress = Box::pin(self.docker().push_image(
            repository,
            Some(options),
            registry_auth(credentials, server),
        ));
        let mut digest = None;
        while let Some(info) = progress.next().await {
            let info = info.map_err(failed)?;
            if let Some(detail) = info.error_detail {
                return Err(RuntimeError::Failed(
                    detail.message.unwrap_or_else(|| "the push failed".into()),
                ));
            }
            // The last status line reads `<tag>: digest: sha256:… size: N`.
            if let Some(found) = info
                .status
                .as_deref()
                .and_then(|s| s.split_once("digest: "))
                .and_then(|(_, rest)| rest.split_whitespace().next())
            {
                digest = Some(found.to_string());
            }
        }
        digest.ok_or_else(|| RuntimeError::Failed("the registry reported no digest".into()))
    }
}
