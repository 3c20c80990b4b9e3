//! The YAML edge of the loader: one file's text → a tree of values that
//! remember their line and column, with hard limits on size and alias expansion.
//!
//! Parsing into a located tree (rather than straight into typed structs) lets
//! the loader check every key, report every problem at once, and point at the
//! exact place of each, before anything is typed.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use serde_saphyr::options::{AliasLimits, DuplicateKeyPolicy};

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Nodes aliases may replay in one file. Real manifests replay a few hundred
/// (an 8-key `x-defaults` merged into 2,000 services is about 40,000);
/// "billion laughs" inputs need millions, so they stop here, quickly and in
/// bounded memory.
const MAX_ALIAS_REPLAY_EVENTS: usize = 50_000;
/// Nesting depth; manifests are rarely deeper than 8.
const MAX_DEPTH: usize = 64;

/// A YAML value with the place it was written.
pub type Node = Spanned<Value>;
/// A mapping key with the place it was written.
pub type Key = Spanned<String>;

/// A YAML value. Mappings keep their order, which is the order of the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// What kind of value this is, for messages ("expected a list, found a string").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a number",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// This value as JSON, for typing with serde after the keys were checked.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(|n| n.value.to_json()).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.value.clone(), v.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// The scalar as text, as a shell or Docker would see it.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Null => Some(String::new()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str(s) => Some(s.clone()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }
}

/// Line and column of a node (1-based): where it is written, so a value
/// an alias or a merge (`<<: *defaults`) replays is placed at its anchor,
/// once for every service that uses it.
pub fn line_col<T>(node: &Spanned<T>) -> (usize, usize) {
    let at = if node.defined.line() > 0 {
        &node.defined
    } else {
        &node.referenced
    };
    (at.line() as usize, at.column() as usize)
}

/// Why a file could not be read as YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Parse every document of one file. Empty documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, YamlError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(YamlError {
            line: 0,
            column: 0,
            message: format!(
                "file is {} bytes, over the limit of {MAX_FILE_BYTES} bytes (1 MiB); split it into several files",
                text.len()
            ),
        });
    }
    let mut alias_limits = AliasLimits::default();
    alias_limits.max_total_replayed_events = MAX_ALIAS_REPLAY_EVENTS;
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_depth = MAX_DEPTH;
    // The alias/anchor ratio heuristic refuses one `x-defaults` merged into
    // more than ~100 services, a common Compose pattern; the replay budget
    // above is what bounds expansion.
    budget.enforce_alias_anchor_ratio = false;
    let mut options = serde_saphyr::Options::default();
    // Duplicates are kept in the tree and reported by `duplicate_keys`, so
    // one repeated key does not hide every other problem in the file.
    options.duplicate_keys = DuplicateKeyPolicy::LastWins;
    // YAML 1.2 booleans only: `y`, `no` or `on` stay strings, as in Compose.
    options.strict_booleans = true;
    options.alias_limits = alias_limits;
    options.budget = Some(budget);
    let documents: Vec<Node> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(yaml_error)?;
    Ok(documents
        .into_iter()
        .filter(|doc| doc.value != Value::Null)
        .collect())
}

fn yaml_error(error: serde_saphyr::Error) -> YamlError {
    let (line, column) = error
        .location()
        .map(|l| (l.line() as usize, l.column() as usize))
        .unwrap_or((0, 0));
    let mut render = serde_saphyr::RenderOptions::default();
    render.snippets = serde_saphyr::SnippetMode::Off;
    let rendered = error.render_with_options(render);
    YamlError {
        line,
        column,
        message: clean_message(&rendered),
    }
}

/// serde-saphyr's text repeats the location and names its own options; keep the
/// part a manifest author can act on.
fn clean_message(rendered: &str) -> String {
    let first = rendered.lines().next().unwrap_or(rendered);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let without_location = match first.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") => rest,
        _ => first,
    };
    let without_location = without_location
        .split_once(" at line ")
        .map(|(message, _)| message)
        .unwrap_or(without_location);
    without_location
        .replace(", set DuplicateKeyPolicy in Options if acceptable", "")
        .trim()
        .to_string()
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v)
            .map(Value::Int)
            .unwrap_or(Value::Float(v as f64)))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v)
            .map(Value::Int)
            .unwrap_or(Value::Float(v as f64)))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(i64::try_from(v)
            .map(Value::Int)
            .unwrap_or(Value::Float(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Value::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// Every key written twice in one mapping, anywhere in the tree: (key, first, again).
pub fn duplicate_keys(node: &Node) -> Vec<(&Key, &Key)> {
    let mut found = Vec::new();
    collect_duplicates(node, &mut found);
    found
}

fn collect_duplicates<'a>(node: &'a Node, found: &mut Vec<(&'a Key, &'a Key)>) {
    match &node.value {
        Value::Map(entries) => {
            let mut seen: BTreeMap<&str, &Key> = BTreeMap::new();
            for (key, value) in entries {
                if let Some(first) = seen.insert(key.value.as_str(), key) {
                    found.push((first, key));
                }
                collect_duplicates(value, found);
            }
        }
        Value::Seq(items) => items
            .iter()
            .for_each(|item| collect_duplicates(item, found)),
        _ => {}
    }
}

/// Look up a key in a mapping's entries (the last one, as YAML readers do).
pub fn get<'a>(entries: &'a [(Key, Node)], key: &str) -> Option<&'a Node> {
    entries
        .iter()
        .rev()
        .find(|(k, _)| k.value == key)
        .map(|(_, v)| v)
}

/// The keys of a mapping with their positions, for duplicate checks across documents.
pub fn key_positions(entries: &[(Key, Node)]) -> BTreeMap<&str, (usize, usize)> {
    entries
        .iter()
        .map(|(k, _)| (k.value.as_str(), line_col(k)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_remember_line_and_column() {
        let docs = parse_documents("services:\n  web:\n    image: nginx\n").unwrap();
        let Value::Map(top) = &docs[0].value else {
            panic!("top is a map")
        };
        let Value::Map(services) = &get(top, "services").unwrap().value else {
            panic!()
        };
        let Value::Map(web) = &services[0].1.value else {
            panic!()
        };
        let image = get(web, "image").unwrap();
        assert_eq!(image.value, Value::Str("nginx".into()));
        assert_eq!(line_col(image), (3, 12));
    }

    #[test]
    fn merge_keys_and_anchors_expand() {
        let text = "x-d: &d\n  image: a\n  restart: always\ns:\n  <<: *d\n  image: b\n";
        let docs = parse_documents(text).unwrap();
        let Value::Map(top) = &docs[0].value else {
            panic!()
        };
        let Value::Map(s) = &get(top, "s").unwrap().value else {
            panic!()
        };
        assert_eq!(
            get(s, "image").unwrap().value,
            Value::Str("b".into()),
            "local key wins"
        );
        assert_eq!(
            get(s, "restart").unwrap().value,
            Value::Str("always".into())
        );
    }

    #[test]
    fn several_documents_and_empty_ones() {
        let docs = parse_documents("a: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
    }

    #[test]
    fn duplicate_keys_are_found_with_both_positions() {
        let docs = parse_documents("web:\n  image: a\n  image: b\n").unwrap();
        let dups = duplicate_keys(&docs[0]);
        assert_eq!(dups.len(), 1);
        assert_eq!((line_col(dups[0].0), line_col(dups[0].1)), ((2, 3), (3, 3)));
    }

    #[test]
    fn only_yaml_1_2_booleans() {
        let docs = parse_documents("a: y\nb: no\nc: true\n").unwrap();
        let Value::Map(m) = &docs[0].value else {
            panic!()
        };
        assert_eq!(get(m, "a").unwrap().value, Value::Str("y".into()));
        assert_eq!(get(m, "b").unwrap().value, Value::Str("no".into()));
        assert_eq!(get(m, "c").unwrap().value, Value::Bool(true));
    }

    #[test]
    fn syntax_errors_have_position() {
        let err = parse_documents("web:\n  image: [a\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("unclosed"), "{}", err.message);
    }

    #[test]
    fn oversized_files_are_refused_before_parsing() {
        let text = "a: ".to_string() + &"x".repeat(MAX_FILE_BYTES);
        let err = parse_documents(&text).unwrap_err();
        assert!(err.message.contains("over the limit"), "{}", err.message);
    }

    #[test]
    fn a_defaults_block_merged_into_a_thousand_services_is_fine() {
        let mut text = String::from("x-d: &d\n");
        for key in [
            "restart",
            "user",
            "working_dir",
            "hostname",
            "a",
            "b",
            "c",
            "d",
        ] {
            text.push_str(&format!("  {key}: value\n"));
        }
        text.push_str("services:\n");
        for n in 0..1000 {
            text.push_str(&format!("  s{n}:\n    <<: *d\n    image: x\n"));
        }
        let docs = parse_documents(&text).expect("within the alias budget");
        assert_eq!(docs.len(), 1);
    }

    #[test]
    fn alias_bombs_are_refused_quickly() {
        let mut text = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
            .windows(2)
            .map(|w| (w[0], w[1]))
        {
            text.push_str(&format!(
                "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        let started = std::time::Instant::now();
        let err = parse_documents(&text).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(!err.message.is_empty());
    }
}
