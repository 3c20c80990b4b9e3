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
    changed[0].after.clone().expect("the file stays")
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
            after: Some("nodes:\n  n1: { endpoint: \"tcp://10.0.0.1:2375\" }\n".into()),
        }]
    );
}

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Pinning writes `name:tag@digest` in place; unpinning takes it off.
#[test]
fn pin_and_unpin_edit_the_image_in_place() {
    let out = after(
        edit(Edit::Pin {
            service: "cache".into(),
            digest: DIGEST.into(),
        }),
        "pier/stack.yml",
    );
    assert!(
        out.contains(&format!("    image: redis:7@{DIGEST}\n")),
        "{out}"
    );
    let pinned = vec![
        files()[0].clone(),
        SourceFile {
            path: "pier/stack.yml".into(),
            text: out,
        },
    ];
    let changed = plan_edit(
        &pinned,
        "pier",
        &Edit::Unpin("cache".into()),
        &Vars::new(),
        &MemoryTree::default(),
    )
    .unwrap();
    let text = changed[0].after.clone().unwrap();
    assert!(
        text.contains("image: \"redis:7\"") || text.contains("image: redis:7"),
        "{text}"
    );
    assert!(matches!(
        edit(Edit::Unpin("cache".into())),
        Err(Refused::Impossible(m)) if m.contains("not pinned")
    ));
}

mod rollbacks {
    use super::*;
    use crate::edit::rollback::{Rollback, plan_rollback};

    const THEN: &str = "services:\n  web:\n    image: reg/web:1\n    environment: { MODE: old }\n  db:\n    image: reg/db:1\n";
    const NOW: &str = "services:\n  db:\n    image: reg/db:2\n  web:\n    image: reg/web:1\n    environment: { MODE: new }\n    command: [serve]\n";

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }

    fn rollback(services: &[&str]) -> Rollback {
        Rollback {
            to: "a".repeat(40),
            from: "b".repeat(40),
            services: services.iter().map(|s| s.to_string()).collect(),
            images: BTreeMap::from([("web".to_string(), format!("reg/web:1@{DIGEST}"))]),
        }
    }

    /// The whole folder goes back: texts restored, files added since
    /// removed, images pinned, and the message names both revisions and
    /// carries the trailer the daemon reads.
    #[test]
    fn a_whole_rollback_restores_every_file_and_pins_images() {
        let now = vec![
            file("pier/stack.yml", NOW),
            file("pier/extra.yml", "services:\n  x:\n    image: x:1\n"),
        ];
        let then = vec![file("pier/stack.yml", THEN)];
        let changed = plan_rollback(
            &now,
            &then,
            "pier",
            &rollback(&[]),
            &Vars::new(),
            &MemoryTree::default(),
        )
        .unwrap();
        let stack = changed.iter().find(|c| c.path == "pier/stack.yml").unwrap();
        let text = stack.after.clone().unwrap();
        assert!(text.contains(&format!("reg/web:1@{DIGEST}")), "{text}");
        assert!(
            text.contains("MODE: old") && text.contains("reg/db:1"),
            "{text}"
        );
        let extra = changed.iter().find(|c| c.path == "pier/extra.yml").unwrap();
        assert_eq!(extra.after, None, "a file added since is removed");
        let message = rollback(&[]).message();
        assert!(
            message.contains(&format!("Pier-Rollback-Of: {}", "a".repeat(40))),
            "{message}"
        );
        assert_eq!(
            crate::source::git::rollback_trailer(&message).as_deref(),
            Some("a".repeat(40).as_str())
        );
    }

    /// A named service alone goes back, where it is written now; the other
    /// services stay as they are.
    #[test]
    fn a_named_service_alone_is_restored() {
        let now = vec![file("pier/stack.yml", NOW)];
        let then = vec![file("pier/stack.yml", THEN)];
        let changed = plan_rollback(
            &now,
            &then,
            "pier",
            &rollback(&["web"]),
            &Vars::new(),
            &MemoryTree::default(),
        )
        .unwrap();
        let text = changed[0].after.clone().unwrap();
        assert!(
            text.contains("MODE: old") && !text.contains("command"),
            "{text}"
        );
        assert!(text.contains("reg/db:2"), "db stays: {text}");
        assert!(text.contains(&format!("reg/web:1@{DIGEST}")), "{text}");
    }

    /// A service gone since, or never there, is refused with what to do.
    #[test]
    fn a_service_missing_on_either_side_is_refused() {
        let now = vec![file(
            "pier/stack.yml",
            "services:\n  db:\n    image: reg/db:2\n",
        )];
        let then = vec![file("pier/stack.yml", THEN)];
        let refused = plan_rollback(
            &now,
            &then,
            "pier",
            &rollback(&["web"]),
            &Vars::new(),
            &MemoryTree::default(),
        );
        assert!(
            matches!(refused, Err(Refused::Impossible(m)) if m.contains("without naming services"))
        );
    }
}
