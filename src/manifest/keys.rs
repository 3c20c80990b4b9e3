//! Which keys a manifest may use, and what to say about the ones it may not.
//!
//! Supported keys come from the serde types themselves (through their JSON
//! Schema), so the list can never drift from what the loader accepts. Keys that
//! Compose or Tutum know but pier does not are listed here with the reason, so
//! the user reads "unsupported, because…" and not a bare "unknown key".

use std::collections::BTreeSet;
use std::sync::LazyLock;

use schemars::JsonSchema;

use super::spec::{FileSpec, NodeSpec, PipelineSpec, ServiceSpec, StageSpec};

fn property_names<T: JsonSchema>() -> BTreeSet<String> {
    let schema = schemars::schema_for!(T);
    schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|props| props.keys().cloned().collect())
        .unwrap_or_default()
}

pub static SERVICE_KEYS: LazyLock<BTreeSet<String>> = LazyLock::new(property_names::<ServiceSpec>);
pub static NODE_KEYS: LazyLock<BTreeSet<String>> = LazyLock::new(property_names::<NodeSpec>);
pub static PIPELINE_KEYS: LazyLock<BTreeSet<String>> =
    LazyLock::new(property_names::<PipelineSpec>);
pub static STAGE_KEYS: LazyLock<BTreeSet<String>> = LazyLock::new(property_names::<StageSpec>);
pub static FILE_KEYS: LazyLock<BTreeSet<String>> = LazyLock::new(property_names::<FileSpec>);
pub static ROUTER_KEYS: LazyLock<BTreeSet<String>> =
    LazyLock::new(property_names::<super::spec::RouterSpec>);

/// Service keys known from Compose or Tutum that pier does not support, and why.
pub const UNSUPPORTED_SERVICE_KEYS: &[(&str, &str)] = &[
    ("scale", "use `deploy.replicas` or `target_num_containers`"),
    (
        "extends",
        "use YAML anchors and merge keys (`<<: *defaults`)",
    ),
    (
        "profiles",
        "every service in the manifests is deployed; move optional services to another branch or folder",
    ),
    ("uts", "UTS namespace settings are not supported"),
    ("userns_mode", "user namespace settings are not supported"),
    (
        "mac_address",
        "fixed MAC addresses cannot hold across replicas",
    ),
    ("cgroup_parent", "not supported"),
    ("runtime", "not supported yet"),
    ("isolation", "not supported"),
    ("oom_kill_disable", "not supported"),
    ("external_links", "link only to services in the manifests"),
    ("annotations", "not supported"),
    ("blkio_config", "not supported"),
    ("device_cgroup_rules", "not supported"),
    ("gpus", "not supported yet"),
    ("storage_opt", "not supported"),
    ("volume_driver", "not supported; use named volumes"),
    ("label_file", "not supported; use `labels`"),
    ("develop", "Compose Watch is a development feature"),
];

/// Tutum keys that only meant something on Tutum's hosted platform.
pub const NO_EFFECT_SERVICE_KEYS: &[(&str, &str)] =
    &[("roles", "Tutum's API roles have no equivalent in pier")];

/// Top-level keys Compose knows but pier does not support.
pub const UNSUPPORTED_FILE_KEYS: &[(&str, &str)] = &[(
    "name",
    "the stack name is set where pier runs (`--stack`), not in the manifests",
)];

/// What pier says about a key it does not take, if it knows the key.
pub fn unsupported_reason(table: &[(&str, &'static str)], key: &str) -> Option<&'static str> {
    table.iter().find(|(k, _)| *k == key).map(|(_, why)| *why)
}

/// Compose extension keys (`x-…`) are accepted anywhere and ignored.
pub fn is_extension(key: &str) -> bool {
    key.starts_with("x-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_keys_come_from_the_types() {
        for key in [
            "image",
            "build",
            "ports",
            "target_num_containers",
            "deploy",
            "roles",
        ] {
            assert!(SERVICE_KEYS.contains(key), "{key}");
        }
        assert!(NODE_KEYS.contains("endpoint") && NODE_KEYS.contains("tls"));
        assert!(FILE_KEYS.contains("services") && FILE_KEYS.contains("pipeline"));
    }

    #[test]
    fn no_key_is_both_supported_and_unsupported() {
        for (key, _) in UNSUPPORTED_SERVICE_KEYS {
            assert!(!SERVICE_KEYS.contains(*key), "{key} is in both lists");
        }
        for (key, _) in UNSUPPORTED_FILE_KEYS {
            assert!(!FILE_KEYS.contains(*key), "{key} is in both lists");
        }
    }
}
