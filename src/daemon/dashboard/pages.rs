//! The dashboard's HTML: one function per page, each from plain data, so
//! rendering never waits on a lock or the store. maud escapes every value
//! it is given, so a branch name, a reason or a log line can never become
//! markup.
//!
//! A page is its layout around a *fragment*: the part the live stream
//! replaces when something changes.

use maud::{DOCTYPE, Markup, PreEscaped, html};

mod history;
pub use history::history;

use crate::daemon::status::{Condition, NodeStatus, PipelineStatus, ServiceStatus, Status, short};
use crate::daemon::store::{PassRecord, Revision, RevisionRow, RunRow, StageRow, StepRow, Verdict};

/// What the viewer may do, and the token that proves a form is theirs.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// Signed in: the CSRF token of the session.
    pub csrf: Option<String>,
    /// Signed in with `PIER_API_TOKEN`.
    pub may_act: bool,
    /// Who commits, as given at sign-in.
    pub author: Option<String>,
    /// A sign-in form exists (a token is set).
    pub can_sign_in: bool,
    /// Actions are possible at all (`PIER_API_TOKEN` is set).
    pub actions_enabled: bool,
}

impl Viewer {
    fn can_act(&self) -> bool {
        self.may_act && self.csrf.is_some()
    }

    /// The CSRF token of a session that may act.
    fn acting_csrf(&self) -> Option<&str> {
        self.csrf.as_deref().filter(|_| self.may_act)
    }
}

/// The pages, as named in the navigation and the live stream's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Overview,
    Services,
    Nodes,
    Runs,
    Run(i64),
    History,
}

impl Page {
    pub fn parse(name: &str) -> Option<Page> {
        Some(match name {
            "overview" => Page::Overview,
            "services" => Page::Services,
            "nodes" => Page::Nodes,
            "runs" => Page::Runs,
            "history" => Page::History,
            other => Page::Run(other.strip_prefix("run-")?.parse().ok()?),
        })
    }

    fn live_name(self) -> String {
        match self {
            Page::Overview => "overview".into(),
            Page::Services => "services".into(),
            Page::Nodes => "nodes".into(),
            Page::Runs => "runs".into(),
            Page::Run(id) => format!("run-{id}"),
            Page::History => "history".into(),
        }
    }

    fn title(self) -> String {
        match self {
            Page::Overview => "Overview".into(),
            Page::Services => "Services".into(),
            Page::Nodes => "Nodes".into(),
            Page::Runs => "Pipeline runs".into(),
            Page::Run(id) => format!("Run {id}"),
            Page::History => "History".into(),
        }
    }

    fn nav(self) -> Page {
        match self {
            Page::Run(_) => Page::Runs,
            other => other,
        }
    }
}

const NAV: [(Page, &str, &str); 5] = [
    (Page::Overview, "/ui/", "Overview"),
    (Page::Services, "/ui/services", "Services"),
    (Page::Nodes, "/ui/nodes", "Nodes"),
    (Page::Runs, "/ui/runs", "Runs"),
    (Page::History, "/ui/history", "History"),
];

/// A whole page: header, navigation, and `fragment` in the live region.
pub fn page(status: &Status, viewer: &Viewer, page: Page, fragment: Markup) -> String {
    layout(
        &format!("{} · {}", page.title(), status.stack),
        status,
        viewer,
        Some(page),
        html! {
            main #live data-live=(format!("/ui/live/{}", page.live_name())) { (fragment) }
        },
    )
}

/// A page without a live region (sign-in, an action's result, the diff).
pub fn plain(title: &str, status: &Status, viewer: &Viewer, body: Markup) -> String {
    layout(title, status, viewer, None, html! { main { (body) } })
}

fn layout(
    title: &str,
    status: &Status,
    viewer: &Viewer,
    current: Option<Page>,
    main: Markup,
) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { "pier · " (title) }
                link rel="stylesheet" href="/ui/assets/style.css";
                script type="module" src="/ui/assets/app.js" {}
            }
            body {
                header.top {
                    a.brand href="/ui/" { "pier" }
                    span.stack { (status.stack) " " span.muted { "on " (status.branch) } }
                    nav {
                        @for (page, href, label) in NAV {
                            a href=(href) aria-current=[(current.map(Page::nav) == Some(page)).then_some("page")] { (label) }
                        }
                    }
                    span.session {
                        span #live-state.muted {}
                        @if let Some(author) = &viewer.author { span.muted { (author) } }
                        @if let Some(csrf) = &viewer.csrf {
                            form method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        } @else if viewer.can_sign_in {
                            a href="/ui/login" { "Sign in" }
                        }
                    }
                }
                @if let Some(ha) = &status.ha {
                    p.flash.ha role="status" data-role=(ha.role) {
                        (ha.describe())
                        @if let Some(url) = ha.leader_url.as_deref().filter(|_| !ha.leads()) {
                            " · " a href=(format!("{}/ui/", url.trim_end_matches('/'))) { "open the leader's dashboard" }
                        }
                    }
                }
                (main)
            }
        }
    }
    .into_string()
}

fn badge(condition: Condition) -> Markup {
    let class = match condition {
        Condition::Ready => "ok",
        Condition::Progressing => "busy",
        Condition::Degraded => "warn",
        Condition::Stalled => "bad",
    };
    html! { span class=(format!("badge {class}")) data-condition=(condition.as_str()) { (condition.as_str()) } }
}

fn state_badge(state: &str) -> Markup {
    let class = match state {
        "passed" | "ok" | "applied" | "reachable" => "ok",
        "running" => "busy",
        "failed" | "down" => "bad",
        _ => "warn",
    };
    html! { span class=(format!("badge {class}")) { (state) } }
}

fn commit(commit: Option<&str>) -> Markup {
    match commit {
        Some(c) => html! { code title=(c) { (short(c)) } },
        None => html! { span.muted { "none" } },
    }
}

/// `2m 5s ago`, from seconds since the epoch.
fn ago(now: u64, then: u64) -> String {
    let seconds = now.saturating_sub(then);
    let rounded = std::time::Duration::from_secs(if seconds > 3600 {
        seconds / 60 * 60
    } else {
        seconds
    });
    if seconds == 0 {
        "just now".into()
    } else {
        format!("{} ago", humantime::format_duration(rounded))
    }
}

fn millis(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

fn flash(message: Option<&str>) -> Markup {
    html! {
        @if let Some(message) = message {
            p.flash role="status" { (message) }
        }
    }
}

/// The overview: where the branch is, what runs, the last pass.
pub fn overview(status: &Status, now: u64, message: Option<&str>, viewer: &Viewer) -> Markup {
    let counts = |c: Condition| status.services.iter().filter(|s| s.condition == c).count();
    let in_sync = status.head.is_some() && status.head == status.revision;
    let reachable = status.nodes.iter().filter(|n| n.reachable).count();
    html! {
        (flash(message))
        section.cards {
            div.card {
                h2 { "Revision" }
                p { "Applied " (commit(status.revision.as_deref())) }
                p { "Branch tip " (commit(status.head.as_deref())) " "
                    @if in_sync { (state_badge("ok")) " deployed" }
                    @else if status.head.is_some() { (state_badge("pending")) " not deployed" }
                }
            }
            div.card {
                h2 { "Services" }
                p.conditions {
                    @for c in [Condition::Ready, Condition::Progressing, Condition::Degraded, Condition::Stalled] {
                        @let n = counts(c);
                        @if n > 0 { (badge(c)) " " (n) " " }
                    }
                    @if status.services.is_empty() { span.muted { "none yet" } }
                }
            }
            div.card {
                h2 { "Nodes" }
                p { (reachable) " of " (status.nodes.len()) " reachable" }
            }
            div.card {
                h2 { "Last pass" }
                @if let Some(pass) = &status.last_pass {
                    p { (state_badge(&pass.result)) " " (pass.trigger) ", " (ago(now, pass.finished_at)) ", " (millis(pass.duration_ms)) }
                    @if let Some(first) = pass.message.lines().next() { p.reason { (first) } }
                } @else { p.muted { "none yet" } }
            }
        }
        @if let Some(reason) = &status.stalled {
            section.alert { h2 { "Refused" } pre { (reason) } }
        }
        @if let Some(run) = &status.pipeline {
            section { h2 { "Pipeline" } (pipeline_line(run)) }
        }
        section {
            h2 { "Services" }
            (service_table(&status.services, false, viewer))
        }
        section.actions {
            @if viewer.can_act() {
                form method="post" action="/ui/reconcile" {
                    input type="hidden" name="csrf" value=[viewer.csrf.as_deref()];
                    button type="submit" { "Reconcile now" }
                }
            }
            a.button href="/ui/diff" { "Compute pier diff now" }
        }
    }
}

fn pipeline_line(run: &PipelineStatus) -> Markup {
    html! {
        p {
            a href=(format!("/ui/runs/{}", run.run)) { "Run " (run.run) }
            " of " (commit(Some(&run.commit))) " on " (run.branch) " " (state_badge(run.state.as_str()))
        }
        @if !run.summary.is_empty() { pre.log { (run.summary) } }
    }
}

fn service_table(services: &[ServiceStatus], detailed: bool, viewer: &Viewer) -> Markup {
    html! {
        div.scroll {
            table {
                thead { tr {
                    th { "Service" } th { "Running" } th { "Condition" }
                    @if detailed { th { "Image" } th { "Digest" } th { "Per node" } th { "Route" } th { "Autoredeploy" } }
                    th { "Reason" }
                    @if detailed && viewer.can_act() { th { "Scale" } }
                } }
                tbody {
                    @for s in services {
                        tr data-service=(s.name) {
                            td { strong { (s.name) } " " a.muted href=(format!("/ui/services/{}/logs", s.name)) { "logs" } }
                            td.num data-running=(s.running) { (s.running) "/" (s.desired) }
                            td { (badge(s.condition)) }
                            @if detailed {
                                td.image { code { (s.image) } }
                                td { @if !s.digest.is_empty() { code title=(s.digest) { (short(&s.digest)) } } }
                                td { @for (node, n) in &s.nodes { span.chip { (node) " ×" (n) } " " } }
                                td { @if let Some(route) = &s.route {
                                    @for address in route.addresses() { code { (address) } " " }
                                    " → :" (route.port) " "
                                    span.muted data-backends=(route.backends) { (route.backends) " of " (s.desired) " in rotation" }
                                } }
                                td { @if s.autoredeploy { "yes" } @else { span.muted { "no" } } }
                            }
                            td.reason { (s.reason.lines().next().unwrap_or("")) }
                            @if detailed && viewer.can_act() {
                                td { (scale_form(s, viewer)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn scale_form(service: &ServiceStatus, viewer: &Viewer) -> Markup {
    let max = (service.desired * 2).max(10);
    html! {
        form.scale method="post" action="/ui/scale" {
            input type="hidden" name="csrf" value=[viewer.csrf.as_deref()];
            input type="hidden" name="service" value=(service.name);
            input type="range" name="replicas" min="0" max=(max) value=(service.desired)
                aria-label=(format!("replicas of {}", service.name));
            output { (service.desired) }
            button type="submit" { "Scale" }
        }
    }
}

/// Services with their replicas per node, digests and routes.
pub fn services(status: &Status, message: Option<&str>, viewer: &Viewer) -> Markup {
    html! {
        (flash(message))
        h1 { "Services" }
        (service_table(&status.services, true, viewer))
        @if viewer.actions_enabled && !viewer.can_act() {
            p.muted { a href="/ui/login" { "Sign in" } " to scale services." }
        }
    }
}

/// A service's log: the end of every replica's, merged, kept live by
/// the page's script (`data-log-stream`).
pub fn service_logs(service: &str, text: &str, unreachable: &[String]) -> Markup {
    html! {
        h1 { "Logs of " (service) }
        p.muted { "Every replica on every node, merged by time; new lines appear as they are written." }
        @if !unreachable.is_empty() {
            p.reason { "Unreachable, so missing: " (unreachable.join(", ")) }
        }
        pre.log #service-log data-log-stream=(format!("/ui/services/{service}/logs/stream")) { (text) }
    }
}

/// Nodes: reachable or down, tags, containers, engine.
pub fn nodes(status: &Status, message: Option<&str>, viewer: &Viewer) -> Markup {
    html! {
        (flash(message))
        h1 { "Nodes" }
        div.scroll {
            table {
                thead { tr { th { "Node" } th { "State" } th { "Containers" } th { "Engine" } th { "Tags" } } }
                tbody {
                    @for n in &status.nodes {
                        tr data-node=(n.name) {
                            td { strong { (n.name) } }
                            td { (node_state(n)) @if !n.reason.is_empty() { div.reason { (n.reason) } } }
                            td.num { (n.containers) }
                            td { @if n.engine.is_empty() { span.muted { "unknown" } } @else { (n.engine) } }
                            td {
                                @if let Some(csrf) = viewer.acting_csrf() {
                                    form.tags method="post" action="/ui/nodes/tags" {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="node" value=(n.name);
                                        input type="text" name="tags" value=(n.tags.join(" "))
                                            aria-label=(format!("tags of {}", n.name));
                                        button type="submit" { "Save" }
                                    }
                                } @else {
                                    @for tag in &n.tags { span.chip { (tag) } " " }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn node_state(node: &NodeStatus) -> Markup {
    if node.reachable {
        state_badge("reachable")
    } else if node.down {
        state_badge("down")
    } else {
        state_badge("unreachable")
    }
}

/// Pipeline runs, newest first, grouped by nothing: the branch is a column.
pub fn runs(runs: &[RunRow], now: u64) -> Markup {
    html! {
        h1 { "Pipeline runs" }
        @if runs.is_empty() { p.muted { "No run yet." } }
        @else {
            div.scroll { table {
                thead { tr { th { "Run" } th { "Branch" } th { "Commit" } th { "State" } th { "Started" } th { "Took" } } }
                tbody {
                    @for run in runs {
                        tr data-run=(run.id) {
                            td { a href=(format!("/ui/runs/{}", run.id)) { "#" (run.id) } }
                            td { (run.branch) }
                            td { (commit(Some(&run.commit))) }
                            td { (state_badge(run.state.as_str())) }
                            td { (ago(now, run.started_at.max(0) as u64)) }
                            td { @if let Some(end) = run.finished_at { (millis((end - run.started_at).max(0) as u64 * 1000)) } }
                        }
                    }
                }
            } }
        }
    }
}

/// One run: its stages, each with the end of its log.
pub fn run(run: &RunRow, stages: &[(StageRow, String)], viewer: &Viewer, rerun: bool) -> Markup {
    html! {
        h1 { "Run #" (run.id) " " (state_badge(run.state.as_str())) }
        p { "Commit " (commit(Some(&run.commit))) " on " (run.branch) }
        @if rerun && viewer.can_act() {
            form method="post" action=(format!("/ui/runs/{}/rerun", run.id)) {
                input type="hidden" name="csrf" value=[viewer.csrf.as_deref()];
                button type="submit" { "Run again" }
            }
        }
        @for (stage, log) in stages {
            section.stage data-stage=(stage.name) {
                h2 {
                    (stage.name) " " (state_badge(&stage.state))
                    span.muted {
                        @if !stage.node.is_empty() { " on " (stage.node) }
                        @if let Some(code) = stage.exit_code { ", exit " (code) }
                        @if stage.duration_ms > 0 { ", " (millis(stage.duration_ms)) }
                    }
                }
                @if !stage.message.is_empty() { p.reason { (stage.message) } }
                pre.log { (log) }
                p { a href=(format!("/ui/runs/{}/log/{}", run.id, stage.name)) { "Whole log" } }
            }
        }
        @if stages.is_empty() { p.muted { "No stage has started yet." } }
    }
}

/// The sign-in form.
pub fn login(error: Option<&str>) -> Markup {
    html! {
        h1 { "Sign in" }
        @if let Some(error) = error { p.flash.bad role="alert" { (error) } }
        form.login method="post" action="/ui/login" {
            label { "Token" input type="password" name="token" autocomplete="current-password" required; }
            label { "Your name" input type="text" name="name" autocomplete="name"; }
            label { "Your e-mail" input type="email" name="email" autocomplete="email"; }
            button type="submit" { "Sign in" }
        }
        p.muted { "With PIER_API_TOKEN you may act (your name and e-mail author the commits); with PIER_STATUS_TOKEN you may read." }
    }
}

/// What an action did, or why it did nothing.
pub fn outcome(title: &str, detail: &str, back: &str, failed: bool) -> Markup {
    html! {
        h1 { (title) }
        @if failed { p.flash.bad role="alert" { "Nothing was changed." } }
        @if !detail.is_empty() { pre { (detail) } }
        p { a href=(back) { "Back" } }
    }
}

/// The state store could not be read: said so, never shown as "none yet".
pub fn unreadable(error: &dyn std::fmt::Display) -> Markup {
    html! {
        p.flash.bad role="alert" { "Cannot read the daemon's state store: " (error.to_string()) }
    }
}

/// `pier diff` at the branch tip, as text.
pub fn diff(text: &str) -> Markup {
    html! {
        h1 { "What " code { "pier diff" } " shows now" }
        p.muted { "Computed at the branch tip just now, from the daemon's settings." }
        pre.log { (text) }
        p { a href="/ui/diff" { "Compute again" } " · " a href="/ui/" { "Overview" } }
    }
}

/// Inline markup already escaped (the CSS and the script are files of ours).
pub fn raw(text: &str) -> PreEscaped<&str> {
    PreEscaped(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_wherever_they_appear() {
        let status = Status {
            stack: "<script>alert(1)</script>".into(),
            branch: "x\"><img src=x>".into(),
            services: vec![ServiceStatus {
                name: "web".into(),
                desired: 2,
                running: 1,
                image: "app".into(),
                digest: String::new(),
                autoredeploy: false,
                condition: Condition::Degraded,
                reason: "<b>registry</b> unreachable".into(),
                route: None,
                nodes: Default::default(),
            }],
            ..Default::default()
        };
        let viewer = Viewer::default();
        let html = page(
            &status,
            &viewer,
            Page::Services,
            services(&status, None, &viewer),
        );
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>registry"), "{html}");
        assert!(
            html.contains("&lt;b&gt;registry&lt;/b&gt; unreachable"),
            "{html}"
        );
    }

    /// A status with one service, `web`, of 3 replicas all running.
    fn one_ready_service(route: Option<crate::daemon::status::RouteStatus>) -> Status {
        Status {
            services: vec![ServiceStatus {
                name: "web".into(),
                desired: 3,
                running: 3,
                image: "app".into(),
                digest: String::new(),
                autoredeploy: false,
                condition: Condition::Ready,
                reason: String::new(),
                route,
                nodes: Default::default(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn forms_to_act_appear_only_for_a_viewer_who_may_act() {
        let status = one_ready_service(None);
        let reader = Viewer {
            actions_enabled: true,
            can_sign_in: true,
            ..Default::default()
        };
        let text = services(&status, None, &reader).into_string();
        assert!(!text.contains("/ui/scale"), "{text}");
        let signed_in_reader = Viewer {
            csrf: Some("t0ken".into()),
            ..reader.clone()
        };
        let text = services(&status, None, &signed_in_reader).into_string();
        assert!(!text.contains("/ui/scale"), "{text}");
        let actor = Viewer {
            may_act: true,
            ..signed_in_reader
        };
        let text = services(&status, None, &actor).into_string();
        assert!(text.contains("action=\"/ui/scale\""), "{text}");
        assert!(text.contains("name=\"csrf\" value=\"t0ken\""), "{text}");
        assert!(text.contains("max=\"10\" value=\"3\""), "{text}");
    }

    /// A route shows its hosts, port and backends in rotation of desired.
    #[test]
    fn a_route_shows_its_backends_in_rotation() {
        let status = one_ready_service(Some(crate::daemon::status::RouteStatus {
            hosts: vec!["app.example.com".into()],
            path: None,
            port: 8080,
            backends: 2,
        }));
        let text = services(&status, None, &Viewer::default()).into_string();
        assert!(text.contains("<code>app.example.com</code>"), "{text}");
        assert!(text.contains("→ :8080"), "{text}");
        assert!(text.contains("2 of 3 in rotation"), "{text}");
    }

    #[test]
    fn live_pages_name_their_stream() {
        for page in [Page::Overview, Page::Run(7), Page::History] {
            assert_eq!(Page::parse(&page.live_name()), Some(page));
        }
        assert_eq!(Page::parse("run-x"), None);
        assert_eq!(Page::parse("secrets"), None);
    }
}
