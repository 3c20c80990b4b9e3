//! `pier status`: ask a running daemon how the deployment is doing.

use std::process::ExitCode;

use crate::cli::{Output, StatusArgs};

pub async fn status(args: StatusArgs) -> ExitCode {
    let address = match args.addr {
        Some(address) => address,
        None => match std::fs::read_to_string(args.state_dir.join("listen")) {
            Ok(address) => format!("http://{}", address.trim()),
            Err(_) => {
                eprintln!(
                    "error: no daemon address in {}; is `pier daemon` running? Pass --addr or --state-dir",
                    args.state_dir.display()
                );
                return ExitCode::from(2);
            }
        },
    };
    let url = format!("{}/api/v1/status", address.trim_end_matches('/'));
    let mut request = reqwest::Client::new().get(&url);
    if let Some(token) = std::env::var("PIER_STATUS_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(response) if response.status().is_success() => response,
        Ok(response) => {
            eprintln!("error: {url} answered {}", response.status());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: cannot reach the daemon at {url}: {e}");
            return ExitCode::from(2);
        }
    };
    let text = match response.text().await {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: reading {url}: {e}");
            return ExitCode::from(2);
        }
    };
    let status: pier::daemon::status::Status = match serde_json::from_str(&text) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("error: {url} did not answer with a status document: {e}");
            return ExitCode::from(2);
        }
    };
    match args.output {
        Output::Json => println!("{text}"),
        Output::Human => print!("{}", pier::daemon::status::render(&status)),
    }
    let healthy = status.stalled.is_none()
        && status
            .services
            .iter()
            .all(|s| s.condition == pier::daemon::status::Condition::Ready);
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
