//! Golden edits: the exact text each edit produces, byte for byte.

use super::*;
use crate::manifest::MemoryTree;

const STACK: &str = "\
# Production stack. Keep this comment.
x-defaults: &defaults
  restart: always          # shared by everyone
  target_num_containers: 2

services:
  web:
    <<: *defaults
    image: \"registry.example.com/web:1\"   # pinned by CI
    environment:
      MODE: 'production'
      EMPTY:
    tags: [production]
  cache:
    <<: *defaults
    image: redis:7
  worker:
    image: registry.example.com/worker:1
    deploy:
      replicas: 3          # busy queue
    environment:
      - QUEUE=jobs
      - DEBUG=0
  agent: { image: agent:1, deployment_strategy: every_node }
";

const NODES: &str = "\
nodes:
  n1: { endpoint: \"tcp://10.0.0.1:2375\", tags: [production] }
  n2:
    endpoint: tcp://10.0.0.2:2375
    tags:
      - production
      - ssd
";

fn files() -> Vec<SourceFile> {
    vec![
        SourceFile {
            path: "pier/nodes.yml".into(),
            text: NODES.into(),
        },
        SourceFile {
            path: "pier/stack.yml".into(),
            text: STACK.into(),
        },
    ]
}

fn edit(edit: Edit) -> Result<Vec<Changed>, Refused> {
    plan_edit(
        &files(),
        "pier",
        &edit,
        &Vars::new(),
        &MemoryTree::default(),
    )
}

/// The single changed file's text.
fn after(edit_result: Result<Vec<Changed>, Refused>, path: &str) -> String {
    let changed = edit_result.unwrap_or_else(|e| panic!("refused: {e} {e:?}"));
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].path, path);
    changed[0].after.clone()
}

#[test]
fn scale_changes_the_count_where_it_is_written() {
    // worker writes `deploy.replicas`; its comment stays.
    let out = after(
        edit(Edit::Scale(vec![("worker".into(), 5)])),
        "pier/stack.yml",
    );
    assert_eq!(
        out,
        STACK.replace("replicas: 3          # busy", "replicas: 5          # busy")
    );
}

#[test]
fn scale_of_an_inherited_count_adds_the_services_own_key() {
    // web's count comes from the shared anchor: editing it there would scale
    // worker too, so web gets its own key at the end of its block.
    let out = after(edit(Edit::Scale(vec![("web".into(), 4)])), "pier/stack.yml");
    assert_eq!(
        out,
        STACK.replace(
            "    tags: [production]\n  cache:",
            "    tags: [production]\n    target_num_containers: 4\n  cache:"
        )
    );
}

#[test]
fn every_node_services_refuse_scale_with_tutums_reason() {
    let error = edit(Edit::Scale(vec![("agent".into(), 2)])).unwrap_err();
    assert!(error.to_string().contains("every_node"), "{error}");
}

#[test]
fn unknown_services_are_named_with_a_suggestion() {
    let error = edit(Edit::Scale(vec![("wbe".into(), 2)])).unwrap_err();
    assert!(error.to_string().contains("did you mean `web`"), "{error}");
}

#[test]
fn set_image_keeps_the_quotes_and_the_comment() {
    let out = after(
        edit(Edit::SetImage {
            service: "web".into(),
            image: "registry.example.com/web:2".into(),
        }),
        "pier/stack.yml",
    );
    assert_eq!(
        out,
        STACK.replace("/web:1\"   # pinned", "/web:2\"   # pinned")
    );
    let out = after(
        edit(Edit::SetImage {
            service: "agent".into(),
            image: "agent:2".into(),
        }),
        "pier/stack.yml",
    );
    assert_eq!(out, STACK.replace("{ image: agent:1,", "{ image: agent:2,"));
}

#[test]
fn set_env_changes_adds_and_removes_in_map_and_list_forms() {
    let out = after(
        edit(Edit::SetEnv {
            service: "web".into(),
            vars: vec![
                ("MODE".into(), Some("staging".into())),
                ("EMPTY".into(), Some("x y".into())),
                ("NEW".into(), Some("1".into())),
            ],
        }),
        "pier/stack.yml",
    );
    assert_eq!(
        out,
        STACK.replace(
            "      MODE: 'production'\n      EMPTY:\n",
            "      MODE: 'staging'\n      EMPTY: \"x y\"\n      NEW: \"1\"\n"
        )
    );
    let out = after(
        edit(Edit::SetEnv {
            service: "worker".into(),
            vars: vec![
                ("DEBUG".into(), None),
                ("QUEUE".into(), Some("mail".into())),
                ("LEVEL".into(), Some("info".into())),
            ],
        }),
        "pier/stack.yml",
    );
    assert_eq!(
        out,
        STACK.replace(
            "      - QUEUE=jobs\n      - DEBUG=0\n",
            "      - QUEUE=mail\n      - LEVEL=info\n"
        )
    );
    let out = after(
        edit(Edit::SetEnv {
            service: "agent".into(),
            vars: vec![("A".into(), Some("1".into()))],
        }),
        "pier/stack.yml",
    );
    assert_eq!(
        out,
        STACK.replace(
            "deployment_strategy: every_node }",
            "deployment_strategy: every_node, environment: { A: \"1\" } }"
        )
    );
}

#[test]
fn node_edits_touch_only_their_lines() {
    let out = after(
        edit(Edit::NodeAdd {
            name: "n3".into(),
            endpoint: "tcp://10.0.0.3:2375".into(),
            tags: vec!["production".into()],
        }),
        "pier/nodes.yml",
    );
    assert_eq!(
        out,
        format!("{NODES}  n3: {{ endpoint: \"tcp://10.0.0.3:2375\", tags: [production] }}\n")
    );
    let out = after(edit(Edit::NodeRemove("n2".into())), "pier/nodes.yml");
    assert_eq!(
        out,
        "nodes:\n  n1: { endpoint: \"tcp://10.0.0.1:2375\", tags: [production] }\n"
    );
    let out = after(
        edit(Edit::NodeTag {
            name: "n1".into(),
            add: vec!["edge".into()],
            remove: vec![],
        }),
        "pier/nodes.yml",
    );
    assert_eq!(
        out,
        NODES.replace("tags: [production] }", "tags: [production, edge] }")
    );
    let out = after(
        edit(Edit::NodeTag {
            name: "n2".into(),
            add: vec!["gpu".into()],
            remove: vec!["ssd".into()],
        }),
        "pier/nodes.yml",
    );
    assert_eq!(out, NODES.replace("      - ssd\n", "      - gpu\n"));
}

#[test]
fn an_edit_that_breaks_the_manifests_is_refused() {
    let error = edit(Edit::SetImage {
        service: "web".into(),
        image: String::new(),
    })
    .unwrap_err();
    let Refused::WouldBeInvalid(diagnostics) = &error else {
        panic!("{error:?}")
    };
    assert!(
        diagnostics
            .iter()
            .any(|d| d.location.file == "pier/stack.yml" && d.message.contains("image")),
        "{diagnostics:?}"
    );
}

#[test]
fn node_add_without_any_nodes_creates_a_nodes_file() {
    let files = vec![SourceFile {
        path: "pier/tutum.yml".into(),
        text: "web:\n  image: web:1\n".into(),
    }];
    let changed = plan_edit(
        &files,
        "pier",
        &Edit::NodeAdd {
            name: "n1".into(),
            endpoint: "tcp://10.0.0.1:2375".into(),
            tags: vec![],
        },
        &Vars::new(),
        &MemoryTree::default(),
    )
    .unwrap();
    assert_eq!(
        changed,
        vec![Changed {
            path: "pier/nodes.yml".into(),
            before: None,
            after: "nodes:\n  n1: { endpoint: \"tcp://10.0.0.1:2375\" }\n".into(),
        }]
    );
}
