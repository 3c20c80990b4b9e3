//! How commands reach a running daemon: its address (given, or read from
//! its state folder), reads with `PIER_STATUS_TOKEN`, and control calls
//! with `PIER_API_TOKEN`, each bounded in time.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cli::{ControlArgs, ReachArgs};

/// How long one call to the daemon may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon's API address: `--addr`, else the one it wrote in its state folder.
pub fn address(reach: &ReachArgs) -> Result<String, String> {
    if let Some(address) = &reach.addr {
        return Ok(address.trim_end_matches('/').to_string());
    }
    std::fs::read_to_string(reach.state_dir.join("listen"))
        .map(|address| format!("http://{}", address.trim()))
        .map_err(|_| {
            format!(
                "no daemon address in {}; is `pier daemon` running? Pass --addr or --state-dir",
                reach.state_dir.display()
            )
        })
}

fn token(variable: &str) -> Option<String> {
    std::env::var(variable).ok().filter(|t| !t.is_empty())
}

async fn answer<T: DeserializeOwned>(
    url: &str,
    sent: reqwest::RequestBuilder,
) -> Result<T, String> {
    let response = sent
        .timeout(CALL_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("cannot reach the daemon at {url}: {e}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("reading {url}: {e}"))?;
    if !status.is_success() {
        let hint = match status.as_u16() {
            401 => " (set PIER_API_TOKEN, or PIER_STATUS_TOKEN to read, as the daemon has it)",
            _ => "",
        };
        return Err(format!("{url} answered {status}: {}{hint}", text.trim()));
    }
    serde_json::from_str(&text)
        .map_err(|e| format!("{url} answered something else than expected: {e}"))
}

/// GET a document (with `PIER_STATUS_TOKEN` when it is set).
pub async fn read<T: DeserializeOwned>(address: &str, path: &str) -> Result<T, String> {
    let url = format!("{address}{path}");
    let mut request = reqwest::Client::new().get(&url);
    if let Some(token) = token("PIER_STATUS_TOKEN") {
        request = request.bearer_auth(token);
    }
    answer(&url, request).await
}

/// POST a control request (with `PIER_API_TOKEN`, which acting needs).
pub async fn act<T: DeserializeOwned>(
    address: &str,
    path: &str,
    body: &impl Serialize,
) -> Result<T, String> {
    let url = format!("{address}{path}");
    let Some(token) = token("PIER_API_TOKEN") else {
        return Err("set PIER_API_TOKEN to the daemon's API token to act on it".into());
    };
    let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let request = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    answer(&url, request).await
}

/// Send `request` to the daemon `control` reaches, with who asks and why
/// filled in from it. A failure is said on stderr and becomes the exit
/// status: 2 when there is no daemon to ask, 1 when it refused or failed.
pub async fn control<T: DeserializeOwned>(
    control: &ControlArgs,
    path: &str,
    mut request: pier::daemon::api::ControlRequest,
) -> Result<T, std::process::ExitCode> {
    let address = address(&control.reach).map_err(|e| {
        eprintln!("error: {e}");
        std::process::ExitCode::from(2)
    })?;
    request.by = actor(control);
    request.reason = control.reason.clone();
    act(&address, path, &request).await.map_err(|e| {
        eprintln!("error: {e}");
        std::process::ExitCode::FAILURE
    })
}

/// Who acts: `--by`, else `$PIER_AUTHOR`, else `$USER`.
pub fn actor(control: &ControlArgs) -> String {
    control
        .by
        .clone()
        .or_else(|| token("PIER_AUTHOR"))
        .or_else(|| token("USER"))
        .unwrap_or_else(|| "pier CLI".into())
}
