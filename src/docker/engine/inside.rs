//! What pier does inside a container through the engine: files read back,
//! commands run (a `reload`, a `post_start` or `pre_stop`), the end of its
//! output (a failed deploy hook's).

#[allow(unused_imports)]
use super::*;

impl Engine {
    pub(super) async fn log_tail_in(&self, id: &str, lines: usize) -> Result<String, RuntimeError> {
        let options = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let read = async {
            let mut text = String::new();
            let mut stream = self.docker.logs(id, Some(options));
            while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                text.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
            }
            Ok::<_, bollard::errors::Error>(text)
        };
        self.within("a log read", Box::pin(read))
            .await?
            .map_err(classify)
    }

    pub(super) async fn read_file_in(
        &self,
        id: &str,
        path: &str,
    ) -> Result<Option<String>, RuntimeError> {
        let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let download = async {
            let mut archive = Vec::new();
            let mut chunks = self.docker.download_from_container(id, Some(options));
            while let Some(chunk) = futures_util::StreamExt::next(&mut chunks).await {
                archive.extend_from_slice(&chunk?);
                if archive.len() > MAX_LIVE_FILE {
                    return Ok::<_, bollard::errors::Error>(None);
                }
            }
            Ok(Some(archive))
        };
        let archive = match self
            .within("a file download", Box::pin(download))
            .await?
            .map_err(classify)
        {
            Ok(Some(archive)) => archive,
            Ok(None) => {
                return Err(RuntimeError::Failed(format!(
                    "{path} is larger than {MAX_LIVE_FILE} bytes"
                )));
            }
            Err(RuntimeError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        first_file(&archive).map_err(|e| RuntimeError::Failed(format!("reading {path}: {e}")))
    }

    pub(super) async fn exec_in(
        &self,
        id: &str,
        request: &crate::docker::ExecRequest,
    ) -> Result<(i64, String), RuntimeError> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let run = async {
            let exec = self
                .docker
                .create_exec(
                    id,
                    CreateExecOptions {
                        cmd: Some(request.command.clone()),
                        user: request.user.clone(),
                        privileged: Some(request.privileged),
                        working_dir: request.working_dir.clone(),
                        env: (!request.env.is_empty()).then(|| request.env.clone()),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await?;
            let mut output = String::new();
            if let StartExecResults::Attached {
                output: mut stream, ..
            } = self.docker.start_exec(&exec.id, None).await?
            {
                while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                    if output.len() < MAX_LIVE_FILE {
                        output.push_str(&chunk?.to_string());
                    }
                }
            }
            let code = self.docker.inspect_exec(&exec.id).await?.exit_code;
            Ok::<_, bollard::errors::Error>((code.unwrap_or(-1), output))
        };
        self.within("a command in a container", Box::pin(run))
            .await?
            .map_err(classify)
    }
}
