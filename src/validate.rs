//! `pier validate`: load the manifests at a commit, run every rule, report.

use std::path::PathBuf;

use serde::Serialize;

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

/// Validate the manifests at `source`. Errors are only for a repository or
/// commit that cannot be read; problems in manifests are in the report.
pub fn run(source: &Source, vars: &Vars, policy: &Policy) -> Result<Report, SourceError> {
    let repo = GitSource::open(&source.repo, &source.cache_dir)?;
    let snapshot = repo.manifests(&source.reference, &source.path)?;
    let loaded = load_checked(&snapshot, vars, policy);
    Ok(Report {
        valid: loaded.is_valid(),
        commit: snapshot.commit,
        files: snapshot.files.iter().map(|f| f.path.clone()).collect(),
        services: loaded.manifest.services.len(),
        nodes: loaded.manifest.nodes.len(),
        diagnostics: loaded.diagnostics,
    })
}

/// Load the manifests of a commit and check them against every rule and
/// the policy, problems in file order.
pub fn load_checked(snapshot: &Snapshot, vars: &Vars, policy: &Policy) -> manifest::Loaded {
    let mut loaded = manifest::load_and_validate(&snapshot.files, vars, &snapshot.tree);
    if loaded.is_valid() {
        loaded.diagnostics.extend(policy.check(&loaded.manifest));
        loaded
            .diagnostics
            .sort_by(|a, b| a.location.cmp(&b.location).then(a.message.cmp(&b.message)));
    }
    loaded
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
