//! SOPS files encrypted to age recipients: recognised, decrypted with the
//! MAC checked, and written (for `pier secret`).
//!
//! This is a small implementation of the documented format rather than a
//! crate: the one Rust crate that reads SOPS files (`rops`) reads neither
//! dotenv nor binary files, pulls in a cloud SDK by default, and has few
//! users. The format is stable and small: each value is AES-256-GCM under a
//! data key (see [`cipher`]); the data key is an age file per recipient in
//! the `sops` section; a SHA-512 of every value in file order, encrypted
//! with the `lastmodified` time as additional data, is the MAC, so a value
//! removed, added or reordered is caught. The tests encrypt with the real
//! `sops` and decrypt here, and the other way round.

mod cipher;
pub mod document;
mod keys;

use sha2::{Digest, Sha512};

pub use document::{Format, Node};
pub use keys::Keys;

/// Why a SOPS file could not be read or written. Never holds a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SopsError {
    #[error(
        "is encrypted with SOPS, and no age key is given (set PIER_AGE_KEY_FILE or SOPS_AGE_KEY_FILE to the key file)"
    )]
    NoKey,
    #[error("none of the age keys given can decrypt it; it is encrypted to {0}")]
    NotForThisKey(String),
    #[error("its MAC does not match its contents: it was changed without its key, or damaged")]
    Mac,
    #[error("is not a SOPS file pier can read: {0}")]
    Malformed(String),
}

/// The default for new files: keys ending so stay readable, as in SOPS.
const UNENCRYPTED_SUFFIX: &str = "_unencrypted";
/// The format version written into new files (the SOPS release whose
/// format this follows).
const FORMAT_VERSION: &str = "3.11.0";

/// Whether a file is SOPS-encrypted: its document has a `sops` section
/// with a MAC (a dotenv file: a `sops_mac=` line).
pub fn is_encrypted(path: &str, bytes: &[u8]) -> bool {
    let format = Format::of(path);
    if format == Format::Dotenv {
        return String::from_utf8_lossy(bytes)
            .lines()
            .any(|line| line.starts_with("sops_mac="));
    }
    if !bytes.windows(4).any(|w| w == b"sops") {
        return false;
    }
    let parsed = match format {
        // A binary file stored by SOPS is JSON.
        Format::Binary => document::parse(Format::Json, bytes),
        other => document::parse(other, bytes),
    };
    parsed
        .ok()
        .and_then(|doc| doc.get("sops").and_then(|s| s.get("mac")).cloned())
        .is_some()
}

/// A decrypted file.
#[derive(Clone)]
pub struct Opened {
    pub format: Format,
    pub document: Node,
}

impl Opened {
    /// The file as `sops decrypt` gives it: the document in its format, or
    /// for a binary file the bytes it holds.
    pub fn plaintext(&self) -> Vec<u8> {
        if self.format == Format::Binary {
            return self
                .document
                .get("data")
                .and_then(Node::scalar_bytes)
                .unwrap_or_default();
        }
        document::emit(self.format, &self.document)
    }

    /// The top-level scalars as variables (what an env file gives), in order.
    pub fn variables(&self) -> Result<Vec<(String, String)>, String> {
        let Node::Map(entries) = &self.document else {
            return Err("its document is not a mapping of variables".into());
        };
        let mut out = Vec::new();
        for (key, value) in entries {
            if matches!(value, Node::Comment(_)) {
                continue;
            }
            let Some(bytes) = value.scalar_bytes() else {
                return Err(format!("`{key}` is not a single value"));
            };
            let text = match value {
                Node::Bool(b) => b.to_string(),
                _ => String::from_utf8_lossy(&bytes).into_owned(),
            };
            out.push((key.clone(), text));
        }
        Ok(out)
    }

    /// Every value that was encrypted, for masking.
    pub fn secret_values(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_values(&self.document, &mut out);
        out
    }
}

fn collect_values(node: &Node, out: &mut Vec<String>) {
    match node {
        Node::Map(entries) => entries.iter().for_each(|(_, v)| collect_values(v, out)),
        Node::List(items) => items.iter().for_each(|v| collect_values(v, out)),
        Node::Str(text) => out.push(text.clone()),
        Node::Bytes(bytes) => out.push(String::from_utf8_lossy(bytes).into_owned()),
        Node::Int(_) | Node::Float(_) | Node::Bool(_) | Node::Null | Node::Comment(_) => {}
    }
}

/// Which values of a file are encrypted, from its `sops` section.
#[derive(Debug, Clone, Default)]
struct Rules {
    unencrypted_suffix: Option<String>,
    encrypted_suffix: Option<String>,
    unencrypted_regex: Option<regex::Regex>,
    encrypted_regex: Option<regex::Regex>,
    mac_only_encrypted: bool,
}

impl Rules {
    fn read(meta: &Node) -> Result<Rules, SopsError> {
        let text = |key: &str| {
            meta.get(key)
                .and_then(Node::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let regex = |key: &str| {
            text(key)
                .map(|r| {
                    regex::Regex::new(&r).map_err(|_| {
                        SopsError::Malformed(format!("its `{key}` is not a regular expression"))
                    })
                })
                .transpose()
        };
        if text("encrypted_comment_regex").is_some() || text("unencrypted_comment_regex").is_some()
        {
            return Err(SopsError::Malformed(
                "comment regexes are not supported; re-encrypt it without them".into(),
            ));
        }
        Ok(Rules {
            unencrypted_suffix: text("unencrypted_suffix"),
            encrypted_suffix: text("encrypted_suffix"),
            unencrypted_regex: regex("unencrypted_regex")?,
            encrypted_regex: regex("encrypted_regex")?,
            mac_only_encrypted: match meta.get("mac_only_encrypted") {
                Some(Node::Bool(b)) => *b,
                Some(Node::Str(s)) => s == "true",
                _ => false,
            },
        })
    }

    /// Whether the value at `path` is encrypted, as SOPS decides it.
    fn encrypts(&self, path: &[String]) -> bool {
        let mut encrypted = true;
        if let Some(suffix) = &self.unencrypted_suffix
            && path.iter().any(|p| p.ends_with(suffix.as_str()))
        {
            encrypted = false;
        }
        if let Some(suffix) = &self.encrypted_suffix {
            encrypted = path.iter().any(|p| p.ends_with(suffix.as_str()));
        }
        if let Some(regex) = &self.unencrypted_regex
            && path.iter().any(|p| regex.is_match(p))
        {
            encrypted = false;
        }
        if let Some(regex) = &self.encrypted_regex {
            encrypted = path.iter().any(|p| regex.is_match(p));
        }
        encrypted
    }
}

/// Visit every leaf (scalar or comment) in file order with its path.
fn walk<E>(
    node: &mut Node,
    path: &mut Vec<String>,
    visit: &mut impl FnMut(&mut Node, &[String]) -> Result<(), E>,
) -> Result<(), E> {
    match node {
        Node::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                if matches!(value, Node::Comment(_)) {
                    visit(value, path)?;
                    continue;
                }
                path.push(key.clone());
                walk(value, path, visit)?;
                path.pop();
            }
            Ok(())
        }
        Node::List(items) => items
            .iter_mut()
            .try_for_each(|item| walk(item, path, visit)),
        leaf => visit(leaf, path),
    }
}

/// The path as additional data: `db:password:` (a comment has the path
/// of the mapping it is in; at the top that is `:`).
fn aad(path: &[String]) -> String {
    path.join(":") + ":"
}

/// Split a parsed file into its document and its `sops` section.
fn split(format: Format, bytes: &[u8]) -> Result<(Node, Node), SopsError> {
    let parse_as = if format == Format::Binary {
        Format::Json
    } else {
        format
    };
    let document = document::parse(parse_as, bytes).map_err(SopsError::Malformed)?;
    let Node::Map(entries) = document else {
        return Err(SopsError::Malformed("its document is not a mapping".into()));
    };
    if format == Format::Dotenv {
        let (meta, rest): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|(k, _)| k.starts_with("sops_"));
        let meta: Vec<(String, String)> = meta
            .into_iter()
            .map(|(k, v)| {
                let text = v.as_str().unwrap_or_default().to_string();
                (k["sops_".len()..].to_string(), text)
            })
            .collect();
        return Ok((Node::Map(rest), document::unflatten(&meta)));
    }
    let (meta, rest): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| k == "sops");
    let meta = meta
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .ok_or_else(|| SopsError::Malformed("it has no `sops` section".into()))?;
    Ok((Node::Map(rest), meta))
}

/// The age recipients a file is encrypted to.
pub fn recipients(path: &str, bytes: &[u8]) -> Result<Vec<String>, SopsError> {
    let (_, meta) = split(Format::of(path), bytes)?;
    Ok(age_stanzas(&meta)
        .into_iter()
        .map(|(recipient, _)| recipient)
        .collect())
}

fn age_stanzas(meta: &Node) -> Vec<(String, String)> {
    let Some(Node::List(items)) = meta.get("age") else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            Some((
                item.get("recipient")?.as_str()?.to_string(),
                item.get("enc")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Decrypt a SOPS file and check its MAC.
pub fn decrypt(path: &str, bytes: &[u8], keys: &Keys) -> Result<Opened, SopsError> {
    let format = Format::of(path);
    let (mut document, meta) = split(format, bytes)?;
    let stanzas = age_stanzas(&meta);
    if stanzas.is_empty() {
        return Err(SopsError::Malformed(
            "it is not encrypted to any age recipient (only age keys are supported)".into(),
        ));
    }
    if keys.is_empty() {
        return Err(SopsError::NoKey);
    }
    let data_key = stanzas
        .iter()
        .find_map(|(_, enc)| keys.unwrap_data_key(enc))
        .ok_or_else(|| {
            SopsError::NotForThisKey(
                stanzas
                    .iter()
                    .map(|(r, _)| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })?;
    let rules = Rules::read(&meta)?;
    let mut hash = Sha512::new();
    if rules.mac_only_encrypted {
        // SOPS starts such a MAC with SHA-256("sops"), so it never equals
        // the MAC of the same file without the setting.
        hash.update(sha2::Sha256::digest(b"sops"));
    }
    walk(&mut document, &mut Vec::new(), &mut |leaf, path| {
        let encrypted = rules.encrypts(path);
        if encrypted {
            let sealed = match leaf {
                Node::Str(text) | Node::Comment(text) if cipher::is_encrypted(text) => {
                    Some(text.clone())
                }
                _ => None,
            };
            if let Some(sealed) = sealed {
                *leaf = cipher::decrypt(&sealed, &data_key, &aad(path))
                    .map_err(SopsError::Malformed)?;
            }
        }
        // Comments are encrypted but, as in SOPS, not part of the MAC.
        if (!rules.mac_only_encrypted || encrypted) && !matches!(leaf, Node::Comment(_)) {
            hash.update(leaf.scalar_bytes().unwrap_or_default());
        }
        Ok(())
    })?;
    let computed = hex::encode_upper(hash.finalize());
    let lastmodified = meta
        .get("lastmodified")
        .and_then(Node::as_str)
        .ok_or_else(|| SopsError::Malformed("its `sops` section has no `lastmodified`".into()))?;
    let stored = meta
        .get("mac")
        .and_then(Node::as_str)
        .ok_or_else(|| SopsError::Malformed("its `sops` section has no `mac`".into()))?;
    let stored = cipher::decrypt(stored, &data_key, lastmodified).map_err(|_| SopsError::Mac)?;
    if stored.as_str() != Some(computed.as_str()) {
        return Err(SopsError::Mac);
    }
    Ok(Opened { format, document })
}

/// Encrypt `plaintext` (a document in `format`, or any bytes for a binary
/// file) to `recipients`, as `sops encrypt --age` does: every value but
/// those under a key ending in `_unencrypted`.
pub fn encrypt(format: Format, plaintext: &[u8], recipients: &[String]) -> Result<Vec<u8>, String> {
    let document = match format {
        Format::Binary => Node::Map(vec![(
            "data".into(),
            match String::from_utf8(plaintext.to_vec()) {
                Ok(text) => Node::Str(text),
                Err(e) => Node::Bytes(e.into_bytes()),
            },
        )]),
        other => match document::parse(other, plaintext)? {
            node @ Node::Map(_) => node,
            _ => return Err("the document must be a mapping".into()),
        },
    };
    if document.get("sops").is_some() {
        return Err("the document already has a `sops` key".into());
    }
    seal(format, document, recipients)
}

fn seal(format: Format, mut document: Node, recipients: &[String]) -> Result<Vec<u8>, String> {
    if recipients.is_empty() {
        return Err("no age recipient given".into());
    }
    let mut data_key = [0u8; 32];
    aes_gcm::aead::rand_core::RngCore::fill_bytes(&mut aes_gcm::aead::OsRng, &mut data_key);
    let rules = Rules {
        unencrypted_suffix: Some(UNENCRYPTED_SUFFIX.into()),
        ..Rules::default()
    };
    let mut hash = Sha512::new();
    walk(&mut document, &mut Vec::new(), &mut |leaf, path| {
        if !matches!(leaf, Node::Comment(_)) {
            hash.update(leaf.scalar_bytes().unwrap_or_default());
        }
        let skip = matches!(leaf, Node::Null) || matches!(leaf, Node::Str(s) if s.is_empty());
        if rules.encrypts(path) && !skip {
            let sealed = cipher::encrypt(leaf, &data_key, &aad(path));
            *leaf = match leaf {
                Node::Comment(_) => Node::Comment(sealed),
                _ => Node::Str(sealed),
            };
        }
        Ok::<(), String>(())
    })?;
    let lastmodified = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mac = cipher::encrypt(
        &Node::Str(hex::encode_upper(hash.finalize())),
        &data_key,
        &lastmodified,
    );
    let mut stanzas = Vec::new();
    for recipient in recipients {
        stanzas.push(Node::Map(vec![
            ("recipient".into(), Node::Str(recipient.clone())),
            (
                "enc".into(),
                Node::Str(keys::wrap_data_key(&data_key, recipient)?),
            ),
        ]));
    }
    let meta = Node::Map(vec![
        ("age".into(), Node::List(stanzas)),
        ("lastmodified".into(), Node::Str(lastmodified)),
        ("mac".into(), Node::Str(mac)),
        (
            "unencrypted_suffix".into(),
            Node::Str(UNENCRYPTED_SUFFIX.into()),
        ),
        ("version".into(), Node::Str(FORMAT_VERSION.into())),
    ]);
    let Node::Map(mut entries) = document else {
        unreachable!("a document is a mapping")
    };
    if format == Format::Dotenv {
        let mut flat = Vec::new();
        document::flatten("sops", &meta, &mut flat);
        let flat = flat
            .into_iter()
            .map(|(k, v)| (k.replacen("sops__map_", "sops_", 1), v));
        entries.extend(flat);
    } else {
        entries.push(("sops".into(), meta));
    }
    Ok(document::emit(format, &Node::Map(entries)))
}

/// The recipients to write a changed file to, after checking pier can
/// write it as it was: encrypted to age keys only, with SOPS's default
/// rule for what stays plain (an `_unencrypted` suffix). Anything else is
/// left to `sops` itself rather than quietly changed.
pub fn rewritable(path: &str, bytes: &[u8]) -> Result<Vec<String>, SopsError> {
    let (_, meta) = split(Format::of(path), bytes)?;
    for other in [
        "kms",
        "gcp_kms",
        "azure_kv",
        "hc_vault",
        "pgp",
        "key_groups",
    ] {
        let used = match meta.get(other) {
            Some(Node::List(items)) => !items.is_empty(),
            Some(Node::Str(text)) => !text.is_empty(),
            Some(Node::Null) | None => false,
            Some(_) => true,
        };
        if used {
            return Err(SopsError::Malformed(format!(
                "it is also encrypted to `{other}` keys, which pier does not write; change it with `sops edit`"
            )));
        }
    }
    let rules = Rules::read(&meta)?;
    let default_rules = rules.encrypted_suffix.is_none()
        && rules.unencrypted_regex.is_none()
        && rules.encrypted_regex.is_none()
        && !rules.mac_only_encrypted
        && rules
            .unencrypted_suffix
            .as_deref()
            .is_none_or(|s| s == UNENCRYPTED_SUFFIX);
    if !default_rules {
        return Err(SopsError::Malformed(
            "it has its own rules for what stays plain, which pier does not write; change it with `sops edit`".into(),
        ));
    }
    let recipients: Vec<String> = age_stanzas(&meta).into_iter().map(|(r, _)| r).collect();
    if recipients.is_empty() {
        return Err(SopsError::Malformed(
            "it is not encrypted to any age recipient".into(),
        ));
    }
    Ok(recipients)
}

impl Opened {
    /// Set the value at `path` (keys of nested mappings; one key for a
    /// dotenv file) to the text `value`, adding the key if it is new.
    pub fn set(&mut self, path: &[&str], value: String) -> Result<(), String> {
        if self.format == Format::Binary {
            return Err("a binary file holds one value: use `pier secret edit`".into());
        }
        if self.format == Format::Dotenv && path.len() != 1 {
            return Err("a dotenv file has one level of keys".into());
        }
        let Some((last, parents)) = path.split_last() else {
            return Err("no key given".into());
        };
        let mut node = &mut self.document;
        for key in parents {
            let Node::Map(entries) = node else {
                return Err(format!("`{key}` is inside a value that is not a mapping"));
            };
            if !entries.iter().any(|(k, _)| k == key) {
                entries.push((key.to_string(), Node::Map(Vec::new())));
            }
            node = entries
                .iter_mut()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .expect("present");
        }
        let Node::Map(entries) = node else {
            return Err(format!("`{last}` is inside a value that is not a mapping"));
        };
        match entries.iter_mut().find(|(k, _)| k == last) {
            Some((_, Node::Map(_) | Node::List(_))) => {
                return Err(format!(
                    "`{}` holds a mapping or list, not a value",
                    path.join(".")
                ));
            }
            Some((_, slot)) => *slot = Node::Str(value),
            None => entries.push((last.to_string(), Node::Str(value))),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
