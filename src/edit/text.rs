//! Format-preserving edits of YAML text, guided by the located tree of
//! [`crate::manifest::yaml`].
//!
//! Every edit replaces, inserts or deletes a byte range and leaves every
//! other byte as the user wrote it: comments, key order, quoting and
//! indentation. Block and flow collections are both handled; positions come
//! from the parser (exact byte spans of scalars and keys), extents of block
//! entries from indentation.

use crate::manifest::yaml::{Key, Node, Value};

/// One change to a file's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// Apply splices (non-overlapping) to `text`.
pub fn apply(text: &str, mut splices: Vec<Splice>) -> String {
    splices.sort_by_key(|s| std::cmp::Reverse(s.start));
    let mut out = text.to_string();
    for s in splices {
        out.replace_range(s.start..s.end, &s.text);
    }
    out
}

/// Where a node or key is written, as a byte range; `None` when the parser
/// gave no byte position.
pub fn span<T>(node: &serde_saphyr::Spanned<T>) -> Option<(usize, usize)> {
    let span = node.referenced.span();
    let start = span.byte_offset()? as usize;
    Some((start, start + span.byte_len()? as usize))
}

/// Like [`span`], for callers that cannot go on without a position.
pub fn require_span<T>(node: &serde_saphyr::Spanned<T>) -> Result<(usize, usize), EditError> {
    span(node).ok_or_else(no_position)
}

/// Whether the node is written where it is used (not reached through an
/// alias or a merge key, which would make an edit change other places too).
pub fn is_own<T>(node: &serde_saphyr::Spanned<T>) -> bool {
    node.referenced.span().byte_offset() == node.defined.span().byte_offset()
}

/// Whether a collection node is written in flow style (`{…}` or `[…]`).
pub fn is_flow(text: &str, node: &Node) -> bool {
    span(node).is_some_and(|(start, _)| matches!(text.as_bytes().get(start), Some(b'{' | b'[')))
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |i| i + 1)
}

/// The offset just past the end of the line holding `at` (after its newline).
fn next_line(text: &str, at: usize) -> usize {
    text[at..].find('\n').map_or(text.len(), |i| at + i + 1)
}

fn indent_at(text: &str, line_start: usize) -> usize {
    text[line_start..]
        .bytes()
        .take_while(|b| *b == b' ')
        .count()
}

/// The end (exclusive, after its newline) of the block entry whose first
/// line starts at `first_line` with indentation `indent`: every following
/// line that is blank, or indented deeper, belongs to it; trailing blank and
/// comment-only lines are left to whatever follows.
fn block_extent_end(text: &str, first_line: usize, indent: usize) -> usize {
    let mut end = next_line(text, first_line);
    let mut cursor = end;
    while cursor < text.len() {
        let next = next_line(text, cursor);
        let line = &text[cursor..next];
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            cursor = next;
            continue;
        }
        if indent_at(text, cursor) <= indent || trimmed.starts_with("...") || trimmed == "---" {
            break;
        }
        end = next;
        cursor = next;
    }
    end
}

/// The offset of the bracket closing the flow collection opened at `open`.
pub fn flow_close(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'\'' => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            b'#' if i > 0 && bytes[i - 1].is_ascii_whitespace() => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Why an edit cannot be made in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EditError(pub String);

fn no_position() -> EditError {
    EditError("the YAML parser gave no position for this value; edit the manifests by hand".into())
}

/// Replace a scalar with `new`, keeping its quoting style where it can.
pub fn set_scalar(text: &str, node: &Node, new: &str) -> Result<Splice, EditError> {
    let (start, end) = span(node).ok_or_else(no_position)?;
    let old = &text[start..end];
    let replacement = match old.as_bytes().first() {
        Some(b'"') => double_quoted(new),
        Some(b'\'') => format!("'{}'", new.replace('\'', "''")),
        // A number written plain stays a plain number.
        _ if matches!(node.value, Value::Int(_) | Value::Float(_))
            && new.parse::<f64>().is_ok() =>
        {
            new.to_string()
        }
        _ => scalar(new),
    };
    Ok(Splice {
        start,
        end,
        text: replacement,
    })
}

/// `s` as a YAML scalar: plain when that reads back as the same string,
/// double-quoted otherwise.
pub fn scalar(s: &str) -> String {
    let plain_safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@+=~%".contains(c))
        && !s.starts_with(['-', ':', '@', '%', '~'])
        && !s.contains(": ")
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        )
        && s.parse::<f64>().is_err();
    if plain_safe {
        s.to_string()
    } else {
        double_quoted(s)
    }
}

/// A double-quoted YAML scalar (JSON string syntax is valid YAML).
pub fn double_quoted(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// The entries of a mapping written in this file at this place (not merged in).
pub fn own_entries(entries: &[(Key, Node)]) -> impl Iterator<Item = &(Key, Node)> {
    entries.iter().filter(|(key, _)| is_own(key))
}

/// Insert `key: value` into a mapping. `parent_key` is the key the mapping
/// belongs to (for a block mapping's indentation), `value` is one-line YAML.
pub fn insert_entry(
    text: &str,
    parent_key: &Key,
    map: &Node,
    key: &str,
    value: &str,
) -> Result<Splice, EditError> {
    let Value::Map(entries) = &map.value else {
        return Err(EditError("expected a mapping".into()));
    };
    if is_flow(text, map) {
        let (open, _) = span(map).ok_or_else(no_position)?;
        let close = flow_close(text, open).ok_or_else(no_position)?;
        if text[open + 1..close].trim().is_empty() {
            return Ok(Splice {
                start: open + 1,
                end: close,
                text: format!(" {key}: {value} "),
            });
        }
        let last = text[..close].trim_end().len();
        return Ok(Splice {
            start: last,
            end: last,
            text: format!(", {key}: {value}"),
        });
    }
    let (parent_start, _) = span(parent_key).ok_or_else(no_position)?;
    let parent_line = line_start(text, parent_start);
    let parent_indent = indent_at(text, parent_line);
    let indent = own_entries(entries)
        .filter_map(|(k, _)| span(k))
        .map(|(start, _)| start - line_start(text, start))
        .next()
        .unwrap_or(parent_indent + 2);
    let end = block_extent_end(text, parent_line, parent_indent);
    let newline = if end > 0 && !text[..end].ends_with('\n') {
        "\n"
    } else {
        ""
    };
    Ok(Splice {
        start: end,
        end,
        text: format!("{newline}{}{key}: {value}\n", " ".repeat(indent)),
    })
}

/// Remove the entry `key` (with everything written under it) from its mapping.
pub fn remove_entry(text: &str, map: &Node, key: &Key, value: &Node) -> Result<Splice, EditError> {
    let (key_start, _) = span(key).ok_or_else(no_position)?;
    if is_flow(text, map) {
        let value_end = node_end(text, value)?;
        return Ok(remove_flow_item(text, key_start, value_end));
    }
    let first = line_start(text, key_start);
    let end = block_extent_end(text, first, indent_at(text, first));
    Ok(Splice {
        start: first,
        end,
        text: String::new(),
    })
}

/// The whole block entry of `key` (its lines, from the key's line to the
/// last line indented under it) and the key's indentation. `None` for an
/// entry written in flow style.
pub fn entry_lines(
    text: &str,
    map: &Node,
    key: &Key,
) -> Result<Option<(usize, usize, usize)>, EditError> {
    if is_flow(text, map) {
        return Ok(None);
    }
    let (key_start, _) = span(key).ok_or_else(no_position)?;
    let first = line_start(text, key_start);
    if text[first..key_start].trim() != "" {
        return Ok(None);
    }
    let indent = indent_at(text, first);
    Ok(Some((first, block_extent_end(text, first, indent), indent)))
}

/// `lines` with each line's indentation moved from `from` to `to` columns.
pub fn reindent(lines: &str, from: usize, to: usize) -> String {
    lines
        .split_inclusive('\n')
        .map(|line| {
            if line.trim().is_empty() {
                line.to_string()
            } else if to >= from {
                format!("{}{line}", " ".repeat(to - from))
            } else {
                let strip = line
                    .bytes()
                    .take(from - to)
                    .take_while(|b| *b == b' ')
                    .count();
                line[strip..].to_string()
            }
        })
        .collect()
}

/// The end of a node's text: a scalar's span, a flow collection's closing
/// bracket, or a block collection's last line.
fn node_end(text: &str, node: &Node) -> Result<usize, EditError> {
    let (start, end) = span(node).ok_or_else(no_position)?;
    match &node.value {
        Value::Map(_) | Value::Seq(_) if is_flow(text, node) => flow_close(text, start)
            .map(|c| c + 1)
            .ok_or_else(no_position),
        Value::Map(_) | Value::Seq(_) => {
            let first = line_start(text, start);
            Ok(block_extent_end(
                text,
                first,
                indent_at(text, first).saturating_sub(1),
            ))
        }
        _ => Ok(end),
    }
}

/// Remove `[start, end)` from a flow collection with one neighbouring comma.
fn remove_flow_item(text: &str, start: usize, end: usize) -> Splice {
    let after = &text[end..];
    let following = after.len() - after.trim_start().len();
    if after.trim_start().starts_with(',') {
        let comma = end + following + 1;
        let spaces = text[comma..].len() - text[comma..].trim_start_matches(' ').len();
        return Splice {
            start,
            end: comma + spaces,
            text: String::new(),
        };
    }
    let before = text[..start].trim_end_matches([' ', '\n']);
    if before.ends_with(',') {
        return Splice {
            start: before.len() - 1,
            end,
            text: String::new(),
        };
    }
    Splice {
        start,
        end,
        text: String::new(),
    }
}

/// Append `item` (one-line YAML) to a sequence.
pub fn append_item(
    text: &str,
    parent_key: &Key,
    seq: &Node,
    item: &str,
) -> Result<Splice, EditError> {
    let Value::Seq(items) = &seq.value else {
        return Err(EditError("expected a list".into()));
    };
    if is_flow(text, seq) {
        let (open, _) = span(seq).ok_or_else(no_position)?;
        let close = flow_close(text, open).ok_or_else(no_position)?;
        if text[open + 1..close].trim().is_empty() {
            return Ok(Splice {
                start: open + 1,
                end: close,
                text: item.to_string(),
            });
        }
        let last = text[..close].trim_end().len();
        return Ok(Splice {
            start: last,
            end: last,
            text: format!(", {item}"),
        });
    }
    let (parent_start, _) = span(parent_key).ok_or_else(no_position)?;
    let parent_line = line_start(text, parent_start);
    let parent_indent = indent_at(text, parent_line);
    let dash_indent = items
        .iter()
        .filter(|i| is_own(*i))
        .filter_map(span)
        .map(|(start, _)| indent_at(text, line_start(text, start)))
        .next()
        .unwrap_or(parent_indent + 2);
    let end = block_extent_end(text, parent_line, parent_indent);
    Ok(Splice {
        start: end,
        end,
        text: format!("{}- {item}\n", " ".repeat(dash_indent)),
    })
}

/// Remove one item of a sequence.
pub fn remove_item(text: &str, seq: &Node, item: &Node) -> Result<Splice, EditError> {
    let (start, _) = span(item).ok_or_else(no_position)?;
    let end = node_end(text, item)?;
    if is_flow(text, seq) {
        return Ok(remove_flow_item(text, start, end));
    }
    let first = line_start(text, start);
    Ok(Splice {
        start: first,
        end: block_extent_end(text, first, indent_at(text, first)),
        text: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml::parse_documents;

    fn doc(text: &str) -> Node {
        parse_documents(text).unwrap().remove(0)
    }

    fn entry<'a>(node: &'a Node, key: &str) -> (&'a Key, &'a Node) {
        let Value::Map(entries) = &node.value else {
            panic!("not a map")
        };
        let (k, v) = entries.iter().rev().find(|(k, _)| k.value == key).unwrap();
        (k, v)
    }

    #[test]
    fn scalars_keep_their_quoting_and_everything_else_stays() {
        let text = "a: 1   # one\nb: \"x\"\nc: 'y'\n";
        let d = doc(text);
        let splices = vec![
            set_scalar(text, entry(&d, "a").1, "5").unwrap(),
            set_scalar(text, entry(&d, "b").1, "new \"q\"").unwrap(),
            set_scalar(text, entry(&d, "c").1, "it's").unwrap(),
        ];
        assert_eq!(
            apply(text, splices),
            "a: 5   # one\nb: \"new \\\"q\\\"\"\nc: 'it''s'\n"
        );
    }

    #[test]
    fn block_and_flow_mappings_take_new_entries_at_their_end() {
        let text = "web:\n  image: x   # c\n  env:\n    A: 1\n\n# next\ndb: { image: y }\ne: {}\n";
        let d = doc(text);
        let (web_key, web) = entry(&d, "web");
        let (db_key, db) = entry(&d, "db");
        let (e_key, e) = entry(&d, "e");
        let out = apply(
            text,
            vec![
                insert_entry(text, web_key, web, "replicas", "3").unwrap(),
                insert_entry(text, db_key, db, "replicas", "2").unwrap(),
                insert_entry(text, e_key, e, "k", "v").unwrap(),
            ],
        );
        assert_eq!(
            out,
            "web:\n  image: x   # c\n  env:\n    A: 1\n  replicas: 3\n\n# next\ndb: { image: y, replicas: 2 }\ne: { k: v }\n"
        );
    }

    #[test]
    fn entries_and_items_are_removed_with_what_belongs_to_them() {
        let text = "a:\n  x: 1\n  y:\n    - 1\n    - 2\n  z: 3\nf: { p: 1, q: [1, 2], r: 3 }\nl:\n  - one\n  - two\n";
        let d = doc(text);
        let (_, a) = entry(&d, "a");
        let (yk, yv) = entry(a, "y");
        let (_, f) = entry(&d, "f");
        let (qk, qv) = entry(f, "q");
        let (_, l) = entry(&d, "l");
        let Value::Seq(items) = &l.value else {
            panic!()
        };
        let out = apply(
            text,
            vec![
                remove_entry(text, a, yk, yv).unwrap(),
                remove_entry(text, f, qk, qv).unwrap(),
                remove_item(text, l, &items[0]).unwrap(),
            ],
        );
        assert_eq!(out, "a:\n  x: 1\n  z: 3\nf: { p: 1, r: 3 }\nl:\n  - two\n");
    }

    #[test]
    fn sequences_take_new_items_in_their_own_style() {
        let text = "t: [a, b]\nu: []\nv:\n  - a\nw: 1\n";
        let d = doc(text);
        let (tk, t) = entry(&d, "t");
        let (uk, u) = entry(&d, "u");
        let (vk, v) = entry(&d, "v");
        let out = apply(
            text,
            vec![
                append_item(text, tk, t, "c").unwrap(),
                append_item(text, uk, u, "c").unwrap(),
                append_item(text, vk, v, "c").unwrap(),
            ],
        );
        assert_eq!(out, "t: [a, b, c]\nu: [c]\nv:\n  - a\n  - c\nw: 1\n");
    }

    #[test]
    fn plain_scalars_are_quoted_only_when_needed() {
        assert_eq!(scalar("nginx:1.25"), "nginx:1.25");
        assert_eq!(scalar("true"), "\"true\"");
        assert_eq!(scalar("1.5"), "\"1.5\"");
        assert_eq!(scalar("a b"), "\"a b\"");
        assert_eq!(scalar(""), "\"\"");
    }
}
