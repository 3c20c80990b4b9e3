//! A commit's tree as a tar stream, for job containers and build contexts:
//! read from git objects (no checkout), executable bits and symlinks kept,
//! `.dockerignore` honoured for build contexts.

use std::io::Write;
use std::path::Path;

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};

/// An extra file placed in the archive (path, contents, mode).
pub type Extra = (String, Vec<u8>, u32);

/// The tree of `commit` under `folder` (empty: the whole tree) as a tar
/// archive whose paths start with `prefix`; paths (relative to `folder`) for
/// which `exclude` says yes are left out.
pub fn tree_archive(
    repo: &Repository,
    commit: Oid,
    folder: &str,
    prefix: &str,
    exclude: &dyn Fn(&str) -> bool,
    extra: &[Extra],
) -> Result<Vec<u8>, git2::Error> {
    tree_archive_to(repo, commit, folder, prefix, exclude, extra, Vec::new())
}

/// [`tree_archive`], written to `out` as it is read.
pub fn tree_archive_to<W: Write>(
    repo: &Repository,
    commit: Oid,
    folder: &str,
    prefix: &str,
    exclude: &dyn Fn(&str) -> bool,
    extra: &[Extra],
    out: W,
) -> Result<W, git2::Error> {
    let root = repo.find_commit(commit)?.tree()?;
    let folder = folder.trim_matches('/');
    let tree = if folder.is_empty() || folder == "." {
        root
    } else {
        let entry = root.get_path(Path::new(folder))?;
        repo.find_tree(entry.id())?
    };
    let mut builder = tar::Builder::new(out);
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or_default();
        let path = format!("{dir}{name}");
        if exclude(&path) {
            return TreeWalkResult::Skip;
        }
        if entry.kind() != Some(ObjectType::Blob) {
            return TreeWalkResult::Ok;
        }
        let result = repo.find_blob(entry.id()).and_then(|blob| {
            append(
                &mut builder,
                &format!("{prefix}{path}"),
                entry.filemode(),
                blob.content(),
            )
            .map_err(|e| git2::Error::from_str(&e.to_string()))
        });
        match result {
            Ok(()) => TreeWalkResult::Ok,
            Err(e) => {
                failure = Some(e);
                TreeWalkResult::Abort
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    for (path, contents, mode) in extra {
        append(&mut builder, path, *mode as i32, contents)
            .map_err(|e| git2::Error::from_str(&e.to_string()))?;
    }
    builder
        .into_inner()
        .map_err(|e| git2::Error::from_str(&e.to_string()))
}

/// A run's workspace: the commit's whole tree under `workspace/`, read
/// from git each time a stage needs it and streamed to the engine as it is
/// read, so a large repository is never held in memory whole.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The repository's git folder (a second handle is opened per stream).
    repository: std::path::PathBuf,
    commit: Oid,
}

/// Bytes of tar handed to the engine at a time.
const CHUNK: usize = 256 * 1024;
/// Chunks read ahead of the upload, at most.
const CHUNKS_AHEAD: usize = 4;

impl Workspace {
    /// The tree as a tar stream, produced on a blocking thread.
    pub fn stream(
        &self,
    ) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
        let (sender, receiver) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        let (repository, commit) = (self.repository.clone(), self.commit);
        tokio::task::spawn_blocking(move || {
            let mut writer = ChunkWriter {
                sender: sender.clone(),
                buffer: Vec::with_capacity(CHUNK),
            };
            let nothing = |_: &str| false;
            let written = Repository::open(&repository)
                .and_then(|repo| {
                    tree_archive_to(&repo, commit, "", "workspace/", &nothing, &[], &mut writer)
                        .map(|_| ())
                })
                .map_err(|e| {
                    std::io::Error::other(format!("reading the commit's tree: {}", e.message()))
                })
                .and_then(|()| writer.flush());
            if let Err(e) = written {
                // The upload ends with this error rather than a short tar.
                let _ = sender.blocking_send(Err(e));
            }
        });
        futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|chunk| (chunk, receiver))
        })
    }
}

/// Tar bytes in chunks to the uploading task; waits when it is behind.
struct ChunkWriter {
    sender: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }
}

/// What a pipeline run needs from the commit's tree.
pub struct Archives {
    /// Everything, under `workspace/`, for script stages.
    pub workspace: Workspace,
    /// Each built service's context.
    pub contexts: std::collections::BTreeMap<String, Vec<u8>>,
}

/// The archives a pipeline run of `commit` needs.
pub fn for_pipeline(
    repo: &Repository,
    commit: &str,
    manifest: &crate::manifest::Manifest,
) -> Result<Archives, String> {
    use crate::manifest::model::Stage;
    let oid = Oid::from_str(commit).map_err(|e| e.to_string())?;
    repo.find_commit(oid)
        .map_err(|e| format!("reading the commit: {}", e.message()))?;
    let workspace = Workspace {
        repository: repo.path().to_path_buf(),
        commit: oid,
    };
    let mut contexts = std::collections::BTreeMap::new();
    let built = manifest
        .pipeline
        .iter()
        .flat_map(|p| p.stages.iter())
        .filter_map(|stage| match stage {
            Stage::Build { services, .. } => Some(services),
            Stage::Script { .. } => None,
        })
        .flatten();
    for service in built {
        let Some(build) = manifest
            .services
            .get(service)
            .and_then(|s| s.build.as_ref())
        else {
            continue;
        };
        let folder = build.context.trim_matches('/');
        let ignore_path = if folder.is_empty() || folder == "." {
            ".dockerignore".to_string()
        } else {
            format!("{folder}/.dockerignore")
        };
        let ignore_text = repo
            .find_commit(oid)
            .and_then(|c| c.tree())
            .and_then(|t| t.get_path(Path::new(&ignore_path)))
            .and_then(|e| repo.find_blob(e.id()))
            .map(|b| String::from_utf8_lossy(b.content()).into_owned())
            .unwrap_or_default();
        let ignored = dockerignore(&ignore_text);
        let context = tree_archive(repo, oid, folder, "", &ignored, &[])
            .map_err(|e| format!("reading the build context of {service}: {}", e.message()))?;
        contexts.insert(service.clone(), context);
    }
    Ok(Archives {
        workspace,
        contexts,
    })
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    git_mode: i32,
    contents: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mtime(0);
    if git_mode == 0o120000 {
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        let target = String::from_utf8_lossy(contents).into_owned();
        return builder.append_link(&mut header, path, target);
    }
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(contents.len() as u64);
    header.set_mode(if git_mode & 0o111 != 0 { 0o755 } else { 0o644 });
    builder.append_data(&mut header, path, contents)
}

/// A `.dockerignore` as a predicate on paths relative to the build context:
/// patterns in order, the last one that matches a path (or a folder above
/// it) decides, `!` re-includes.
pub fn dockerignore(text: &str) -> impl Fn(&str) -> bool + use<> {
    let rules: Vec<(bool, globset::GlobMatcher)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let (include, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pattern = pattern.trim_start_matches("./").trim_start_matches('/');
            let glob = globset::GlobBuilder::new(pattern.trim_end_matches('/'))
                .literal_separator(true)
                .build()
                .ok()?;
            Some((include, glob.compile_matcher()))
        })
        .collect();
    move |path: &str| {
        let mut excluded = false;
        for (include, matcher) in &rules {
            let matches =
                std::iter::successors(Some(path), |p| p.rsplit_once('/').map(|(parent, _)| parent))
                    .any(|p| matcher.is_match(p));
            if matches {
                excluded = !include;
            }
        }
        excluded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_follows_dockers_rules() {
        let ignored = dockerignore("# comment\n*.log\nnode_modules/\n!keep.log\ndocs/**/*.md\n");
        assert!(ignored("a.log"));
        assert!(!ignored("keep.log"));
        assert!(ignored("node_modules/x/y.js"));
        assert!(ignored("docs/a/b/c.md"));
        assert!(!ignored("src/a.log"), "no leading ** means the root only");
        assert!(!ignored("Dockerfile"));
    }

    #[test]
    fn archives_hold_the_tree_with_modes_and_extras() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let blob = |text: &str| repo.blob(text.as_bytes()).unwrap();
        let mut app = repo.treebuilder(None).unwrap();
        app.insert("run.sh", blob("echo hi\n"), 0o100755).unwrap();
        app.insert("a.log", blob("noise\n"), 0o100644).unwrap();
        let app = app.write().unwrap();
        let mut root = repo.treebuilder(None).unwrap();
        root.insert("app", app, 0o040000).unwrap();
        let tree = repo.find_tree(root.write().unwrap()).unwrap();
        let who = git2::Signature::now("t", "t@t").unwrap();
        let commit = repo.commit(None, &who, &who, "m", &tree, &[]).unwrap();

        let tar = tree_archive(
            &repo,
            commit,
            "app",
            "ctx/",
            &dockerignore("*.log"),
            &[("x.sh".into(), b"true".to_vec(), 0o755)],
        )
        .unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("ctx/run.sh".to_string(), 0o755),
                ("x.sh".to_string(), 0o755)
            ]
        );
    }

    /// The streamed workspace is the same tar as the one built in memory,
    /// in chunks, for a tree larger than one chunk; a commit the repository
    /// lacks ends the stream with an error, not a short tar.
    #[tokio::test]
    async fn the_streamed_workspace_is_the_whole_tree_in_chunks() {
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let mut root = repo.treebuilder(None).unwrap();
        for n in 0..4 {
            let big = vec![b'a' + n as u8; CHUNK / 2 + 7];
            root.insert(format!("f{n}"), repo.blob(&big).unwrap(), 0o100644)
                .unwrap();
        }
        let tree = repo.find_tree(root.write().unwrap()).unwrap();
        let who = git2::Signature::now("t", "t@t").unwrap();
        let commit = repo.commit(None, &who, &who, "m", &tree, &[]).unwrap();
        let nothing = |_: &str| false;
        let whole = tree_archive(&repo, commit, "", "workspace/", &nothing, &[]).unwrap();

        let workspace = Workspace {
            repository: repo.path().to_path_buf(),
            commit,
        };
        let chunks: Vec<bytes::Bytes> = workspace
            .stream()
            .map(|chunk| chunk.expect("a chunk"))
            .collect()
            .await;
        assert!(chunks.len() > 1, "sent in chunks");
        assert_eq!(chunks.concat(), whole);

        let missing = Workspace {
            repository: repo.path().to_path_buf(),
            commit: Oid::from_str("0123456789012345678901234567890123456789").unwrap(),
        };
        let items: Vec<_> = missing.stream().collect().await;
        assert!(matches!(items.last(), Some(Err(_))), "ends with the error");
    }
}
