//! `pier validate`: load the manifests at a commit, run every rule, report.

use std::path::PathBuf;

use serde::Serialize;

use crate::manifest::encrypted::{self, Decrypt, Read};
use crate::manifest::{self, Diagnostic, Severity, Vars};
use crate::policy::Policy;
use crate::source::git::{GitSource, Snapshot, SourceError};

/// Which manifests to validate.
#[derive(Debug, Clone)]
pub struct Source {
    pub repo: String,
    pub reference: String,
    pub path: String,
    pub cache_dir: PathBuf,
}

/// The outcome of `pier validate`; its JSON form is a stable interface.
#[derive(Debug, Serialize)]
pub struct Report {
    pub valid: bool,
    pub commit: String,
    pub files: Vec<String>,
    pub services: usize,
    pub nodes: usize,
    pub diagnostics: Vec<Diagnostic>,
}

/// Validate the manifests at `source`, opening SOPS files with `keys`
/// when any are given (without, they are checked as written).
pub fn run(
    source: &Source,
    vars: &Vars,
    policy: &Policy,
    keys: &manifest::sops::Keys,
) -> Result<Report, SourceError> {
    let repo = GitSource::open(&source.repo, &source.cache_dir)?;
    let snapshot = repo.manifests(&source.reference, &source.path)?;
    let decrypt = if keys.is_empty() {
        Decrypt::Never
    } else {
        Decrypt::With(keys)
    };
    let loaded = load_checked(&snapshot, &source.path, vars, policy, decrypt);
    Ok(Report {
        valid: loaded.is_valid(),
        commit: snapshot.commit,
        files: loaded.files.clone(),
        services: loaded.manifest.services.len(),
        nodes: loaded.manifest.nodes.len(),
        diagnostics: loaded.diagnostics,
    })
}

/// Load the manifests of a commit and check them against every rule and
/// the policy, problems in file order. As in Compose, a `.env` file in the
/// manifest folder gives variables to interpolate (it may be SOPS-encrypted:
/// opened as `decrypt` allows); `vars` (the environment) wins over it.
pub fn load_checked(
    snapshot: &Snapshot,
    folder: &str,
    vars: &Vars,
    policy: &Policy,
    decrypt: Decrypt<'_>,
) -> manifest::Loaded {
    let dot_env = with_dot_env(snapshot, folder, vars, decrypt);
    let mut loaded =
        manifest::load_and_validate_with(&snapshot.files, &dot_env.vars, &snapshot.tree, decrypt);
    loaded.diagnostics.extend(dot_env.problem);
    loaded.manifest.secret_values.extend(dot_env.secrets);
    loaded
        .diagnostics
        .extend(snapshot.refused.iter().map(|(path, why)| {
            Diagnostic::error(manifest::Location::new(path, 0, 0), why.clone())
                .help("split it into smaller files, or keep large data out of the manifests folder")
        }));
    if loaded.is_valid() {
        let refused = policy.check(&loaded);
        loaded.diagnostics.extend(refused);
        loaded
            .diagnostics
            .sort_by(|a, b| a.location.cmp(&b.location).then(a.message.cmp(&b.message)));
    }
    loaded
}

/// The variables to interpolate with: the folder's `.env` under pier's.
struct DotEnv<'v> {
    vars: std::borrow::Cow<'v, Vars>,
    problem: Option<Diagnostic>,
    /// The values an encrypted `.env` gave, to mask.
    secrets: Vec<String>,
}

/// `vars` over the variables of `<folder>/.env` at the commit, if any.
fn with_dot_env<'v>(
    snapshot: &Snapshot,
    folder: &str,
    vars: &'v Vars,
    decrypt: Decrypt<'_>,
) -> DotEnv<'v> {
    let folder = folder.trim_matches('/');
    let path = if folder.is_empty() || folder == "." {
        ".env".to_string()
    } else {
        format!("{folder}/.env")
    };
    let only = |problem: Option<Diagnostic>| DotEnv {
        vars: std::borrow::Cow::Borrowed(vars),
        problem,
        secrets: Vec::new(),
    };
    let at = manifest::Location::new(&path, 1, 1);
    let (pairs, secrets, problem) = match encrypted::read(&snapshot.tree, &path, decrypt) {
        Ok(Read::Missing) => return only(None),
        Ok(Read::Plain(bytes)) => match manifest::env_file::parse(&String::from_utf8_lossy(&bytes))
        {
            Ok(pairs) => (pairs, Vec::new(), None),
            Err((line, message)) => {
                let problem = Diagnostic::error(manifest::Location::new(&path, line, 1), message)
                    .help("`.env` gives variables to interpolate: one KEY=VALUE per line");
                return only(Some(problem));
            }
        },
        Ok(Read::Opened(opened)) => match opened.variables() {
            Ok(pairs) => {
                let secrets = pairs.iter().map(|(_, v)| v.clone()).collect();
                (pairs, secrets, None)
            }
            Err(message) => return only(Some(Diagnostic::error(at, message))),
        },
        Ok(Read::Sealed(bytes)) => (
            encrypted::sealed_variables(&path, &bytes),
            Vec::new(),
            Some(encrypted::sealed_notice(&path, "variables to interpolate")),
        ),
        Err(reason) => {
            let problem = Diagnostic::error(at, reason).help(
                "give pier the age key the file is encrypted to (PIER_AGE_KEY_FILE), or fetch the repository again if it is damaged",
            );
            return only(Some(problem));
        }
    };
    let mut merged: Vars = pairs.into_iter().collect();
    merged.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    DotEnv {
        vars: std::borrow::Cow::Owned(merged),
        problem,
        secrets,
    }
}

impl Report {
    /// Every problem, then a one-line summary.
    pub fn human(&self) -> String {
        let mut out = String::new();
        for diagnostic in &self.diagnostics {
            out.push_str(&format!("{diagnostic}\n"));
        }
        let count = |severity| {
            self.diagnostics
                .iter()
                .filter(|d| d.severity == severity)
                .count()
        };
        let short = crate::source::git::short_commit(&self.commit);
        out.push_str(&format!(
            "{}: {} service(s), {} node(s) in {} file(s) at {short}; {} error(s), {} warning(s), {} notice(s)\n",
            if self.valid { "valid" } else { "invalid" },
            self.services,
            self.nodes,
            self.files.len(),
            count(Severity::Error),
            count(Severity::Warning),
            count(Severity::Notice),
        ));
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises")
    }
}
