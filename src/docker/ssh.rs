//! Engines reached over SSH, the way the Docker CLI reaches them: every
//! connection is one `ssh … docker system dial-stdio` process, and the
//! engine's API travels over its stdin and stdout. The system's OpenSSH does
//! all of SSH, so the user's `~/.ssh/config` (ports, `ProxyJump`,
//! `IdentityFile`), agent, known hosts and host-key policy apply unchanged;
//! `BatchMode` keeps it from ever prompting.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bollard::Docker;
use hyper::rt::ReadBufCursor;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

/// How much of ssh's error output is kept for the error message.
const STDERR_LIMIT: usize = 4096;

/// A client for the engine at `ssh://[user@]host[:port]`. `timeout` is the
/// HTTP client's cap on one request, in seconds.
pub fn connect(
    user: Option<&str>,
    host: &str,
    port: Option<u16>,
    timeout: u64,
    version: &bollard::ClientVersion,
) -> Result<Docker, bollard::errors::Error> {
    let connector = SshConnector {
        args: ssh_args(user, host, port),
    };
    let client = Arc::new(Client::builder(TokioExecutor::new()).build(connector));
    let transport = move |request: bollard::BollardRequest| {
        let client = Arc::clone(&client);
        async move {
            client
                .request(request)
                .await
                .map_err(bollard::errors::Error::from)
        }
    };
    Docker::connect_with_custom_transport(
        transport,
        Some(format!("ssh://{host}")),
        timeout,
        version,
    )
}

/// ssh's arguments up to the remote command: never prompt, no terminal, and
/// the destination after `--` so a host name can never read as an option.
fn ssh_args(user: Option<&str>, host: &str, port: Option<u16>) -> Vec<String> {
    let mut args = vec!["-o".to_string(), "BatchMode=yes".into(), "-T".into()];
    if let Some(user) = user {
        args.extend(["-l".into(), user.to_string()]);
    }
    if let Some(port) = port {
        args.extend(["-p".into(), port.to_string()]);
    }
    args.extend(["--".into(), host.to_string()]);
    args.extend(["docker", "system", "dial-stdio"].map(String::from));
    args
}

/// Opens one ssh process per connection the HTTP client asks for.
#[derive(Clone)]
struct SshConnector {
    args: Vec<String>,
}

impl tower_service::Service<hyper::Uri> for SshConnector {
    type Response = SshStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<SshStream>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let args = self.args.clone();
        Box::pin(async move { SshStream::open(&args) })
    }
}

/// One `ssh … dial-stdio` process, read and written as a connection.
struct SshStream {
    stdin: Option<TokioIo<ChildStdin>>,
    stdout: ChildStdout,
    /// Collects ssh's error output until the process ends.
    stderr: JoinHandle<String>,
    /// What ssh said when the connection ended early, once known.
    failure: Option<String>,
    /// Killed when the connection is dropped.
    _child: Child,
}

impl SshStream {
    fn open(args: &[String]) -> io::Result<SshStream> {
        let mut child = Command::new("ssh")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run ssh: {e}")))?;
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(io::Error::other("ssh started without its pipes"));
        };
        // Drained to the end (a full pipe would stall ssh), kept up to a limit.
        let stderr = tokio::spawn(async move {
            let (mut text, mut chunk) = (Vec::new(), [0u8; 1024]);
            while let Ok(read @ 1..) = stderr.read(&mut chunk).await {
                let room = STDERR_LIMIT.saturating_sub(text.len());
                text.extend_from_slice(&chunk[..read.min(room)]);
            }
            String::from_utf8_lossy(&text).trim().to_string()
        });
        Ok(SshStream {
            stdin: Some(TokioIo::new(stdin)),
            stdout,
            stderr,
            failure: None,
            _child: child,
        })
    }

    fn stdin(&mut self) -> io::Result<Pin<&mut TokioIo<ChildStdin>>> {
        self.stdin
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::ErrorKind::BrokenPipe.into())
    }

    /// At the end of ssh's output: wait for its error output to end too, and
    /// turn it into the error, so "Permission denied (publickey)" or "Host
    /// key verification failed" reaches the user instead of a bare EOF.
    fn poll_failure(&mut self, cx: &mut Context<'_>) -> Poll<Option<String>> {
        if self.failure.is_none() {
            let text = ready!(Pin::new(&mut self.stderr).poll(cx)).unwrap_or_default();
            self.failure = Some(text);
        }
        Poll::Ready(self.failure.clone().filter(|text| !text.is_empty()))
    }

    /// A write that failed because ssh is gone fails with what ssh said.
    fn explain<T>(&mut self, cx: &mut Context<'_>, result: io::Result<T>) -> Poll<io::Result<T>> {
        match result {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                let text = ready!(self.poll_failure(cx));
                Poll::Ready(Err(text.map_or(e, io::Error::other)))
            }
            other => Poll::Ready(other),
        }
    }
}

impl hyper::rt::Read for SshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut chunk = [0u8; 16 * 1024];
        let wanted = buf.remaining().min(chunk.len());
        let mut read = ReadBuf::new(&mut chunk[..wanted]);
        ready!(Pin::new(&mut this.stdout).poll_read(cx, &mut read))?;
        if read.filled().is_empty()
            && wanted > 0
            && let Some(text) = ready!(this.poll_failure(cx))
        {
            return Poll::Ready(Err(io::Error::other(text)));
        }
        buf.put_slice(read.filled());
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for SshStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = ready!(this.stdin()?.poll_write(cx, buf));
        this.explain(cx, result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = ready!(this.stdin()?.poll_flush(cx));
        this.explain(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.stdin()?.poll_shutdown(cx))?;
        // Closing ssh's stdin is what ends the remote side's input.
        this.stdin = None;
        Poll::Ready(Ok(()))
    }
}

impl Connection for SshStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_is_asked_for_dial_stdio_without_prompts() {
        assert_eq!(
            ssh_args(Some("deploy"), "web-1", Some(2222)).join(" "),
            "-o BatchMode=yes -T -l deploy -p 2222 -- web-1 docker system dial-stdio"
        );
        assert_eq!(
            ssh_args(None, "-oProxyCommand=x", None).join(" "),
            "-o BatchMode=yes -T -- -oProxyCommand=x docker system dial-stdio"
        );
    }
}
