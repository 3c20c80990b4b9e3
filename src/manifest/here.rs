//! Where a problem is: an entity being loaded (a service, a node, the
//! pipeline) with its file, its located tree and its key path, so every
//! diagnostic names `file:line:col` and the key. Shared by the loader, the
//! normalisation and the router, which depend on it and not on each other.

use super::diagnostic::{Diagnostic, Location};
use super::yaml::{self, Node, Value, line_col};

/// One step of a path into a tree: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// An entity being loaded (a service, a node, the pipeline): its file, its
/// tree and its key path, so any problem inside it can be placed precisely.
pub struct Here<'a> {
    pub file: &'a str,
    pub node: &'a Node,
    pub prefix: String,
}

impl Here<'_> {
    /// The location of the deepest node on `path` that exists.
    pub fn loc(&self, path: &[Seg]) -> Location {
        let (line, column) = line_col(find(self.node, path));
        Location::new(self.file, line, column)
    }

    /// The location of the key `name` itself (not its value) in this entity's mapping.
    pub fn key_loc(&self, name: &str) -> Location {
        if let Value::Map(entries) = &self.node.value
            && let Some((key, _)) = entries.iter().rev().find(|(k, _)| k.value == name)
        {
            let (line, column) = line_col(key);
            return Location::new(self.file, line, column);
        }
        self.loc(&[])
    }

    /// Whether this entity's mapping has the key `name` (even with an empty value).
    pub fn has_key(&self, name: &str) -> bool {
        matches!(&self.node.value, Value::Map(entries) if entries.iter().any(|(k, _)| k.value == name))
    }

    pub fn key_path(&self, path: &[Seg]) -> String {
        let mut out = self.prefix.clone();
        for seg in path {
            match seg {
                Seg::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    pub fn error(&self, path: &[Seg], message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(self.loc(path), message).key(self.key_path(path))
    }
}

/// Shorthands for building paths.
pub fn k(key: &str) -> Seg {
    Seg::Key(key.to_string())
}
pub fn i(index: usize) -> Seg {
    Seg::Index(index)
}

/// The deepest node on `path` below `node` that exists.
pub fn find<'a>(node: &'a Node, path: &[Seg]) -> &'a Node {
    let Some((first, rest)) = path.split_first() else {
        return node;
    };
    let child = match (&node.value, first) {
        (Value::Map(entries), Seg::Key(key)) => yaml::get(entries, key),
        (Value::Seq(items), Seg::Index(index)) => items.get(*index),
        _ => None,
    };
    child.map_or(node, |child| find(child, rest))
}
