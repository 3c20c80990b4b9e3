//! Problems found in manifests, with where they are and what to do about them.
//!
//! Every check in the loader and the validator reports [`Diagnostic`]s into one
//! list, so a user sees all problems of a commit at once. The JSON form
//! (`pier validate -o json`) is a stable interface: fields are only ever added.

use std::fmt;

use serde::Serialize;

/// How bad a problem is. Only errors make manifests invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Notice,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
        })
    }
}

/// A place in a manifest file. Lines and columns count from 1; 0 means the
/// whole file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub fn new(file: &str, line: usize, column: usize) -> Self {
        Location {
            file: file.to_string(),
            line,
            column,
        }
    }

    /// The file as a whole, for problems that have no better place.
    pub fn file(file: &str) -> Self {
        Location::new(file, 0, 0)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

/// One problem: where, which key, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    #[serde(flatten)]
    pub location: Location,
    /// The key path the problem is about, e.g. `services.web.ports[1]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub message: String,
    /// What to do about it, e.g. "did you mean `ports`?".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// A second place the problem involves, e.g. the first definition of a duplicate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related: Option<Location>,
}

impl Diagnostic {
    pub fn error(location: Location, message: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Error, location, message)
    }

    pub fn warning(location: Location, message: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Warning, location, message)
    }

    pub fn notice(location: Location, message: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Notice, location, message)
    }

    fn new(severity: Severity, location: Location, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            location,
            key: None,
            message: message.into(),
            help: None,
            related: None,
        }
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn related(mut self, related: Location) -> Self {
        self.related = Some(related);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: ", self.location, self.severity)?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(related) = &self.related {
            write!(f, "\n  note: see {related}")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::damerau_levenshtein(word, candidate), candidate))
        .filter(|(distance, candidate)| {
            // One edit for short names, up to a third of the length for longer ones.
            *distance <= (candidate.len().max(word.len()) / 3).max(1)
        })
        .min()
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let keys = ["ports", "image", "environment", "target_num_containers"];
        assert_eq!(did_you_mean("prots", keys), Some("ports"));
        assert_eq!(did_you_mean("enviroment", keys), Some("environment"));
        assert_eq!(
            did_you_mean("target_num_container", keys),
            Some("target_num_containers")
        );
        assert_eq!(did_you_mean("zzz", keys), None);
    }

    #[test]
    fn renders_location_key_message_and_help() {
        let d = Diagnostic::error(Location::new("pier/web.yaml", 7, 5), "unknown key `prots`")
            .key("services.web")
            .help("did you mean `ports`?");
        assert_eq!(
            d.to_string(),
            "pier/web.yaml:7:5: error: services.web: unknown key `prots`\n  help: did you mean `ports`?"
        );
    }
}
