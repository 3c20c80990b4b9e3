//! Reading manifests straight from a git commit's tree (no checkout), from a
//! local repository or a remote one fetched into a cache folder.
//!
//! Reading the tree rather than the working directory means `pier validate
//! --ref X` and the daemon see exactly what was committed, never an edit in
//! progress.

use std::path::{Path, PathBuf};

use git2::{ObjectType, Repository};

use crate::manifest::{Entry, RepoTree, SourceFile};

/// Why a repository or a commit could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "cannot open git repository {repo}: {source}\n  help: pass --repo with a path inside a git repository, or a URL"
    )]
    Open { repo: String, source: git2::Error },
    /// `url` is redacted, and so is `message`, libgit2's words, which may
    /// quote the URL it was given.
    #[error("cannot fetch {url}: {message}{hint}")]
    Fetch {
        url: String,
        message: String,
        hint: &'static str,
    },
    #[error(
        "cannot resolve `{reference}` in {repo}: {source}\n  help: pass --ref with a branch, tag or commit id"
    )]
    Resolve {
        repo: String,
        reference: String,
        source: git2::Error,
    },
    #[error(
        "commit {commit} has no folder `{path}`\n  help: pass --path with the folder that holds the manifests (default `pier`)"
    )]
    NoManifestFolder { commit: String, path: String },
    #[error("cannot read `{path}` at commit {commit}: {source}")]
    Read {
        commit: String,
        path: String,
        source: git2::Error,
    },
    #[error("cannot create cache folder {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The most pier reads of one file of a commit (a manifest, an env file,
/// an included Compose file): a manifest of 10,000 services is some
/// 2 MiB. A larger file is refused before it is read: its size comes from
/// the object's header, so a blob that inflates to gigabytes costs nothing.
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// The most pier reads of one commit, all files together: anyone who can
/// push a branch decides what the daemon reads, so the total is bounded
/// as well as each file.
pub const MAX_COMMIT_BYTES: usize = 16 << 20;

/// The branches of a remote's reference advertisement, by name.
fn branch_heads(
    advertised: &[git2::RemoteHead<'_>],
) -> std::collections::BTreeMap<String, git2::Oid> {
    advertised
        .iter()
        .filter_map(|head| {
            let branch = head.name().strip_prefix("refs/heads/")?;
            Some((branch.to_string(), head.oid()))
        })
        .collect()
}

/// The manifests at one commit.
pub struct Snapshot {
    /// Full commit id.
    pub commit: String,
    /// Manifest files under the folder, by path, in path order.
    pub files: Vec<SourceFile>,
    /// Manifest files left unread, by path, with why: larger than
    /// [`MAX_FILE_BYTES`], or past [`MAX_COMMIT_BYTES`] in all.
    pub refused: Vec<(String, String)>,
    /// The commit's whole tree, for checks on paths the manifests name.
    pub tree: GitTree,
}

/// A git repository pier reads from.
pub struct GitSource {
    repo: Repository,
    /// Set for a remote repository: its URL, fetched before each resolve.
    url: Option<String>,
    display: String,
}

impl GitSource {
    /// Open a local repository (any path inside it) or fetch a remote URL into `cache_dir`.
    pub fn open(location: &str, cache_dir: &Path) -> Result<GitSource, SourceError> {
        if is_url(location) {
            forget_credential_named_cache(cache_dir, location);
            let folder = cache_dir.join(cache_name(location));
            std::fs::create_dir_all(&folder).map_err(|source| SourceError::Cache {
                path: folder.clone(),
                source,
            })?;
            let repo = Repository::open_bare(&folder)
                .or_else(|_| Repository::init_bare(&folder))
                .map_err(|source| SourceError::Open {
                    repo: super::auth::redact_url(location),
                    source,
                })?;
            let source = GitSource {
                repo,
                url: Some(location.to_string()),
                display: super::auth::redact_url(location),
            };
            source.fetch()?;
            return Ok(source);
        }
        let repo = Repository::discover(location).map_err(|source| SourceError::Open {
            repo: location.into(),
            source,
        })?;
        Ok(GitSource {
            repo,
            url: None,
            display: location.to_string(),
        })
    }

    /// Where the repository comes from, the same for every clone of one
    /// remote: a remote's URL (a local clone's `origin`) without scheme,
    /// user or password, and without `.git`; a local repository without a
    /// remote is its folder.
    pub fn identity(&self) -> String {
        let origin = self.url.clone().or_else(|| {
            let remote = self.repo.find_remote("origin").ok()?;
            remote.url().ok().map(str::to_string)
        });
        match origin {
            Some(url) => normalize_url(&url),
            None => {
                let root = self.repo.workdir().unwrap_or_else(|| self.repo.path());
                let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
                root.to_string_lossy().trim_end_matches('/').to_string()
            }
        }
    }

    /// A short name for the repository: its folder's (or URL's) last part.
    pub fn name(&self) -> String {
        let path = match &self.url {
            Some(url) => url
                .trim_end_matches('/')
                .trim_end_matches(".git")
                .to_string(),
            None => {
                let root = self.repo.workdir().unwrap_or_else(|| self.repo.path());
                let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
                root.to_string_lossy()
                    .trim_end_matches('/')
                    .trim_end_matches(".git")
                    .to_string()
            }
        };
        let last = path.rsplit(['/', ':']).next().unwrap_or("pier");
        let name: String = last
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        if name.is_empty() { "pier".into() } else { name }
    }

    /// Fetch all branches and tags of a remote repository; a no-op for a local one.
    pub fn fetch(&self) -> Result<(), SourceError> {
        self.fetch_branches().map(|_| ())
    }

    /// Fetch, and say where every branch of the remote points, from the
    /// same connection: one round trip where [`Self::branch_tips`] and
    /// [`Self::fetch`] take two. A local repository's are read in place.
    pub fn fetch_tips(&self) -> Result<std::collections::BTreeMap<String, git2::Oid>, SourceError> {
        if self.url.is_none() {
            return self.branch_tips();
        }
        Ok(self.fetch_branches()?.unwrap_or_default())
    }

    /// Fetch; the branches the remote advertised on that connection
    /// (`None` for a local repository).
    fn fetch_branches(
        &self,
    ) -> Result<Option<std::collections::BTreeMap<String, git2::Oid>>, SourceError> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let fetch_error = |source| self.fetch_error(url, source);
        let mut remote = self.repo.remote_anonymous(url).map_err(fetch_error)?;
        let mut callbacks = super::auth::credential_callbacks();
        let limit = *FETCH_TIMEOUT.get().unwrap_or(&DEFAULT_FETCH_TIMEOUT);
        let deadline = std::time::Instant::now() + limit;
        // Returning false cancels the transfer: a server that trickles a
        // pack never holds the watcher past the deadline.
        callbacks.transfer_progress(move |_| std::time::Instant::now() < deadline);
        callbacks.sideband_progress(move |_| std::time::Instant::now() < deadline);
        let mut options = git2::FetchOptions::new();
        options.remote_callbacks(callbacks);
        remote
            .fetch(
                &[
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                    // So `HEAD` means the remote's default branch.
                    "+HEAD:refs/remotes/origin/HEAD",
                ],
                Some(&mut options),
                None,
            )
            .map_err(|source| {
                if std::time::Instant::now() >= deadline {
                    let message = format!(
                        "the fetch took longer than --git-fetch-timeout ({})",
                        humantime::format_duration(limit)
                    );
                    return self.fetch_error(url, git2::Error::from_str(&message));
                }
                fetch_error(source)
            })?;
        // The advertisement stays readable after the transfer ends.
        Ok(Some(branch_heads(remote.list().map_err(fetch_error)?)))
    }

    /// A second handle on the same repository, for the network: a fetch
    /// through it holds no lock that readers of the first one wait for.
    pub fn reopen(&self) -> Result<GitSource, SourceError> {
        let repo = Repository::open(self.repo.path()).map_err(|source| SourceError::Open {
            repo: self.display.clone(),
            source,
        })?;
        Ok(GitSource {
            repo,
            url: self.url.clone(),
            display: self.display.clone(),
        })
    }

    fn fetch_error(&self, url: &str, source: git2::Error) -> SourceError {
        // Authentication failures carry their own help (see `auth`). An
        // unknown server is an SSH host key, or an HTTPS certificate no
        // trusted root vouches for: each has its own fix.
        let https = url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        let unknown_server =
            source.code() == git2::ErrorCode::Certificate || source.message().contains("hostkey");
        let hint = match (unknown_server, https) {
            (false, _) => "",
            (true, true) => {
                "\n  help: the server's certificate is not signed by a root this machine trusts: add its CA to the system's bundle, or point SSL_CERT_FILE at a bundle that has it"
            }
            (true, false) => {
                "\n  help: add the server's host key to ~/.ssh/known_hosts of the user running pier (ssh-keyscan HOST >> ~/.ssh/known_hosts), after checking its fingerprint"
            }
        };
        SourceError::Fetch {
            url: self.display.clone(),
            message: super::auth::redact_in(source.message(), url),
            hint,
        }
    }

    /// The underlying repository (the fetch cache for a remote one).
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The URL of a remote repository.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// Whether the repository is fetched from a URL (rather than read in place).
    pub fn is_remote(&self) -> bool {
        self.url.is_some()
    }

    /// The repository's git folder: where its refs change when someone commits.
    pub fn git_dir(&self) -> &Path {
        self.repo.path()
    }

    /// Where every branch points: asked from the remote without fetching
    /// (what `git ls-remote` does) for a URL, read from `refs/heads` for a
    /// local repository.
    pub fn branch_tips(
        &self,
    ) -> Result<std::collections::BTreeMap<String, git2::Oid>, SourceError> {
        let Some(url) = &self.url else {
            let read_error = |source| SourceError::Resolve {
                repo: self.display.clone(),
                reference: "refs/heads/*".into(),
                source,
            };
            let mut tips = std::collections::BTreeMap::new();
            for reference in self
                .repo
                .references_glob("refs/heads/*")
                .map_err(read_error)?
            {
                let reference = reference.map_err(read_error)?;
                if let (Ok(name), Some(oid)) = (reference.shorthand(), reference.target()) {
                    tips.insert(name.to_string(), oid);
                }
            }
            return Ok(tips);
        };
        let fetch_error = |source| self.fetch_error(url, source);
        let mut remote = self.repo.remote_anonymous(url).map_err(fetch_error)?;
        let connection = remote
            .connect_auth(
                git2::Direction::Fetch,
                Some(super::auth::credential_callbacks()),
                None,
            )
            .map_err(fetch_error)?;
        Ok(branch_heads(connection.list().map_err(fetch_error)?))
    }

    /// Whether the fetched copy of a remote is behind `tips` (a local
    /// repository never is).
    pub fn is_behind(&self, tips: &std::collections::BTreeMap<String, git2::Oid>) -> bool {
        self.url.is_some()
            && tips.iter().any(|(branch, oid)| {
                self.repo
                    .refname_to_id(&format!("refs/remotes/origin/{branch}"))
                    .ok()
                    != Some(*oid)
            })
    }

    /// The commit id `reference` (branch, tag, commit, `HEAD`) points at.
    pub fn resolve(&self, reference: &str) -> Result<git2::Oid, SourceError> {
        let candidates = if self.url.is_some() {
            vec![
                format!("refs/remotes/origin/{reference}"),
                reference.to_string(),
            ]
        } else {
            vec![reference.to_string()]
        };
        let mut last_error = None;
        for candidate in candidates {
            match self
                .repo
                .revparse_single(&candidate)
                .and_then(|o| o.peel_to_commit())
            {
                Ok(commit) => return Ok(commit.id()),
                Err(e) => last_error = Some(e),
            }
        }
        Err(SourceError::Resolve {
            repo: self.display.clone(),
            reference: reference.to_string(),
            source: last_error.unwrap_or_else(|| git2::Error::from_str("not found")),
        })
    }

    /// Read every `*.yaml` / `*.yml` under `folder` at `reference`.
    pub fn manifests(&self, reference: &str, folder: &str) -> Result<Snapshot, SourceError> {
        let oid = self.resolve(reference)?;
        let commit_id = oid.to_string();
        let read_error = |path: &str, source| SourceError::Read {
            commit: commit_id.clone(),
            path: path.into(),
            source,
        };
        let commit = self.repo.find_commit(oid).map_err(|e| read_error("", e))?;
        let root = commit.tree().map_err(|e| read_error("", e))?;
        let folder = folder.trim_matches('/');
        let folder_tree = if folder.is_empty() || folder == "." {
            root.clone()
        } else {
            root.get_path(Path::new(folder))
                .ok()
                .filter(|e| e.kind() == Some(ObjectType::Tree))
                .and_then(|e| e.to_object(&self.repo).ok())
                .and_then(|o| o.into_tree().ok())
                .ok_or_else(|| SourceError::NoManifestFolder {
                    commit: commit_id.clone(),
                    path: folder.into(),
                })?
        };
        let mut files = Vec::new();
        let mut refused = Vec::new();
        let budget = ReadBudget::new();
        let odb = self.repo.odb().map_err(|e| read_error("", e))?;
        let mut walk_error = None;
        folder_tree
            .walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
                let name = entry.name().unwrap_or_default();
                let is_manifest = name.ends_with(".yaml") || name.ends_with(".yml");
                if entry.kind() != Some(ObjectType::Blob) || !is_manifest {
                    return git2::TreeWalkResult::Ok;
                }
                let prefix = if folder.is_empty() || folder == "." {
                    String::new()
                } else {
                    format!("{folder}/")
                };
                let path = format!("{prefix}{dir}{name}");
                match budget.take(&odb, entry.id(), &path) {
                    Ok(()) => {}
                    Err(Ok(why)) => {
                        refused.push((path, why));
                        return git2::TreeWalkResult::Ok;
                    }
                    Err(Err(e)) => {
                        walk_error = Some(read_error(&path, e));
                        return git2::TreeWalkResult::Abort;
                    }
                }
                match self.repo.find_blob(entry.id()) {
                    Ok(blob) => files.push(SourceFile {
                        path,
                        text: String::from_utf8_lossy(blob.content()).into_owned(),
                    }),
                    Err(e) => {
                        walk_error = Some(read_error(&path, e));
                        return git2::TreeWalkResult::Abort;
                    }
                }
                git2::TreeWalkResult::Ok
            })
            .map_err(|e| read_error(folder, e))?;
        if let Some(error) = walk_error {
            return Err(error);
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let tree = GitTree {
            repo: Repository::open(self.repo.path()).map_err(|e| read_error("", e))?,
            tree: root.id(),
            budget,
        };
        Ok(Snapshot {
            commit: commit_id,
            files,
            refused,
            tree,
        })
    }
}

pub use super::history::{LogEntry, ROLLBACK_TRAILER, rollback_trailer};

/// A commit id shortened for people (12 hex digits, as in pier's messages).
pub fn short_commit(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// What is left of [`MAX_COMMIT_BYTES`] for one commit.
struct ReadBudget(std::sync::atomic::AtomicUsize);

impl ReadBudget {
    fn new() -> ReadBudget {
        ReadBudget(std::sync::atomic::AtomicUsize::new(MAX_COMMIT_BYTES))
    }

    /// Take the size of blob `id` (at `path`) from the budget, from its
    /// header, before it is read. `Err(Ok(why))`: too large to read;
    /// `Err(Err(_))`: the object cannot be found.
    fn take(
        &self,
        odb: &git2::Odb<'_>,
        id: git2::Oid,
        path: &str,
    ) -> Result<(), Result<String, git2::Error>> {
        use std::sync::atomic::Ordering;
        let (size, _) = odb.read_header(id).map_err(Err)?;
        if size > MAX_FILE_BYTES {
            return Err(Ok(format!(
                "`{path}` is {size} bytes; pier reads files of up to {} MiB",
                MAX_FILE_BYTES >> 20
            )));
        }
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(size))
            .map(|_| ())
            .map_err(|_| {
                Ok(format!(
                    "reading `{path}` ({size} bytes) would take pier past the {} MiB it reads of one commit",
                    MAX_COMMIT_BYTES >> 20
                ))
            })
    }
}

/// A commit's tree, answering questions about paths in it.
pub struct GitTree {
    repo: Repository,
    tree: git2::Oid,
    /// Shared with the manifests read before: one bound per commit.
    budget: ReadBudget,
}

impl RepoTree for GitTree {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        let tree = self
            .repo
            .find_tree(self.tree)
            .map_err(|e| format!("the commit's tree cannot be read: {}", e.message()))?;
        let Ok(entry) = tree.get_path(Path::new(path)) else {
            return Ok(None);
        };
        if entry.kind() != Some(ObjectType::Blob) || entry.filemode() == 0o120000 {
            return Ok(None);
        }
        let odb = self
            .repo
            .odb()
            .map_err(|e| format!("the repository cannot be read: {}", e.message()))?;
        self.budget
            .take(&odb, entry.id(), path)
            .map_err(|why| match why {
                Ok(why) => why,
                Err(e) => format!("`{path}` cannot be read from git: {}", e.message()),
            })?;
        // The tree names the file: a blob that cannot be read is a broken
        // repository, not a missing file.
        let blob = self
            .repo
            .find_blob(entry.id())
            .map_err(|e| format!("`{path}` cannot be read from git: {}", e.message()))?;
        Ok(Some(blob.content().to_vec()))
    }

    fn entry(&self, path: &str) -> Option<Entry> {
        let tree = self.repo.find_tree(self.tree).ok()?;
        let entry = tree.get_path(Path::new(path)).ok()?;
        match entry.kind() {
            Some(ObjectType::Tree) => Some(Entry::Dir),
            Some(ObjectType::Blob) if entry.filemode() == 0o120000 => {
                // A link's target is a path: a larger "link" is not read.
                let (size, _) = self.repo.odb().ok()?.read_header(entry.id()).ok()?;
                if size > MAX_LINK_TARGET {
                    return None;
                }
                let blob = self.repo.find_blob(entry.id()).ok()?;
                Some(Entry::Symlink {
                    target: String::from_utf8_lossy(blob.content()).into_owned(),
                })
            }
            Some(ObjectType::Blob) => Some(Entry::File),
            _ => None,
        }
    }
}

/// The longest symlink target read: Linux's `PATH_MAX`.
const MAX_LINK_TARGET: usize = 4096;

fn is_url(location: &str) -> bool {
    location.contains("://")
        || (location.contains('@') && location.contains(':') && !Path::new(location).exists())
}

/// A stable folder name for a URL's cache: a hash of the URL without its
/// credentials, so no token ends up in a path (and a rotated token keeps
/// the cache).
fn cache_name(url: &str) -> String {
    use sha2::Digest;
    let without_credentials = super::auth::redact_url(url);
    let digest = sha2::Sha256::digest(without_credentials.as_bytes());
    format!("git-{}", hex::encode(&digest[..16]))
}

/// Remove a cache folder named the way older pier versions named it: after
/// the URL itself, credentials included.
fn forget_credential_named_cache(cache_dir: &Path, url: &str) {
    let legacy = cache_dir.join(legacy_cache_name(url));
    if super::auth::redact_url(url) != url && legacy.is_dir() {
        let _ = std::fs::remove_dir_all(legacy);
    }
}

fn legacy_cache_name(url: &str) -> String {
    url.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// How long one whole fetch may take (`--git-fetch-timeout`), however
/// steadily the server answers. Process-wide like libgit2's own timeouts.
static FETCH_TIMEOUT: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

const DEFAULT_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The bundle of root certificates libgit2 checks HTTPS servers against,
/// given to it when a remote is first reached (see [`bound_network_waits`]).
static HTTPS_ROOTS: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
static HTTPS_ROOTS_LOADED: std::sync::Once = std::sync::Once::new();

/// Start libgit2, and bound every network wait of it (fetch, ls-remote,
/// push): connecting, and each read from the server. Process-wide, so set
/// once at start.
///
/// libgit2 parses the whole bundle of root certificates when it starts
/// (OpenSSL: about 15 ms of CPU, most of a no-op `pier apply`), although
/// most commands never reach a git server. So it starts with an empty
/// bundle (`/dev/null`, which git2's own probe for the bundle leaves as it
/// is), keeping its lookup in the certificate folder (which reads a
/// certificate only when one is asked for), and gets the bundle
/// (`SSL_CERT_FILE`'s, or the one the system has) before it first reaches
/// a remote ([`load_https_roots`]).
pub fn bound_network_waits(timeout: std::time::Duration, fetch_timeout: std::time::Duration) {
    let _ = FETCH_TIMEOUT.set(fetch_timeout);
    let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
    let roots = openssl_probe::probe().cert_file;
    // SAFETY: called once from `main` before any other thread exists (so
    // nothing reads the environment meanwhile) and before anything else
    // touches libgit2, which these first options start.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", "/dev/null");
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(millis);
        let _ = git2::opts::set_server_timeout_in_milliseconds(millis);
        // As git2's probe would have left it.
        match &roots {
            Some(file) => std::env::set_var("SSL_CERT_FILE", file),
            None => std::env::remove_var("SSL_CERT_FILE"),
        }
    }
    let _ = HTTPS_ROOTS.set(roots);
}

/// Give libgit2 the bundle of root certificates, once, before its first
/// connection to a remote: every fetch, ls-remote and push builds its
/// callbacks ([`super::auth::credential_callbacks`]) first, which call
/// this, and a second caller waits until the first is done.
pub fn load_https_roots() {
    HTTPS_ROOTS_LOADED.call_once(|| {
        let Some(Some(file)) = HTTPS_ROOTS.get() else {
            // Started elsewhere (a library user, a test): libgit2 loaded
            // the bundle itself.
            return;
        };
        // SAFETY: runs once, before any connection of libgit2's (see above).
        if let Err(e) = unsafe { git2::opts::set_ssl_cert_file(file) } {
            tracing::warn!(file = %file.display(), error = %e, "cannot load the root certificates for HTTPS remotes");
        }
    });
}

/// `https://user:token@example.com/team/app.git`, `ssh://git@example.com/team/app`
/// and `git@example.com:team/app.git` all become `example.com/team/app`:
/// one repository, whichever way it is reached, and never a credential.
pub fn normalize_url(url: &str) -> String {
    // scp-like `user@host:path` has no scheme, and a colon before the path.
    let (rest, path_separator) = match url.split_once("://") {
        Some((_, rest)) => (rest, '/'),
        None => (url, ':'),
    };
    let (authority, path) = rest.split_once(path_separator).unwrap_or((rest, ""));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    format!("{host}/{path}").trim_end_matches('/').to_string()
}

#[cfg(test)]
mod identity_tests {
    use super::normalize_url;

    #[test]
    fn every_spelling_of_one_remote_is_one_identity_without_credentials() {
        for url in [
            "https://user:s3cret@example.com/team/app.git",
            "ssh://git@example.com/team/app",
            "git@example.com:team/app.git",
            "https://example.com/team/app/",
        ] {
            assert_eq!(normalize_url(url), "example.com/team/app", "{url}");
        }
    }
}
