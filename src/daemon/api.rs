//! The daemon's HTTP side (axum): health, metrics, the status document, an
//! authenticated reconcile call, and webhooks from GitHub, GitLab and
//! Distribution registries.
//!
//! A webhook only says *that* something changed: a valid call wakes the git
//! or registry watcher, which reads the truth itself. Secrets come from the
//! environment; a hook whose secret is unset is disabled (404); a bad
//! signature or token gets 401 and triggers nothing; bodies over 1 MiB are
//! refused (413).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::Sha256;
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use super::auth::{bearer, equal_secrets};
use super::shared::{Shared, Trigger};

/// Largest webhook or API body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The API listener's routes; the webhooks too unless they have a
/// listener of their own (`--hooks-listen`).
pub fn router(shared: Arc<Shared>, with_hooks: bool, public_https: bool) -> Router {
    let api = Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/reconcile", post(reconcile))
        .route("/api/v1/history", get(history))
        .route("/api/v1/hold", post(hold))
        .route("/api/v1/resume", post(resume))
        .route("/api/v1/freeze", post(freeze))
        .route("/api/v1/unfreeze", post(unfreeze))
        .route("/api/v1/restart", post(restart));
    let api = if with_hooks { api.merge(hooks()) } else { api };
    let throttle = Arc::new(super::throttle::Throttle::default());
    finish(api, shared.clone())
        .merge(super::dashboard::router(shared.clone(), public_https))
        .layer(axum::middleware::from_fn_with_state(
            shared,
            refuse_on_standby,
        ))
        .layer(axum::middleware::from_fn_with_state(
            throttle,
            super::throttle::guard,
        ))
}

/// A standby (`--ha`) serves reads only: a change asked of it (a scale, a
/// hold, a freeze, a rerun...) is refused with who leads and where, so
/// it is made once, by the leader. Webhooks and signing in stay open.
async fn refuse_on_standby(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let changes = request.method() == axum::http::Method::POST
        && !path.starts_with("/hooks/")
        && !matches!(path, "/ui/login" | "/ui/logout");
    match shared.standing_by().filter(|_| changes) {
        // Who leads is status, which a status token keeps to its holders.
        Some(_) if shared.secrets.status.is_some() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "this daemon stands by (--ha); make changes on the leader\n",
        )
            .into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
        None => next.run(request).await,
    }
}

/// The webhook listener's routes (`--hooks-listen`): the hooks and
/// `/healthz`, nothing that reads or changes the deployment.
pub fn hooks_router(shared: Arc<Shared>) -> Router {
    finish(hooks(), shared)
}

fn hooks() -> Router<Arc<Shared>> {
    Router::new()
        .route("/hooks/github", post(github))
        .route("/hooks/gitlab", post(gitlab))
        .route("/hooks/registry", post(registry))
}

fn finish(routes: Router<Arc<Shared>>, shared: Arc<Shared>) -> Router {
    routes
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .with_state(shared)
}

/// A body announced larger than the limit is refused before a byte of it
/// is read; one that is not announced is cut off at the limit as it streams.
async fn refuse_large_bodies(request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("bodies are limited to {MAX_BODY_BYTES} bytes\n"),
        )
            .into_response();
    }
    next.run(request).await
}

/// Whether a read-only endpoint may answer: always, unless
/// `PIER_STATUS_TOKEN` is set and the request does not carry it.
fn may_read(shared: &Shared, headers: &HeaderMap) -> bool {
    match shared.secrets.status.as_deref() {
        None => true,
        Some(token) => bearer(headers).is_some_and(|given| equal_secrets(given, token)),
    }
}

/// What one HTTP listener allows a client.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// From accepting a connection to the end of its one response: reading
    /// the headers and the body, and answering. A client that sends slowly
    /// is cut off here.
    pub request_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it is
    /// accepted, so a flood cannot queue up work or memory.
    pub max_connections: usize,
}

impl HttpLimits {
    /// Connections one address may hold open at once: half of all, so one
    /// client (a flood, or a slow reader) always leaves room for others,
    /// while a reverse proxy in front, one address for everyone, still
    /// gets most of them. Never fewer than two: a client's next request
    /// may arrive while the server is still closing its last connection,
    /// and one slot would turn that away.
    pub fn per_address(&self) -> usize {
        self.max_connections
            .div_ceil(2)
            .max(2)
            .min(self.max_connections)
    }
}

/// The connections each address holds open.
#[derive(Default)]
struct OpenByAddress(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection counted against its address until dropped.
struct AddressPermit {
    table: Arc<OpenByAddress>,
    address: std::net::IpAddr,
}

impl OpenByAddress {
    fn try_take(
        self: &Arc<Self>,
        address: std::net::IpAddr,
        limit: usize,
    ) -> Option<AddressPermit> {
        let mut open = self.0.lock().expect("connection table lock");
        let count = open.entry(address).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(AddressPermit {
            table: self.clone(),
            address,
        })
    }
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().expect("connection table lock");
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Serve `router` on `listener` until `shutdown` is notified: one request
/// per connection, each connection bounded by `limits`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: Arc<Notify>,
) {
    let stop = shutdown.notified();
    tokio::pin!(stop);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let by_address = Arc::new(OpenByAddress::default());
    let mut connections = tokio::task::JoinSet::new();
    // A flood must not flood the log too: one warning a minute at most.
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        let stream = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: back off, never spin.
                    warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Some(address_permit) = by_address.try_take(stream.1.ip(), limits.per_address()) else {
            if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                last_warning = Some(tokio::time::Instant::now());
                warn!(
                    address = %stream.1.ip(),
                    limit = limits.per_address(),
                    "too many HTTP connections from one address; closing its new ones (warned once a minute)"
                );
            }
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                last_warning = Some(tokio::time::Instant::now());
                warn!(
                    limit = limits.max_connections,
                    "too many HTTP connections; closing new ones (warned once a minute)"
                );
            }
            continue;
        };
        connections.spawn(serve_connection(
            stream,
            router.clone(),
            limits,
            (permit, address_permit),
        ));
    }
    connections.shutdown().await;
}

async fn serve_connection(
    (stream, peer): (tokio::net::TcpStream, std::net::SocketAddr),
    router: Router,
    limits: HttpLimits,
    _permits: (OwnedSemaphorePermit, AddressPermit),
) {
    use tower_service::Service as _;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut router = router.clone();
        let mut request = request.map(Body::new);
        // Who is asking, for the throttle on wrong tokens.
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        async move { router.call(request).await }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    // Dropping the connection at the deadline closes the socket.
    let _ = tokio::time::timeout(limits.request_timeout, connection).await;
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::Relaxed) {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the first pass has not finished\n",
        )
            .into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !may_read(&shared, &headers) {
        return unauthorized("metrics");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

async fn status(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !may_read(&shared, &headers) {
        return unauthorized("status");
    }
    axum::Json(shared.status_document()).into_response()
}

fn disabled(variable: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!("disabled: set {variable} in the daemon's environment to enable it\n"),
    )
        .into_response()
}

fn unauthorized(what: &str) -> Response {
    warn!(hook = what, "request refused: bad signature or token");
    (StatusCode::UNAUTHORIZED, "bad signature or token\n").into_response()
}

fn accepted(what: &str) -> Response {
    info!(source = what, "webhook accepted");
    (StatusCode::ACCEPTED, "accepted\n").into_response()
}

async fn reconcile(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(token) = shared.secrets.api.as_deref() else {
        return disabled("PIER_API_TOKEN");
    };
    if !bearer(&headers).is_some_and(|given| equal_secrets(given, token)) {
        return unauthorized("api");
    }
    shared.triggers.send(Trigger::Api);
    accepted("api")
}

/// The history document: revisions newest first, and the hold and
/// freezes in force.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HistoryDocument {
    pub revisions: Vec<super::store::Revision>,
    #[serde(default)]
    pub hold: Option<super::store::Hold>,
    #[serde(default)]
    pub freezes: Vec<super::store::Freeze>,
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<HistoryQuery>,
) -> Response {
    if !may_read(&shared, &headers) {
        return unauthorized("history");
    }
    let limit = query.limit.unwrap_or(50).min(1000);
    let read = shared
        .store
        .call(move |store| -> rusqlite::Result<HistoryDocument> {
            Ok(HistoryDocument {
                revisions: store.history(limit)?,
                hold: store.hold()?,
                freezes: store.freezes()?,
            })
        })
        .await;
    match read {
        Ok(document) => axum::Json(document).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the history: {e}\n"),
        )
            .into_response(),
    }
}

/// A control request: who asks (shown in the status and notifications)
/// and what for.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ControlRequest {
    /// `hold`: the revision to hold at (a commit id or a 7+ digit prefix).
    #[serde(default)]
    pub commit: String,
    /// `hold`: the history entry to hold at (its digests, exactly).
    #[serde(default)]
    pub revision: Option<i64>,
    /// `freeze` and `unfreeze`: services, or `*` for every service.
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub reason: String,
    /// `freeze`: how long, in seconds; absent: until unfrozen.
    #[serde(default)]
    pub for_seconds: Option<u64>,
}

/// The request body of a control call from a caller holding the API
/// token, or the response that refuses it.
fn control_request(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ControlRequest, Box<Response>> {
    let Some(token) = shared.secrets.api.as_deref() else {
        return Err(Box::new(disabled("PIER_API_TOKEN")));
    };
    if !bearer(headers).is_some_and(|given| equal_secrets(given, token)) {
        return Err(Box::new(unauthorized("api")));
    }
    let mut request: ControlRequest = serde_json::from_slice(body).map_err(|e| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                format!("the body is not a control request: {e}\n"),
            )
                .into_response(),
        )
    })?;
    if request.by.trim().is_empty() {
        request.by = "the API".into();
    }
    Ok(request)
}

fn control_answer<T: serde::Serialize>(
    outcome: Result<T, super::control::ControlError>,
) -> Response {
    match outcome {
        Ok(value) => axum::Json(value).into_response(),
        Err(e) => {
            let code = if e.is_request() {
                StatusCode::CONFLICT
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, format!("{e}\n")).into_response()
        }
    }
}

async fn hold(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = match control_request(&shared, &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    control_answer(
        super::control::hold(
            &shared,
            &request.commit,
            request.revision,
            &request.by,
            &request.reason,
        )
        .await,
    )
}

async fn resume(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = match control_request(&shared, &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    control_answer(super::control::resume(&shared, &request.by).await)
}

async fn freeze(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = match control_request(&shared, &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    control_answer(
        super::control::freeze(
            &shared,
            &request.services,
            &request.by,
            &request.reason,
            request.for_seconds.map(Duration::from_secs),
        )
        .await,
    )
}

async fn unfreeze(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = match control_request(&shared, &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    control_answer(super::control::unfreeze(&shared, &request.services, &request.by).await)
}

async fn restart(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = match control_request(&shared, &headers, &body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    control_answer(super::control::restart(
        &shared,
        &request.services,
        &request.by,
    ))
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
pub fn github_signature_valid(secret: &str, body: &[u8], signature: &[u8]) -> bool {
    let Some(hex_digest) = signature.strip_prefix(b"sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

async fn github(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = shared.secrets.github.as_deref() else {
        return disabled("PIER_GITHUB_SECRET");
    };
    let signature = headers
        .get("x-hub-signature-256")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !github_signature_valid(secret, &body, signature) {
        return unauthorized("github");
    }
    if headers.get("x-github-event").is_some_and(|e| e == "ping") {
        return (StatusCode::OK, "pong\n").into_response();
    }
    // The git watcher checks the branch now and runs the pass after it.
    shared.git_check.notify_one();
    accepted("github")
}

async fn gitlab(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(token) = shared.secrets.gitlab.as_deref() else {
        return disabled("PIER_GITLAB_TOKEN");
    };
    let given = headers
        .get("x-gitlab-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !equal_secrets(given, token) {
        return unauthorized("gitlab");
    }
    // The git watcher checks the branch now and runs the pass after it.
    shared.git_check.notify_one();
    accepted("gitlab")
}

/// A Distribution notification envelope, as far as pier reads it.
#[derive(serde::Deserialize)]
struct Envelope {
    events: Vec<RegistryEvent>,
}

#[derive(serde::Deserialize)]
struct RegistryEvent {
    #[serde(default)]
    action: String,
}

async fn registry(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let Some(token) = shared.secrets.registry_hook.as_deref() else {
        return disabled("PIER_REGISTRY_HOOK_TOKEN");
    };
    // The token is checked before the body is read at all.
    if !bearer(&headers).is_some_and(|given| equal_secrets(given, token)) {
        return unauthorized("registry");
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response();
    };
    let Ok(envelope) = serde_json::from_slice::<Envelope>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "expected a Distribution notification envelope: {\"events\": [...]}\n",
        )
            .into_response();
    };
    if envelope.events.iter().any(|e| e.action == "push") {
        shared.registry_check.notify_one();
    }
    accepted("registry")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signatures_are_checked_against_the_body() {
        // The example from GitHub's documentation on validating webhook deliveries.
        let secret = "It's a Secret to Everybody";
        let body = b"Hello, World!";
        let good = b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(github_signature_valid(secret, body, good));
        assert!(!github_signature_valid(secret, b"Hello, World?", good));
        assert!(!github_signature_valid("another secret", body, good));
        assert!(!github_signature_valid(secret, body, b"sha1=757107ea"));
        assert!(!github_signature_valid(secret, body, b"sha256=zz"));
    }

    /// A connection from `from` (a loopback address) to `to`.
    async fn connect_from(from: [u8; 4], to: std::net::SocketAddr) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
        socket.connect(to).await.unwrap()
    }

    /// Whether the server answers a request on `stream`, or closed it.
    async fn answered(mut stream: tokio::net::TcpStream) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer.starts_with(b"HTTP/1.1 200")
    }

    /// One address holds at most its share of the connections: the next
    /// one from it is closed, while another address is still served.
    #[tokio::test]
    async fn one_address_cannot_take_every_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = HttpLimits {
            request_timeout: Duration::from_secs(30),
            max_connections: 4,
        };
        assert_eq!(limits.per_address(), 2);
        let router = Router::new().route("/healthz", get(|| async { "ok\n" }));
        let shutdown = Arc::new(Notify::new());
        let server = tokio::spawn(serve(listener, router, limits, shutdown.clone()));
        // Two idle connections from one address: its whole share.
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(connect_from([127, 0, 0, 1], address).await);
        }
        // The server counts a connection once it accepted it: a third from
        // the same address is closed once the first two are counted, which
        // this waits for by trying until one is turned away.
        let mut refused = false;
        for _ in 0..100 {
            if !answered(connect_from([127, 0, 0, 1], address).await).await {
                refused = true;
                break;
            }
        }
        assert!(refused, "a third connection from one address was served");
        assert!(
            answered(connect_from([127, 0, 0, 2], address).await).await,
            "another address is served meanwhile"
        );
        drop(held);
        shutdown.notify_waiters();
        server.await.unwrap();
    }
}
