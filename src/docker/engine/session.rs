//! A person's dealings with one container, for `pier logs`, `pier exec` and
//! `pier run` (never a pass): its log as a stream, a command run in it with
//! a terminal attached, a one-off container's output and exit code.
//!
//! Each stream is the engine's own; what bounds it is the caller's (a
//! follower drops it when its node stops answering a listing).

use std::pin::Pin;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, LogsOptionsBuilder, WaitContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use tokio::io::AsyncWrite;

use super::{Engine, RuntimeError, classify};

/// Output of a container or command: which stream, and the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stderr: bool,
    pub bytes: Bytes,
}

fn output(item: Result<LogOutput, bollard::errors::Error>) -> Result<Output, RuntimeError> {
    match item.map_err(classify)? {
        LogOutput::StdErr { message } => Ok(Output {
            stderr: true,
            bytes: message,
        }),
        other => Ok(Output {
            stderr: false,
            bytes: other.into_bytes(),
        }),
    }
}

/// A command or one-off container attached: its output, and its input.
pub struct Attached {
    pub output: BoxStream<'static, Result<Output, RuntimeError>>,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

impl Engine {
    /// A container's log, each line starting with its RFC 3339 timestamp:
    /// since `since` (seconds since the epoch; 0: from the start), the last
    /// `tail` lines of it (`None`: all), and then what it writes next when
    /// `follow`.
    pub fn log_stream(
        &self,
        id: &str,
        since: i64,
        tail: Option<usize>,
        follow: bool,
    ) -> BoxStream<'static, Result<Output, RuntimeError>> {
        let tail = tail.map_or_else(|| "all".to_string(), |n| n.to_string());
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since(since.clamp(0, i64::from(i32::MAX)) as i32)
            .tail(&tail)
            .follow(follow)
            .build();
        self.docker.logs(id, Some(options)).map(output).boxed()
    }

    /// Run `command` in a running container, attached: with a terminal
    /// (`tty`, stdin and stdout joined) or with stdin and separate output
    /// streams. The exec's id, to resize its terminal and read its exit code.
    pub async fn exec_attached(
        &self,
        id: &str,
        command: Vec<String>,
        tty: bool,
    ) -> Result<(String, Attached), RuntimeError> {
        let exec = self
            .within(
                "an exec creation",
                Box::pin(self.docker.create_exec(
                    id,
                    CreateExecOptions {
                        cmd: Some(command),
                        attach_stdin: Some(true),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        tty: Some(tty),
                        ..Default::default()
                    },
                )),
            )
            .await?
            .map_err(classify)?;
        let started = self
            .within(
                "an exec start",
                Box::pin(self.docker.start_exec(
                    &exec.id,
                    Some(StartExecOptions {
                        detach: false,
                        tty,
                        ..Default::default()
                    }),
                )),
            )
            .await?
            .map_err(classify)?;
        match started {
            StartExecResults::Attached {
                output: stream,
                input,
            } => Ok((
                exec.id,
                Attached {
                    output: stream.map(output).boxed(),
                    input,
                },
            )),
            StartExecResults::Detached => Err(RuntimeError::Failed(
                "the engine started the command detached".into(),
            )),
        }
    }

    /// Give a command's terminal this size.
    pub async fn resize_exec(
        &self,
        exec: &str,
        width: u16,
        height: u16,
    ) -> Result<(), RuntimeError> {
        self.within(
            "a terminal resize",
            Box::pin(
                self.docker
                    .resize_exec(exec, ResizeExecOptions { height, width }),
            ),
        )
        .await?
        .map_err(classify)
    }

    /// A finished command's exit code.
    pub async fn exec_exit_code(&self, exec: &str) -> Result<i64, RuntimeError> {
        let inspected = self
            .within(
                "an exec inspection",
                Box::pin(self.docker.inspect_exec(exec)),
            )
            .await?
            .map_err(classify)?;
        Ok(inspected.exit_code.unwrap_or(-1))
    }

    /// Attach to a created container before it starts, so none of its
    /// output is missed.
    pub async fn attach(&self, id: &str, stdin: bool) -> Result<Attached, RuntimeError> {
        let options = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdin(stdin)
            .stdout(true)
            .stderr(true)
            .build();
        let attached = self
            .within(
                "an attach",
                Box::pin(self.docker.attach_container(id, Some(options))),
            )
            .await?
            .map_err(classify)?;
        Ok(Attached {
            output: attached.output.map(output).boxed(),
            input: attached.input,
        })
    }

    /// Wait for a container to exit; its exit code. Unbounded: a one-off
    /// runs as long as it runs.
    pub async fn wait_exit(&self, id: &str) -> Result<i64, RuntimeError> {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut waits = self.docker.wait_container(id, Some(options));
        match waits.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // A non-zero exit arrives as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(classify(e)),
            None => Err(RuntimeError::Failed(
                "the engine ended the wait without an answer".into(),
            )),
        }
    }

    /// Give a one-off container's terminal this size.
    pub async fn resize_container(
        &self,
        id: &str,
        width: u16,
        height: u16,
    ) -> Result<(), RuntimeError> {
        let options = bollard::query_parameters::ResizeContainerTTYOptionsBuilder::default()
            .w(i32::from(width))
            .h(i32::from(height))
            .build();
        self.within(
            "a terminal resize",
            Box::pin(self.docker.resize_container_tty(id, options)),
        )
        .await?
        .map_err(classify)
    }
}
