//! Compose-style variable interpolation: `${VAR}`, `$VAR`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`, `${VAR:+alt}`,
//! `${VAR+alt}` and `$$` for a literal `$`.
//!
//! Values come from the environment of the process running pier; this is how a
//! secret reaches a container without being written in git. Unlike Compose, an
//! unset `${VAR}` is an error, not an empty string: a deploy tool must not guess.

use std::collections::HashMap;

/// Variables visible to interpolation.
pub type Vars = HashMap<String, String>;

/// The prefix of pier's own settings and secrets (API token, registry and
/// git credentials): never visible to manifests unless named exactly.
const OWN_PREFIX: &str = "PIER_";

/// The variables of `environment` manifests may use, in every way they can
/// take one (interpolation, name-only `environment` and stage `env`
/// entries, build args): those matching one of `allow` (globs with `*`,
/// `?`, `[…]`), or with no list every one. A `PIER_*` variable is admitted
/// only when `allow` names it exactly: no glob reaches pier's own secrets.
pub fn admitted(environment: &Vars, allow: &[String]) -> Vars {
    environment
        .iter()
        .filter(|(name, _)| is_admitted(name, allow))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// [`admitted`] over the environment of this process.
pub fn admitted_from_process(allow: &[String]) -> Vars {
    admitted(&std::env::vars().collect(), allow)
}

fn is_admitted(name: &str, allow: &[String]) -> bool {
    if name.starts_with(OWN_PREFIX) {
        return allow.iter().any(|entry| entry == name);
    }
    allow.is_empty() || allow.iter().any(|glob| glob_matches(glob, name))
}

/// Whether `name` matches the glob; a glob that does not parse matches
/// only itself.
fn glob_matches(glob: &str, name: &str) -> bool {
    globset::Glob::new(glob)
        .map(|g| g.compile_matcher().is_match(name))
        .unwrap_or(glob == name)
}

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    pub message: String,
    pub help: String,
    /// The variable that was missing, when that is the problem.
    pub unset: Option<String>,
}

/// What an unset variable stands for while the rest of a file is checked:
/// valid in most places a value goes (an image tag, a port, a name), and
/// any problem found where it was used is left out, as its value is unknown.
pub const UNKNOWN_VALUE: &str = "0";

/// The most distinct unset variables one string is expanded past.
const MAX_UNSET_PER_STRING: usize = 64;

/// Interpolate `text`, reporting every problem rather than the first. An
/// unset variable is reported and stands for [`UNKNOWN_VALUE`]; any other
/// problem makes the whole string unknown.
pub fn interpolate_all(text: &str, vars: &Vars) -> (String, Vec<InterpolationError>) {
    let mut problems = Vec::new();
    let mut with_unknowns: Option<Vars> = None;
    loop {
        match interpolate(text, with_unknowns.as_ref().unwrap_or(vars)) {
            Ok(value) => return (value, problems),
            Err(error) => {
                let unset = error.unset.clone();
                problems.push(error);
                match unset {
                    Some(name) if problems.len() < MAX_UNSET_PER_STRING => {
                        with_unknowns
                            .get_or_insert_with(|| vars.clone())
                            .insert(name, UNKNOWN_VALUE.to_string());
                    }
                    _ => return (UNKNOWN_VALUE.to_string(), problems),
                }
            }
        }
    }
}

/// How deep `${A:-${B:-…}}` may nest: far beyond any real file, far below
/// what would exhaust the stack (any branch can push a manifest).
const MAX_NESTING: usize = 16;
/// The longest value one string may expand to.
const MAX_EXPANSION: usize = 1 << 20;

/// Replace every variable reference in `text`.
pub fn interpolate(text: &str, vars: &Vars) -> Result<String, InterpolationError> {
    interpolate_at(text, vars, 0)
}

fn interpolate_at(text: &str, vars: &Vars, depth: usize) -> Result<String, InterpolationError> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    if depth > MAX_NESTING {
        return Err(InterpolationError {
            message: format!("`${{...}}` nested more than {MAX_NESTING} deep"),
            help: "nest defaults less deeply".into(),
            unset: None,
        });
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let close = matching_brace(inner).ok_or_else(|| InterpolationError {
                message: format!("unclosed `${{` in {text:?}"),
                help: "close it with `}`, or write `$$` for a literal `$`".into(),
                unset: None,
            })?;
            out.push_str(&expand_braced(&inner[..close], vars, depth)?);
            rest = &inner[close + 1..];
            check_expansion(&out)?;
        } else {
            let name_len = after
                .char_indices()
                .find(|(i, c)| {
                    !(c.is_ascii_alphanumeric() || *c == '_') || (*i == 0 && c.is_ascii_digit())
                })
                .map(|(i, _)| i)
                .unwrap_or(after.len());
            if name_len == 0 {
                // A `$` not followed by a name is literal text, as in a shell.
                out.push('$');
                rest = after;
            } else {
                out.push_str(&lookup_required(&after[..name_len], vars)?);
                rest = &after[name_len..];
                check_expansion(&out)?;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Refuse an expansion past [`MAX_EXPANSION`], however the variables
/// were written (`${X}` or `$X`).
fn check_expansion(out: &str) -> Result<(), InterpolationError> {
    if out.len() > MAX_EXPANSION {
        return Err(InterpolationError {
            message: format!("interpolation expands to more than {MAX_EXPANSION} bytes"),
            help: "a manifest value this large is a mistake".into(),
            unset: None,
        });
    }
    Ok(())
}

/// Index of the `}` closing a `${`, honouring nested `${...}` in defaults.
fn matching_brace(inner: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = inner.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' if i > 0 && bytes[i - 1] == b'$' => depth += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn expand_braced(expr: &str, vars: &Vars, depth: usize) -> Result<String, InterpolationError> {
    let interpolate = |word: &str, vars: &Vars| interpolate_at(word, vars, depth + 1);
    let name_len = expr
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expr.len());
    let (name, op) = expr.split_at(name_len);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(InterpolationError {
            message: format!("`${{{expr}}}` does not start with a variable name"),
            help: "names are letters, digits and `_`, not starting with a digit; write `$$` for a literal `$`".into(),
            unset: None,
        });
    }
    let value = vars.get(name);
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    let (operator, word) = split_operator(op).ok_or_else(|| InterpolationError {
        message: format!("`${{{expr}}}` uses an unknown operator {op:?}"),
        help: "use one of `:-`, `-`, `:?`, `?`, `:+`, `+`".into(),
        unset: None,
    })?;
    match operator {
        "" => lookup_required(name, vars),
        ":-" if set_nonempty => Ok(value.cloned().unwrap_or_default()),
        ":-" => interpolate(word, vars),
        "-" => match value {
            Some(v) => Ok(v.clone()),
            None => interpolate(word, vars),
        },
        ":?" if set_nonempty => Ok(value.cloned().unwrap_or_default()),
        "?" if value.is_some() => Ok(value.cloned().unwrap_or_default()),
        ":?" | "?" => Err(InterpolationError {
            message: if word.is_empty() {
                format!("required variable {name} is not set")
            } else {
                // The message is shown as written: expanding it could print
                // another variable's value in an error.
                format!("required variable {name} is not set: {word}")
            },
            help: format!("set {name} in the environment of the pier process"),
            unset: Some(name.to_string()),
        }),
        ":+" if set_nonempty => interpolate(word, vars),
        "+" if value.is_some() => interpolate(word, vars),
        _ => Ok(String::new()),
    }
}

fn split_operator(op: &str) -> Option<(&'static str, &str)> {
    if op.is_empty() {
        return Some(("", ""));
    }
    [":-", ":?", ":+", "-", "?", "+"]
        .into_iter()
        .find_map(|operator| op.strip_prefix(operator).map(|word| (operator, word)))
}

fn lookup_required(name: &str, vars: &Vars) -> Result<String, InterpolationError> {
    vars.get(name).cloned().ok_or_else(|| InterpolationError {
        message: format!("variable {name} is not set"),
        help: if is_platform_runtime_name(name) {
            format!(
                "Tutum and Docker Cloud set {name} inside the container at run time; write $${name} so the container's shell sees `${name}`"
            )
        } else {
            format!(
                "set {name} in the environment of the pier process, write ${{{name}:-default}} for a default, or $${name} for a literal `${name}`"
            )
        },
        unset: Some(name.to_string()),
    })
}

/// Whether `name` is one of the variables Tutum and Docker Cloud filled in
/// inside containers (`DB_PORT_5432_TCP_ADDR`, `DB_ENV_PASSWORD`,
/// `TUTUM_SERVICE_FQDN`, `DOCKERCLOUD_…`): written as `${NAME}` in a
/// stackfile, they were meant for the container, not for the file.
fn is_platform_runtime_name(name: &str) -> bool {
    if name.starts_with("TUTUM_") || name.starts_with("DOCKERCLOUD_") {
        return true;
    }
    if name.contains("_ENV_") {
        return true;
    }
    // `<ALIAS>_PORT_<number>_<TCP|UDP>[_ADDR|_PORT|_PROTO]`
    name.split("_PORT_").skip(1).any(|rest| {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && (rest[digits..].starts_with("_TCP") || rest[digits..].starts_with("_UDP"))
    })
}

/// The variable names `text` interpolates (`$NAME`, `${NAME…}`), so the
/// values they bring in can be masked wherever they show up.
pub fn referenced_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'$' {
            at += 1;
            continue;
        }
        // `$$` is a literal dollar; `${NAME` and `$NAME` name a variable.
        let start = match bytes.get(at + 1) {
            Some(b'$') => {
                at += 2;
                continue;
            }
            Some(b'{') => at + 2,
            _ => at + 1,
        };
        let end = start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count();
        names.insert(text[start..end].to_string());
        at = end;
    }
    names.remove("");
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_an_error_not_a_crash_and_messages_are_not_expanded() {
        let mut text = "x".to_string();
        for _ in 0..5000 {
            text = format!("${{A:-{text}}}");
        }
        let error = interpolate(&text, &Vars::new()).unwrap_err();
        assert!(error.message.contains("nested more than"), "{error:?}");

        let vars: Vars = [("SECRET".to_string(), "hunter22".to_string())].into();
        let error = interpolate("${NOPE:?${SECRET}}", &vars).unwrap_err();
        assert_eq!(
            error.message,
            "required variable NOPE is not set: ${SECRET}"
        );
    }

    /// A value repeated without braces is bounded like one with them.
    #[test]
    fn an_expansion_past_the_bound_is_refused_braced_or_not() {
        let vars: Vars = [("BIG".to_string(), "x".repeat(64 << 10))].into();
        for one in ["$BIG", "${BIG}"] {
            let text = one.repeat(17);
            let error = interpolate(&text, &vars).unwrap_err();
            assert!(
                error.message.contains("expands to more than"),
                "{one}: {error:?}"
            );
            assert_eq!(
                interpolate(&one.repeat(16), &vars).unwrap().len(),
                16 * (64 << 10)
            );
        }
    }

    #[test]
    fn every_unset_variable_is_reported_and_stands_for_an_unknown_value() {
        let (value, problems) = interpolate_all("${REG}/app:${TAG}-${SET}", &vars());
        assert_eq!(value, "0/app:0-value");
        let unset: Vec<_> = problems.iter().filter_map(|p| p.unset.clone()).collect();
        assert_eq!(unset, ["REG", "TAG"]);

        let (value, problems) = interpolate_all("${SET", &vars());
        assert_eq!(value, UNKNOWN_VALUE);
        assert!(problems[0].message.contains("unclosed"));
    }

    #[test]
    fn platform_runtime_variables_get_their_own_hint() {
        for name in [
            "DB_PORT_5432_TCP_ADDR",
            "REDIS_PORT_6379_TCP",
            "DB_ENV_POSTGRES_PASSWORD",
            "TUTUM_SERVICE_FQDN",
            "DOCKERCLOUD_NODE_HOSTNAME",
        ] {
            let help = interpolate(&format!("${{{name}}}"), &vars())
                .unwrap_err()
                .help;
            assert!(help.contains(&format!("$${name}")), "{name}: {help}");
            assert!(help.contains("Docker Cloud"), "{name}: {help}");
        }
        for name in ["DB_PORT", "APP_PORT_X", "ENVIRONMENT"] {
            let help = interpolate(&format!("${{{name}}}"), &vars())
                .unwrap_err()
                .help;
            assert!(!help.contains("Docker Cloud"), "{name}: {help}");
        }
    }

    #[test]
    fn referenced_names_are_found_and_dollar_dollar_is_not_one() {
        let names = referenced_names("a: ${ONE:-x} $TWO $$THREE ${FOUR?err} $");
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["FOUR", "ONE", "TWO"]
        );
    }

    fn vars() -> Vars {
        Vars::from([
            ("SET".into(), "value".into()),
            ("EMPTY".into(), String::new()),
        ])
    }

    #[test]
    fn forms() {
        let v = vars();
        let cases = [
            ("plain", "plain"),
            ("${SET}", "value"),
            ("$SET/x", "value/x"),
            ("a${SET}b", "avalueb"),
            ("${MISSING:-dflt}", "dflt"),
            ("${EMPTY:-dflt}", "dflt"),
            ("${EMPTY-dflt}", ""),
            ("${MISSING-dflt}", "dflt"),
            ("${MISSING:-${SET}}", "value"),
            ("${SET:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("$$SET", "$SET"),
            ("P@$$w0rd", "P@$w0rd"),
            ("cost: 5$", "cost: 5$"),
        ];
        for (input, expected) in cases {
            assert_eq!(interpolate(input, &v).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn missing_variables_are_errors_that_say_what_to_set() {
        let v = vars();
        let err = interpolate("${NOPE}", &v).unwrap_err();
        assert_eq!(err.message, "variable NOPE is not set");
        assert!(err.help.contains("set NOPE"));
        assert_eq!(
            interpolate("$NOPE", &v).unwrap_err().message,
            "variable NOPE is not set"
        );
        assert_eq!(
            interpolate("${NOPE:?the token for the API}", &v)
                .unwrap_err()
                .message,
            "required variable NOPE is not set: the token for the API"
        );
        assert_eq!(
            interpolate("${EMPTY:?}", &v).unwrap_err().message,
            "required variable EMPTY is not set"
        );
        assert!(
            interpolate("${SET", &v)
                .unwrap_err()
                .message
                .contains("unclosed")
        );
        assert!(
            interpolate("${1X}", &v)
                .unwrap_err()
                .message
                .contains("variable name")
        );
        assert!(
            interpolate("${SET%x}", &v)
                .unwrap_err()
                .message
                .contains("unknown operator")
        );
    }
}
