//! Many simulated Docker engines in one process, for the fleet benchmark
//! (`bench/fleet.sh`). Not part of pier: a small in-memory server speaking
//! as much of the Engine API as pier uses (`_ping`, `version`, containers:
//! list, create, start, inspect, stop, rename, remove; image and network
//! inspection, network creation; `events`, held open), one per unix socket.
//!
//!   sim_engines serve DIR N        serve n0001.sock … nNNNN.sock in DIR
//!   sim_engines list DIR N RUNS    baseline: list every engine's containers
//!                                  at once with bollard, RUNS times; prints
//!                                  the median in milliseconds
//!
//! Each request costs a few microseconds: what the benchmark measures is
//! pier, not the engines.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Clone)]
struct Container {
    id: String,
    name: String,
    labels: Value,
    image: String,
    created: u64,
    running: bool,
}

#[derive(Default)]
struct EngineState {
    containers: BTreeMap<String, Container>,
    networks: HashMap<String, String>,
    next_id: u64,
}

type Shared = Arc<Mutex<EngineState>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: sim_engines serve DIR N | list DIR N RUNS";
    let (Some(mode), Some(dir), Some(count)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("N is a number");
    raise_open_files_limit();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    match mode.as_str() {
        "serve" => runtime.block_on(serve(Path::new(dir), count)),
        "list" => {
            let runs: usize = args.get(4).and_then(|r| r.parse().ok()).unwrap_or(7);
            runtime.block_on(list(Path::new(dir), count, runs));
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn socket(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("n{n:04}.sock"))
}

async fn serve(dir: &Path, count: usize) {
    let mut servers = tokio::task::JoinSet::new();
    for n in 1..=count {
        let path = socket(dir, n);
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).expect("bind a socket");
        let state: Shared = Arc::default();
        let app = axum::Router::new().fallback(handle).with_state(state);
        servers.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
    // Tell the benchmark every socket answers.
    std::fs::write(dir.join("ready"), count.to_string()).expect("ready file");
    while servers.join_next().await.is_some() {}
}

async fn list(dir: &Path, count: usize, runs: usize) {
    let mut clients = Vec::new();
    for n in 1..=count {
        let docker = bollard::Docker::connect_with_unix(
            socket(dir, n).to_str().unwrap(),
            60,
            bollard::API_DEFAULT_VERSION,
        )
        .expect("a client");
        clients.push(docker.negotiate_version().await.expect("negotiated"));
    }
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let lists = clients.iter().map(|docker| {
            let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .build();
            docker.list_containers(Some(options))
        });
        let listed = futures_util::future::join_all(lists).await;
        let containers: usize = listed.into_iter().map(|l| l.expect("a list").len()).sum();
        times.push(started.elapsed());
        eprintln!("listed {containers} containers");
    }
    times.sort();
    println!("{}", times[times.len() / 2].as_millis());
}

fn json_response(status: StatusCode, value: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn not_found(what: &str) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({ "message": format!("No such {what}") }),
    )
}

fn query_value(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
    // Paths come versioned (`/v1.41/containers/json`) once negotiated.
    let path = uri.path();
    let path = match path.strip_prefix("/v1.") {
        Some(rest) => rest.split_once('/').map_or("/", |(_, p)| p),
        None => path.trim_start_matches('/'),
    };
    let path = path.trim_start_matches('/');
    let parts: Vec<&str> = path.split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET" | "HEAD", ["_ping"]) => "OK".into_response(),
        ("GET", ["version"]) => json_response(
            StatusCode::OK,
            json!({ "Version": "20.10.24", "ApiVersion": "1.41", "MinAPIVersion": "1.12", "Os": "linux", "Arch": "amd64" }),
        ),
        ("GET", ["events"]) => {
            // Held open and silent: nothing dies in a simulation.
            let stream = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
            Response::new(Body::from_stream(stream))
        }
        ("GET", ["containers", "json"]) => list_containers(&state),
        ("POST", ["containers", "create"]) => {
            create_container(&state, query_value(&uri, "name"), &body)
        }
        ("GET", ["containers", id, "json"]) => inspect_container(&state, id),
        ("POST", ["containers", id, "start"]) => set_running(&state, id, true),
        ("POST", ["containers", id, "stop"]) => set_running(&state, id, false),
        ("POST", ["containers", id, "rename"]) => {
            rename(&state, id, query_value(&uri, "name").unwrap_or_default())
        }
        ("DELETE", ["containers", id]) => {
            let mut engine = state.lock().unwrap();
            let key = find(&engine, id);
            match key {
                Some(key) => {
                    engine.containers.remove(&key);
                    no_content()
                }
                None => not_found("container"),
            }
        }
        ("GET", ["images", ..]) => json_response(
            StatusCode::OK,
            json!({ "Id": "sha256:5b0d59026729b68570d99bc4f3f7c31a2e4f2a5736435641565d93e7c25bd2c3", "RepoTags": [], "RepoDigests": [] }),
        ),
        ("GET", ["networks", name]) => {
            let engine = state.lock().unwrap();
            match engine.networks.get(*name) {
                Some(id) => json_response(StatusCode::OK, json!({ "Name": name, "Id": id })),
                None => not_found("network"),
            }
        }
        ("POST", ["networks", "create"]) => {
            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
            let name = request["Name"].as_str().unwrap_or_default().to_string();
            let mut engine = state.lock().unwrap();
            engine.next_id += 1;
            let id = format!("{:064x}", engine.next_id);
            engine.networks.insert(name, id.clone());
            json_response(StatusCode::CREATED, json!({ "Id": id, "Warning": "" }))
        }
        _ => json_response(
            StatusCode::NOT_IMPLEMENTED,
            json!({ "message": format!("{method} {path} is not simulated") }),
        ),
    }
}

/// A container by id, id prefix or name.
fn find(engine: &EngineState, key: &str) -> Option<String> {
    if engine.containers.contains_key(key) {
        return Some(key.to_string());
    }
    engine
        .containers
        .values()
        .find(|c| c.name == key || c.id.starts_with(key))
        .map(|c| c.id.clone())
}

fn list_containers(state: &Shared) -> Response {
    let engine = state.lock().unwrap();
    let list: Vec<Value> = engine
        .containers
        .values()
        .map(|c| {
            json!({
                "Id": c.id,
                "Names": [format!("/{}", c.name)],
                "Image": c.image,
                "Labels": c.labels,
                "Created": c.created,
                "State": if c.running { "running" } else { "exited" },
                "Status": if c.running { "Up 1 minute" } else { "Exited (0) 1 second ago" },
            })
        })
        .collect();
    json_response(StatusCode::OK, Value::Array(list))
}

fn create_container(state: &Shared, name: Option<String>, body: &[u8]) -> Response {
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let mut engine = state.lock().unwrap();
    let name = name.unwrap_or_default();
    if engine.containers.values().any(|c| c.name == name) {
        return json_response(
            StatusCode::CONFLICT,
            json!({ "message": format!("Conflict. The container name \"/{name}\" is already in use") }),
        );
    }
    engine.next_id += 1;
    let id = format!("{:064x}", engine.next_id);
    engine.containers.insert(
        id.clone(),
        Container {
            id: id.clone(),
            name,
            labels: request["Labels"].clone(),
            image: request["Image"].as_str().unwrap_or_default().to_string(),
            created: now(),
            running: false,
        },
    );
    json_response(StatusCode::CREATED, json!({ "Id": id, "Warnings": [] }))
}

fn inspect_container(state: &Shared, id: &str) -> Response {
    let engine = state.lock().unwrap();
    let Some(container) = find(&engine, id).and_then(|k| engine.containers.get(&k).cloned()) else {
        return not_found("container");
    };
    json_response(
        StatusCode::OK,
        json!({
            "Id": container.id,
            "Name": format!("/{}", container.name),
            "Image": container.image,
            "State": {
                "Status": if container.running { "running" } else { "exited" },
                "Running": container.running,
                "ExitCode": 0,
            },
            "Config": { "Image": container.image, "Labels": container.labels },
            "Mounts": [],
        }),
    )
}

fn set_running(state: &Shared, id: &str, running: bool) -> Response {
    let mut engine = state.lock().unwrap();
    let Some(key) = find(&engine, id) else {
        return not_found("container");
    };
    let container = engine.containers.get_mut(&key).expect("found");
    if container.running == running {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    container.running = running;
    no_content()
}

fn rename(state: &Shared, id: &str, name: String) -> Response {
    let mut engine = state.lock().unwrap();
    if engine.containers.values().any(|c| c.name == name) {
        return json_response(
            StatusCode::CONFLICT,
            json!({ "message": format!("name {name} is already in use") }),
        );
    }
    let Some(key) = find(&engine, id) else {
        return not_found("container");
    };
    engine.containers.get_mut(&key).expect("found").name = name;
    no_content()
}
