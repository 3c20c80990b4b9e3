//! Manifest loading end to end: the real-stackfile corpus, golden messages for
//! each validation rule, reading commits from a real git repository on disk
//! through the `pier` binary, and the committed JSON Schema.

use std::path::Path;
use std::process::Command;

mod support;

#[path = "manifests/cli.rs"]
mod cli;
#[path = "manifests/edits.rs"]
mod edits;
#[path = "manifests/sops.rs"]
mod sops_files;

use pier::manifest::{self, MemoryTree, SourceFile, Vars};
use support::git;

fn check(files: &[(&str, &str)], tree: &MemoryTree) -> Vec<String> {
    let files: Vec<SourceFile> = files
        .iter()
        .map(|(path, text)| SourceFile {
            path: path.to_string(),
            text: text.to_string(),
        })
        .collect();
    let vars = Vars::from([("SECRET".to_string(), "s3cr3t".to_string())]);
    manifest::load_and_validate(&files, &vars, tree)
        .diagnostics
        .iter()
        .map(|d| d.to_string().lines().next().unwrap_or_default().to_string())
        .collect()
}

/// Every real stackfile of the corpus either loads cleanly or fails with the
/// precise, correct errors listed here (and no others).
#[test]
fn tutum_corpus_loads_or_fails_precisely() {
    let expected_errors: &[(&str, &[&str])] = &[
        (
            "APSL__docker-thumbor.yml",
            &[
                "11:16: error: services.thumbor.environment.DETECTORS: expected a string, number or boolean, found a list",
            ],
        ),
        (
            "Grillon__apprensemble_stackfile.yml",
            &["36:7: error: variable TUTUM_CONTAINER_HOSTNAME is not set"],
        ),
        (
            "PurpleBooth__purplebooth-co-uk-v2.yml",
            &["17:3: error: key `links` is written twice in one mapping"],
        ),
        (
            "ShakataGaNai__dockup.yml",
            &[
                "12:7: error: services.dockup.volumes_from[0]: `serviceA` is not a service in the manifests",
                "13:7: error: services.dockup.volumes_from[1]: `serviceB.stack1` names service `serviceB` of another stack, `stack1`, which pier cannot see from these manifests",
            ],
        ),
        (
            "Symplicity__antidote.yml",
            &[
                "68:3: error: services.web.deployment_strategy: an `every_node` service cannot be scaled",
            ],
        ),
        (
            "activefx__docker-rails.yml",
            &[
                "15:8: error: services.web.image: `image` is empty",
                "20:3: error: key `autorestart` is written twice in one mapping",
                "27:5: error: services.web.environment: expected a list of `KEY=VALUE` strings or a mapping of keys to values, found the string \"TUTUM_USER TUTUM_APIKEY\"",
                "30:8: error: services.worker.image: `image` is empty",
                "35:3: error: key `autorestart` is written twice in one mapping",
                "39:5: error: services.worker.environment: expected a list of `KEY=VALUE` strings or a mapping of keys to values, found the string \"TUTUM_USER TUTUM_APIKEY\"",
            ],
        ),
        (
            "alifiratari__docker-bigbluebutton.yml",
            &[
                "33:3: error: services.nginx.volumes: a bind mount of `/var/run/docker.sock` is refused by the default policy",
            ],
        ),
        (
            "amsatique__Trancode-master.yml",
            &["19:5: error: services.back.links: expected a list, found the string \"-bdd\""],
        ),
        (
            "bahmutov__demo-microservices.yml",
            &["4:7: error: services.site.links[0]: `web` is not a service in the manifests"],
        ),
        (
            "blurrcat__daedalus.yml",
            &["22:40: error: variable TUTUM_AUTH is not set"],
        ),
    ];
    check_corpus("tests/fixtures/tutum", 35, expected_errors);
}

/// Load every file of a corpus folder on its own: each either loads with
/// images for all its services, or fails with exactly the listed errors.
/// Every mismatch is reported, not only the first.
fn check_corpus(folder: &str, count: usize, expected_errors: &[(&str, &[&str])]) {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .expect("the corpus folder")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    names.sort();
    assert_eq!(names.len(), count, "the corpus has {count} files");
    let mut mismatches = Vec::new();
    for name in &names {
        let text = std::fs::read_to_string(folder.join(name)).unwrap();
        let loaded = manifest::load_and_validate(
            &[SourceFile {
                path: name.clone(),
                text,
            }],
            &Vars::new(),
            &MemoryTree::default(),
        );
        // As `pier validate` checks a valid commit: against the container
        // policy, here the default one.
        let refused = if loaded.is_valid() {
            pier::policy::Policy::default().check(&loaded)
        } else {
            Vec::new()
        };
        let errors: Vec<String> = loaded
            .diagnostics
            .iter()
            .chain(&refused)
            .filter(|d| d.is_error())
            .map(|d| {
                d.to_string()
                    .lines()
                    .next()
                    .unwrap()
                    .trim_start_matches(&format!("{name}:"))
                    .to_string()
            })
            .collect();
        let expected: Vec<String> = expected_errors
            .iter()
            .find(|(file, _)| file == name)
            .map(|(_, errors)| errors.iter().map(|e| e.to_string()).collect())
            .unwrap_or_default();
        if errors != expected {
            mismatches.push(format!(
                "{name}\n  expected: {expected:#?}\n  got: {errors:#?}"
            ));
        }
        if expected.is_empty() {
            if loaded.manifest.services.is_empty() {
                mismatches.push(format!("{name}: no services loaded"));
            }
            for service in loaded.manifest.services.values() {
                if service.image.is_none() && service.build.is_none() {
                    mismatches.push(format!("{name}: {} has no image", service.name));
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

/// Docker Cloud stackfiles and Compose files from public repositories
/// (tests/fixtures/public/SOURCES.md): each loads, or fails exactly as
/// listed, with an error a user can act on.
#[test]
fn public_compose_and_docker_cloud_files_load_or_fail_precisely() {
    let expected_errors: &[(&str, &[&str])] = &[
        (
            "DD-DeCaF__postgres-backup.yml",
            &[
                "11:7: error: services.pgbkp.links[0]: `service.stack` names service `service` of another stack, `stack`, but pgbkp is on no network shared with other stacks",
            ],
        ),
        (
            "Turistforeningen__Verdandi.yml",
            &[
                "28:7: error: services.verdandi-node-v2.links[0]: `mongo-01.mongo-rs` names service `mongo-01` of another stack, `mongo-rs`, but verdandi-node-v2 is on no network shared with other stacks",
                "29:7: error: services.verdandi-node-v2.links[1]: `mongo-02.mongo-rs` names service `mongo-02` of another stack, `mongo-rs`, but verdandi-node-v2 is on no network shared with other stacks",
                "30:7: error: services.verdandi-node-v2.links[2]: `mongo-03.mongo-rs` names service `mongo-03` of another stack, `mongo-rs`, but verdandi-node-v2 is on no network shared with other stacks",
                "63:7: error: services.verdandi-node-v3.links[0]: `mongo-01.mongo-rs` names service `mongo-01` of another stack, `mongo-rs`, but verdandi-node-v3 is on no network shared with other stacks",
                "64:7: error: services.verdandi-node-v3.links[1]: `mongo-02.mongo-rs` names service `mongo-02` of another stack, `mongo-rs`, but verdandi-node-v3 is on no network shared with other stacks",
                "65:7: error: services.verdandi-node-v3.links[2]: `mongo-03.mongo-rs` names service `mongo-03` of another stack, `mongo-rs`, but verdandi-node-v3 is on no network shared with other stacks",
                "66:7: error: services.verdandi-node-v3.links[3]: `statsd.statsd-librato` names service `statsd` of another stack, `statsd-librato`, but verdandi-node-v3 is on no network shared with other stacks",
            ],
        ),
        (
            "Turistforeningen__dockercloud-haproxy-letsencrypt.yml",
            &[
                "5:7: error: services.haproxy.links[1]: `verdandi-node-v2.verdandi` names service `verdandi-node-v2` of another stack, `verdandi`, but haproxy is on no network shared with other stacks",
                "6:7: error: services.haproxy.links[2]: `www.sherpa` names service `www` of another stack, `sherpa`, but haproxy is on no network shared with other stacks",
                "7:7: error: services.haproxy.links[3]: `facebook-apps.facebook-apps` names service `facebook-apps` of another stack, `facebook-apps`, but haproxy is on no network shared with other stacks",
            ],
        ),
        (
            "docker__awesome-compose__elasticsearch-logstash-kibana.yml",
            &[
                "25:9: error: services.logstash.volumes[0]: relative bind mount `./logstash/pipeline/logstash-nginx.config`",
                "26:9: error: services.logstash.volumes[1]: relative bind mount `./logstash/nginx.log`",
            ],
        ),
        (
            "docker__awesome-compose__nginx-golang-mysql.yml",
            &[
                "3:5: error: services.backend.build: `backend` does not exist in the repository at this commit",
                "4:5: error: services.backend.secrets: `db/password.txt` (secrets `db-password`) does not exist in the repository at this commit",
                "21:5: error: services.db.secrets: `db/password.txt` (secrets `db-password`) does not exist in the repository at this commit",
                "31:5: error: services.proxy.build: `proxy` does not exist in the repository at this commit",
            ],
        ),
        (
            "docker__awesome-compose__plex.yml",
            &["10:9: error: variable PLEX_MEDIA_PATH is not set"],
        ),
        (
            "docker__awesome-compose__postgresql-pgadmin.yml",
            &[
                "6:9: error: variable POSTGRES_USER is not set",
                "7:9: error: variable POSTGRES_PW is not set",
                "8:9: error: variable POSTGRES_DB is not set",
                "17:9: error: variable PGADMIN_MAIL is not set",
                "18:9: error: variable PGADMIN_PW is not set",
            ],
        ),
        (
            "docker__awesome-compose__prometheus-grafana.yml",
            &[
                "11:9: error: services.prometheus.volumes[0]: relative bind mount `./etc/prometheus`",
                "23:9: error: services.grafana.volumes[0]: relative bind mount `./grafana`",
            ],
        ),
        (
            "docker__awesome-compose__react-express-mongodb.yml",
            &[
                "3:7: error: services.frontend.build: `frontend` does not exist in the repository at this commit",
                "7:10: error: services.frontend.volumes[0]: relative bind mount `./frontend`",
                "9:10: error: services.frontend.depends_on.backend: `backend` is not a service in the manifests",
                "14:7: error: services.Backend.build: `backend` does not exist in the repository at this commit",
                "28:10: error: services.db.volumes[0]: relative bind mount `./data`",
            ],
        ),
    ];
    check_corpus("tests/fixtures/public", 20, expected_errors);
}

#[test]
fn golden_messages_for_each_rule() {
    let nodes = "nodes:\n  a: { endpoint: \"tcp://10.0.0.1:2375\", tags: [web] }\n  b: { endpoint: \"unix:///var/run/docker.sock\", tags: [db] }\n";
    let cases: &[(&str, &[&str])] = &[
        (
            "services:\n  web: { image: x, prots: [\"80\"] }\n",
            &["p.yml:2:20: error: services.web: unknown key `prots` in a service"],
        ),
        (
            "services:\n  web: { image: x, devices: [w] }\n",
            &["p.yml:2:30: error: services.web.devices[0]: `w` is not a device mapping"],
        ),
        (
            "services:\n  web: { image: x, secrets: [w] }\n",
            &["p.yml:2:20: error: services.web.secrets: no top-level `secrets` entry `w`"],
        ),
        (
            "services:\n  web: { image: x, network_mode: host, ports: [80], net: host }\n  api: { image: x, links: [web], pid: \"service:web\" }\n",
            &[
                "p.yml:2:40: error: services.web.ports: `ports` with `network_mode: host`",
                "p.yml:3:28: error: services.api.links[0]: `web` runs with `network_mode: host`, off the stack's network: it cannot be reached by name",
                "p.yml:3:39: error: services.api.pid: `pid: service:web` is not supported",
            ],
        ),
        (
            "services:\n  web: { image: x, net: host, ports: [80] }\n  api: { image: x, links: [web] }\n",
            &[
                "p.yml:2:31: error: services.web.ports: `ports` with `net: host`",
                "p.yml:3:28: error: services.api.links[0]: `web` runs with `net: host`, off the stack's network: it cannot be reached by name",
            ],
        ),
        (
            "x-defaults: &defaults\n  restart: sometimes\nservices:\n  a: { <<: *defaults, image: x }\n  b: { <<: *defaults, image: x }\n  c: { image: x, restart: sometimes }\n",
            &[
                "p.yml:2:12: error: services.{a,b}.restart: unknown restart policy `sometimes` (in services a and b, which all take it from here)",
                "p.yml:6:27: error: services.c.restart: unknown restart policy `sometimes`",
            ],
        ),
        (
            "services:\n  web: { image: x, target_num_containers: 2, deploy: { replicas: 3 } }\n",
            &[
                "p.yml:2:20: error: services.web.target_num_containers: `target_num_containers: 2` and `deploy.replicas: 3` disagree",
            ],
        ),
        (
            "services:\n  web: { image: x, restart: always, autorestart: on_failure }\n",
            &["p.yml:2:37: error: services.web.autorestart: `autorestart` and `restart` disagree"],
        ),
        (
            "services:\n  web: { image: x, autorestart: always, autodestroy: always }\n",
            &[
                "p.yml:2:54: error: services.web.autodestroy: `autodestroy` must be `off` when containers always restart",
            ],
        ),
        (
            "services:\n  web: { image: x, deployment_strategy: every_node, target_num_containers: 2 }\n",
            &[
                "p.yml:2:53: error: services.web.deployment_strategy: an `every_node` service cannot be scaled",
            ],
        ),
        (
            "services:\n  a: { image: x, links: [b] }\n  b: { image: x, depends_on: [a] }\n",
            &[
                "p.yml:2:3: error: services.a: services depend on each other in a cycle: a → b → a",
                "p.yml:2:26: warning: services.a.links[0]: a and b may be placed on different nodes, where the stack's bridge network does not reach",
                "p.yml:3:31: warning: services.b.depends_on.a: b and a may be placed on different nodes, where the stack's bridge network does not reach",
            ],
        ),
        (
            "services:\n  a: { image: x, links: [redis] }\n  redi: { image: x }\n",
            &["p.yml:2:26: error: services.a.links[0]: `redis` is not a service in the manifests"],
        ),
        (
            "services:\n  web: { image: x, tags: [gpu] }\n",
            &[
                "p.yml:2:20: warning: services.web.tags: no node matches this service's tags and constraints; it cannot be placed",
            ],
        ),
        (
            "services:\n  web: { image: x, tags: [web], target_num_containers: 2, ports: [\"80:80\"] }\n",
            &[
                "p.yml:2:59: error: services.web.ports: 2 replicas cannot all publish host port 80: only 1 node(s) match",
            ],
        ),
        (
            "services:\n  web: { build: ../outside }\n",
            &["p.yml:2:17: error: services.web.build: `../outside` climbs out of the repository"],
        ),
        (
            "services:\n  web: { build: /abs }\n",
            &["p.yml:2:17: error: services.web.build: `/abs` is an absolute path"],
        ),
        (
            "services:\n  web: { build: link }\n",
            &[
                "p.yml:2:10: error: services.web.build: `link` resolves through a symlink out of the repository",
            ],
        ),
        (
            "services:\n  web: { build: app, env_file: missing.env }\n",
            &[
                "p.yml:2:22: error: services.web.env_file: `missing.env` does not exist in the repository at this commit",
            ],
        ),
        (
            "services:\n  \"bad name\": { image: x }\n",
            &["p.yml:2:3: error: services.bad name: `bad name` cannot be a service name"],
        ),
        (
            "services:\n  web: { image: x, labels: { pier.stack: evil } }\n",
            &[
                "p.yml:2:28: error: services.web.labels: label `pier.stack` uses the reserved prefix `pier.`",
            ],
        ),
        (
            "services:\n  web: { image: x, privileged: true }\n",
            &[
                "p.yml:2:20: notice: services.web.privileged: runs privileged: its containers have full access to the host",
            ],
        ),
        (
            "services:\n  web: { image: \"x:${MISSING:?tag to deploy}\" }\n",
            &["p.yml:2:17: error: required variable MISSING is not set: tag to deploy"],
        ),
        (
            "services:\n  web: { image: x }\n---\nservices:\n  web: { image: y }\n",
            &["p.yml:5:3: error: services.web: service `web` is defined twice"],
        ),
        (
            "services:\n  web: { image: x, ports: [\"99999:80\"] }\n",
            &["p.yml:2:28: error: services.web.ports[0]: not a valid port"],
        ),
        (
            "nodes:\n  c: { endpoint: \"tcp://h:2376\", tls: { key: \"-----BEGIN PRIVATE KEY-----\" } }\n",
            &[
                "p.yml:2:46: error: nodes.c.tls.key: TLS key material must never be in the repository",
            ],
        ),
        (
            "pipeline:\n  runner_tags: [ci]\n  stages:\n    - { name: b, build: [web] }\nservices:\n  web: { image: x }\n",
            &[
                "p.yml:1:1: warning: pipeline.runner_tags: no node carries all of `runner_tags`; the pipeline cannot run",
                "p.yml:1:1: error: pipeline.stages: stage `b` builds `web`, which has no `build:`",
            ],
        ),
        (
            "services:\n  web: { image: x, networks: [front, bak], links: [db] }\n  db: { image: x, networks: { back: { aliases: [\"no way\"] } } }\n  host: { image: x, network_mode: none, networks: [front] }\nnetworks:\n  front: {}\n  back: { internal: true }\n  default: { internal: true }\n  shared: { external: true, driver: overlay }\n  \"bad key\": {}\n",
            &[
                "p.yml:2:20: error: services.web.networks: network `bak` is not declared",
                "p.yml:2:52: error: services.web.links[0]: web links to db, but they share no network, where the link would resolve",
                "p.yml:3:48: error: services.db.networks.back.aliases: `no way` cannot be a network alias",
                "p.yml:4:51: error: services.host.networks: `networks` and `network_mode` exclude each other",
                "p.yml:8:24: error: networks.default.internal: the stack's network `default` takes no `internal`",
                "p.yml:9:11: error: networks.shared: an external network takes no `driver`, `internal` or `driver_opts`",
                "p.yml:10:3: error: networks.bad key: `bad key` cannot name a network",
            ],
        ),
        (
            "services:\n  web: { image: x, route: { host: a.example.com, port: 80 } }\n",
            &[
                "p.yml:2:20: error: services.web.route: service `web` has a `route`, but no `router` is declared",
            ],
        ),
        (
            "router: { tags: [edge] }\nservices:\n  web: { image: x, route: { host: A_b, path: api } }\n",
            &[
                "p.yml:1:1: warning: router.tags: no node carries all of the router's `tags`; no router runs and no route is served",
                "p.yml:1:9: error: router: the router has no `ports`",
                "p.yml:3:27: error: services.web.route: `a_b` is not a host name",
                "p.yml:3:27: error: services.web.route: `route` names no `port`",
                "p.yml:3:46: error: services.web.route.path: `api` is not a path prefix",
            ],
        ),
        (
            "router: { ports: [\"80:80\"] }\nservices:\n  web: { image: x, environment: { VIRTUAL_HOST: \"https://a.example.com\" }, expose: [80] }\n  api: { image: x, environment: { VIRTUAL_HOST: a.example.com } }\n  one: { image: x, route: { host: b.example.com, port: 80 } }\n  two: { image: x, route: { host: b.example.com, port: 80 } }\n",
            &[
                "p.yml:1:1: error: router.ports: a route has `tls: true`, but the router publishes no port to its port 443",
                "p.yml:4:20: error: services.api.environment.VIRTUAL_HOST: VIRTUAL_HOST is set, but service `api` exposes no port to route to",
                "p.yml:6:20: error: services.two.route: services `one` and `two` are both routed for b.example.com",
            ],
        ),
        (
            "router: { ports: [\"80:80\"] }\nservices:\n  web: { image: x, route: { host: a.example.com, port: 80, tls: true } }\n",
            &[
                "p.yml:1:1: error: router.ports: a route has `tls: true`, but the router publishes no port to its port 443",
            ],
        ),
        (
            "router: { ports: [\"80:80\"] }\nservices:\n  web: { image: x, network_mode: none, route: { host: a.example.com, port: 80 } }\n",
            &[
                "p.yml:3:40: error: services.web.route: service `web` is routed, but `network_mode: none` keeps it off the stack's network, where the router reaches replicas",
            ],
        ),
        (
            "router: { ports: [\"80:80\"] }\nservices:\n  pier-router: { image: x }\n",
            &["p.yml:3:3: error: services.pier-router: `pier-router` is the router's service name"],
        ),
        // An unset variable is reported once, where it is written, and the
        // rest is still checked.
        (
            "x-base: &base\n  image: \"app:${TAG}\"\nservices:\n  web: { <<: *base, prots: [80] }\n  api: { <<: *base }\n",
            &[
                "p.yml:2:10: error: variable TAG is not set",
                "p.yml:4:21: error: services.web: unknown key `prots` in a service",
            ],
        ),
        (
            "services:\n  web: { image: x, ports: [\"${PORT}:80\"], links: [nope] }\n",
            &[
                "p.yml:2:28: error: variable PORT is not set",
                "p.yml:2:51: error: services.web.links[0]: `nope` is not a service in the manifests",
            ],
        ),
        (
            "services:\n  web: { image: x, command: \"echo ${DB_PORT_5432_TCP_ADDR}\" }\n",
            &["p.yml:2:29: error: variable DB_PORT_5432_TCP_ADDR is not set"],
        ),
        (
            "services:\n  web: { image: x, environment: [A=1, NOT_SET_ANYWHERE] }\n",
            &[
                "p.yml:2:39: notice: services.web.environment[1]: `NOT_SET_ANYWHERE` is not set in pier's environment, so containers do not get it",
            ],
        ),
        (
            "services:\n  web: { image: x, links: [db, \"db.other:d\"] }\n  db: { image: x }\n",
            &[
                "p.yml:2:28: warning: services.web.links[0]: web and db may be placed on different nodes, where the stack's bridge network does not reach",
                "p.yml:2:32: error: services.web.links[1]: `db.other` names service `db` of another stack, `other`, but web is on no network shared with other stacks",
            ],
        ),
        (
            "services:\n  web: { image: x, links: [\"db.other:d\"], networks: [shared] }\nnetworks:\n  shared: { external: true, name: shared }\n",
            &[],
        ),
        (
            "services:\n  web:\n    image: x\n    depends_on:\n      db: { condition: service_started, restrt: true }\n  db: { image: x }\n",
            &["p.yml:5:49: error: services.web.depends_on.db.restrt: unknown key `restrt`"],
        ),
        (
            "services:\n  web:\n    image: x\n    depends_on:\n      db: { restart: true }\n      ghost: { required: false }\n      gone: { required: true }\n  db: { image: x }\n",
            &[
                "p.yml:5:7: warning: services.web.depends_on.db: web and db may be placed on different nodes, where the stack's bridge network does not reach",
                "p.yml:6:7: warning: services.web.depends_on.ghost: `ghost` is not a service in the manifests; it is `required: false`, so it is ignored",
                "p.yml:7:7: error: services.web.depends_on.gone: `gone` is not a service in the manifests",
            ],
        ),
        (
            "services:\n  \"bad name\":\n    image: x\n",
            &["p.yml:2:3: error: services.bad name: `bad name` cannot be a service name"],
        ),
        (
            "services:\n  web: { image: x, volumes: [\"/a:/a:Z,ro\", \"/b:/b:rw,z\", \"/c:/c:rx\"] }\n",
            &[
                "p.yml:2:58: error: services.web.volumes[2]: unknown mount option `rx` in `/c:/c:rx`",
            ],
        ),
        (
            "services:\n  web: { image: x, volumes: [\"v:/v:z\"] }\nvolumes:\n  v: { labels: { a: b } }\n  w: { external: true, driver_opts: { type: none } }\n",
            &[
                "p.yml:2:20: error: services.web.volumes: volume `v` is declared with `labels` or `driver_opts` and mounted with `z`; the engine cannot do both",
                "p.yml:5:6: error: volumes.w: an external volume takes no `labels` or `driver_opts`",
            ],
        ),
    ];
    let mut tree = MemoryTree::with_files(["app/Dockerfile"]);
    tree.add(
        "link",
        manifest::Entry::Symlink {
            target: "/etc".into(),
        },
    );
    let mut mismatches = Vec::new();
    for (text, expected) in cases {
        let got: Vec<String> = check(&[("n.yml", nodes), ("p.yml", text)], &tree)
            .into_iter()
            .filter(|d| d.starts_with("p.yml"))
            .collect();
        if got != *expected {
            mismatches.push(format!(
                "{text}\n  expected: {expected:#?}\n  got: {got:#?}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

/// The stack has one network: two files declaring it is an error at the
/// second, never the last one silently winning.
#[test]
fn the_stack_network_is_declared_once() {
    let got = check(
        &[
            (
                "a.yml",
                "services:\n  web: { image: x }\nnetworks:\n  default: { driver: overlay }\n",
            ),
            (
                "b.yml",
                "services:\n  api: { image: y }\nnetworks:\n  default: { driver: bridge }\n",
            ),
        ],
        &MemoryTree::default(),
    );
    assert_eq!(
        got,
        ["b.yml:4:3: error: networks.default: `networks.default` is declared twice"]
    );
}

#[test]
fn every_key_form_loads_into_one_model() {
    let text = r#"
x-defaults: &defaults
  restart: unless-stopped
  labels: { team: web }
services:
  web:
    <<: *defaults
    image: "registry.example.com/web:${TAG:-1.0}"
    build: { context: ../app, dockerfile: Dockerfile.prod, args: [VERSION=1] }
    command: sh -c 'echo "hi there"'
    entrypoint: [/bin/tini, --]
    environment: [A=1, SECRET]
    env_file: ../app/.env
    ports: [80, "8080:80", "127.0.0.1:9000-9001:9000-9001/udp", { target: 443, published: 8443 }]
    expose: [3000, "4000/udp"]
    volumes: [data:/data, /srv/conf:/etc/conf:ro, /cache, { type: bind, source: /logs, target: /logs, read_only: true }]
    healthcheck: { test: wget -q -O- localhost, interval: 2s, retries: 3, start_period: 1m30s }
    deploy: { replicas: 3, placement: { constraints: ["node.labels.zone == a", "node.name != b"] }, update_config: { parallelism: 2, order: start-first, delay: 5s } }
    mem_limit: 512m
    cpu_shares: 512
    depends_on: { redis: { condition: service_healthy } }
    links: [redis:cache]
    cap_add: [NET_ADMIN]
    extra_hosts: ["db.local:10.0.0.5"]
    stop_grace_period: 1m
    pull_policy: always
    deployment_strategy: high_availability
    tags: [web]
    autoredeploy: true
    sequential_deployment: true
    x-notes: ignored
  redis:
    image: redis:7
    autorestart: on_failure
"#;
    let tree = MemoryTree::with_files(["app/Dockerfile", "app/.env"]);
    let files = [SourceFile {
        path: "pier/s.yml".into(),
        text: text.into(),
    }];
    let vars = Vars::from([("SECRET".to_string(), "s3cr3t".to_string())]);
    let loaded = manifest::load_and_validate(&files, &vars, &tree);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let web = &loaded.manifest.services["web"];
    assert_eq!(web.image.as_deref(), Some("registry.example.com/web:1.0"));
    assert_eq!(web.build.as_ref().unwrap().context, "app");
    assert_eq!(
        web.command.as_ref().unwrap(),
        &["sh", "-c", "echo \"hi there\""]
    );
    assert_eq!(web.environment["SECRET"].as_deref(), Some("s3cr3t"));
    assert_eq!(web.ports.len(), 4);
    assert_eq!(web.ports[2].published.unwrap().len(), 2);
    assert_eq!(web.volumes.len(), 4);
    assert_eq!(web.restart, manifest::model::Restart::UnlessStopped);
    assert_eq!(web.labels["team"], "web");
    assert_eq!(web.replicas, Some(3));
    assert_eq!(web.constraints.len(), 2);
    assert_eq!(web.update.parallelism, 2);
    assert_eq!(web.mem_limit, Some(512 << 20));
    assert_eq!(web.links[0].alias, "cache");
    assert_eq!(
        web.stop_grace_period,
        Some(std::time::Duration::from_secs(60))
    );
    assert_eq!(web.healthcheck.as_ref().unwrap().test[0], "CMD-SHELL");
    assert_eq!(
        loaded.manifest.services["redis"].restart,
        manifest::model::Restart::OnFailure { max_retries: None }
    );
}

fn pier(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pier"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `include:` brings in a Compose file outside the manifests folder, from
/// the commit: its services join the stack, its paths are relative to its
/// own folder, and its problems are reported in it.
#[test]
fn include_loads_a_compose_file_beside_the_manifests_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    git(root, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(root.join("pier")).unwrap();
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::write(root.join("app/Dockerfile"), "FROM scratch\n").unwrap();
    std::fs::write(
        root.join("compose.yaml"),
        "services:\n  app: { build: ./app, image: registry.example/app }\n  db: { image: postgres, prots: [5432] }\n",
    )
    .unwrap();
    std::fs::write(
        root.join("pier/stack.yml"),
        "include:\n  - ../compose.yaml\n  - stack.yml\nservices:\n  web: { image: nginx, links: [app] }\n",
    )
    .unwrap();
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "include"]);
    let (code, _, stderr) = pier(root, &["validate"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr.lines().next().unwrap_or_default(),
        "compose.yaml:3:26: error: services.db: unknown key `prots` in a service",
        "{stderr}"
    );
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");

    std::fs::write(
        root.join("compose.yaml"),
        "services:\n  app: { build: ./app, image: registry.example/app }\n",
    )
    .unwrap();
    git(root, &["commit", "-q", "-am", "fixed"]);
    let (code, _, stderr) = pier(root, &["validate"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.starts_with("valid: 2 service(s), 0 node(s) in 2 file(s)"),
        "{stderr}"
    );
}

/// An env file the commit names but git cannot read (a damaged object) is
/// an error, never taken for a file that is not there.
#[test]
fn an_unreadable_env_file_is_an_error_not_an_absent_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    git(root, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(root.join("pier")).unwrap();
    std::fs::write(root.join("pier/app.env"), "TOKEN=abc\n").unwrap();
    std::fs::write(
        root.join("pier/app.yml"),
        "services:\n  web: { image: nginx, env_file: app.env }\n",
    )
    .unwrap();
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "env"]);
    let (code, _, stderr) = pier(root, &["validate"]);
    assert_eq!(code, 0, "{stderr}");
    let blob = Command::new("git")
        .args(["rev-parse", "HEAD:pier/app.env"])
        .current_dir(root)
        .output()
        .unwrap();
    let blob = String::from_utf8(blob.stdout).unwrap().trim().to_string();
    std::fs::remove_file(root.join(format!(".git/objects/{}/{}", &blob[..2], &blob[2..]))).unwrap();
    let (code, _, stderr) = pier(root, &["validate"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("pier/app.yml:2:24: error: services.web.env_file: `pier/app.env` cannot be read from git"),
        "{stderr}"
    );
}

/// `validate --ref` reads each commit's tree, never the working directory.
#[test]
fn validate_reads_the_commit_not_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    git(root, &["init", "-q", "-b", "main"]);
    std::fs::create_dir(root.join("pier")).unwrap();
    std::fs::write(
        root.join("pier/app.yml"),
        "services:\n  web: { image: nginx }\n",
    )
    .unwrap();
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "good"]);
    git(root, &["tag", "good"]);
    std::fs::write(
        root.join("pier/app.yml"),
        "services:\n  web: { image: nginx, prots: [80] }\n",
    )
    .unwrap();
    git(root, &["commit", "-q", "-am", "bad"]);
    // The working directory is broken in a third way, which must never be seen.
    std::fs::write(root.join("pier/app.yml"), "services: [").unwrap();

    let (code, _, stderr) = pier(root, &["validate", "--ref", "good"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.starts_with("valid: 1 service(s)"), "{stderr}");

    let (code, _, stderr) = pier(root, &["validate"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("pier/app.yml:2:24: error: services.web: unknown key `prots` in a service"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("unclosed"),
        "the working directory is not read: {stderr}"
    );

    let (code, stdout, _) = pier(root, &["validate", "--ref", "main", "-o", "json"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["files"][0], "pier/app.yml");
    assert_eq!(report["diagnostics"][0]["line"], 2);
    assert_eq!(report["diagnostics"][0]["help"], "did you mean `ports`?");

    let (code, _, stderr) = pier(root, &["validate", "--path", "deploy"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("has no folder `deploy`"), "{stderr}");
}

#[test]
fn committed_json_schema_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/pier.schema.json");
    let generated = manifest::json_schema();
    if std::env::var_os("PIER_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "manifests/pier.schema.json is out of date: run `PIER_UPDATE_SCHEMA=1 cargo test --test manifests committed_json_schema` and commit it"
    );
}

/// The reference in docs/manifests.md names every key the loader knows.
#[test]
fn reference_documents_every_key() {
    use pier::manifest::keys;
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/manifests.md"))
            .unwrap();
    let known = keys::SERVICE_KEYS
        .iter()
        .chain(keys::NODE_KEYS.iter())
        .chain(keys::PIPELINE_KEYS.iter())
        .chain(keys::FILE_KEYS.iter())
        .map(String::as_str)
        .chain(keys::UNSUPPORTED_SERVICE_KEYS.iter().map(|(k, _)| *k))
        .chain(keys::UNSUPPORTED_FILE_KEYS.iter().map(|(k, _)| *k));
    let missing: Vec<&str> = known
        .filter(|key| !doc.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/manifests.md does not mention: {missing:?}"
    );
}

/// The "Not supported" table in docs/manifests.md is the loader's own list.
/// `PIER_UPDATE_DOCS=1` rewrites it.
#[test]
fn unsupported_keys_table_is_generated_from_the_code() {
    use pier::manifest::keys;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/manifests.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (start, end) = ("<!-- unsupported:start -->\n", "<!-- unsupported:end -->");
    let from = doc.find(start).expect("the start marker") + start.len();
    let to = doc.find(end).expect("the end marker");
    let mut table = String::from("| where | key | why |\n|---|---|---|\n");
    for (place, list) in [
        ("service", keys::UNSUPPORTED_SERVICE_KEYS),
        ("top level", keys::UNSUPPORTED_FILE_KEYS),
    ] {
        for (key, why) in list {
            table.push_str(&format!(
                "| {place} | `{key}` | {} |\n",
                why.replace('|', "\\|")
            ));
        }
    }
    if std::env::var_os("PIER_UPDATE_DOCS").is_some() {
        std::fs::write(&path, format!("{}{table}{}", &doc[..from], &doc[to..])).unwrap();
        return;
    }
    assert_eq!(
        &doc[from..to],
        table,
        "docs/manifests.md's unsupported table is stale: run PIER_UPDATE_DOCS=1 cargo test --test manifests unsupported_keys_table"
    );
}

/// Every key in the services table of docs/manifests.md is one the loader
/// accepts, and every accepted service key has its row.
#[test]
fn services_table_rows_are_the_accepted_keys() {
    use pier::manifest::keys;
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/manifests.md"))
            .unwrap();
    let section = &doc[doc.find("## `services`").unwrap()..doc.find("### Not supported").unwrap()];
    let mut rows = std::collections::BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or("");
        for key in first.split('`').skip(1).step_by(2) {
            rows.insert(key.split('.').next().unwrap().to_string());
        }
    }
    let accepted: std::collections::BTreeSet<String> = keys::SERVICE_KEYS.iter().cloned().collect();
    let undocumented: Vec<_> = accepted.difference(&rows).collect();
    let unknown: Vec<_> = rows.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "rows missing for {undocumented:?}; rows for keys the loader refuses: {unknown:?}"
    );
}

/// More than 10,000 services across files: one error, at the first one over.
#[test]
fn the_service_limit_counts_across_files() {
    let file = |from: usize, to: usize| {
        let mut text = String::from("services:\n");
        for n in from..to {
            text.push_str(&format!("  s{n}: {{ image: x }}\n"));
        }
        text
    };
    let files = [
        SourceFile {
            path: "pier/a.yml".into(),
            text: file(0, 6000),
        },
        SourceFile {
            path: "pier/b.yml".into(),
            text: file(6000, 10_002),
        },
    ];
    let loaded = manifest::load::load(&files, &Vars::new());
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("pier/b.yml:4002:3: error: more than 10000 services"),
        "{errors:?}"
    );
    assert_eq!(loaded.manifest.services.len(), 10_000);
}

/// A malformed env file is an error at its own file and line, read from the
/// commit.
#[test]
fn a_malformed_env_file_is_an_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    git(root, &["init", "-q", "-b", "main"]);
    std::fs::create_dir(root.join("pier")).unwrap();
    std::fs::write(
        root.join("pier/app.yml"),
        "services:\n  web: { image: nginx, env_file: app.env }\n",
    )
    .unwrap();
    std::fs::write(root.join("pier/app.env"), "A=1\noops\n").unwrap();
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "bad env file"]);
    let (code, _, stderr) = pier(root, &["validate"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "pier/app.env:2:1: error: services.web.env_file: env file of service `web`: `oops` is not KEY=VALUE"
        ),
        "{stderr}"
    );
}

/// `<folder>/.env` at the commit gives variables to interpolate, as in
/// Compose; the environment wins over it, and a malformed line is an error
/// at `.env`'s own line.
#[test]
fn dot_env_gives_variables_and_the_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    git(root, &["init", "-q", "-b", "main"]);
    std::fs::create_dir(root.join("pier")).unwrap();
    std::fs::write(
        root.join("pier/app.yml"),
        "services:\n  web: { image: \"${IMAGE:?set IMAGE}\", target_num_containers: \"${REPLICAS}\" }\n",
    )
    .unwrap();
    std::fs::write(
        root.join("pier/.env"),
        "# defaults\nIMAGE=nginx:1.27\nREPLICAS=two\n",
    )
    .unwrap();
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "with .env"]);
    let validate = |env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pier"))
            .args(["validate"])
            .current_dir(root)
            .env_remove("IMAGE")
            .env_remove("REPLICAS")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = validate(&[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        !stderr.contains("set IMAGE"),
        "IMAGE comes from .env: {stderr}"
    );
    assert!(
        stderr.contains("target_num_containers"),
        "REPLICAS=two from .env: {stderr}"
    );
    let (code, stderr) = validate(&[("REPLICAS", "2")]);
    assert_eq!(code, 0, "the environment wins: {stderr}");

    std::fs::write(root.join("pier/.env"), "IMAGE=nginx\nnot a pair\n").unwrap();
    git(root, &["commit", "-q", "-am", "broken .env"]);
    let (code, stderr) = validate(&[("REPLICAS", "2")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("pier/.env:2:1: error: `not a pair` is not KEY=VALUE"),
        "{stderr}"
    );
}

/// Tutum's `net: bridge` is the default and accepted; `host` is the same
/// setting as `network_mode: host`, which the container policy governs;
/// an unknown mode is an error naming it.
#[test]
fn tutum_net_bridge_is_accepted_and_other_modes_refused() {
    let tree = MemoryTree::default();
    assert_eq!(
        check(
            &[("a.yml", "services:\n  web: { image: nginx, net: bridge }\n")],
            &tree
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        check(
            &[(
                "a.yml",
                "services:\n  web: { image: nginx, net: overlay }\n"
            )],
            &tree
        ),
        ["a.yml:2:29: error: services.web.net: unknown network mode `overlay`"]
    );
}

/// `pier validate --policy` refuses a host resource in every spelling we
/// know of, each at its file:line:col with the rule: a volume bound to the
/// host root through `driver_opts`, a raw disk, a `/proc/<pid>/root` bind,
/// the containerd socket, the engine's own networks under any key, an
/// external volume of another stack, and a node whose name only starts
/// like an allowed address.
#[test]
fn validate_with_a_policy_refuses_every_spelling_of_a_host_resource() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    git(root, &["init", "-q", "-b", "main"]);
    std::fs::create_dir(root.join("pier")).unwrap();
    let manifest = "\
nodes:
  good: { endpoint: \"tcp://10.0.0.5:2376\" }
  evil: { endpoint: \"tcp://10.0.0.5.evil.example:2376\" }
services:
  app:
    image: nginx
    networks: [hostnet, shared]
    volumes:
      - rootfs:/host
      - disk:/disk
      - other:/other
      - /proc/1/root/etc:/etc-of-host
      - /run/containerd/containerd.sock:/c.sock
      - /srv/app:/data
volumes:
  rootfs:
    driver_opts: { type: none, o: bind, device: / }
  disk:
    driver_opts: { type: ext4, device: /dev/sdb1 }
  other:
    external: true
    name: billing_db
networks:
  hostnet:
    name: host
  shared:
    external: true
    name: bridge
";
    std::fs::write(root.join("pier/app.yml"), manifest).unwrap();
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "spellings"]);
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "bind_mounts: [/srv]\nnode_endpoints: [\"tcp://10.0.0.*\"]\n",
    )
    .unwrap();
    let (code, _, stderr) = pier(root, &["validate", "--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    // Each line is written once as such: the top-level declarations at
    // two spaces, the service's `volumes` at four.
    let line_of = |line: &str| manifest.lines().position(|l| l == line).unwrap() + 1;
    for (at, refused, rule) in [
        (
            "  evil: { endpoint: \"tcp://10.0.0.5.evil.example:2376\" }",
            "node `evil`",
            "node_endpoints: [tcp://10.0.0.*]",
        ),
        (
            "  rootfs:",
            "a bind mount of `/` (driver_opts)",
            "bind_mounts names `/` itself",
        ),
        (
            "  disk:",
            "a volume of type `ext4`",
            "volume_types: [] (none)",
        ),
        ("  disk:", "host device `/dev/sdb1`", "devices: [] (none)"),
        (
            "  other:",
            "external volume `billing_db`",
            "external_volumes: [] (none)",
        ),
        (
            "  hostnet:",
            "the engine's network `host`",
            "external_networks must name `host`",
        ),
        (
            "  shared:",
            "the engine's network `bridge`",
            "external_networks must name `bridge`",
        ),
        (
            "    volumes:",
            "a bind mount of `/proc/1/root/etc`",
            "`/etc` controls the host",
        ),
        (
            "    volumes:",
            "a bind mount of `/run/containerd/containerd.sock`",
            "controls the host",
        ),
    ] {
        let line = line_of(at);
        let found = stderr
            .lines()
            .skip_while(|l| {
                !(l.starts_with(&format!("pier/app.yml:{line}:")) && l.contains(refused))
            })
            .take(3)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            found.contains(rule),
            "{refused} at line {line} ({rule}):\n{stderr}"
        );
    }
    assert!(!stderr.contains("node `good`"), "{stderr}");
    assert!(!stderr.contains("`/srv/app`"), "{stderr}");
}

/// A commit cannot make pier read more than it bounds: a 32 MiB blob (a
/// few KiB compressed) under 16 manifest names is refused by its size, from
/// its header, each name at its file; an env file past the per-file bound
/// is refused where the service names it.
#[test]
fn a_commit_of_huge_files_is_refused_by_their_size() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    git(root, &["init", "-q", "-b", "main"]);
    std::fs::create_dir(root.join("pier")).unwrap();
    std::fs::write(
        root.join("pier/app.yml"),
        "services:\n  web: { image: nginx, env_file: ../big.env }\n",
    )
    .unwrap();
    let huge = vec![b'#'; 32 << 20];
    for n in 0..16 {
        std::fs::write(root.join(format!("pier/huge-{n:02}.yml")), &huge).unwrap();
    }
    let mut env = b"A=1\n".to_vec();
    env.resize(5 << 20, b'#');
    std::fs::write(root.join("big.env"), &env).unwrap();
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "huge"]);

    let (code, _, stderr) = pier(root, &["validate"]);
    assert_eq!(code, 1, "{stderr}");
    for n in 0..16 {
        assert!(
            stderr.contains(&format!(
                "pier/huge-{n:02}.yml: error: `pier/huge-{n:02}.yml` is 33554432 bytes; pier reads files of up to 4 MiB"
            )),
            "{n}: {stderr}"
        );
    }
    assert!(
        stderr.contains("`big.env` is 5242880 bytes; pier reads files of up to 4 MiB"),
        "{stderr}"
    );
}

/// A node that runs pipeline stages over plain tcp:// is warned about, at
/// the node; one with TLS, or one that runs no stage, is not.
#[test]
fn a_runner_node_over_plain_tcp_is_warned_about() {
    let text = "nodes:\n  ci: { endpoint: \"tcp://10.0.0.5:2375\", tags: [ci] }\n  secure: { endpoint: \"tcp://10.0.0.6:2376\", tags: [ci], tls: { ca: /c/ca.pem, cert: /c/cert.pem, key: /c/key.pem } }\n  web: { endpoint: \"tcp://10.0.0.7:2375\", tags: [web] }\npipeline:\n  runner_tags: [ci]\n  stages:\n    - { name: test, image: x, script: [\"true\"] }\n";
    let found = check(&[("p.yml", text)], &MemoryTree::default());
    let warnings: Vec<&String> = found.iter().filter(|d| d.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{found:#?}");
    assert!(
        warnings[0]
            .starts_with("p.yml:2:3: warning: nodes.ci.endpoint: node `ci` runs pipeline stages")
            && warnings[0].contains("without TLS"),
        "{found:#?}"
    );
}
