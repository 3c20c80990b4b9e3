//! A service's output on the dashboard: the end of every replica's log,
//! merged and marked like `pier logs`, then kept live over server-sent
//! events. Each line is masked (the daemon's own secrets, what SOPS files
//! gave, secrets' contents, and the values of the service's variables
//! whose names look secret) and sent as text: the
//! page adds it as text, never as markup.

#[allow(unused_imports)]
use super::*;
use crate::ops::logs::{Event as LogEvent, Line};
use crate::ops::{Reach, Selection};

/// Lines of each replica shown when the page opens.
const TAIL: usize = 200;

/// What the log of `service` must never show.
fn secrets_of(d: &Dashboard, reach: &Reach, service: &str) -> Vec<String> {
    let own = &d.shared.secrets;
    let mut secrets: Vec<String> = [
        &own.api,
        &own.status,
        &own.github,
        &own.gitlab,
        &own.registry_hook,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    // What SOPS files gave and secrets' contents, whichever service uses them.
    secrets.extend(reach.manifest().secret_values.0.iter().cloned());
    if let Some(service) = reach.manifest().services.get(service) {
        secrets.extend(
            service
                .environment
                .iter()
                .filter(|(name, _)| crate::plan::spec::looks_secret(name))
                .filter_map(|(_, value)| value.clone()),
        );
    }
    secrets.retain(|s| s.len() >= 4);
    secrets
}

fn shown(line: &Line, secrets: &[String]) -> String {
    crate::pipeline::mask(&format!("{} | {}", line.replica, line.text), secrets)
}

/// The manifests at the branch tip and their nodes, connected.
async fn reach(d: &Dashboard, service: &str) -> Result<Reach, String> {
    let reach = Reach::connect(&d.shared.edits.diff)
        .await
        .map_err(|e| e.to_string())?;
    reach
        .check_services(&[service.to_string()])
        .map_err(|e| e.to_string())?;
    Ok(reach)
}

pub(super) async fn page(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Response {
    if !d.caller(&headers).may_read {
        return Redirect::to("/ui/login").into_response();
    }
    let reach = match reach(&d, &service).await {
        Ok(reach) => reach,
        Err(e) => {
            return d.plain(
                &headers,
                "logs",
                StatusCode::NOT_FOUND,
                pages::unreadable(&e),
            );
        }
    };
    let selection = Selection {
        services: vec![service.clone()],
        ..Default::default()
    };
    let (replicas, unreachable) = reach.replicas(&selection).await;
    let (lines, _) = crate::ops::logs::backlog(&reach, &replicas, 0, Some(TAIL)).await;
    let secrets = secrets_of(&d, &reach, &service);
    let text: String = lines.iter().map(|l| shown(l, &secrets) + "\n").collect();
    let missing: Vec<String> = unreachable.keys().cloned().collect();
    d.plain(
        &headers,
        &format!("{service} logs"),
        StatusCode::OK,
        pages::service_logs(&service, &text, &missing),
    )
}

pub(super) async fn stream(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Response {
    if !d.caller(&headers).may_read {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let reach = match reach(&d, &service).await {
        Ok(reach) => reach,
        Err(_) => return StatusCode::NOT_FOUND.into_response(),
    };
    let secrets = secrets_of(&d, &reach, &service);
    let selection = Selection {
        services: vec![service.clone()],
        ..Default::default()
    };
    // From now on: the page holds what came before.
    let (replicas, _) = reach.replicas(&selection).await;
    let now = SystemTime::now();
    let seen = replicas.iter().map(|r| (r.id.clone(), now)).collect();
    let (events, received) = tokio::sync::mpsc::channel(256);
    tokio::spawn(crate::ops::logs::follow(
        Arc::new(reach),
        selection,
        seen,
        events,
    ));
    let deadline = tokio::time::Instant::now() + d.shared.edits.stream_for;
    let lines = stream::unfold(
        (received, secrets),
        move |(mut received, secrets)| async move {
            let event = tokio::time::timeout_at(deadline, received.recv())
                .await
                .ok()??;
            let sent = match event {
                LogEvent::Line(line) => Event::default().event("line").data(shown(&line, &secrets)),
                LogEvent::Note(note) => Event::default().event("note").data(note),
            };
            Some((Ok::<_, std::convert::Infallible>(sent), (received, secrets)))
        },
    );
    Sse::new(lines)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
        .into_response()
}
