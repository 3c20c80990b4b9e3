//! A SOPS document as a tree that keeps the order of the file, read from
//! and written to the four formats SOPS stores: YAML, JSON, dotenv and
//! binary (a JSON object whose `data` holds the whole file).
//!
//! Order matters: the MAC is a hash of the values in the order the file
//! has them, comments included (SOPS encrypts YAML and dotenv comments).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::manifest::yaml;

/// A value of a SOPS document.
#[derive(Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A decrypted value that is not UTF-8 (binary files).
    Bytes(Vec<u8>),
    /// A comment line (its text after `#`): a leaf SOPS encrypts and hashes.
    Comment(String),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

// Values may be secrets: never printed by `{:?}`.
impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::List(items) => f.debug_list().entries(items).finish(),
            Node::Map(entries) => f
                .debug_map()
                .entries(entries.iter().map(|(k, v)| (k, v)))
                .finish(),
            _ => f.write_str("<value>"),
        }
    }
}

/// How a SOPS file stores its document, from its name (as SOPS decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Dotenv,
    Binary,
}

impl Format {
    pub fn of(path: &str) -> Format {
        let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            Format::Yaml
        } else if name.ends_with(".json") {
            Format::Json
        } else if name.ends_with(".env") || name == ".env" {
            Format::Dotenv
        } else {
            Format::Binary
        }
    }
}

impl Node {
    /// The entry `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(text) => Some(text),
            _ => None,
        }
    }

    /// A scalar as text, as SOPS turns it into bytes for its MAC.
    pub fn scalar_bytes(&self) -> Option<Vec<u8>> {
        Some(match self {
            Node::Str(text) | Node::Comment(text) => text.clone().into_bytes(),
            Node::Bytes(bytes) => bytes.clone(),
            Node::Int(n) => n.to_string().into_bytes(),
            Node::Float(x) => float_text(*x).into_bytes(),
            Node::Bool(true) => b"True".to_vec(),
            Node::Bool(false) => b"False".to_vec(),
            Node::Null => Vec::new(),
            Node::List(_) | Node::Map(_) => return None,
        })
    }
}

/// A float as Go's `strconv.FormatFloat(x, 'f', -1, 64)` writes it: the
/// shortest digits that read back the same, never an exponent.
pub fn float_text(x: f64) -> String {
    format!("{x}")
}

/// Parse a document in `format`. A YAML document keeps its comment lines,
/// placed in the mapping or list they are written in, before the entry
/// that follows them.
pub fn parse(format: Format, bytes: &[u8]) -> Result<Node, String> {
    match format {
        Format::Yaml => parse_yaml(bytes),
        Format::Json | Format::Binary => parse_json(bytes),
        Format::Dotenv => parse_dotenv(bytes),
    }
}

fn parse_json(bytes: &[u8]) -> Result<Node, String> {
    serde_json::from_slice::<Node>(bytes).map_err(|e| format!("not JSON: {e}"))
}

fn parse_yaml(bytes: &[u8]) -> Result<Node, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    let mut documents = yaml::parse_documents(text).map_err(|e| format!("{e}"))?;
    if documents.len() > 1 {
        return Err("holds more than one YAML document".into());
    }
    let Some(root) = documents.pop() else {
        return Ok(Node::Map(Vec::new()));
    };
    let comments = comment_lines(text);
    let mut comments = comments.iter().peekable();
    let mut node = from_located(&root, &mut comments);
    // Comments after the last entry belong to the end of the top mapping.
    if let Node::Map(entries) = &mut node {
        for (n, (_, comment)) in comments.enumerate() {
            entries.push((format!("\0comment{n}"), Node::Comment(comment.clone())));
        }
    }
    Ok(node)
}

/// The comment lines of a YAML text (line from 1, text after `#`).
fn comment_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(n, line)| {
            let trimmed = line.trim_start();
            let comment = trimmed.strip_prefix('#')?;
            Some((n + 1, comment.to_string()))
        })
        .collect()
}

type Comments<'a> = std::iter::Peekable<std::slice::Iter<'a, (usize, String)>>;

/// A located YAML value as a tree, with the comments written before each
/// entry taken in at its place. Comment keys in a mapping start with a NUL
/// byte, which no YAML key a person writes has.
fn from_located(node: &yaml::Node, comments: &mut Comments<'_>) -> Node {
    match &node.value {
        yaml::Value::Null => Node::Null,
        yaml::Value::Bool(b) => Node::Bool(*b),
        yaml::Value::Int(n) => Node::Int(*n),
        yaml::Value::Float(x) => Node::Float(*x),
        yaml::Value::Str(s) => Node::Str(s.clone()),
        yaml::Value::Seq(items) => {
            let mut out = Vec::new();
            for item in items {
                let line = yaml::line_col(item).0;
                while let Some((_, text)) = comments.next_if(|(at, _)| *at < line) {
                    out.push(Node::Comment(text.clone()));
                }
                out.push(from_located(item, comments));
            }
            Node::List(out)
        }
        yaml::Value::Map(entries) => {
            let mut out = Vec::new();
            for (key, value) in entries {
                let line = yaml::line_col(key).0;
                while let Some((at, text)) = comments.next_if(|(at, _)| *at < line) {
                    out.push((format!("\0comment{at}"), Node::Comment(text.clone())));
                }
                out.push((key.value.clone(), from_located(value, comments)));
            }
            Node::Map(out)
        }
    }
}

/// SOPS's dotenv: `KEY=VALUE` lines (a `\n` in a value is a newline),
/// `#` comment lines, blank lines skipped. No quoting: a value is the rest
/// of its line.
fn parse_dotenv(bytes: &[u8]) -> Result<Node, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            entries.push((format!("\0comment{n}"), Node::Comment(comment.to_string())));
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: `{line}` is not KEY=VALUE", n + 1));
        };
        entries.push((key.to_string(), Node::Str(value.replace("\\n", "\n"))));
    }
    Ok(Node::Map(entries))
}

/// Write a document in `format`.
pub fn emit(format: Format, node: &Node) -> Vec<u8> {
    match format {
        Format::Yaml => {
            let mut out = String::new();
            emit_yaml(node, 0, &mut out);
            out.into_bytes()
        }
        Format::Json | Format::Binary => {
            let mut out = String::new();
            emit_json(node, 0, &mut out);
            out.push('\n');
            out.into_bytes()
        }
        Format::Dotenv => emit_dotenv(node).into_bytes(),
    }
}

fn is_comment_key(key: &str) -> bool {
    key.starts_with('\0')
}

fn yaml_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && !matches!(
            key.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null" | "~"
        )
        && key.parse::<f64>().is_err();
    if plain { key.to_string() } else { quoted(key) }
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

fn scalar_yaml(node: &Node) -> String {
    match node {
        Node::Null => "null".into(),
        Node::Bool(b) => b.to_string(),
        Node::Int(n) => n.to_string(),
        Node::Float(x) if x.fract() == 0.0 && x.is_finite() => format!("{x:.1}"),
        Node::Float(x) => float_text(*x),
        Node::Str(s) => quoted(s),
        Node::Bytes(b) => quoted(&String::from_utf8_lossy(b)),
        Node::Comment(_) | Node::List(_) | Node::Map(_) => unreachable!("not a scalar"),
    }
}

fn emit_yaml(node: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match node {
        Node::Map(entries) if entries.is_empty() => out.push_str(&format!("{pad}{{}}\n")),
        Node::Map(entries) => {
            for (key, value) in entries {
                match value {
                    Node::Comment(text) => out.push_str(&format!("{pad}#{text}\n")),
                    Node::Map(inner) if !inner.is_empty() => {
                        out.push_str(&format!("{pad}{}:\n", yaml_key(key)));
                        emit_yaml(value, indent + 4, out);
                    }
                    Node::List(items) if !items.is_empty() => {
                        out.push_str(&format!("{pad}{}:\n", yaml_key(key)));
                        emit_yaml(value, indent + 4, out);
                    }
                    Node::Map(_) => out.push_str(&format!("{pad}{}: {{}}\n", yaml_key(key))),
                    Node::List(_) => out.push_str(&format!("{pad}{}: []\n", yaml_key(key))),
                    scalar => out.push_str(&format!(
                        "{pad}{}: {}\n",
                        yaml_key(key),
                        scalar_yaml(scalar)
                    )),
                }
            }
        }
        Node::List(items) => {
            for item in items {
                match item {
                    Node::Comment(text) => out.push_str(&format!("{pad}#{text}\n")),
                    Node::Map(inner) if !inner.is_empty() => {
                        // The first entry on the dash's line, the rest below it.
                        let mut nested = String::new();
                        emit_yaml(item, indent + 2, &mut nested);
                        let nested = nested.replacen(&" ".repeat(indent + 2), "", 1);
                        out.push_str(&format!("{pad}- {nested}"));
                    }
                    Node::List(inner) if !inner.is_empty() => {
                        out.push_str(&format!("{pad}-\n"));
                        emit_yaml(item, indent + 4, out);
                    }
                    Node::Map(_) => out.push_str(&format!("{pad}- {{}}\n")),
                    Node::List(_) => out.push_str(&format!("{pad}- []\n")),
                    scalar => out.push_str(&format!("{pad}- {}\n", scalar_yaml(scalar))),
                }
            }
        }
        Node::Comment(text) => out.push_str(&format!("{pad}#{text}\n")),
        scalar => out.push_str(&format!("{pad}{}\n", scalar_yaml(scalar))),
    }
}

fn emit_json(node: &Node, indent: usize, out: &mut String) {
    let pad = "\t".repeat(indent + 1);
    let close = "\t".repeat(indent);
    match node {
        Node::Map(entries) => {
            let entries: Vec<_> = entries.iter().filter(|(k, _)| !is_comment_key(k)).collect();
            if entries.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push_str("{\n");
            for (n, (key, value)) in entries.iter().enumerate() {
                out.push_str(&format!("{pad}{}: ", quoted(key)));
                emit_json(value, indent + 1, out);
                out.push_str(if n + 1 < entries.len() { ",\n" } else { "\n" });
            }
            out.push_str(&format!("{close}}}"));
        }
        Node::List(items) => {
            let items: Vec<_> = items
                .iter()
                .filter(|i| !matches!(i, Node::Comment(_)))
                .collect();
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push_str("[\n");
            for (n, item) in items.iter().enumerate() {
                out.push_str(&pad);
                emit_json(item, indent + 1, out);
                out.push_str(if n + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&format!("{close}]"));
        }
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(&b.to_string()),
        Node::Int(n) => out.push_str(&n.to_string()),
        Node::Float(x) => out.push_str(&float_text(*x)),
        Node::Str(s) | Node::Comment(s) => out.push_str(&quoted(s)),
        Node::Bytes(b) => out.push_str(&quoted(&String::from_utf8_lossy(b))),
    }
}

fn emit_dotenv(node: &Node) -> String {
    let mut out = String::new();
    if let Node::Map(entries) = node {
        for (key, value) in entries {
            match value {
                Node::Comment(text) => out.push_str(&format!("#{text}\n")),
                other => {
                    let text = other
                        .scalar_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    out.push_str(&format!("{key}={}\n", text.replace('\n', "\\n")));
                }
            }
        }
    }
    out
}

/// Flatten a mapping into dotenv keys, as SOPS stores its metadata in a
/// dotenv file: `age__list_0__map_enc`.
pub fn flatten(prefix: &str, node: &Node, out: &mut Vec<(String, Node)>) {
    match node {
        Node::Map(entries) => {
            for (key, value) in entries {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}__map_{key}")
                };
                flatten(&name, value, out);
            }
        }
        Node::List(items) => {
            for (n, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}__list_{n}"), item, out);
            }
        }
        scalar => out.push((prefix.to_string(), scalar.clone())),
    }
}

/// The inverse of [`flatten`]: `age__list_0__map_enc=…` back into a tree.
pub fn unflatten(entries: &[(String, String)]) -> Node {
    let mut root = Node::Map(Vec::new());
    for (key, value) in entries {
        let mut steps = Vec::new();
        let mut rest = key.as_str();
        let first = rest.find("__").map_or(rest, |at| &rest[..at]);
        steps.push(Step::Key(first.to_string()));
        rest = &rest[first.len()..];
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("__list_") {
                let end = after.find("__").unwrap_or(after.len());
                steps.push(Step::Index(after[..end].parse().unwrap_or(0)));
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix("__map_") {
                let end = after.find("__").unwrap_or(after.len());
                steps.push(Step::Key(after[..end].to_string()));
                rest = &after[end..];
            } else {
                break;
            }
        }
        insert(&mut root, &steps, Node::Str(value.clone()));
    }
    root
}

enum Step {
    Key(String),
    Index(usize),
}

fn insert(node: &mut Node, steps: &[Step], value: Node) {
    let Some((step, rest)) = steps.split_first() else {
        *node = value;
        return;
    };
    let empty_for = |rest: &[Step]| match rest.first() {
        Some(Step::Index(_)) => Node::List(Vec::new()),
        Some(Step::Key(_)) => Node::Map(Vec::new()),
        None => Node::Null,
    };
    match (step, node) {
        (Step::Key(key), Node::Map(entries)) => {
            if !entries.iter().any(|(k, _)| k == key) {
                entries.push((key.clone(), empty_for(rest)));
            }
            let slot = entries
                .iter_mut()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .expect("just inserted");
            insert(slot, rest, value);
        }
        (Step::Index(n), Node::List(items)) => {
            while items.len() <= *n {
                items.push(empty_for(rest));
            }
            insert(&mut items[*n], rest, value);
        }
        _ => {}
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        // JSON numbers are Go float64s to SOPS.
        Ok(Node::Float(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Float(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Node>()? {
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("key `{key}` appears twice")));
            }
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_comments_take_their_place_before_the_next_entry() {
        let node = parse(Format::Yaml, b"# top\na: 1\nb:\n  # inner\n  c: x\n# end\n").unwrap();
        let Node::Map(entries) = &node else { panic!() };
        let kinds: Vec<_> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert!(kinds[0].starts_with('\0') && kinds[1] == "a" && kinds[2] == "b");
        assert!(matches!(entries[3].1, Node::Comment(ref c) if c == " end"));
        assert!(
            matches!(node.get("b").unwrap().get("\0comment4"), Some(Node::Comment(c)) if c == " inner")
        );
    }

    #[test]
    fn written_documents_read_back_the_same() {
        let text = b"a: \"x\"\nn: 3\nf: 1.5\nt: true\nz: null\nlist:\n    - 1\n    - k: v\n      j: [1]\n    - []\nm: {}\n";
        let node = parse(Format::Yaml, text).unwrap();
        let written = emit(Format::Yaml, &node);
        let again = parse(Format::Yaml, &written).unwrap();
        assert_eq!(again, node, "{}", String::from_utf8_lossy(&written));
        let json = parse(
            Format::Json,
            br#"{"a": "x", "n": 3, "o": {"k": [true, null]}}"#,
        )
        .unwrap();
        assert_eq!(
            parse(Format::Json, &emit(Format::Json, &json)).unwrap(),
            json
        );
    }

    #[test]
    fn metadata_flattens_for_dotenv_and_back() {
        let meta = Node::Map(vec![
            (
                "age".into(),
                Node::List(vec![Node::Map(vec![
                    ("recipient".into(), Node::Str("age1x".into())),
                    ("enc".into(), Node::Str("E".into())),
                ])]),
            ),
            ("mac".into(), Node::Str("M".into())),
        ]);
        let mut flat = Vec::new();
        flatten("", &meta, &mut flat);
        let names: Vec<_> = flat.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["age__list_0__map_recipient", "age__list_0__map_enc", "mac"]
        );
        let text: Vec<_> = flat
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
            .collect();
        assert_eq!(unflatten(&text), meta);
    }
}
