//! A terminal joined to a command in a container (`pier exec`, `pier
//! run`): raw mode while it lasts, the size passed on as it changes, this
//! terminal's input sent to the command and its output printed here.

use std::io::IsTerminal as _;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use pier::docker::engine::session::Attached;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether the command gets a terminal: when this one is one, unless refused.
pub(super) fn wants_tty(refused: bool) -> bool {
    !refused && std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// This terminal in raw mode until dropped.
struct RawMode;

impl RawMode {
    fn enter() -> Option<RawMode> {
        crossterm::terminal::enable_raw_mode().ok().map(|_| RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Join this terminal to `attached` until its output ends. `resize` is
/// called with the terminal's size at the start and whenever it changes.
pub(super) async fn join(
    attached: Attached,
    tty: bool,
    resize: impl Fn(u16, u16) -> BoxFuture<'static, ()> + Send + 'static,
) {
    let Attached {
        mut output,
        mut input,
    } = attached;
    let _raw = if tty { RawMode::enter() } else { None };
    let resizing = tty.then(|| {
        tokio::spawn(async move {
            let Ok(mut changes) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            loop {
                if let Ok((width, height)) = crossterm::terminal::size() {
                    resize(width, height).await;
                }
                if changes.recv().await.is_none() {
                    return;
                }
            }
        })
    });
    // This terminal's input, to the command; at its end the command's
    // input is closed, so a command reading to the end finishes.
    let feeding = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buffer = vec![0u8; 8192];
        loop {
            match stdin.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if input.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                    let _ = input.flush().await;
                }
            }
        }
        let _ = input.shutdown().await;
    });
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    while let Some(Ok(chunk)) = output.next().await {
        let written = if chunk.stderr {
            stderr
                .write_all(&chunk.bytes)
                .await
                .and(stderr.flush().await)
        } else {
            stdout
                .write_all(&chunk.bytes)
                .await
                .and(stdout.flush().await)
        };
        if written.is_err() {
            break;
        }
    }
    feeding.abort();
    if let Some(resizing) = resizing {
        resizing.abort();
    }
}

/// An exit code as a process's: its low byte.
pub(super) fn exit_code(code: i64) -> std::process::ExitCode {
    std::process::ExitCode::from((code & 0xff) as u8)
}
