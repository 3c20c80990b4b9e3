//! The web dashboard, served by the daemon on its API listener under
//! `/ui/`: overview, services, nodes, pipeline runs and history, each kept
//! live by a server-sent event stream that sends the page's fragment again
//! whenever the daemon reports a change.
//!
//! This module owns the dashboard's routes, its sessions and its actions.
//! Actions never change the nodes behind git's back: scaling a service and
//! editing a node's tags make the same commit `pier scale` and `pier node
//! tag` make, authored by whoever signed in, and the daemon deploys it like
//! any commit. "Reconcile now" and "Run again" are the other actions.
//!
//! Reading follows the status setting: open unless `PIER_STATUS_TOKEN` is
//! set. Acting needs a session opened with `PIER_API_TOKEN`; the session
//! lives in an HttpOnly, SameSite=Strict cookie, and every form carries the
//! session's CSRF token, checked before anything is done.

pub mod pages;

use crate::pipeline::RunStatus;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tracing::{info, warn};

use super::shared::{Shared, Trigger};
use pages::{Page, Viewer};

mod actions;
mod logs;
mod session;

use actions::*;
use session::*;

/// How long a session lasts after sign-in.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; the oldest goes first.
const MAX_SESSIONS: usize = 1024;
/// The end of each stage's log shown on a run's page; the whole log is a
/// link away.
const LOG_TAIL_BYTES: usize = 64 << 10;
/// Shortest time between two updates of one live page: a chatty log is
/// sent in batches, not line by line.
const LIVE_BATCH: Duration = Duration::from_millis(200);
const COOKIE: &str = "pier_session";

/// A signed-in browser.
#[derive(Clone)]
struct Session {
    csrf: String,
    /// Signed in with `PIER_API_TOKEN`.
    can_act: bool,
    /// `Name <mail>`, the author of its commits.
    author: String,
    expires: Instant,
}

/// The dashboard's state beside the daemon's.
pub struct Dashboard {
    shared: Arc<Shared>,
    /// Users reach the daemon over HTTPS (`--public-url https://…`): the
    /// session cookie is `Secure`.
    public_https: bool,
    sessions: Mutex<HashMap<String, Session>>,
    /// Held while a diff is computed: it asks every node and the registry,
    /// so readers get one at a time, never a flood of them.
    diffing: tokio::sync::Mutex<()>,
}

/// The dashboard's routes, to merge into the API listener's.
pub fn router(shared: Arc<Shared>, public_https: bool) -> Router {
    let dashboard = Arc::new(Dashboard {
        shared,
        public_https,
        sessions: Mutex::new(HashMap::new()),
        diffing: tokio::sync::Mutex::new(()),
    });
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(overview))
        .route("/ui/services", get(services))
        .route("/ui/services/{name}/logs", get(logs::page))
        .route("/ui/services/{name}/logs/stream", get(logs::stream))
        .route("/ui/nodes", get(nodes))
        .route("/ui/runs", get(runs))
        .route("/ui/runs/{id}", get(run))
        .route("/ui/runs/{id}/log/{stage}", get(stage_log))
        .route("/ui/history", get(history))
        .route("/ui/diff", get(diff))
        .route("/ui/live/{page}", get(live))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/scale", post(scale))
        .route("/ui/nodes/tags", post(node_tags))
        .route("/ui/reconcile", post(reconcile))
        .route("/ui/runs/{id}/rerun", post(rerun))
        .route("/ui/hold", post(hold))
        .route("/ui/resume", post(resume))
        .route("/ui/freeze", post(freeze))
        .route("/ui/unfreeze", post(unfreeze))
        .route("/ui/assets/style.css", get(style))
        .route("/ui/assets/app.js", get(script))
        // Forms are a few fields; nothing bigger is ever read.
        .layer(DefaultBodyLimit::max(16 << 10))
        .with_state(dashboard)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Who is asking, and may they read.
struct Caller {
    session: Option<Session>,
    may_read: bool,
}

impl Dashboard {
    /// ` Secure` when the browser reached the daemon over HTTPS: the
    /// operator says users do (`--public-url https://…`), or the proxy in
    /// front says this request did (`X-Forwarded-Proto: https`; a client
    /// claiming it only makes its own cookie stricter).
    fn secure_attribute(&self, headers: &HeaderMap) -> &'static str {
        let forwarded_https = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
        if self.public_https || forwarded_https {
            " Secure;"
        } else {
            ""
        }
    }

    fn caller(&self, headers: &HeaderMap) -> Caller {
        let session = cookie(headers).and_then(|id| {
            let mut sessions = self.sessions.lock().expect("sessions lock");
            match sessions.get(id) {
                Some(s) if s.expires > Instant::now() => Some(s.clone()),
                Some(_) => {
                    sessions.remove(id);
                    None
                }
                None => None,
            }
        });
        let secrets = &self.shared.secrets;
        let by_bearer = super::auth::bearer(headers).is_some_and(|given| {
            [&secrets.status, &secrets.api]
                .into_iter()
                .flatten()
                .any(|token| super::auth::equal_secrets(given, token))
        });
        let may_read = secrets.status.is_none() || session.is_some() || by_bearer;
        Caller { session, may_read }
    }

    fn viewer(&self, caller: &Caller) -> Viewer {
        let secrets = &self.shared.secrets;
        let session = caller.session.as_ref();
        Viewer {
            csrf: session.map(|s| s.csrf.clone()),
            may_act: session.is_some_and(|s| s.can_act),
            author: session.filter(|s| s.can_act).map(|s| s.author.clone()),
            can_sign_in: caller.session.is_none()
                && (secrets.api.is_some() || secrets.status.is_some()),
            actions_enabled: secrets.api.is_some(),
        }
    }

    fn status(&self) -> super::status::Status {
        self.shared.status_document()
    }

    /// The fragment of `page`, as the live stream sends it.
    async fn fragment(
        &self,
        status: &super::status::Status,
        page: Page,
        viewer: &Viewer,
        message: Option<&str>,
    ) -> Option<maud::Markup> {
        Some(match page {
            Page::Overview => pages::overview(status, now(), message, viewer),
            Page::Services => pages::services(status, message, viewer),
            Page::Nodes => pages::nodes(status, message, viewer),
            Page::Runs => {
                let runs = self.shared.store.call(|store| store.recent_runs(100)).await;
                match runs {
                    Ok(runs) => pages::runs(&runs, now()),
                    Err(e) => pages::unreadable(&e),
                }
            }
            Page::Run(id) => {
                let found = self
                    .shared
                    .store
                    .call(move |store| {
                        let run = store.run_row(id)?;
                        let mut stages = Vec::new();
                        for stage in store.stage_rows(id)? {
                            let tail = store.stage_log_tail(id, &stage.name, LOG_TAIL_BYTES)?;
                            let log = if tail.is_empty() {
                                stage.log.clone()
                            } else {
                                tail
                            };
                            stages.push((stage, log));
                        }
                        Ok::<_, rusqlite::Error>((run, stages))
                    })
                    .await;
                let (run, stages) = match found {
                    Ok(found) => found,
                    Err(e) => return Some(pages::unreadable(&e)),
                };
                let run = run?;
                let rerun = self.may_rerun(&run, status);
                pages::run(&run, &stages, viewer, rerun)
            }
            Page::History => {
                let history = self
                    .shared
                    .store
                    .call(|store| {
                        let deployments = store.history(50)?;
                        let revisions = store.recent_revisions(50)?;
                        let mut passes = Vec::new();
                        for pass in store
                            .recent_passes(200)?
                            .into_iter()
                            .filter(|p| p.steps > 0)
                            .take(30)
                        {
                            let steps = store.pass_steps(pass.id)?;
                            passes.push((pass, steps));
                        }
                        Ok::<_, rusqlite::Error>((deployments, revisions, passes))
                    })
                    .await;
                match history {
                    Ok((deployments, revisions, passes)) => pages::history(
                        &deployments,
                        &revisions,
                        &passes,
                        status,
                        viewer,
                        message,
                        now(),
                    ),
                    Err(e) => pages::unreadable(&e),
                }
            }
        })
    }

    /// A run may be run again when it failed or was cancelled and its
    /// commit is still its branch's tip.
    fn may_rerun(&self, run: &super::store::RunRow, status: &super::status::Status) -> bool {
        if matches!(run.state, RunStatus::Passed | RunStatus::Running) {
            return false;
        }
        if run.branch == status.branch {
            return status.head.as_deref() == Some(run.commit.as_str());
        }
        self.shared.branch_tips.borrow().get(&run.branch) == Some(&run.commit)
    }

    async fn page(&self, headers: &HeaderMap, page: Page, message: Option<&str>) -> Response {
        let caller = self.caller(headers);
        if !caller.may_read {
            return Redirect::to("/ui/login").into_response();
        }
        let viewer = self.viewer(&caller);
        let status = self.status();
        match self.fragment(&status, page, &viewer, message).await {
            Some(fragment) => html(pages::page(&status, &viewer, page, fragment)),
            None => (StatusCode::NOT_FOUND, "no such page\n").into_response(),
        }
    }

    fn plain(
        &self,
        headers: &HeaderMap,
        title: &str,
        status: StatusCode,
        body: maud::Markup,
    ) -> Response {
        let viewer = self.viewer(&self.caller(headers));
        (
            status,
            html(pages::plain(title, &self.status(), &viewer, body)),
        )
            .into_response()
    }
}

fn html(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Pages are never framed by another site, nor run scripts but ours.
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    done: Option<String>,
}

async fn overview(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(q): Query<Message>,
) -> Response {
    d.page(&headers, Page::Overview, q.done.as_deref()).await
}

async fn services(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(q): Query<Message>,
) -> Response {
    d.page(&headers, Page::Services, q.done.as_deref()).await
}

async fn nodes(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(q): Query<Message>,
) -> Response {
    d.page(&headers, Page::Nodes, q.done.as_deref()).await
}

async fn runs(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    d.page(&headers, Page::Runs, None).await
}

async fn run(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<Message>,
) -> Response {
    d.page(&headers, Page::Run(id), q.done.as_deref()).await
}

async fn history(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(q): Query<Message>,
) -> Response {
    d.page(&headers, Page::History, q.done.as_deref()).await
}

async fn stage_log(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path((id, stage)): Path<(i64, String)>,
) -> Response {
    if !d.caller(&headers).may_read {
        return Redirect::to("/ui/login").into_response();
    }
    let log = d
        .shared
        .store
        .call(move |store| store.stage(id, &stage))
        .await
        .map(|stage| stage.map(|s| s.log));
    match log {
        // A log is whatever a container printed: never sniffed into HTML,
        // never allowed to run or load anything, even opened on its own.
        Ok(Some(log)) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; sandbox; frame-ancestors 'none'",
                ),
                (header::CACHE_CONTROL, "no-store"),
            ],
            log,
        )
            .into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such stage\n").into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the daemon's state store: {e}\n"),
        )
            .into_response(),
    }
}

/// `pier diff` at the branch tip, computed now.
async fn diff(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if !d.caller(&headers).may_read {
        return Redirect::to("/ui/login").into_response();
    }
    let Ok(_one_at_a_time) = d.diffing.try_lock() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "2")],
            "a diff is being computed; try again in a moment\n",
        )
            .into_response();
    };
    let settings = d.shared.edits.diff.clone();
    let text = match crate::pass::prepare(&settings, &d.shared.edits.vars).await {
        Ok(prepared) => crate::plan::render::human(
            &prepared.plan,
            &prepared.desired,
            crate::plan::render::Style { color: false },
        ),
        Err(e) => format!("cannot compute the plan: {e}"),
    };
    d.plain(&headers, "diff", StatusCode::OK, pages::diff(&text))
}

/// The live stream of a page: its fragment now, then again each time it
/// changes, until the connection's time is nearly up; the browser then
/// opens the stream again (after `retry`).
async fn live(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let caller = d.caller(&headers);
    if !caller.may_read {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(page) = Page::parse(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let viewer = d.viewer(&caller);
    let deadline = tokio::time::Instant::now() + d.shared.edits.stream_for;
    let changes = d.shared.changes.subscribe();
    Sse::new(updates(d, page, viewer, changes, deadline))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
        .into_response()
}

struct LiveState {
    dashboard: Arc<Dashboard>,
    page: Page,
    viewer: Viewer,
    changes: tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
    last: Option<String>,
}

fn updates(
    dashboard: Arc<Dashboard>,
    page: Page,
    viewer: Viewer,
    changes: tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    let state = LiveState {
        dashboard,
        page,
        viewer,
        changes,
        deadline,
        last: None,
    };
    stream::unfold(state, |mut state| async move {
        loop {
            if state.last.is_some() {
                tokio::time::sleep_until(
                    state.deadline.min(tokio::time::Instant::now() + LIVE_BATCH),
                )
                .await;
                let changed =
                    tokio::time::timeout_at(state.deadline, state.changes.changed()).await;
                if !matches!(changed, Ok(Ok(()))) {
                    return None;
                }
            }
            state.changes.borrow_and_update();
            let fragment = state
                .dashboard
                .fragment(&state.dashboard.status(), state.page, &state.viewer, None)
                .await?
                .into_string();
            if state.last.as_ref() != Some(&fragment) {
                let event = Event::default()
                    .event("page")
                    .retry(Duration::from_millis(500))
                    .data(&fragment);
                state.last = Some(fragment);
                return Some((Ok(event), state));
            }
        }
    })
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("style.css"))
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("app.js"))
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}
