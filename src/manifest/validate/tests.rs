//! Unit tests of the rules across entities.

use super::*;

#[test]
fn symlinks_inside_resolve_and_outside_are_refused() {
    let mut tree = MemoryTree::with_files(["app/Dockerfile", "conf/env"]);
    tree.add(
        "web",
        Entry::Symlink {
            target: "app".into(),
        },
    );
    tree.add(
        "escape",
        Entry::Symlink {
            target: "../outside".into(),
        },
    );
    tree.add(
        "abs",
        Entry::Symlink {
            target: "/etc".into(),
        },
    );
    tree.add(
        "conf/up",
        Entry::Symlink {
            target: "../app".into(),
        },
    );
    tree.add(
        "loop",
        Entry::Symlink {
            target: "loop".into(),
        },
    );
    assert_eq!(resolve(&tree, "web"), Ok(Some(Entry::Dir)));
    assert_eq!(resolve(&tree, "web/Dockerfile"), Ok(Some(Entry::File)));
    assert_eq!(resolve(&tree, "conf/up"), Ok(Some(Entry::Dir)));
    assert_eq!(
        resolve(&tree, "escape"),
        Err("climbs out of the repository through a symlink")
    );
    assert_eq!(
        resolve(&tree, "abs"),
        Err("resolves through a symlink out of the repository")
    );
    assert_eq!(resolve(&tree, "loop"), Err("goes through a symlink loop"));
    assert_eq!(resolve(&tree, "missing"), Ok(None));
}
