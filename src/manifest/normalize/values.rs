//! Values shared by many keys: command lines, key-value lists
//! (environment, labels, build args), durations, sizes and CPUs.

#[allow(unused_imports)]
use super::*;

pub(super) fn command_line(
    spec: &StringOrList,
    here: &Here,
    key: &str,
    p: &mut Problems,
) -> Option<Vec<String>> {
    match spec {
        StringOrList::Many(args) => Some(args.clone()),
        StringOrList::One(line) => match shell_words::split(line) {
            Ok(args) => Some(args),
            Err(_) => {
                p.push(
                    here.error(&[k(key)], format!("`{key}` has an unclosed quote"))
                        .help("close the quote, or write the arguments as a list"),
                );
                None
            }
        },
    }
}

/// `KEY=VALUE` lists and mappings. A key without a value takes pier's own environment's.
pub(super) fn string_or_list(value: Option<&StringOrList>) -> Vec<String> {
    match value {
        None => Vec::new(),
        Some(StringOrList::One(one)) => vec![one.clone()],
        Some(StringOrList::Many(many)) => many.clone(),
    }
}

/// Environment variables: key-value pairs where a bare `NAME` that pier's
/// own environment does not set is left out, as in Compose, with a notice
/// so the omission is not silent.
pub(super) fn environment_values(
    spec: &KeyValues,
    here: &Here,
    at: &[Seg],
    vars: &Vars,
    p: &mut Problems,
) -> BTreeMap<String, Option<String>> {
    let values = key_values(spec, here, at, vars, p);
    for (key, _) in values.iter().filter(|(_, value)| value.is_none()) {
        let mut path = at.to_vec();
        path.push(match spec {
            KeyValues::Map(_) => k(key),
            KeyValues::List(items) => i(items.iter().position(|item| item == key).unwrap_or(0)),
        });
        p.push(
            Diagnostic::notice(
                here.loc(&path),
                format!("`{key}` is not set in pier's environment, so containers do not get it"),
            )
            .key(here.key_path(&path))
            .help(format!(
                "set {key} in the environment of the pier process, or write `{key}=VALUE`"
            )),
        );
    }
    values
}

pub(super) fn key_values(
    spec: &KeyValues,
    here: &Here,
    at: &[Seg],
    vars: &Vars,
    p: &mut Problems,
) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    match spec {
        KeyValues::Map(map) => {
            for (key, value) in map {
                out.insert(
                    key.clone(),
                    value
                        .as_ref()
                        .map(|v| v.to_string())
                        .or_else(|| vars.get(key).cloned()),
                );
            }
        }
        KeyValues::List(items) => {
            for (n, item) in items.iter().enumerate() {
                let (key, value) = match item.split_once('=') {
                    Some((key, value)) => (key.to_string(), Some(value.to_string())),
                    None => (item.clone(), vars.get(item).cloned()),
                };
                let mut path = at.to_vec();
                path.push(i(n));
                if key.is_empty() || key.contains(char::is_whitespace) {
                    p.push(here.error(&path, format!("`{item}` is not `KEY=VALUE`")));
                } else if out.insert(key.clone(), value).is_some() {
                    p.push(
                        here.error(&path, format!("`{key}` is set twice"))
                            .help("remove one of the two"),
                    );
                }
            }
        }
    }
    out
}

pub(super) fn labels(
    spec: &ServiceSpec,
    here: &Here,
    vars: &Vars,
    p: &mut Problems,
) -> BTreeMap<String, String> {
    let Some(labels) = &spec.labels else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (key, value) in key_values(labels, here, &[k("labels")], vars, p) {
        if key.starts_with("pier.") {
            p.push(
                here.error(
                    &[k("labels")],
                    format!("label `{key}` uses the reserved prefix `pier.`"),
                )
                .help(
                    "pier marks the containers it owns with `pier.*` labels; choose another prefix",
                ),
            );
        } else {
            out.insert(key, value.unwrap_or_default());
        }
    }
    out
}

/// One setting written in two places (Compose's top-level key and its
/// `deploy` form): either will do, both must agree.
pub(super) fn agree<T: PartialEq>(
    here: &Here,
    p: &mut Problems,
    (first, a): (&str, Option<T>),
    (second, b): (&str, Option<T>),
) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) if a != b => {
            let path: Vec<Seg> = second.split('.').map(k).collect();
            p.push(
                here.error(&path, format!("`{first}` and `{second}` disagree"))
                    .help("they set the same thing: keep one"),
            );
            Some(a)
        }
        (a, b) => a.or(b),
    }
}

/// Compose durations: `10s`, `1m30s`, `500ms`, `2h`.
pub fn duration(text: &str, here: &Here, at: &[Seg], p: &mut Problems) -> Option<Duration> {
    match humantime::parse_duration(text) {
        Ok(d) => Some(d),
        Err(_) => {
            p.push(
                here.error(at, format!("`{text}` is not a duration"))
                    .help("write e.g. `10s`, `1m30s`, `500ms`"),
            );
            None
        }
    }
}

/// A size in bytes written at `at`; an error calling it not a `what`
/// (with an `example` in the help, when given) if it does not parse.
pub(super) fn size(
    value: Option<&Scalar>,
    (here, at): (&Here, &[Seg]),
    what: &str,
    example: Option<&str>,
    p: &mut Problems,
) -> Option<u64> {
    let value = value?;
    let parsed = parse_bytes(&value.to_string());
    if parsed.is_none() {
        let error = here.error(at, format!("`{value}` is not a {what}"));
        p.push(match example {
            Some(example) => error.help(format!(
                "write bytes, or a number with b, k, m or g, e.g. `{example}`"
            )),
            None => error,
        });
    }
    parsed
}

/// A number of CPUs written at `at`, in billionths; an error if it is not
/// a positive number (with a help line when `with_help`).
pub(super) fn nano_cpus(
    value: Option<&Scalar>,
    (here, at): (&Here, &[Seg]),
    with_help: bool,
    p: &mut Problems,
) -> Option<i64> {
    let cpus = value?;
    match cpus.to_string().parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Some((n * 1e9).round() as i64),
        _ => {
            let error = here.error(at, format!("`{cpus}` is not a number of CPUs"));
            p.push(if with_help {
                error.help("write a positive number, e.g. `0.5` or `2`")
            } else {
                error
            });
            None
        }
    }
}

pub(super) fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let text = text
        .strip_suffix('b')
        .filter(|t| t.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(&text);
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let factor: u64 = match unit {
        "" | "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

/// `platform: os/arch[/variant]`, as Docker takes it (`linux/arm64`,
/// `linux/arm/v7`).
pub(super) fn platform(spec: &ServiceSpec, here: &Here, p: &mut Problems) -> Option<String> {
    let written = spec.platform.as_ref()?;
    let platform = written.trim().to_ascii_lowercase();
    let parts: Vec<&str> = platform.split('/').collect();
    let well_formed = (2..=3).contains(&parts.len())
        && parts.iter().all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if !well_formed {
        p.push(
            here.error(&[k("platform")], format!("`{written}` is not a platform"))
                .help("write os/arch or os/arch/variant, e.g. `linux/amd64`, `linux/arm64`, `linux/arm/v7`"),
        );
        return None;
    }
    Some(platform)
}
