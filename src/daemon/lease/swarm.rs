//! The lease on the nodes' Swarm Raft store, and the task that keeps it.
//!
//! The record is a Swarm config named `pier-lease-<stack>`, read from and
//! written to the first node (by name) that manages a swarm. When none of
//! the stack's nodes is in any swarm (every one of them answered, and
//! said so), the first node forms one, as the planner would for an overlay
//! network; a node that cannot answer means "unknown", and nothing is
//! formed.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{Control, Elector, LeaseError, LeaseStatus, LeaseStore, Record, Timing, Versioned};
use crate::daemon::shared::{Shared, Trigger};
use crate::docker::Runtime as _;
use crate::docker::engine::Engine;
use crate::docker::engine::lease::RecordError;
use crate::docker::fence;
use crate::manifest::model::Node;

/// What `--ha` asks of the daemon.
#[derive(Debug, Clone)]
pub struct HaConfig {
    pub timing: Timing,
    /// This daemon's name in the election (`--ha-id`).
    pub identity: String,
    /// Where this daemon's API answers, told to the others (`None`: the
    /// address it listens on).
    pub url: Option<String>,
}

/// The lease record on one manager's engine.
pub struct SwarmLease {
    engine: Engine,
    name: String,
}

impl SwarmLease {
    fn unavailable(error: impl std::fmt::Display) -> LeaseError {
        LeaseError::Unavailable(error.to_string())
    }

    /// The named failing point `lease:unreachable` (`PIER_FAULT_FILE`): a
    /// partition from the managers, on purpose.
    fn injected() -> Result<(), LeaseError> {
        crate::fault::failing("lease:unreachable").map_err(Self::unavailable)
    }

    fn written(result: Result<(), RecordError>) -> Result<(), LeaseError> {
        result.map_err(|e| match e {
            RecordError::Conflict => LeaseError::Conflict,
            RecordError::Engine(e) => Self::unavailable(e),
        })
    }
}

impl LeaseStore for SwarmLease {
    async fn read(&self) -> Result<Option<Versioned>, LeaseError> {
        Self::injected()?;
        Ok(self
            .engine
            .record_read(&self.name)
            .await
            .map_err(Self::unavailable)?
            .map(|found| Versioned {
                version: found.version,
                record: Record::from_labels(&found.labels),
            }))
    }

    async fn create(&self, record: &Record) -> Result<(), LeaseError> {
        Self::injected()?;
        Self::written(
            self.engine
                .record_create(&self.name, &record.to_labels())
                .await,
        )
    }

    async fn update(&self, version: u64, record: &Record) -> Result<(), LeaseError> {
        Self::injected()?;
        Self::written(
            self.engine
                .record_update(&self.name, version, &record.to_labels())
                .await,
        )
    }
}

/// The config's name for `stack`: Swarm allows letters, digits, `-`, `_`, `.`.
pub fn record_name(stack: &str) -> String {
    let safe: String = stack
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '-',
        })
        .collect();
    format!("pier-lease-{safe}")
}

/// Where the lease is kept: found once, looked for again after a failure.
struct Placement {
    found: Option<(String, Engine)>,
    timeout: Duration,
}

impl Placement {
    /// The lease on a manager among `nodes`, forming a swarm when none of
    /// them is in one.
    async fn lease(&mut self, nodes: &[Node], name: &str) -> Result<(String, SwarmLease), String> {
        if self.found.is_none() {
            self.found = Some(self.find_manager(nodes).await?);
        }
        let (node, engine) = self.found.clone().expect("found above");
        Ok((
            node,
            SwarmLease {
                engine,
                name: name.to_string(),
            },
        ))
    }

    async fn find_manager(&self, nodes: &[Node]) -> Result<(String, Engine), String> {
        let mut nodes: Vec<&Node> = nodes.iter().collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let Some(first) = nodes.first() else {
            return Err("the manifests name no node yet".into());
        };
        let mut unknown = Vec::new();
        let mut in_a_swarm = false;
        let mut first_engine = None;
        for node in &nodes {
            let engine = match Engine::connect(node, self.timeout).await {
                Ok(engine) => engine,
                Err(e) => {
                    unknown.push(format!("{}: {e}", node.name));
                    continue;
                }
            };
            match engine.swarm().await {
                Ok(m) if m.manager && m.state == "active" => {
                    return Ok((node.name.clone(), engine));
                }
                Ok(m) => in_a_swarm |= m.state != "inactive",
                Err(e) => unknown.push(format!("{}: {e}", node.name)),
            }
            if node.name == first.name {
                first_engine = Some(engine);
            }
        }
        match (in_a_swarm, unknown.is_empty(), first_engine) {
            (false, true, Some(engine)) => {
                let advertise = crate::pass::apply::advertise_of(first);
                engine
                    .init_swarm(advertise.as_deref())
                    .await
                    .map_err(|e| format!("forming a swarm on {} for the lease: {e}", first.name))?;
                info!(node = %first.name, "formed a swarm to keep the --ha lease in");
                Ok((first.name.clone(), engine))
            }
            (true, _, _) => Err(
                "no node of the stack manages its swarm: the lease is kept on a manager; promote one (docker node promote)"
                    .into(),
            ),
            _ => Err(format!(
                "no swarm manager answered, and a node that did not answer may be one: {}",
                unknown.join("; ")
            )),
        }
    }
}

/// The hold and freezes as the store has them now, as the record carries them.
async fn control_now(shared: &Shared) -> String {
    let read = shared
        .store
        .call(|store| -> rusqlite::Result<Control> {
            Ok(Control {
                hold: store.hold()?,
                freezes: store.freezes()?,
            })
        })
        .await;
    match read {
        Ok(control) => serde_json::to_string(&control).expect("control serialises"),
        Err(e) => {
            warn!(error = %e, "cannot read the hold and freezes to hand on with the lease");
            String::new()
        }
    }
}

/// A standby copies the holder's hold and freezes into its own store.
async fn mirror(shared: &Shared, control: &str) {
    let Ok(control) = serde_json::from_str::<Control>(control) else {
        return;
    };
    let copy = control.clone();
    let written = shared
        .store
        .call(move |store| {
            store.set_hold(copy.hold.as_ref())?;
            store.replace_freezes(&copy.freezes)
        })
        .await;
    if let Err(e) = written {
        warn!(error = %e, "cannot copy the leader's hold and freezes");
        return;
    }
    let mut status = shared.status.write().expect("status lock");
    (status.held, status.frozen) = (control.hold, control.freezes);
    drop(status);
    shared.changed();
}

/// Keep this daemon's side of the election until `stop` is told, then
/// release the lease if it is held.
pub async fn keep(
    config: HaConfig,
    stack: String,
    shared: Arc<Shared>,
    engine_timeout: Duration,
    listening: std::net::SocketAddr,
    stop: Arc<tokio::sync::Notify>,
) {
    let name = record_name(&stack);
    let url = config
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{listening}"));
    let mut elector = Elector::new(config.identity.clone(), url, config.timing);
    let mut placement = Placement {
        found: None,
        timeout: engine_timeout,
    };
    let mut watched = shared.watched.subscribe();
    let mut mirrored = String::new();
    let stopping = stop.notified();
    tokio::pin!(stopping);
    loop {
        let nodes = watched.borrow_and_update().nodes.clone();
        let (store_node, problem) = match placement.lease(&nodes, &name).await {
            Ok((node, lease)) => {
                let control = match elector.term(tokio::time::Instant::now()) {
                    Some(_) => control_now(&shared).await,
                    None => mirrored.clone(),
                };
                match elector.step(&lease, &control).await {
                    Ok(()) | Err(LeaseError::Conflict) => (Some(node), None),
                    Err(e) => {
                        placement.found = None;
                        (Some(node), Some(e.to_string()))
                    }
                }
            }
            Err(reason) => (None, Some(reason)),
        };
        let now = tokio::time::Instant::now();
        let term = elector.term(now);
        match term {
            Some(term) => fence::hold(term.epoch, term.until.into_std()),
            None => fence::release(),
        }
        if term.is_none()
            && let Some(record) = elector.record()
            && !record.control.is_empty()
            && record.control != mirrored
        {
            mirror(&shared, &record.control).await;
            mirrored = record.control.clone();
        }
        publish(
            &shared,
            &elector,
            term.map(|t| t.epoch),
            store_node,
            problem,
        );
        let wait = if nodes.is_empty() {
            Duration::from_secs(3600)
        } else {
            elector.next_step_in(now)
        };
        tokio::select! {
            _ = &mut stopping => break,
            _ = tokio::time::sleep(wait) => {}
            // The nodes became known (or changed): look at once.
            _ = watched.changed(), if nodes.is_empty() => {}
        }
    }
    fence::release();
    // Only where the lease was last kept: stopping forms no swarm.
    if let Some((_, engine)) = placement.found.take() {
        let lease = SwarmLease { engine, name };
        match elector.release(&lease).await {
            Ok(()) => info!("released the --ha lease"),
            Err(e) => {
                warn!(error = %e, "cannot release the --ha lease; a standby takes over when it lapses")
            }
        }
    }
}

/// Tell the status document, and the loop when the role changed.
fn publish(
    shared: &Shared,
    elector: &Elector,
    held: Option<u64>,
    store: Option<String>,
    problem: Option<String>,
) {
    let record = elector.record();
    let holder = record.map(|r| r.holder.clone()).filter(|h| !h.is_empty());
    let status = LeaseStatus {
        role: match (held, &problem, record) {
            (Some(_), _, _) => "leader",
            (None, Some(_), None) => "unknown",
            _ => "standby",
        }
        .into(),
        identity: elector.identity().to_string(),
        epoch: held.or(record.map(|r| r.epoch)).unwrap_or(0),
        leader: holder,
        leader_url: record.map(|r| r.url.clone()).filter(|u| !u.is_empty()),
        store,
        problem,
    };
    let was_leading = shared.leads();
    shared.lease.send_if_modified(|current| {
        let changed = current.as_ref() != Some(&status);
        *current = Some(status.clone());
        changed
    });
    let leads = status.leads();
    if leads != was_leading {
        match leads {
            true => info!(epoch = status.epoch, "this daemon leads now"),
            false => warn!(leader = ?status.leader, "this daemon no longer leads; standing by"),
        }
        // A pass at once: a new leader converges (observing every node
        // afresh); a former one shows it stands by.
        shared.triggers.send(Trigger::Elected);
        shared.changed();
    }
}
