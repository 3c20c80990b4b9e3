//! Planner at scale, in memory: 10,000 services with 3 replicas each (30,000
//! containers) over 1,000 nodes, planned from empty and when converged.
//! Prints the median of 11 runs of each; run under `/usr/bin/time -f %M` for
//! peak memory.
//!
//! `cargo run --release --example bench_plan`
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pier::manifest::Location;
use pier::manifest::model::{Endpoint, Node, Strategy, UpdateConfig};
use pier::plan::{
    self, Desired, DesiredService, NodeObservation, Observed, Options, OwnedContainer,
};

fn desired() -> Desired {
    let nodes: BTreeMap<String, Node> = (0..1000)
        .map(|i| {
            let name = format!("node-{i:04}");
            let tags = [format!("zone-{}", i % 4), "prod".to_string()]
                .into_iter()
                .collect();
            let node = Node {
                name: name.clone(),
                endpoint: Endpoint::Tcp {
                    host: format!("10.0.{}.{}", i / 250, i % 250),
                    port: 2376,
                },
                tags,
                tls: None,
                location: Location::file("nodes.yml"),
            };
            (name, node)
        })
        .collect();
    let services = (0..10_000)
        .map(|i| {
            let name = format!("svc-{i:05}");
            let spec = pier::docker::ContainerSpec {
                image: format!("registry.example.com/app{}@sha256:{:064x}", i % 50, i),
                env: vec![format!("INDEX={i}")],
                restart: ("always".into(), None),
                network: "pier-bench".into(),
                aliases: vec![name.clone()],
                ..Default::default()
            };
            let service = DesiredService {
                hooks: Default::default(),
                lifecycle: Default::default(),
                name: name.clone(),
                hash: plan::spec::spec_hash(&spec),
                spec: Arc::new(spec),
                image_display: "app:1".into(),
                digest: format!("sha256:{i:064x}"),
                replicas: Some(3),
                strategy: if i % 2 == 0 {
                    Strategy::HighAvailability
                } else {
                    Strategy::EmptiestNode
                },
                tags: [format!("zone-{}", i % 4)].into_iter().collect(),
                constraints: vec![],
                update: UpdateConfig::default(),
                sequential: false,
                after: vec![],
                movable: true,
                waits_for: vec![],
                run_to_completion: false,
                awaited: false,
                autodestroy: Default::default(),
                never_pull: false,
                volumes_from: Vec::new(),
                container_name: None,
                routed: false,
                keeps_successor_name: false,
            };
            (name, service)
        })
        .collect();
    Desired {
        stack: "bench".into(),
        commit: "c".into(),
        nodes,
        services,
        frozen: BTreeMap::new(),
        source: Default::default(),
        network: Default::default(),
        networks: Default::default(),
    }
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn time(desired: &Desired, observed: &Observed) -> (Duration, usize) {
    let mut changes = 0;
    let runs = (0..11)
        .map(|_| {
            let started = Instant::now();
            let p = plan::plan(desired, observed, &Options::default());
            changes = p.services.iter().map(|s| s.changes.len()).sum();
            started.elapsed()
        })
        .collect();
    (median(runs), changes)
}

fn main() {
    let desired = desired();
    let empty = Observed {
        nodes: desired
            .nodes
            .keys()
            .map(|n| (n.clone(), NodeObservation::default()))
            .collect(),
    };
    let (from_empty, created) = time(&desired, &empty);
    // Converged: apply the from-empty plan to the observation.
    let first = plan::plan(&desired, &empty, &Options::default());
    let mut converged = empty.clone();
    for service in &first.services {
        let hash = &desired.services[&service.service].hash;
        for change in &service.changes {
            if let plan::Change::Create {
                node,
                replica,
                name,
            } = change
            {
                let o = converged.nodes.get_mut(node).expect("node");
                o.running += 1;
                o.owned.push(OwnedContainer {
                    id: name.clone(),
                    name: name.clone(),
                    service: service.service.clone(),
                    replica: *replica,
                    spec_hash: hash.clone(),
                    image_digest: String::new(),
                    commit: "c".into(),
                    running: true,
                    created: 0,
                    healthy: true,
                    source: Default::default(),
                    exit_code: None,
                    spec_fields: Default::default(),
                    files_hash: None,
                    in_rotation: false,
                    replaces: None,
                });
            }
        }
    }
    let (steady, none) = time(&desired, &converged);
    println!("plan from empty: median {from_empty:?} ({created} creates)");
    println!("plan when converged: median {steady:?} ({none} changes)");
}
