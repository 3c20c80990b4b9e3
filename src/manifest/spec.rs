//! The manifest format as written: serde types that accept every form a
//! Compose file or a Tutum stackfile may use (a string or a list, a list of
//! `K=V` or a mapping, short or long port syntax...).
//!
//! These types are the source of the JSON Schema (`manifests/pier.schema.json`).
//! The loader checks keys itself before typing, so it can name unsupported and
//! misspelt keys precisely; `deny_unknown_fields` catches the nested ones.
//! [`super::model`] turns them into one normalised form.
//!
//! Longer than the 700 lines a file is kept to, on purpose: it is a table
//! of the accepted forms with their documentation and no logic, and the
//! schema is read from it whole.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One manifest file in pier's format (also a Compose file's `services:`).
/// A Tutum stackfile, with services at the top level, is accepted as well.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "pier manifest",
    extend("patternProperties" = { "^x-": {} })
)]
pub struct FileSpec {
    /// Accepted for Compose compatibility and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Scalar>,
    /// Docker hosts pier deploys to, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<BTreeMap<String, NodeSpec>>,
    /// Services (containers) to run, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<BTreeMap<String, ServiceSpec>>,
    /// Stages run for every new commit before it is deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineSpec>,
    /// Named volumes (Compose). Docker creates named volumes on first use;
    /// declaring them is accepted, driver options are not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Option<VolumeDeclSpec>>>,
    /// The stack's network: only `default` (its driver, `bridge` or
    /// `overlay` across hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<BTreeMap<String, Option<NetworkDeclSpec>>>,
    /// More manifest files, by path from this one, inside the repository
    /// (Compose's `include`, short form or `{path}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<IncludeSpec>>,
    /// The HTTP router: a proxy on each node carrying `tags`, sending
    /// requests for each service's `route` to its replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterSpec>,
    /// Files services may have written into their containers (Compose),
    /// by name: from a `file` in the repository, `content`, or a variable
    /// of pier's `environment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configs: Option<BTreeMap<String, ProvidedSpec>>,
    /// Like `configs`, for secrets: written with mode 0444 under
    /// `/run/secrets/` by default, never shown in a plan or a log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, ProvidedSpec>>,
}

/// A top-level `configs` or `secrets` entry: where its contents come from
/// (exactly one of `file`, `content`, `environment`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvidedSpec {
    /// A file in the repository, relative to the manifest file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The contents, written inline (interpolated like the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The name of a variable of pier's environment (admitted by `--allow-env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Swarm's: refused, with what to use instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<bool>,
}

/// A service's `configs` or `secrets` entry: a name, or `{source, target,
/// uid, gid, mode}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a name, or a mapping with `source` (and `target`, `uid`, `gid`, `mode`)"
)]
pub enum ProvidedRefSpec {
    Short(String),
    Long(ProvidedRefLongSpec),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvidedRefLongSpec {
    /// The top-level entry's name.
    pub source: String,
    /// Where in the container (a secret's may be a name under `/run/secrets/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Owner's user id (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<Scalar>,
    /// Owner's group id (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<Scalar>,
    /// Permissions, octal (`"0440"` or `0440`; default `0444`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Scalar>,
}

/// The top-level `router`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    /// A node must carry every one of these tags to run a router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Host ports the router listens on, published to its port 80
    /// (`"80:80"`, `"8080:80"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortSpec>>,
    /// The Caddy image to run (default `caddy:2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How long a request waits for a replica to answer, trying them in
    /// turn (default `10s`): covers a replica being replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_for: Option<String>,
    /// Certificates for the HTTPS routes from an ACME CA (Let's Encrypt by
    /// default), obtained and renewed by the router, instead of the files
    /// `PIER_ROUTER_TLS` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeSpec>,
}

/// The router's `acme`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcmeSpec {
    /// The ACME account's contact address: the CA writes there about
    /// certificates that are about to expire.
    pub email: String,
    /// The CA's ACME directory (default: Let's Encrypt's,
    /// `https://acme-v02.api.letsencrypt.org/directory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// A service's `route`: requests the router sends to its replicas.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The host name requests are for (`app.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// More host names for the same route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Only requests under this path prefix (`/api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The replicas' port that serves HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Serve the hosts over HTTPS on the router's port 443, with the
    /// certificate in the folder `PIER_ROUTER_TLS` names (`cert.pem`,
    /// `key.pem`), or from the CA of `router.acme`; plain HTTP requests
    /// are redirected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
}

/// A top-level network declaration.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkDeclSpec {
    /// `bridge` (default: one network per node) or `overlay` (one network
    /// across the nodes, through a Docker Swarm pier forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// No route out: its containers reach only each other (a named
    /// network; not `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal: Option<bool>,
    /// Made outside pier: used by its own name (or `name`), never created
    /// (a named network; not `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<bool>,
    /// The network's name on the engines, instead of `pier-<stack>_<key>`
    /// (a named network; not `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Overlay networks pier makes are always attachable; `false` is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachable: Option<bool>,
    /// `encrypted` (overlay only): IPsec between hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_opts: Option<BTreeMap<String, Scalar>>,
}

/// One `include:` entry.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum IncludeSpec {
    Path(String),
    Long {
        /// A path, or several.
        path: StringOrList,
    },
}

/// A top-level named volume declaration.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeDeclSpec {
    /// Only `local` (the default) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Created outside pier: it must exist on the node, and is used by its
    /// own name (or `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<bool>,
    /// The volume's name on the engine, instead of `<stack>_<key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels the volume is created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, Scalar>>,
    /// Options of the `local` driver the volume is created with
    /// (`type`, `device`, `o`, as for `mount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_opts: Option<BTreeMap<String, Scalar>>,
}

/// A scalar that YAML may have typed as a string, number or boolean.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged, expecting = "a string, number or boolean")]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Str(s) => f.write_str(s),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A service's `networks`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a list of network names, or a mapping of network names to their settings"
)]
pub enum ServiceNetworksSpec {
    List(Vec<String>),
    Map(BTreeMap<String, Option<ServiceNetworkSpec>>),
}

/// How a service joins one network.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceNetworkSpec {
    /// More names its replicas answer to on this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// `KEY=VALUE` strings, or a mapping of keys to values.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum KeyValues {
    List(Vec<String>),
    Map(BTreeMap<String, Option<Scalar>>),
}

// Written out (not `untagged`) so an error inside names the exact entry.
impl<'de> Deserialize<'de> for KeyValues {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyValuesVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyValuesVisitor {
            type Value = KeyValues;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of `KEY=VALUE` strings or a mapping of keys to values")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<KeyValues, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(KeyValues::List(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<KeyValues, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    entries.insert(key, map.next_value::<Option<Scalar>>()?);
                }
                Ok(KeyValues::Map(entries))
            }
        }
        deserializer.deserialize_any(KeyValuesVisitor)
    }
}

/// A service: one or more containers from one image.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Image reference, `name[:tag]` or `name@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Build context in the repository (a path, or a mapping with `context`, `dockerfile`, `args`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSpec>,
    /// Overrides the image's command: a string (split like a shell) or a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<StringOrList>,
    /// Overrides the image's entrypoint: a string (split like a shell) or a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<StringOrList>,
    /// Environment variables: `KEY=VALUE` list or mapping. A key without a value takes pier's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<KeyValues>,
    /// Files in the repository with `KEY=VALUE` lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<StringOrList>,
    /// Published ports: `"[IP:][HOST:]CONTAINER[/PROTO]"` (ranges allowed) or the long form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortSpec>>,
    /// Ports exposed to linked containers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Vec<Scalar>>,
    /// `[SOURCE:]TARGET[:ro|rw]` or the long form; a source is a named volume or a host path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<VolumeSpec>>,
    /// Container labels. Keys starting with `pier.` are reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<KeyValues>,
    /// Run with extended privileges (reported as a notice by `pier validate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// Compose restart policy: `no`, `always`, `on-failure[:N]`, `unless-stopped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// Container health check, as in Compose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthcheckSpec>,
    /// Compose `deploy`: `replicas`, `placement.constraints`, `update_config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeploySpec>,
    /// Memory limit: bytes, or a number with `b`, `k`, `m` or `g`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_limit: Option<Scalar>,
    /// Relative CPU weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u32>,
    /// CPUs the container may use, e.g. `0.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Scalar>,
    /// CFS quota in microseconds per `cpu_period`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_period: Option<i64>,
    /// CPUs the container may run on, e.g. `0-1` or `0,2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<Scalar>,
    /// Memory soft limit: bytes, or a number with `b`, `k`, `m` or `g`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_reservation: Option<Scalar>,
    /// Memory plus swap limit: bytes, a number with `b`, `k`, `m` or `g`, or `-1` (unlimited swap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memswap_limit: Option<Scalar>,
    /// Preference for the kernel's OOM killer, -1000 to 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i64>,
    /// Services to start first: a list, or a mapping with `condition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<DependsOnSpec>,
    /// `SERVICE[:ALIAS]`: reach another service by name (implies start order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_add: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_drop: Option<Vec<String>>,
    /// `SERVICE[:ro|rw]`: mount the volumes of another service's containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes_from: Option<Vec<String>>,
    /// Run an init process (tini) as PID 1, which reaps zombies and forwards signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// The platform to pull and run (`os/arch[/variant]`, e.g. `linux/arm64`);
    /// a node of another one is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Mount the container's root filesystem read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Allocate a pseudo-terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    /// Keep standard input open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_open: Option<bool>,
    /// The signal that stops the container, e.g. `SIGINT` (default: the image's, else SIGTERM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Size of `/dev/shm`: bytes, or a number with `b`, `k`, `m` or `g`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<Scalar>,
    /// DNS servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<StringOrList>,
    /// DNS search domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_search: Option<StringOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// Kernel parameters: `KEY=VALUE` list or mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysctls: Option<KeyValues>,
    /// `PATH[:OPTIONS]`: tmpfs mounts, e.g. `/run:size=64m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<StringOrList>,
    /// The container's name, for a service of one replica (default
    /// `<stack>-<service>-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// The networks the service joins: names declared under the top-level
    /// `networks` (`default` is the stack's own), as a list, or a mapping
    /// to each network's `aliases`. Absent: the stack's network alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<ServiceNetworksSpec>,
    /// Tutum's spelling of `network_mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
    /// `bridge` (the default: the stack's network), `none`, or `host` when
    /// the container policy allows host namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    /// `host` when the container policy allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// `private`, `shareable`, `none`, or `host` when the container policy allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    /// Host devices, `HOST[:CONTAINER[:PERMISSIONS]]`, when the container
    /// policy allows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    /// `no-new-privileges:true`; other options when the container policy
    /// allows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_opt: Option<Vec<String>>,
    /// Resource limits by name (`nofile`, `nproc`, …): a number, or `{soft, hard}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ulimits: Option<BTreeMap<String, UlimitSpec>>,
    /// The container's log driver and its options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingSpec>,
    /// Compose v1 / Tutum spelling of `logging.driver`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<String>,
    /// Compose v1 / Tutum spelling of `logging.options`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_opt: Option<BTreeMap<String, Scalar>>,
    /// Extra groups for the container's user, by name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_add: Option<Vec<Scalar>>,
    /// `HOST:IP` list or `HOST: IP` mapping, added to `/etc/hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_hosts: Option<KeyValues>,
    /// Time to wait after SIGTERM before SIGKILL, e.g. `10s`, `1m30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<String>,
    /// `always`, `missing` (default), `never`, `build`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<String>,
    /// Tutum: number of containers (same as `deploy.replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_num_containers: Option<u32>,
    /// Tutum: `emptiest_node` (default), `high_availability` or `every_node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_strategy: Option<String>,
    /// Tutum: a node must carry all of these tags to run the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Requests the top-level `router` sends to this service's replicas:
    /// `host` (or `hosts`), optional `path` prefix, and the replicas' `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteSpec>,
    /// Tutum: redeploy when the image tag gets a new digest in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoredeploy: Option<bool>,
    /// Compose: files written into the container before it starts, from the
    /// top-level `configs` (default target `/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configs: Option<Vec<ProvidedRefSpec>>,
    /// Compose: like `configs`, from the top-level `secrets` (default
    /// target `/run/secrets/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<ProvidedRefSpec>>,
    /// Compose: commands run in each new container right after it starts,
    /// in order; one that fails fails the replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<Vec<LifecycleHookSpec>>,
    /// Compose: commands run in a container before it is stopped, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<Vec<LifecycleHookSpec>>,
    /// Commands run once per new revision of the service, each in a one-off
    /// container of the new spec: `pre_deploy` before its first replica is
    /// replaced (a failure stops the rollout), `post_deploy` after the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HooksSpec>,
    /// Tutum: `off`, `on_failure` or `always` (same as `restart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autorestart: Option<String>,
    /// Tutum: remove containers that stop: `no` (default), `on-success`, `always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autodestroy: Option<String>,
    /// Tutum: replace containers one at a time, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential_deployment: Option<bool>,
    /// Tutum: API roles for the container. Accepted with a warning; it has no effect in pier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

/// One of Compose's `post_start` or `pre_stop` commands.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LifecycleHookSpec {
    /// The command: a string (split like a shell) or a list.
    pub command: StringOrList,
    /// The user it runs as (default: the container's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Run it privileged (the container policy must allow `privileged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// The folder it runs in (default: the container's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// More environment for it: `KEY=VALUE` list or mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<KeyValues>,
}

/// A service's `hooks`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HooksSpec {
    /// Run before the first replica of a new revision is created or
    /// replaced; if it fails, nothing is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_deploy: Option<HookSpec>,
    /// Run once every replica of a new revision runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_deploy: Option<HookSpec>,
}

/// One deploy hook.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookSpec {
    /// The command: a string (split like a shell) or a list.
    pub command: StringOrList,
    /// How long it may run (default `5m`), e.g. `30s`, `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The node it runs on (default: the first node the rollout changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `post_deploy` only: `alert` (the default, and the only one): a
    /// failure is reported and notified, and the rollout stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
}

/// `build:` as a path or a mapping.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a path or a mapping with `context`, `dockerfile`, `args`"
)]
pub enum BuildSpec {
    Context(String),
    Full(BuildMapSpec),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildMapSpec {
    /// Path of the build context in the repository (default `.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Dockerfile path inside the context (default `Dockerfile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// Build arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<KeyValues>,
}

/// A published port in short (`"8080:80/tcp"`, `80`) or long form.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a port like `80`, `\"8080:80\"`, `\"127.0.0.1:8080:80/udp\"`, or a mapping with `target`"
)]
pub enum PortSpec {
    Number(u32),
    Short(String),
    Long(PortLongSpec),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortLongSpec {
    /// Container port.
    pub target: u32,
    /// Host port or range (`"8000-8010"`); empty lets the engine choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<Scalar>,
    /// `tcp` (default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Host address to bind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Only `host` (the default without Swarm) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A volume mount in short or long form.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a mount like `data:/data`, `./conf:/etc/app:ro`, or a mapping with `target`"
)]
pub enum VolumeSpec {
    Short(String),
    Long(VolumeLongSpec),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeLongSpec {
    /// `volume` (default when a source is a name) or `bind`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// Compose health check.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthcheckSpec {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]`, `["NONE"]` or a shell string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<StringOrList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<String>,
    /// Turn off the image's health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable: Option<bool>,
}

/// The parts of Compose `deploy` that mean something on plain Docker hosts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    /// Number of containers (same as `target_num_containers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfigSpec>,
    /// `limits` (`cpus`, `memory`, `pids`) and `reservations` (`memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    /// `condition` (`none`, `on-failure`, `any`) and `max_attempts`: the
    /// restart policy, as Compose maps it outside Swarm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicySpec>,
}

/// One ulimit: the same soft and hard value, or both.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged, expecting = "a number, or a mapping with `soft` and `hard`")]
pub enum UlimitSpec {
    Both(i64),
    Pair { soft: i64, hard: i64 },
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingSpec {
    /// e.g. `json-file`, `local`, `journald`, `syslog`, `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, Scalar>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservations: Option<ReservationsSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// CPUs, e.g. `0.5` (as `cpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Scalar>,
    /// Bytes, or a number with `b`, `k`, `m` or `g` (as `mem_limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Scalar>,
    /// Most processes the container may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationsSpec {
    /// Bytes, or a number with `b`, `k`, `m` or `g` (as `mem_reservation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicySpec {
    /// `none`, `on-failure` or `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Restarts before giving up (with `on-failure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementSpec {
    /// `node.labels.KEY == VALUE` (a node tag `KEY=VALUE`), `node.tags == TAG`,
    /// `node.name == NAME`, or the same with `!=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfigSpec {
    /// Containers replaced at a time (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// Pause between batches, e.g. `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// `stop-first` (default) or `start-first`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// `rollback` (default) or `pause`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_action: Option<String>,
    /// How long a new container must stay healthy, e.g. `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
}

/// `depends_on` as a list or a mapping with conditions.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum DependsOnSpec {
    List(Vec<String>),
    Map(BTreeMap<String, DependsOnConditionSpec>),
}

/// By hand rather than `untagged`, so a problem inside the mapping form
/// (an unknown option) is reported where it is, not as "no form matched".
impl<'de> Deserialize<'de> for DependsOnSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Forms;
        impl<'de> serde::de::Visitor<'de> for Forms {
            type Value = DependsOnSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of service names or a mapping of service names to options")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(DependsOnSpec::List)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(DependsOnSpec::Map)
            }
        }
        deserializer.deserialize_any(Forms)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DependsOnConditionSpec {
    /// `service_started` (default), `service_healthy` or `service_completed_successfully`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Replace this service's containers when the dependency's are replaced
    /// (Compose restarts them; a replacement also picks up new addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<bool>,
    /// `false`: a dependency that is not in the manifests is only a warning
    /// and is ignored. Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

/// A Docker host.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// `unix:///var/run/docker.sock`, `tcp://HOST:PORT` or `ssh://USER@HOST[:PORT]`.
    pub endpoint: String,
    /// Tags services select nodes by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// TLS for `tcp://`: paths on the machine running pier, or a secret name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// Where a node's TLS material is. Never the material itself.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// A folder holding `ca.pem`, `cert.pem` and `key.pem`, named in pier's
    /// environment as `PIER_TLS_<SECRET>` (upper case, `-` as `_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Stages run for every new commit on a watched branch.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Commits on these branches deploy; others are tested only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<Vec<String>>,
    /// Stages run on a node with all of these tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_tags: Option<Vec<String>>,
    /// In order; the first failure stops the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<StageSpec>>,
}

/// A script stage (`image` + `script`) or a build stage (`build`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Shell lines, run in order with `sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<KeyValues>,
    /// e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Services with `build:` to build and push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Vec<String>>,
}
