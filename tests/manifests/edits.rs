//! `pier scale`, `pier node`, `pier set` against real bare repositories on
//! disk: one commit per command touching only the intended lines, dry runs
//! that commit nothing, a concurrent commit on the remote handled by one
//! retry, and invalid edits refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::git;

const STACK: &str = "\
# The production stack. Comments, anchors and quoting stay as written.
x-defaults: &defaults
  restart: always   # everyone restarts
  target_num_containers: 2

services:
  web:
    <<: *defaults
    image: \"registry.example.com/web:1\"
    environment:
      MODE: 'production'
    tags: [production]
  cache:
    <<: *defaults
    image: redis:7
  worker:
    image: registry.example.com/worker:1
    deploy:
      replicas: 3   # busy queue
    environment:
      - QUEUE=jobs
";

const NODES: &str = "\
nodes:
  n1: { endpoint: \"tcp://10.0.0.1:2375\", tags: [production] }
  n2:
    endpoint: tcp://10.0.0.2:2375   # the old one
    tags:
      - production
";

struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A remote (bare) repository holding the manifests, and a clone of it.
struct Remote {
    served: Option<GitDaemon>,
    _dir: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
    cache: PathBuf,
}

impl Remote {
    fn new() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("pier")).unwrap();
        std::fs::write(work.join("pier/stack.yml"), STACK).unwrap();
        std::fs::write(work.join("pier/nodes.yml"), NODES).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "manifests"]);
        let bare = dir.path().join("remote.git");
        git(dir.path(), &["clone", "-q", "--bare", "work", "remote.git"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Remote {
            served: None,
            cache: dir.path().join("cache"),
            _dir: dir,
            bare,
            work,
        }
    }

    fn url(&self) -> String {
        match &self.served {
            Some(server) => format!("git://127.0.0.1:{}/remote.git", server.port),
            None => format!("file://{}", self.bare.display()),
        }
    }

    /// Serve the bare repository with `git daemon`, so pushes go through
    /// git's own receive-pack (and its hooks), as on a real server.
    fn serve(&mut self) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
            ])
            .arg(format!(
                "--base-path={}",
                self.bare.parent().unwrap().display()
            ))
            .args(["--listen=127.0.0.1", &format!("--port={port}")])
            // Its per-connection children must not hold the test's output open.
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("git daemon starts");
        self.served = Some(GitDaemon { child, port });
        crate::support::wait_listening(port, "git daemon", std::time::Duration::from_secs(10));
    }

    /// Run `pier <command> <options> <args>` against the remote with a fixed author.
    fn pier(&self, command: &[&str], args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_pier"))
            .args(command)
            .args(["--repo", &self.url(), "--cache-dir"])
            .arg(&self.cache)
            .args(["--author", "Pat Ops <pat@example.com>"])
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    fn git_out(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.bare)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn commits(&self) -> usize {
        self.git_out(&["rev-list", "--count", "main"])
            .trim()
            .parse()
            .unwrap()
    }

    /// The last commit's diff without context: only the lines it changed.
    fn last_diff(&self) -> String {
        self.git_out(&["show", "--format=%an <%ae>%n%s", "-U0", "main"])
            .lines()
            .filter(|l| !l.starts_with("index ") && !l.starts_with("diff --git"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn expect_one_commit(remote: &Remote, command: &[&str], args: &[&str], golden: &str) {
    let before = remote.commits();
    let (code, stdout, stderr) = remote.pier(command, args);
    assert_eq!(code, 0, "pier {command:?} {args:?}\n{stdout}{stderr}");
    assert!(
        stdout.contains("Committed") && stdout.contains("Pushed."),
        "{stdout}"
    );
    assert_eq!(remote.commits(), before + 1, "exactly one commit");
    assert_eq!(remote.last_diff(), golden, "pier {command:?} {args:?}");
}

#[test]
fn each_command_makes_one_commit_touching_only_its_lines() {
    let remote = Remote::new();
    expect_one_commit(
        &remote,
        &["scale"],
        &["worker=5", "web=4"],
        "Pat Ops <pat@example.com>
Scale worker=5, web=4

--- a/pier/stack.yml
+++ b/pier/stack.yml
@@ -12,0 +13 @@ services:
+    target_num_containers: 4
@@ -19 +20 @@ services:
-      replicas: 3   # busy queue
+      replicas: 5   # busy queue",
    );
    expect_one_commit(
        &remote,
        &["set", "image"],
        &["web", "registry.example.com/web:2"],
        "Pat Ops <pat@example.com>
Set web image to registry.example.com/web:2

--- a/pier/stack.yml
+++ b/pier/stack.yml
@@ -9 +9 @@ services:
-    image: \"registry.example.com/web:1\"
+    image: \"registry.example.com/web:2\"",
    );
    expect_one_commit(
        &remote,
        &["set", "env"],
        &["worker", "QUEUE=mail", "LEVEL=debug"],
        "Pat Ops <pat@example.com>
Set worker environment QUEUE=… LEVEL=…

--- a/pier/stack.yml
+++ b/pier/stack.yml
@@ -22 +22,2 @@ services:
-      - QUEUE=jobs
+      - QUEUE=mail
+      - LEVEL=debug",
    );
    expect_one_commit(
        &remote,
        &["node", "add"],
        &[
            "n3",
            "--endpoint",
            "tcp://10.0.0.3:2375",
            "--tag",
            "production",
        ],
        "Pat Ops <pat@example.com>
Add node n3

--- a/pier/nodes.yml
+++ b/pier/nodes.yml
@@ -6,0 +7 @@ nodes:
+  n3: { endpoint: \"tcp://10.0.0.3:2375\", tags: [production] }",
    );
    expect_one_commit(
        &remote,
        &["node", "tag"],
        &["n1", "+edge", "-production"],
        "Pat Ops <pat@example.com>
Tag node n1 +edge -production

--- a/pier/nodes.yml
+++ b/pier/nodes.yml
@@ -2 +2 @@ nodes:
-  n1: { endpoint: \"tcp://10.0.0.1:2375\", tags: [production] }
+  n1: { endpoint: \"tcp://10.0.0.1:2375\", tags: [edge] }",
    );
    expect_one_commit(
        &remote,
        &["node", "rm"],
        &["n2"],
        "Pat Ops <pat@example.com>
Remove node n2

--- a/pier/nodes.yml
+++ b/pier/nodes.yml
@@ -3,4 +2,0 @@ nodes:
-  n2:
-    endpoint: tcp://10.0.0.2:2375   # the old one
-    tags:
-      - production",
    );
}

#[test]
fn a_dry_run_shows_the_change_and_commits_nothing() {
    let remote = Remote::new();
    let before = remote.git_out(&["rev-parse", "main"]);
    let (code, stdout, stderr) = remote.pier(
        &["scale"],
        &["--dry-run", "--engine-timeout", "1s", "worker=1"],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("-      replicas: 3   # busy queue\n+      replicas: 1   # busy queue"),
        "{stdout}"
    );
    assert!(stdout.contains("The plan after this change:"), "{stdout}");
    assert!(
        stdout.contains("Dry run: nothing was committed."),
        "{stdout}"
    );
    assert_eq!(remote.git_out(&["rev-parse", "main"]), before);
}

#[test]
fn an_invalid_edit_is_refused_with_the_place_and_nothing_is_committed() {
    let remote = Remote::new();
    let before = remote.commits();
    let (code, stdout, stderr) = remote.pier(&["set", "image"], &["web", ""]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("pier/stack.yml:9:"), "{stderr}");
    assert!(stderr.contains("nothing was committed"), "{stderr}");
    let (code, _, stderr) = remote.pier(&["scale"], &["wokrer=2"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("did you mean `worker`"), "{stderr}");
    assert_eq!(remote.commits(), before);
}

/// The remote moves between pier's fetch and its push: the server refuses
/// the stale update, pier fetches, makes the edit again on the new tip and
/// pushes once more; both commits survive, nothing is forced.
#[test]
fn a_concurrent_commit_on_the_remote_is_handled_by_one_retry() {
    let mut remote = Remote::new();
    remote.serve();
    // A second user's clone, whose push the server hook makes at the worst moment.
    let other = remote.bare.parent().unwrap().join("other");
    git(
        remote.bare.parent().unwrap(),
        &["clone", "-q", remote.bare.to_str().unwrap(), "other"],
    );
    std::fs::write(other.join("README"), "docs\n").unwrap();
    git(&other, &["add", "README"]);
    git(&other, &["commit", "-q", "-m", "a concurrent commit"]);
    let marker = remote.bare.parent().unwrap().join("hook-ran");
    let hook = remote.bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n\
             [ -e '{marker}' ] && exit 0\n\
             touch '{marker}'\n\
             env -u GIT_DIR -u GIT_QUARANTINE_PATH -u GIT_OBJECT_DIRECTORY -u GIT_ALTERNATE_OBJECT_DIRECTORIES \\\n\
               git -C '{other}' push -q origin main >&2\n",
            marker = marker.display(),
            other = other.display()
        ),
    )
    .unwrap();
    make_executable(&hook);

    let (code, stdout, stderr) = remote.pier(&["scale"], &["worker=7"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(marker.exists(), "the hook ran");
    assert!(stdout.contains("the branch had moved"), "{stdout}");
    let log = remote.git_out(&["log", "--format=%s", "main"]);
    assert_eq!(log, "Scale worker=7\na concurrent commit\nmanifests\n");
    assert!(
        remote
            .last_diff()
            .contains("+      replicas: 7   # busy queue")
    );
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A local repository with the branch checked out: the commit lands on the
/// branch and the working tree follows; uncommitted changes to the file are
/// never overwritten.
#[test]
fn a_local_checkout_follows_its_branch_and_keeps_uncommitted_work() {
    let remote = Remote::new();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pier"))
            .args(args)
            .current_dir(&remote.work)
            .output()
            .unwrap()
    };
    let out = run(&["scale", "worker=2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(remote.work.join("pier/stack.yml")).unwrap();
    assert!(text.contains("replicas: 2   # busy queue"), "{text}");
    let status = Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(&remote.work)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        "",
        "clean after the commit"
    );

    std::fs::write(
        remote.work.join("pier/stack.yml"),
        format!("{text}# my notes\n"),
    )
    .unwrap();
    let out = run(&["scale", "worker=3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("uncommitted changes"));
    let kept = std::fs::read_to_string(remote.work.join("pier/stack.yml")).unwrap();
    assert!(kept.ends_with("# my notes\n") && kept.contains("replicas: 2"));
}
