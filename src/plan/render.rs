//! A plan for people (like `terraform plan`) and for machines (versioned JSON).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Change, Desired, DesiredService, FieldChange, OwnedContainer, Plan};

/// Version of the JSON plan format. Fields are only ever added within a version.
pub const PLAN_SCHEMA: &str = "pier.plan/v1";

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create: usize,
    pub replace: usize,
    pub remove: usize,
    /// Live configuration rewritten in place.
    pub reload: usize,
    /// Routed replicas put in or taken out of rotation.
    pub rotate: usize,
    pub blocked: usize,
}

pub fn summary(plan: &Plan) -> Summary {
    Summary {
        create: plan.count(|c| matches!(c, Change::Create { .. })),
        replace: plan.count(|c| matches!(c, Change::Replace { .. })),
        remove: plan.count(|c| matches!(c, Change::Remove { .. })),
        reload: plan.count(|c| matches!(c, Change::Reload { .. })),
        rotate: plan.count(|c| matches!(c, Change::Rotate { .. })),
        blocked: plan.blocked_count(),
    }
}

/// ANSI colours, only when asked for.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    /// Colour on a terminal, never with `NO_COLOR` set.
    pub fn for_stdout() -> Style {
        use std::io::IsTerminal;
        Style {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

fn short(digest: &str) -> String {
    let hex = digest.rsplit(':').next().unwrap_or(digest);
    let algo = digest.split_once(':').map(|(a, _)| a).unwrap_or("sha256");
    format!("{algo}:{}…", &hex[..hex.len().min(12)])
}

/// Why a replica is replaced, in a few words: the image digests, the
/// variables (values hidden unless revealed) and the other parts that
/// differ.
fn describe_replace(
    old: &OwnedContainer,
    new: Option<&DesiredService>,
    changed: &[FieldChange],
) -> String {
    let mut parts = Vec::new();
    if let Some(d) = new
        && d.digest != old.image_digest
    {
        parts.push(format!(
            "image {} → {}",
            short(&old.image_digest),
            short(&d.digest)
        ));
    }
    for change in changed {
        match change.field.strip_prefix("env.") {
            Some(key) => {
                let sign = match change.change {
                    "added" => "+",
                    "removed" => "-",
                    _ => "~",
                };
                match &change.value {
                    Some(value) => parts.push(format!("env {sign}{key}={}", clip(value))),
                    None if change.change == "removed" => parts.push(format!("env -{key}")),
                    None => parts.push(format!("env {sign}{key} (value hidden)")),
                }
            }
            // The image is described by its digests above.
            None if change.field == "image" => {}
            // A config's or secret's contents are never shown, whatever
            // the flags: only that it changed.
            None if change.field.starts_with("secret ") || change.field.starts_with("config ") => {
                parts.push(format!("{} ({})", change.field, change.change))
            }
            None => parts.push(format!("{} {}", change.field, change.change)),
        }
    }
    if parts.is_empty() {
        parts.push(
            if old.running {
                "configuration changed"
            } else {
                "not running"
            }
            .to_string(),
        );
    }
    parts.join(", ")
}

/// Fill in the new values of changed variables, for `diff --show-values`:
/// all but those holding a value of `environment` (what the manifests
/// interpolated from pier's environment), and those whose name looks
/// secret.
pub fn reveal_env_values(plan: &mut Plan, desired: &Desired, environment: &[String]) {
    let from_environment = |value: &str| {
        environment
            .iter()
            .any(|secret| !secret.is_empty() && value.contains(secret.as_str()))
    };
    for service_plan in plan.services.iter_mut() {
        let Some(desired) = desired.services.get(&service_plan.service) else {
            continue;
        };
        let changed = service_plan
            .changes
            .iter_mut()
            .flat_map(|change| match change {
                Change::Replace { changed, .. } => changed.as_mut_slice(),
                _ => &mut [],
            });
        for field in changed.filter(|f| f.change != "removed") {
            let Some(key) = field.field.strip_prefix("env.") else {
                continue;
            };
            if super::spec::looks_secret(key) {
                continue;
            }
            field.value = desired
                .spec
                .env
                .iter()
                .find_map(|e| e.split_once('=').filter(|(k, _)| *k == key))
                .map(|(_, value)| value)
                .filter(|value| !from_environment(value))
                .map(str::to_string);
        }
    }
}

fn clip(value: &str) -> String {
    const MAX: usize = 40;
    if value.chars().count() <= MAX {
        format!("{value:?}")
    } else {
        format!("{:?}…", value.chars().take(MAX).collect::<String>())
    }
}

/// The plan as text.
/// The swarm the overlay network needs: steps first, then nodes left out.
fn swarm_lines(swarm: &super::swarm::SwarmPlan, style: Style) -> String {
    use super::swarm::SwarmStep;
    if swarm.steps.is_empty() && swarm.blocked.is_empty() && swarm.staying.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n  swarm (for the overlay network)\n");
    for step in &swarm.steps {
        let line = match step {
            SwarmStep::Init { node } => format!("swarm init {node}"),
            SwarmStep::Join { node, via, manager } => format!(
                "swarm join {node} via {via}{}",
                if *manager { " (manager)" } else { "" }
            ),
            SwarmStep::Promote { node, via } => format!("swarm promote {node} via {via}"),
            SwarmStep::Demote { node, via } => format!("swarm demote {node} via {via}"),
            SwarmStep::Leave { node, via } => {
                format!("swarm leave {node} (no longer in the manifests; {via} forgets it)")
            }
            SwarmStep::CreateNetwork {
                node,
                network,
                encrypted,
                internal,
            } => format!(
                "network create {network} (overlay{}{}) on {node}",
                if *encrypted { ", encrypted" } else { "" },
                if *internal { ", internal" } else { "" }
            ),
        };
        let mark = if step.runs_last() {
            style.paint("31", "-")
        } else {
            style.paint("32", "+")
        };
        out.push_str(&format!("    {mark} {line}\n"));
    }
    for (node, reason) in &swarm.blocked {
        out.push_str(&format!(
            "    {} node {node} cannot join: {reason}\n",
            style.paint("33", "!")
        ));
    }
    for (node, reason) in &swarm.staying {
        out.push_str(&format!(
            "    {} node {node} stays in the swarm: {reason}\n",
            style.paint("33", "!")
        ));
    }
    out
}

/// The container a change makes or touches, by name.
fn change_target(change: &Change) -> &str {
    match change {
        Change::Create { name, .. } | Change::Replace { name, .. } => name,
        Change::Remove { container, .. }
        | Change::Reload { container, .. }
        | Change::Rotate { container, .. } => &container.name,
    }
}

/// The rollout order, when there is one to tell: several waves, or a
/// service whose changes run in several batches. One line per wave; a
/// service's batches separated by "then".
fn order_lines(plan: &Plan) -> String {
    let by_name: BTreeMap<&str, &super::ServicePlan> = plan
        .services
        .iter()
        .map(|s| (s.service.as_str(), s))
        .collect();
    let batched = plan.services.iter().any(|s| s.batches.len() > 1);
    if plan.waves.len() < 2 && !batched {
        return String::new();
    }
    let mut out = String::from("\nOrder (each step once the one before it is done):\n");
    for (n, wave) in plan.waves.iter().enumerate() {
        let services: Vec<String> = wave
            .services
            .iter()
            .map(|name| match by_name.get(name.as_str()) {
                Some(service) if service.batches.len() > 1 => {
                    let batches: Vec<String> = service
                        .batches
                        .iter()
                        .map(|batch| {
                            batch
                                .iter()
                                .filter_map(|&i| service.changes.get(i))
                                .map(change_target)
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .collect();
                    format!("{name} ({})", batches.join(", then "))
                }
                _ => name.clone(),
            })
            .collect();
        out.push_str(&format!("  {}. {}\n", n + 1, services.join(", ")));
    }
    out
}

pub fn human(plan: &Plan, desired: &Desired, style: Style) -> String {
    let mut out = String::new();
    // As people read commits in pier's messages: 12 hex digits.
    let commit = &plan.commit[..plan.commit.len().min(12)];
    for reason in &plan.refused {
        out.push_str(&format!("{} {reason}\n", style.paint("31", "refused:")));
    }
    if !plan.refused.is_empty() {
        return out;
    }
    let s = summary(plan);
    if plan.is_empty() && s.blocked == 0 {
        out.push_str(&format!(
            "No changes. The nodes match stack `{}` at {commit}.\n",
            plan.stack
        ));
        return out;
    }
    out.push_str(&format!("Stack `{}` at {commit}:\n", plan.stack));
    for (node, reason) in &plan.unreachable {
        out.push_str(&format!(
            "\n  {} node {node} is unreachable: {reason}\n",
            style.paint("33", "!")
        ));
    }
    out.push_str(&swarm_lines(&plan.swarm, style));
    for service in &plan.services {
        if service.changes.is_empty() && service.blocked.is_empty() {
            continue;
        }
        let heading = match desired.services.get(&service.service) {
            Some(d) => {
                let count = d
                    .replicas
                    .map_or("one per node".to_string(), |n| format!("{n} replica(s)"));
                format!("{} ({count}, {})", service.service, d.image_display)
            }
            None => format!("{} (no longer in the manifests)", service.service),
        };
        out.push_str(&format!("\n  {heading}\n"));
        for change in &service.changes {
            let line = match change {
                Change::Create { node, name, .. } => {
                    format!("{} {name} on {node}", style.paint("32", "+"))
                }
                Change::Remove {
                    node,
                    container,
                    reason,
                } => {
                    format!(
                        "{} {} on {node}: {reason}",
                        style.paint("31", "-"),
                        container.name
                    )
                }
                Change::Replace {
                    node,
                    name,
                    old,
                    start_first,
                    changed,
                    ..
                } => {
                    let new = desired.services.get(&service.service);
                    let what = describe_replace(old, new, changed);
                    let order = if *start_first { ", start-first" } else { "" };
                    format!("{} {name} on {node}: {what}{order}", style.paint("33", "~"))
                }
                Change::Reload { node, container } => format!(
                    "{} {} on {node}: configuration reloaded in place",
                    style.paint("36", "↻"),
                    container.name
                ),
                Change::Rotate {
                    node,
                    container,
                    into: true,
                } => format!(
                    "{} {} on {node}: into rotation (running and healthy)",
                    style.paint("32", "→"),
                    container.name
                ),
                Change::Rotate {
                    node,
                    container,
                    into: false,
                } => format!(
                    "{} {} on {node}: out of rotation until its health check passes",
                    style.paint("33", "←"),
                    container.name
                ),
            };
            out.push_str(&format!("    {line}\n"));
        }
        for blocked in &service.blocked {
            let what = match (&blocked.replica, &blocked.node) {
                (Some(r), Some(n)) => format!("replica {r} on {n}"),
                (Some(r), None) => format!("replica {r}"),
                (None, Some(n)) => format!("on {n}"),
                (None, None) => "service".to_string(),
            };
            out.push_str(&format!(
                "    {} {what}: {}\n",
                style.paint("35", "!"),
                blocked.reason
            ));
        }
    }
    out.push_str(&order_lines(plan));
    out.push_str(&format!(
        "\nPlan: {} to create, {} to replace, {} to remove{}{}{}.\n",
        s.create,
        s.replace,
        s.remove,
        if s.reload > 0 {
            format!(", {} to reload", s.reload)
        } else {
            String::new()
        },
        if s.rotate > 0 {
            format!(", {} in or out of rotation", s.rotate)
        } else {
            String::new()
        },
        if s.blocked > 0 {
            format!(", {} blocked", s.blocked)
        } else {
            String::new()
        }
    ));
    out
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    schema: &'static str,
    #[serde(flatten)]
    plan: &'a Plan,
    summary: Summary,
}

/// The plan as JSON (`pier.plan/v1`).
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(&JsonPlan {
        schema: PLAN_SCHEMA,
        plan,
        summary: summary(plan),
    })
    .expect("a plan serialises")
}
