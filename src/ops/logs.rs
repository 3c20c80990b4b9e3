//! `pier logs SERVICE…`: the output of every replica on every node, merged
//! by time and each line marked with the replica it came from; with
//! `--follow`, followed across replacements, and across a node that stops
//! answering (said, then followed again from where it was once it answers).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Reach, Replica, Selection};
use crate::docker::Runtime;
use crate::docker::engine::session::Output;

/// How often a follower lists each node for replicas that came or went.
const LIST_EVERY: Duration = Duration::from_secs(1);

/// One line of a replica's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub at: SystemTime,
    /// The engine's timestamp, as it wrote it (RFC 3339, nanoseconds).
    pub stamp: String,
    /// `service.N@node`.
    pub replica: String,
    pub stderr: bool,
    pub text: String,
}

/// What a follower tells its reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Line(Line),
    /// Something about the following itself: a node gone or back.
    Note(String),
}

/// The lines of one chunk of engine output, each split from the timestamp
/// the engine put first. A line without one takes the time before it.
pub fn lines(replica: &str, output: &Output, mut last: SystemTime) -> Vec<Line> {
    let text = String::from_utf8_lossy(&output.bytes);
    let mut out = Vec::new();
    for raw in text.split_terminator('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let (stamp, rest) = raw.split_once(' ').unwrap_or((raw, ""));
        let (stamp, rest) = match humantime::parse_rfc3339_weak(stamp) {
            Ok(at) => {
                last = at;
                (stamp.to_string(), rest.to_string())
            }
            Err(_) => (String::new(), raw.to_string()),
        };
        out.push(Line {
            at: last,
            stamp,
            replica: replica.to_string(),
            stderr: output.stderr,
            text: rest,
        });
    }
    out
}

/// Lines of several replicas in time order; lines of the same instant
/// keep the order they came in.
pub fn merge(mut lines: Vec<Line>) -> Vec<Line> {
    lines.sort_by_key(|line| line.at);
    lines
}

/// Each replica's log up to now (the last `tail` lines of each, since
/// `since`), merged. A replica whose engine stops sending for the engine
/// timeout is left out, with why.
pub async fn backlog(
    reach: &Reach,
    replicas: &[Replica],
    since: i64,
    tail: Option<usize>,
) -> (Vec<Line>, BTreeMap<String, String>) {
    let reads = replicas.iter().map(|replica| async move {
        let Some(engine) = reach.engine(&replica.node) else {
            return Err((replica.label(), "its node is unreachable".to_string()));
        };
        let mut stream = engine.log_stream(&replica.id, since, tail, false);
        let mut out = Vec::new();
        let mut last = UNIX_EPOCH;
        loop {
            match tokio::time::timeout(reach.timeout, stream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    let read = lines(&replica.label(), &chunk, last);
                    last = read.last().map_or(last, |l| l.at);
                    out.extend(read);
                }
                Ok(None) => return Ok(out),
                Ok(Some(Err(e))) => return Err((replica.label(), e.to_string())),
                Err(_) => {
                    return Err((
                        replica.label(),
                        format!("the engine sent nothing for {:?}", reach.timeout),
                    ));
                }
            }
        }
    });
    let mut all = Vec::new();
    let mut missing = BTreeMap::new();
    for read in futures_util::future::join_all(reads).await {
        match read {
            Ok(lines) => all.extend(lines),
            Err((replica, why)) => {
                missing.insert(replica, why);
            }
        }
    }
    (merge(all), missing)
}

/// What a follower has seen of each container: the time of its last line.
type Seen = Arc<Mutex<HashMap<String, SystemTime>>>;

/// Follow the replicas `selection` means, from where `seen` says each was
/// read up to (a replica not in it: from its start), until `events` is
/// closed. Replicas that start later are followed too.
pub async fn follow(
    reach: Arc<Reach>,
    selection: Selection,
    seen: HashMap<String, SystemTime>,
    events: mpsc::Sender<Event>,
) {
    let seen: Seen = Arc::new(Mutex::new(seen));
    let nodes: Vec<String> = reach
        .engines
        .keys()
        .filter(|n| selection.node.as_ref().is_none_or(|only| only == *n))
        .cloned()
        .collect();
    let watchers = nodes.into_iter().map(|node| {
        let (reach, selection, seen, events) = (
            reach.clone(),
            selection.clone(),
            seen.clone(),
            events.clone(),
        );
        tokio::spawn(async move { follow_node(reach, node, selection, seen, events).await })
    });
    let watchers: Vec<_> = watchers.collect();
    events.closed().await;
    for watcher in watchers {
        watcher.abort();
    }
}

/// Follow one node's replicas: list them every [`LIST_EVERY`], follow each
/// running one not followed yet, and say when the node stops and starts
/// answering (its followers are dropped meanwhile: what the node does then
/// is unknown).
async fn follow_node(
    reach: Arc<Reach>,
    node: String,
    selection: Selection,
    seen: Seen,
    events: mpsc::Sender<Event>,
) {
    let mut followers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut down: Option<String> = None;
    loop {
        let listed = match reach.engine(&node) {
            Some(engine) => tokio::time::timeout(reach.timeout, engine.list())
                .await
                .map_err(|_| format!("no answer within {:?}", reach.timeout))
                .and_then(|r| r.map_err(|e| e.to_string())),
            None => Err("it could not be connected to".to_string()),
        };
        match listed {
            Err(why) => {
                if down.is_none() {
                    let _ = events
                        .send(Event::Note(format!(
                            "node {node} stopped answering ({why}); following it again when it answers"
                        )))
                        .await;
                    for (_, follower) in followers.drain() {
                        follower.abort();
                    }
                }
                down = Some(why);
            }
            Ok(containers) => {
                if down.take().is_some() {
                    let _ = events
                        .send(Event::Note(format!("node {node} answers again")))
                        .await;
                }
                followers.retain(|_, f| !f.is_finished());
                let observation =
                    crate::pass::observe::node_observation(&reach.loaded.stack, &containers);
                let engine = reach.engine(&node).expect("listed").clone();
                for container in observation.owned.iter().filter(|c| {
                    c.running
                        && selection.services.contains(&c.service)
                        && selection.replica.is_none_or(|n| n == c.replica)
                }) {
                    if followers.contains_key(&container.id) {
                        continue;
                    }
                    let replica = Replica::of(&node, container);
                    let (engine, seen, events) = (engine.clone(), seen.clone(), events.clone());
                    followers.insert(
                        container.id.clone(),
                        tokio::spawn(
                            async move { follow_replica(engine, replica, seen, events).await },
                        ),
                    );
                }
            }
        }
        if events.is_closed() {
            break;
        }
        tokio::time::sleep(LIST_EVERY).await;
    }
    for (_, follower) in followers {
        follower.abort();
    }
}

/// Follow one replica's log from the last line seen of it, dropping what
/// was seen already (the engine's `since` counts whole seconds).
async fn follow_replica(
    engine: crate::docker::engine::Engine,
    replica: Replica,
    seen: Seen,
    events: mpsc::Sender<Event>,
) {
    let from = seen.lock().expect("seen lock").get(&replica.id).copied();
    let since = from
        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    let mut stream = engine.log_stream(&replica.id, since, None, true);
    let label = replica.label();
    let mut last = from.unwrap_or(UNIX_EPOCH);
    while let Some(Ok(chunk)) = stream.next().await {
        for line in lines(&label, &chunk, last) {
            last = line.at;
            if from.is_some_and(|seen_at| line.at <= seen_at) {
                continue;
            }
            seen.lock()
                .expect("seen lock")
                .insert(replica.id.clone(), line.at);
            if events.send(Event::Line(line)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str) -> Output {
        Output {
            stderr: false,
            bytes: bytes::Bytes::from(text.to_string()),
        }
    }

    /// The engine's timestamp is taken off each line and read as a time.
    #[test]
    fn lines_are_split_from_their_timestamps() {
        let read = lines(
            "web.1@n1",
            &chunk("2026-12-05T00:00:01.5Z hello\n2026-12-05T00:00:02.000000001Z world\n"),
            UNIX_EPOCH,
        );
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].text, "hello");
        assert_eq!(read[1].stamp, "2026-12-05T00:00:02.000000001Z");
        assert!(read[0].at < read[1].at);
    }

    /// Lines of two replicas come out in time order, whatever order each
    /// replica's lines were read in; equal times keep their order.
    #[test]
    fn replicas_merge_by_time() {
        let mut all = lines(
            "web.1@n1",
            &chunk("2026-12-05T00:00:01Z a1\n2026-12-05T00:00:03Z a3\n"),
            UNIX_EPOCH,
        );
        all.extend(lines(
            "web.2@n2",
            &chunk("2026-12-05T00:00:02Z b2\n2026-12-05T00:00:03Z b3\n"),
            UNIX_EPOCH,
        ));
        let merged: Vec<String> = merge(all).into_iter().map(|l| l.text).collect();
        assert_eq!(merged, ["a1", "b2", "a3", "b3"]);
    }

    /// A line without a timestamp (a terminal's raw output) takes the time
    /// of the line before it.
    #[test]
    fn a_line_without_a_timestamp_takes_the_last_time() {
        let read = lines(
            "web.1@n1",
            &chunk("2026-12-05T00:00:01Z first\nno stamp here\n"),
            UNIX_EPOCH,
        );
        assert_eq!(read[1].text, "no stamp here");
        assert_eq!(read[1].at, read[0].at);
    }
}
