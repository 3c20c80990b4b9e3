//! What the daemon reports about the deployment: the document behind
//! `GET /api/v1/status` and `pier status`. Fields are only ever added.

use serde::{Deserialize, Serialize};

/// How a service is doing, in the vocabulary of Kubernetes conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// Every replica runs the desired spec.
    Ready,
    /// A rollout is under way.
    Progressing,
    /// Not converged for a reason expected to pass (a node or the registry is
    /// unreachable); pier retries.
    Degraded,
    /// Not converged and pier will not retry until a new commit arrives (the
    /// manifests are invalid, or a rollout was rolled back).
    Stalled,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Ready => "Ready",
            Condition::Progressing => "Progressing",
            Condition::Degraded => "Degraded",
            Condition::Stalled => "Stalled",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub desired: usize,
    pub running: usize,
    /// The image reference as written in the manifest.
    pub image: String,
    /// The digest the service is deployed with.
    pub digest: String,
    pub autoredeploy: bool,
    pub condition: Condition,
    pub reason: String,
    /// What the router sends to this service: its backends are the
    /// replicas in rotation, out of `desired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteStatus>,
    /// Running replicas per node.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub nodes: std::collections::BTreeMap<String, usize>,
}

/// A service's route, as the router serves it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteStatus {
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub port: u16,
    /// Replicas in rotation: running, healthy, and on the network the
    /// router finds them on. (0 from a daemon that did not count them.)
    #[serde(default)]
    pub backends: usize,
}

impl RouteStatus {
    /// What the route answers to: each host with the path, if any.
    pub fn addresses(&self) -> impl Iterator<Item = String> + '_ {
        let path = self.path.as_deref().unwrap_or("");
        self.hosts.iter().map(move |host| format!("{host}{path}"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub reachable: bool,
    /// Unreachable for longer than `--node-down-after`: the replicas of
    /// services that can move were started on other nodes.
    #[serde(default)]
    pub down: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Running containers of this stack.
    pub containers: usize,
    /// The node's tags, as the manifests give them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The engine's version, once read.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub engine: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PassStatus {
    pub trigger: String,
    pub commit: String,
    pub result: String,
    pub message: String,
    /// Seconds since the epoch.
    pub finished_at: u64,
    pub duration_ms: u64,
}

/// The last pipeline run of the deployed branch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineStatus {
    pub run: i64,
    pub branch: String,
    pub commit: String,
    pub state: crate::pipeline::RunStatus,
    /// For a failed run: the failing stage, why, and the last lines of its log.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
}

/// How a target is doing, for the status document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub name: String,
    pub kind: String,
    pub delivered: u64,
    /// Given up after every attempt failed.
    pub failed: u64,
    /// Not queued, because the target's queue was full.
    pub dropped: u64,
    /// Waiting, or being tried again.
    pub pending: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
}

/// The whole status document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub stack: String,
    pub branch: String,
    /// The tip of the branch, as last seen.
    pub head: Option<String>,
    /// The commit the nodes were last converged to.
    pub revision: Option<String>,
    /// Why the head is not deployed, when it is refused: for invalid
    /// manifests, one `file:line:col: message` line per problem.
    pub stalled: Option<String>,
    pub services: Vec<ServiceStatus>,
    pub nodes: Vec<NodeStatus>,
    pub last_pass: Option<PassStatus>,
    /// The last pipeline run of the deployed branch.
    #[serde(default)]
    pub pipeline: Option<PipelineStatus>,
    /// The last pipeline run of every branch (other branches are tested, not deployed).
    #[serde(default)]
    pub pipelines: std::collections::BTreeMap<String, PipelineStatus>,
    /// The notification targets and how delivery to each goes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<TargetStatus>,
    /// Set while `pier rollback --hold` keeps the stack at a revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<super::store::Hold>,
    /// Services frozen by `pier freeze` (`*`: every service).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frozen: Vec<super::store::Freeze>,
    /// Under `--ha`: whether this daemon leads, and who does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<super::lease::LeaseStatus>,
}

/// A digest or commit as people read it: 12 hex digits.
pub(crate) fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// `Frozen: web by alice until 14:03 UTC (the migration)`, one freeze for people.
pub fn describe_freeze(freeze: &super::store::Freeze) -> String {
    let what = if freeze.service == "*" {
        "every service"
    } else {
        freeze.service.as_str()
    };
    let until = match freeze.until {
        Some(until) => format!(
            " until {}",
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(until.max(0) as u64)
            )
        ),
        None => " until unfrozen".to_string(),
    };
    let why = if freeze.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", freeze.reason)
    };
    format!("Frozen: {what} by {}{until}{why}", freeze.by)
}

/// The status as tables for a terminal: services, then nodes, then the last pass.
pub fn render(status: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let revision = status.revision.as_deref().map(short).unwrap_or("none");
    let head = status.head.as_deref().map(short).unwrap_or("unknown");
    let _ = writeln!(
        out,
        "Stack {} on {}: applied {revision}, branch tip {head}",
        status.stack, status.branch
    );
    if let Some(ha) = &status.ha {
        let _ = writeln!(out, "High availability: {}", ha.describe());
    }
    if let Some(hold) = &status.held {
        let _ = writeln!(
            out,
            "\nHeld at {} by {}{}: new commits and digests wait until `pier resume`",
            short(&hold.commit),
            hold.by,
            if hold.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", hold.reason)
            }
        );
    }
    for freeze in &status.frozen {
        let _ = writeln!(out, "\n{}", describe_freeze(freeze));
    }
    if let Some(reason) = &status.stalled {
        let _ = writeln!(out, "\nStalled: {reason}");
    }
    let name_width = status
        .services
        .iter()
        .map(|s| s.name.len())
        .chain([7])
        .max()
        .unwrap_or(7);
    let _ = writeln!(
        out,
        "\n{:name_width$}  {:>7}  {:12}  {:11}  REASON",
        "SERVICE", "RUNNING", "DIGEST", "CONDITION"
    );
    for s in &status.services {
        let reason = s.reason.lines().next().unwrap_or("");
        let _ = writeln!(
            out,
            "{:name_width$}  {:>7}  {:12}  {:11}  {reason}",
            s.name,
            format!("{}/{}", s.running, s.desired),
            short(&s.digest),
            s.condition.as_str(),
        );
    }
    let _ = writeln!(out, "\n{:name_width$}  {:>7}  STATE", "NODE", "RUNNING");
    for n in &status.nodes {
        let state = if n.reachable {
            "reachable".to_string()
        } else if n.down {
            format!("down: {}", n.reason)
        } else {
            format!("unreachable: {}", n.reason)
        };
        let _ = writeln!(out, "{:name_width$}  {:>7}  {state}", n.name, n.containers);
    }
    let routed: Vec<(&ServiceStatus, &RouteStatus)> = status
        .services
        .iter()
        .filter_map(|s| s.route.as_ref().map(|r| (s, r)))
        .collect();
    if !routed.is_empty() {
        let _ = writeln!(out, "\nROUTE  SERVICE  BACKENDS UP");
        for (service, route) in routed {
            for address in route.addresses() {
                let _ = writeln!(
                    out,
                    "{address}  {}:{}  {}/{}",
                    service.name, route.port, route.backends, service.desired
                );
            }
        }
    }
    if let Some(run) = &status.pipeline {
        let _ = writeln!(
            out,
            "\nPipeline run {} of {} ({}): {}",
            run.run,
            short(&run.commit),
            run.branch,
            run.state
        );
        for line in run.summary.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !status.notifications.is_empty() {
        let _ = writeln!(
            out,
            "\nNOTIFY TO  DELIVERED  FAILED  DROPPED  PENDING  LAST ERROR"
        );
        for t in &status.notifications {
            let _ = writeln!(
                out,
                "{} ({})  {}  {}  {}  {}  {}",
                t.name, t.kind, t.delivered, t.failed, t.dropped, t.pending, t.last_error
            );
        }
    }
    if let Some(pass) = &status.last_pass {
        let _ = writeln!(
            out,
            "\nLast pass: {} ({}) at {}, {} ms",
            pass.result,
            pass.trigger,
            short(&pass.commit),
            pass.duration_ms,
        );
        if let Some(first) = pass.message.lines().next() {
            let _ = writeln!(out, "  {first}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under `--ha`, `pier status` says which daemon acts and where.
    #[test]
    fn the_status_says_who_leads_and_where() {
        let lease = |role: &str, leader: Option<&str>, url: Option<&str>| {
            super::super::lease::LeaseStatus {
                role: role.into(),
                identity: "b".into(),
                epoch: 3,
                leader: leader.map(Into::into),
                leader_url: url.map(Into::into),
                ..Default::default()
            }
        };
        let line = |ha| {
            render(&Status {
                stack: "s".into(),
                ha: Some(ha),
                ..Default::default()
            })
            .lines()
            .find(|l| l.starts_with("High availability: "))
            .map(str::to_string)
        };
        assert_eq!(
            line(lease("standby", Some("a"), Some("http://a:7878"))).as_deref(),
            Some(
                "High availability: standby: a leads (term 3) at http://a:7878; make changes there"
            )
        );
        assert_eq!(
            line(lease("leader", Some("b"), None)).as_deref(),
            Some("High availability: this daemon (b) leads, term 3")
        );
        let unknown = line(lease("unknown", None, None)).unwrap();
        assert!(unknown.contains("no daemon leads yet"), "{unknown}");
        assert!(!render(&Status::default()).contains("High availability"));
    }

    /// Each routed host shows its service, port and backends up of wanted.
    #[test]
    fn routes_show_each_host_with_its_backends() {
        let service = |name: &str, route: Option<RouteStatus>| ServiceStatus {
            name: name.into(),
            desired: 3,
            running: 2,
            image: "app:1".into(),
            digest: "sha256:0123456789abcdef".into(),
            autoredeploy: false,
            condition: Condition::Degraded,
            reason: String::new(),
            route,
            nodes: Default::default(),
        };
        let status = Status {
            stack: "s".into(),
            services: vec![
                service(
                    "web",
                    Some(RouteStatus {
                        hosts: vec!["a.example.com".into(), "b.example.com".into()],
                        path: Some("/api".into()),
                        port: 8080,
                        backends: 1,
                    }),
                ),
                service("db", None),
            ],
            ..Default::default()
        };
        let text = render(&status);
        // Two replicas run; one of them is out of rotation.
        assert!(text.contains("a.example.com/api  web:8080  1/3"), "{text}");
        assert!(text.contains("b.example.com/api  web:8080  1/3"), "{text}");
        assert!(!text.contains("db:"), "{text}");
        let json = serde_json::to_value(&status).expect("serialises");
        assert_eq!(json["services"][0]["route"]["hosts"][1], "b.example.com");
        assert_eq!(json["services"][0]["route"]["backends"], 1);
        assert!(json["services"][1].get("route").is_none(), "{json}");
    }
}
