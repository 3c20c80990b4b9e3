//! Private git remotes. pier fetches over SSH with the agent or a key file,
//! and checks the host key. Over HTTP it sends a token. It never shows or
//! stores the credential: not in output, not in errors, not in its cache
//! folder names. The SSH remote is the bed's sshd, with a forced `git-shell`.
//! The HTTP one is `git http-backend` behind basic auth.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::support::{self, Bed, Daemon, DaemonOptions, eventually, git, head_commit};

const MANIFEST: &str = "services:\n  web: { image: nginx }\n";

/// A bare repository holding `pier/stack.yml`, and the working clone that
/// pushes to it.
struct Remote {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
}

impl Remote {
    fn new() -> Remote {
        let dir = tempfile::tempdir().expect("temp dir");
        let work = dir.path().join("work");
        let bare = dir.path().join("deploy.git");
        std::fs::create_dir_all(work.join("pier")).expect("work folder");
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("pier/stack.yml"), MANIFEST).expect("manifest");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "first"]);
        git(
            dir.path(),
            &["clone", "-q", "--bare", "work", bare.to_str().unwrap()],
        );
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Remote {
            _dir: dir,
            bare,
            work,
        }
    }

    /// Commit a change and push it to the bare repository; its commit id.
    fn push_change(&self, manifest: &str) -> String {
        std::fs::write(self.work.join("pier/stack.yml"), manifest).expect("manifest");
        git(&self.work, &["commit", "-q", "-am", "change"]);
        git(&self.work, &["push", "-q", "origin", "main"]);
        head_commit(&self.work)
    }
}

/// A home folder whose `~/.ssh/known_hosts` knows the bed's sshd (and, if
/// asked, holding no key: keys come from the agent or `PIER_GIT_SSH_KEY`).
fn home_knowing_the_bed(bed: &Bed, knows_host: bool) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("home");
    let ssh = home.path().join(".ssh");
    std::fs::create_dir(&ssh).expect(".ssh");
    if knows_host {
        std::fs::copy(
            Path::new(&bed.dir).join("ssh/known_hosts"),
            ssh.join("known_hosts"),
        )
        .expect("the bed's known_hosts (is the bed up with SSH?)");
    }
    home
}

fn git_key(bed: &Bed) -> String {
    format!("{}/ssh/git_ed25519", bed.dir)
}

fn node1_addr(bed: &Bed) -> &str {
    &bed.nodes[0].addr
}

/// `pier validate` on a remote, with exactly this environment for git
/// credentials; (status, stderr).
fn validate(url: &str, cache: &Path, home: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pier"))
        .args(["validate", "--repo", url, "--cache-dir"])
        .arg(cache)
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env("PIER_GIT_TIMEOUT", "10s")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("PIER_GIT_TOKEN")
        .env_remove("PIER_GIT_USER")
        .env_remove("PIER_GIT_SSH_KEY")
        .envs(env.iter().copied())
        .output()
        .expect("pier runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An ssh-agent holding one key, stopped when dropped.
struct Agent {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    async fn with_key(key: &str) -> Agent {
        let dir = tempfile::tempdir().expect("agent dir");
        let socket = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("ssh-agent runs (package openssh-client)");
        eventually("the ssh-agent socket", Duration::from_secs(10), || async {
            socket.exists().then_some(())
        })
        .await;
        let added = Command::new("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &socket)
            .status()
            .expect("ssh-add runs");
        assert!(added.success(), "ssh-add {key} failed");
        Agent {
            child,
            socket,
            _dir: dir,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SSH remote without credentials fails with a hint. With the agent or
/// with a key file it is fetched. With an unknown host key it is refused,
/// even with a good key.
#[tokio::test]
async fn ssh_remotes_authenticate_with_the_agent_or_a_key_file_and_check_the_host() {
    let bed = Bed::get();
    let remote = Remote::new();
    let url = format!("ssh://root@{}{}", node1_addr(&bed), remote.bare.display());
    let cache = tempfile::tempdir().unwrap();
    let known = home_knowing_the_bed(&bed, true);

    let (code, stderr) = validate(&url, cache.path(), known.path(), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot fetch"), "{stderr}");
    assert!(stderr.contains("PIER_GIT_SSH_KEY"), "{stderr}");

    let key = git_key(&bed);
    let (code, stderr) = validate(
        &url,
        cache.path(),
        known.path(),
        &[("PIER_GIT_SSH_KEY", &key)],
    );
    assert_eq!(code, 0, "with a key file: {stderr}");
    assert!(stderr.starts_with("valid: 1 service(s)"), "{stderr}");

    let agent = Agent::with_key(&key).await;
    let scp_like = format!("root@{}:{}", node1_addr(&bed), remote.bare.display());
    let fresh_cache = tempfile::tempdir().unwrap();
    let (code, stderr) = validate(
        &scp_like,
        fresh_cache.path(),
        known.path(),
        &[("SSH_AUTH_SOCK", agent.socket.to_str().unwrap())],
    );
    assert_eq!(code, 0, "with the agent: {stderr}");

    let stranger = home_knowing_the_bed(&bed, false);
    let (code, stderr) = validate(
        &url,
        tempfile::tempdir().unwrap().path(),
        stranger.path(),
        &[("PIER_GIT_SSH_KEY", &key)],
    );
    assert_eq!(code, 2, "an unknown host key must be refused: {stderr}");
    assert!(stderr.contains("known_hosts"), "{stderr}");
}

/// The daemon watches a remote over SSH: `ls-remote` and fetch both
/// authenticate, so a pushed commit becomes the head it reports.
#[tokio::test]
async fn the_daemon_follows_an_ssh_remote_with_a_key() {
    let bed = Bed::get();
    let remote = Remote::new();
    let url = format!("root@{}:{}", node1_addr(&bed), remote.bare.display());
    let home = home_knowing_the_bed(&bed, true);
    let state = tempfile::tempdir().unwrap();
    let options = DaemonOptions::default()
        .arg("--git-interval", "200ms")
        .env("HOME", home.path().to_str().unwrap())
        .env("PIER_GIT_SSH_KEY", &git_key(&bed));
    let daemon = Daemon::start(
        &bed,
        &url,
        &support::unique("sshgit"),
        state.path(),
        &options,
    );
    let reports_head = |head: String| {
        let daemon = &daemon;
        async move {
            eventually(&format!("head {head}"), Duration::from_secs(30), || async {
                let status = daemon.status().await;
                (status["head"].as_str() == Some(head.as_str())).then_some(())
            })
            .await
        }
    };
    reports_head(head_commit(&remote.work)).await;
    reports_head(remote.push_change("services:\n  web: { image: nginx:1.27 }\n")).await;
}

/// HTTP remotes take `PIER_GIT_TOKEN`. A token written into the URL works
/// too, but it shows nowhere: not in errors, nor in the cache folder's name.
#[tokio::test]
async fn http_remotes_take_a_token_and_never_show_it() {
    let remote = Remote::new();
    let root = remote.bare.parent().unwrap().to_path_buf();
    let server = GitHttp::serve(root, "deployer", "tok-right-6c1f");
    let url = format!("http://{}/deploy.git", server.address);
    let home = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();

    let (code, stderr) = validate(&url, cache.path(), home.path(), &[]);
    assert_eq!(code, 2, "no token must be refused: {stderr}");
    assert!(stderr.contains("PIER_GIT_TOKEN"), "{stderr}");

    let (code, stderr) = validate(
        &url,
        cache.path(),
        home.path(),
        &[
            ("PIER_GIT_TOKEN", "tok-right-6c1f"),
            ("PIER_GIT_USER", "deployer"),
        ],
    );
    assert_eq!(code, 0, "with PIER_GIT_TOKEN: {stderr}");

    let in_url = format!(
        "http://deployer:tok-right-6c1f@{}/deploy.git",
        server.address
    );
    let (code, stderr) = validate(&in_url, cache.path(), home.path(), &[]);
    assert_eq!(code, 0, "with the token in the URL: {stderr}");

    let wrong = format!(
        "http://deployer:tok-wrong-93ab@{}/deploy.git",
        server.address
    );
    let (code, stderr) = validate(&wrong, cache.path(), home.path(), &[]);
    assert_eq!(code, 2, "a wrong token must be refused: {stderr}");
    assert!(!stderr.contains("tok-wrong-93ab"), "{stderr}");
    assert!(stderr.contains("http://***@"), "{stderr}");

    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains("tok-"), "a cache folder is named {name}");
    }
}

/// A git remote that stops answering holds only the git check: a removed
/// replica is healed meanwhile, and SIGTERM still ends the daemon at once
/// (the stuck fetch is abandoned, not waited for).
#[tokio::test]
async fn a_hung_git_remote_stalls_neither_healing_nor_shutdown() {
    let bed = Bed::get();
    let remote = Remote::new();
    let stack = support::unique("hunggit");
    let manifest = format!(
        "{}services:\n  web:\n    image: {}\n    command: sleep 3600\n    stop_grace_period: 1s\n",
        support::nodes_yaml(&bed, &[&[]]),
        bed.base_image
    );
    remote.push_change(&manifest);
    let server = GitHttp::serve(
        remote.bare.parent().unwrap().to_path_buf(),
        "deployer",
        "tok-hang-11",
    );
    let state = tempfile::tempdir().unwrap();
    let options = DaemonOptions::default()
        .arg("--git-interval", "200ms")
        .arg("--git-timeout", "5m")
        .env("PIER_GIT_TOKEN", "tok-hang-11")
        .env("PIER_GIT_USER", "deployer");
    let mut daemon = Daemon::start(
        &bed,
        &format!("http://{}/deploy.git", server.address),
        &stack,
        state.path(),
        &options,
    );
    let replica = format!("{stack}-web-1");
    let engine = support::engine(&bed.nodes[0]).await;
    let is_running = |engine: &bollard::Docker| {
        let (engine, replica) = (engine.clone(), replica.clone());
        async move {
            engine
                .inspect_container(&replica, None)
                .await
                .ok()
                .and_then(|c| c.state?.running)
                .unwrap_or(false)
        }
    };
    eventually("the replica runs", Duration::from_secs(60), || async {
        is_running(&engine).await.then_some(())
    })
    .await;

    server.hang.store(true, Ordering::SeqCst);
    eventually("a git check hangs", Duration::from_secs(30), || async {
        (server.hung.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    super::support::force_remove(&engine, &replica).await;
    eventually(
        "the replica healed while git hangs",
        Duration::from_secs(60),
        || async { is_running(&engine).await.then_some(()) },
    )
    .await;

    let exited = daemon.terminate_within(Duration::from_secs(30));
    assert!(exited.is_some(), "SIGTERM waited for the hung fetch");
    support::remove_stack(&bed, &stack).await;
}

/// `git http-backend` behind HTTP basic auth: a CGI bridge over a plain
/// listener, one connection per request. While `hang` is set, it reads
/// each request and never answers.
struct GitHttp {
    address: String,
    hang: Arc<AtomicBool>,
    /// Requests left unanswered so far.
    hung: Arc<AtomicUsize>,
}

impl GitHttp {
    fn serve(root: PathBuf, user: &str, password: &str) -> GitHttp {
        use base64::Engine as _;
        let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
        let address = listener.local_addr().unwrap().to_string();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let hang = Arc::new(AtomicBool::new(false));
        let hung = Arc::new(AtomicUsize::new(0));
        let (hanging, hung_count) = (hang.clone(), hung.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, expected) = (root.clone(), expected.clone());
                let (hanging, hung_count) = (hanging.clone(), hung_count.clone());
                std::thread::spawn(move || {
                    if hanging.load(Ordering::SeqCst) {
                        let mut first = [0u8; 1];
                        let _ = (&stream).read(&mut first);
                        hung_count.fetch_add(1, Ordering::SeqCst);
                        // Hold the connection open, silent, for good.
                        std::thread::sleep(Duration::from_secs(3600));
                        return;
                    }
                    let _ = serve_one(stream, &root, &expected);
                });
            }
        });
        GitHttp {
            address,
            hang,
            hung,
        }
    }
}

fn serve_one(stream: TcpStream, root: &Path, expected_auth: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut stream = stream;
    if header("authorization").as_deref() != Some(expected_auth) {
        return stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", length.to_string())
        .env("REMOTE_USER", "deployer")
        .env(
            "HTTP_CONTENT_ENCODING",
            header("content-encoding").unwrap_or_default(),
        )
        .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    cgi.stdin.take().expect("stdin").write_all(&body)?;
    let output = cgi.wait_with_output()?;
    let split = output
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| {
            output
                .stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|at| (at, 2))
        })
        .unwrap_or((output.stdout.len(), 0));
    let cgi_head = String::from_utf8_lossy(&output.stdout[..split.0]).into_owned();
    let cgi_body = &output.stdout[split.0 + split.1..];
    let mut status = "200 OK".to_string();
    let mut response = Vec::new();
    let mut head_lines = Vec::new();
    for line in cgi_head.lines() {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string()
            }
            Some(_) => head_lines.push(line.to_string()),
            None => {}
        }
    }
    write!(response, "HTTP/1.1 {status}\r\n")?;
    for line in head_lines {
        write!(response, "{line}\r\n")?;
    }
    write!(
        response,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        cgi_body.len()
    )?;
    response.extend_from_slice(cgi_body);
    stream.write_all(&response)
}
