//! What a signed-in user may do from the dashboard: scale a service and
//! retag a node (each a commit, as `pier scale` and `pier node tag` make
//! it), ask for a pass, run a pipeline again, hold the stack at a revision
//! and resume it, freeze and unfreeze services (through the same code as
//! the API that `pier rollback --hold`, `pier resume` and `pier freeze`
//! call). Each checks the session and its CSRF token before anything is
//! done.

#[allow(unused_imports)]
use super::*;

/// Why an action is refused before anything is done.
pub(super) enum Refusal {
    Disabled,
    NotSignedIn,
    BadCsrf,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Disabled => (
                StatusCode::NOT_FOUND,
                "actions are disabled: set PIER_API_TOKEN in the daemon's environment\n",
            ),
            Refusal::NotSignedIn => (
                StatusCode::UNAUTHORIZED,
                "sign in with PIER_API_TOKEN to act\n",
            ),
            Refusal::BadCsrf => (
                StatusCode::FORBIDDEN,
                "this form is stale or not from this dashboard; reload the page\n",
            ),
        }
        .into_response()
    }
}

/// The session of a caller who may act, sending a form that carries its
/// CSRF token.
pub(super) fn actor(d: &Dashboard, headers: &HeaderMap, csrf: &str) -> Result<Session, Refusal> {
    if d.shared.secrets.api.is_none() {
        return Err(Refusal::Disabled);
    }
    let Some(session) = d.caller(headers).session.filter(|s| s.can_act) else {
        return Err(Refusal::NotSignedIn);
    };
    if !same(csrf, &session.csrf) {
        warn!("dashboard action refused: missing or wrong CSRF token");
        return Err(Refusal::BadCsrf);
    }
    Ok(session)
}

/// Commit `edit` as `author`, then have the git watcher look at once.
pub(super) async fn commit(
    d: &Dashboard,
    edit: crate::edit::Edit,
    author: String,
) -> Result<String, String> {
    let settings = d.shared.edits.clone();
    let request = crate::edit::commit::Request {
        repo: settings.repo,
        cache_dir: settings.cache_dir,
        branch: Some(settings.branch),
        folder: settings.folder,
        // Under --ha, the term that wrote it, as a trailer.
        message: crate::docker::fence::epoch()
            .map(|epoch| format!("{}\n\nPier-Epoch: {epoch}", edit.message())),
        author: Some(author),
        push: None,
        dry_run: false,
    };
    let message = edit.message();
    let outcome = tokio::task::spawn_blocking(move || {
        crate::edit::commit::run(&request, &edit, &settings.vars)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let commit = outcome.commit.unwrap_or_default();
    info!(commit = %crate::source::git::short_commit(&commit), %message, "dashboard committed");
    d.shared.git_check.notify_one();
    Ok(format!(
        "Committed {}: {message}",
        crate::source::git::short_commit(&commit)
    ))
}

pub(super) fn back_with(path: &str, message: &str) -> Response {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("done", message)
        .finish();
    Redirect::to(&format!("{path}?{query}")).into_response()
}

#[derive(Deserialize)]
pub(super) struct Scale {
    #[serde(default)]
    csrf: String,
    service: String,
    replicas: u32,
}

pub(super) async fn scale(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Form(form): Form<Scale>,
) -> Response {
    let session = match actor(&d, &headers, &form.csrf) {
        Ok(session) => session,
        Err(refused) => return refused.into_response(),
    };
    let edit = crate::edit::Edit::Scale(vec![(form.service, form.replicas)]);
    match commit(&d, edit, session.author).await {
        Ok(done) => back_with("/ui/services", &done),
        Err(error) => d.plain(
            &headers,
            "not scaled",
            StatusCode::CONFLICT,
            pages::outcome("Not scaled", &error, "/ui/services", true),
        ),
    }
}

#[derive(Deserialize)]
pub(super) struct NodeTags {
    #[serde(default)]
    csrf: String,
    node: String,
    tags: String,
}

pub(super) async fn node_tags(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Form(form): Form<NodeTags>,
) -> Response {
    let session = match actor(&d, &headers, &form.csrf) {
        Ok(session) => session,
        Err(refused) => return refused.into_response(),
    };
    let current: Vec<String> = d
        .status()
        .nodes
        .iter()
        .find(|n| n.name == form.node)
        .map(|n| n.tags.clone())
        .unwrap_or_default();
    let wanted: Vec<String> = form
        .tags
        .split([' ', ','])
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    let add: Vec<String> = wanted
        .iter()
        .filter(|t| !current.contains(t))
        .cloned()
        .collect();
    let remove: Vec<String> = current
        .iter()
        .filter(|t| !wanted.contains(t))
        .cloned()
        .collect();
    if add.is_empty() && remove.is_empty() {
        return back_with(
            "/ui/nodes",
            "The tags are unchanged; nothing was committed.",
        );
    }
    let edit = crate::edit::Edit::NodeTag {
        name: form.node,
        add,
        remove,
    };
    match commit(&d, edit, session.author).await {
        Ok(done) => back_with("/ui/nodes", &done),
        Err(error) => d.plain(
            &headers,
            "not tagged",
            StatusCode::CONFLICT,
            pages::outcome("Tags not changed", &error, "/ui/nodes", true),
        ),
    }
}

pub(super) async fn reconcile(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> Response {
    if let Err(refused) = actor(&d, &headers, &form.csrf) {
        return refused.into_response();
    }
    d.shared.triggers.send(Trigger::Api);
    back_with("/ui/", "A pass was asked for.")
}

pub(super) async fn rerun(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<Csrf>,
) -> Response {
    if let Err(refused) = actor(&d, &headers, &form.csrf) {
        return refused.into_response();
    }
    let run = d
        .shared
        .store
        .call(move |store| store.run_row(id))
        .await
        .ok()
        .flatten();
    let Some(run) = run else {
        return (StatusCode::NOT_FOUND, "no such run\n").into_response();
    };
    let status = d.status();
    if !d.may_rerun(&run, &status) {
        return d.plain(
            &headers,
            "not run",
            StatusCode::CONFLICT,
            pages::outcome(
                "Not run again",
                "Only a failed or cancelled run of its branch's tip runs again.",
                &format!("/ui/runs/{id}"),
                true,
            ),
        );
    }
    if run.branch == status.branch {
        let commit = run.commit.clone();
        let _ = d
            .shared
            .store
            .call(move |store| store.forget_pipeline_failure(&commit))
            .await;
        d.shared.triggers.send(Trigger::Api);
    } else {
        d.shared
            .branch_runs
            .send(run.branch.clone(), run.commit.clone());
    }
    back_with(
        "/ui/runs",
        &format!(
            "The pipeline of {} runs again.",
            crate::source::git::short_commit(&run.commit)
        ),
    )
}

/// What a control action's refusal looks like: the page it came from,
/// with why.
fn not_done(
    d: &Dashboard,
    headers: &HeaderMap,
    title: &str,
    error: &dyn std::fmt::Display,
) -> Response {
    d.plain(
        headers,
        title,
        StatusCode::CONFLICT,
        pages::outcome(title, &error.to_string(), "/ui/history", true),
    )
}

/// Who signed in, as the status and notifications name them.
fn who(session: &Session) -> String {
    session.author.clone()
}

#[derive(Deserialize)]
pub(super) struct HoldForm {
    #[serde(default)]
    csrf: String,
    revision: i64,
}

pub(super) async fn hold(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Form(form): Form<HoldForm>,
) -> Response {
    let session = match actor(&d, &headers, &form.csrf) {
        Ok(session) => session,
        Err(refused) => return refused.into_response(),
    };
    match crate::daemon::control::hold(
        &d.shared,
        "",
        Some(form.revision),
        &who(&session),
        "from the dashboard",
    )
    .await
    {
        Ok(hold) => back_with(
            "/ui/history",
            &format!(
                "Held at {}: new commits and digests wait until resumed.",
                crate::source::git::short_commit(&hold.commit)
            ),
        ),
        Err(error) => not_done(&d, &headers, "Not held", &error),
    }
}

pub(super) async fn resume(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> Response {
    let session = match actor(&d, &headers, &form.csrf) {
        Ok(session) => session,
        Err(refused) => return refused.into_response(),
    };
    match crate::daemon::control::resume(&d.shared, &who(&session)).await {
        Ok(_) => back_with(
            "/ui/history",
            "Resumed: the stack follows its branch again.",
        ),
        Err(error) => not_done(&d, &headers, "Not resumed", &error),
    }
}

#[derive(Deserialize)]
pub(super) struct FreezeForm {
    #[serde(default)]
    csrf: String,
    service: String,
    #[serde(default, rename = "for")]
    duration: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn freeze(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Form(form): Form<FreezeForm>,
) -> Response {
    let session = match actor(&d, &headers, &form.csrf) {
        Ok(session) => session,
        Err(refused) => return refused.into_response(),
    };
    let duration = match form.duration.trim() {
        "" => None,
        text => match humantime::parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(e) => {
                return not_done(
                    &d,
                    &headers,
                    "Not frozen",
                    &format!("`{text}` is not a duration (say 30m or 2h): {e}"),
                );
            }
        },
    };
    let services = vec![form.service.clone()];
    match crate::daemon::control::freeze(
        &d.shared,
        &services,
        &who(&session),
        &form.reason,
        duration,
    )
    .await
    {
        Ok(_) => back_with("/ui/history", &format!("Frozen: {}.", form.service)),
        Err(error) => not_done(&d, &headers, "Not frozen", &error),
    }
}

#[derive(Deserialize)]
pub(super) struct UnfreezeForm {
    #[serde(default)]
    csrf: String,
    service: String,
}

pub(super) async fn unfreeze(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Form(form): Form<UnfreezeForm>,
) -> Response {
    let session = match actor(&d, &headers, &form.csrf) {
        Ok(session) => session,
        Err(refused) => return refused.into_response(),
    };
    let services = vec![form.service.clone()];
    match crate::daemon::control::unfreeze(&d.shared, &services, &who(&session)).await {
        Ok(_) => back_with("/ui/history", &format!("Unfrozen: {}.", form.service)),
        Err(error) => not_done(&d, &headers, "Not unfrozen", &error),
    }
}
