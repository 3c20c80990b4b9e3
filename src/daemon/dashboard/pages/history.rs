//! The History page: the revisions deployed, with the hold, the freezes
//! and the buttons that steer them, the revisions refused, and the passes.

#[allow(unused_imports)]
use super::*;

/// The hold and the freezes in force, each with the button that lifts it.
fn control_banner(status: &Status, viewer: &Viewer) -> Markup {
    html! {
        @if let Some(hold) = &status.held {
            div.flash.held {
                "Held at " (commit(Some(&hold.commit))) " by " (hold.by)
                @if !hold.reason.is_empty() { " (" (hold.reason) ")" }
                ": new commits and digests wait. "
                @if let Some(csrf) = viewer.acting_csrf() {
                    form.inline method="post" action="/ui/resume" {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { "Resume" }
                    }
                }
            }
        }
        @for freeze in &status.frozen {
            div.flash.frozen data-frozen=(freeze.service) {
                (crate::daemon::status::describe_freeze(freeze)) " "
                @if let Some(csrf) = viewer.acting_csrf() {
                    form.inline method="post" action="/ui/unfreeze" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="service" value=(freeze.service);
                        button type="submit" { "Unfreeze" }
                    }
                }
            }
        }
    }
}

/// The form that freezes a service (`*`: every service) for a while.
fn freeze_form(status: &Status, csrf: &str) -> Markup {
    html! {
        form.inline method="post" action="/ui/freeze" {
            input type="hidden" name="csrf" value=(csrf);
            select name="service" aria-label="service to freeze" {
                option value="*" { "every service" }
                @for s in &status.services { option value=(s.name) { (s.name) } }
            }
            input type="text" name="for" placeholder="for (e.g. 2h; empty: until unfrozen)" aria-label="how long";
            input type="text" name="reason" placeholder="why" aria-label="why";
            button type="submit" { "Freeze" }
        }
    }
}

/// The revisions deployed (with each service's digest), the passes with
/// their steps, and the revisions refused.
pub fn history(
    deployments: &[Revision],
    revisions: &[RevisionRow],
    passes: &[(PassRecord, Vec<StepRow>)],
    status: &Status,
    viewer: &Viewer,
    message: Option<&str>,
    now: u64,
) -> Markup {
    html! {
        h1 { "History" }
        (flash(message))
        (control_banner(status, viewer))
        @if let Some(csrf) = viewer.acting_csrf() { (freeze_form(status, csrf)) }
        h2 { "Deployments" }
        div.scroll { table {
            thead { tr { th { "#" } th { "Commit" } th { "When" } th { "Cause" } th { "Verdict" } th { "Images" }
                @if viewer.can_act() { th { "" } } } }
            tbody {
                @for r in deployments {
                    tr data-deployment=(r.id) {
                        td.num { (r.id) }
                        td { (commit(Some(&r.commit))) }
                        td { (ago(now, r.at.max(0) as u64)) }
                        td { (r.cause.as_str()) }
                        td { (state_badge(r.verdict.as_str())) }
                        td {
                            @for (name, image) in &r.services {
                                span.chip title=(image.pinned) { (name) " " (short(&image.digest)) } " "
                            }
                            @if r.verdict != Verdict::Applied && !r.reason.is_empty() {
                                div.reason { (r.reason.lines().next().unwrap_or("")) }
                            }
                        }
                        @if let Some(csrf) = viewer.acting_csrf() {
                            td { @if r.verdict == Verdict::Applied {
                                form.inline method="post" action="/ui/hold" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="hidden" name="revision" value=(r.id);
                                    button type="submit" title="hold the stack here, without a commit, until resumed" { "Hold here" }
                                }
                            } }
                        }
                    }
                }
            }
        } }
        @if deployments.is_empty() { p.muted { "Nothing deployed yet." } }
        h2 { "Revisions" }
        div.scroll { table {
            thead { tr { th { "Commit" } th { "State" } th { "When" } th { "Reason" } } }
            tbody {
                @for r in revisions {
                    tr data-revision=(r.commit) {
                        td { (commit(Some(&r.commit))) }
                        td { (state_badge(&r.state)) }
                        td { (ago(now, r.updated_at.max(0) as u64)) }
                        td.reason { (r.reason.lines().next().unwrap_or("")) }
                    }
                }
            }
        } }
        h2 { "Passes that changed something" }
        @for (pass, steps) in passes {
            details.pass {
                summary {
                    (state_badge(&pass.result)) " " (commit(Some(&pass.commit))) " · " (pass.trigger) " · "
                    (pass.steps) " step(s) · " (millis(pass.duration_ms)) " · "
                    (ago(now, pass.started.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)))
                }
                @if !pass.message.is_empty() { p.reason { (pass.message) } }
                div.scroll { table {
                    thead { tr { th { "Service" } th { "Node" } th { "Step" } th { "On" } th { "Took" } th { "" } } }
                    tbody {
                        @for s in steps {
                            tr {
                                td { (s.service) } td { (s.node) } td { (s.action) } td { code { (s.target) } }
                                td { (millis(s.duration_ms)) }
                                td { @if s.ok { (state_badge("ok")) } @else { (state_badge("failed")) " " (s.message) } }
                            }
                        }
                    }
                } }
            }
        }
        @if passes.is_empty() { p.muted { "No pass has changed anything yet." } }
    }
}
