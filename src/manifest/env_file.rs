//! `env_file`: variables read from files in the commit, in Compose's
//! format, merged under a service's own `environment`.
//!
//! The format: one `KEY=VALUE` per line, optionally after `export `;
//! blank lines and lines starting with `#` are skipped. A value may be
//! unquoted (an inline comment needs a space before its `#`), in single
//! quotes (taken literally) or in double quotes (`\n`, `\t`, `\\`, `\"` and
//! `\$` are escapes). Values are taken as written: unlike the manifests,
//! env files are not interpolated.

use super::diagnostic::{Diagnostic, Location};
use super::encrypted::{self, Decrypt, Read};
use super::model::Manifest;
use super::validate::RepoTree;

/// Read every service's env files from `tree` and add their variables to
/// its `environment`, where it does not set them itself. Later files win
/// over earlier ones, as in Compose. A SOPS-encrypted env file (any of
/// its formats: its top-level values are the variables) is opened as
/// `decrypt` allows; the values it gives join the manifest's secrets.
pub fn merge(
    manifest: &mut Manifest,
    tree: &dyn RepoTree,
    decrypt: Decrypt<'_>,
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let mut secrets = Vec::new();
    // Each file is read (and opened) once, however many services use it.
    let mut read = std::collections::BTreeMap::new();
    for service in manifest.services.values_mut() {
        let mut from_files = std::collections::BTreeMap::new();
        for path in &service.env_files {
            let at = service.location_of("env_file").clone();
            let key = format!("services.{}.env_file", service.name);
            let file = read
                .entry(path.clone())
                .or_insert_with(|| encrypted::read(tree, path, decrypt))
                .clone();
            let pairs = match file {
                Ok(Read::Plain(bytes)) => match parse(&String::from_utf8_lossy(&bytes)) {
                    Ok(pairs) => pairs,
                    Err((line, message)) => {
                        problems.push(
                            Diagnostic::error(
                                Location::new(path, line, 1),
                                format!("env file of service `{}`: {message}", service.name),
                            )
                            .key(key)
                            .related(at)
                            .help("write one KEY=VALUE per line; quote values with spaces or #"),
                        );
                        continue;
                    }
                },
                Ok(Read::Opened(opened)) => match opened.variables() {
                    Ok(pairs) => {
                        secrets.extend(pairs.iter().map(|(_, v)| v.clone()));
                        pairs
                    }
                    Err(message) => {
                        problems.push(
                            Diagnostic::error(Location::new(path, 1, 1), message)
                                .key(key)
                                .related(at),
                        );
                        continue;
                    }
                },
                Ok(Read::Sealed(bytes)) => {
                    problems.push(encrypted::sealed_notice(path, &key));
                    encrypted::sealed_variables(path, &bytes)
                }
                // A missing file is reported by the path checks.
                Ok(Read::Missing) => continue,
                Err(reason) => {
                    problems.push(Diagnostic::error(at, reason).key(key).help(
                        "give pier the age key the file is encrypted to, or fetch the repository again if it is damaged",
                    ));
                    continue;
                }
            };
            from_files.extend(pairs);
        }
        for (key, value) in from_files {
            service.environment.entry(key).or_insert(Some(value));
        }
    }
    manifest.secret_values.extend(secrets);
    problems
}

/// The variables of an env file, in order; or the line (from 1) of the
/// first problem and what it is.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut pairs = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            return Err((line_number, format!("`{line}` is not KEY=VALUE")));
        };
        let key = key.trim();
        if key.is_empty() || key.chars().any(|c| c.is_whitespace()) {
            return Err((line_number, format!("`{key}` is not a variable name")));
        }
        let value = parse_value(value.trim_start()).map_err(|m| (line_number, m))?;
        pairs.push((key.to_string(), value));
    }
    Ok(pairs)
}

fn parse_value(value: &str) -> Result<String, String> {
    if let Some(rest) = value.strip_prefix('\'') {
        let (inside, after) = rest
            .split_once('\'')
            .ok_or("a single-quoted value does not end")?;
        return only_comment_after(after).map(|()| inside.to_string());
    }
    if let Some(rest) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => {
                    return only_comment_after(chars.as_str()).map(|()| out);
                }
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(other @ ('\\' | '"' | '$')) => out.push(other),
                    Some(other) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Err("a double-quoted value does not end".into());
    }
    let value = match value.find(" #") {
        Some(comment) => &value[..comment],
        None => value,
    };
    Ok(value.trim_end().to_string())
}

fn only_comment_after(after: &str) -> Result<(), String> {
    let after = after.trim();
    if after.is_empty() || after.starts_with('#') {
        Ok(())
    } else {
        Err(format!("`{after}` follows a quoted value"))
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn compose_env_files_parse() {
        let text = "# settings\n\nexport A=1\nB = two words # a comment\nC='lit $X # kept'\nD=\"a\\nb \\\"q\\\"\"\nE=\nF=x#y\n";
        let pairs = parse(text).unwrap();
        let expected = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "lit $X # kept"),
            ("D", "a\nb \"q\""),
            ("E", ""),
            ("F", "x#y"),
        ];
        assert_eq!(
            pairs,
            expected
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn problems_name_their_line() {
        assert_eq!(parse("A=1\nnot a pair\n").unwrap_err().0, 2);
        assert_eq!(parse("A=\"open\n").unwrap_err().0, 1);
        assert_eq!(parse("A='x' y\n").unwrap_err().0, 1);
    }
}
