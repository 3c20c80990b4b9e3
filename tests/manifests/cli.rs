//! The command line's own outputs: `--version` names the commit, the
//! completions and manual are generated and parse, and `pier init` turns
//! a Compose file into a valid manifests folder without overwriting one.

use std::path::Path;
use std::process::Command;

fn pier(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pier"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("DOCKER_HOST")
        .output()
        .expect("pier runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(here)
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let (code, out, _) = pier(here, &["--version"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("pier ") && out.contains(&format!("(commit {head})")),
        "{out} vs {head}"
    );
}

#[test]
fn completions_and_the_manual_are_generated_and_parse() {
    let dir = tempfile::tempdir().unwrap();
    let (code, bash, err) = pier(dir.path(), &["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        bash.contains("complete -F") && bash.contains("rollback"),
        "{bash}"
    );
    let script = dir.path().join("pier.bash");
    std::fs::write(&script, &bash).unwrap();
    let parsed = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(parsed.status.success(), "{parsed:?}");
    for shell in ["zsh", "fish"] {
        let (code, out, err) = pier(dir.path(), &["completions", shell]);
        assert!(code == 0 && out.contains("secret"), "{shell}: {err}");
    }
    let (code, page, err) = pier(dir.path(), &["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        page.starts_with(".ie") || page.contains(".TH pier"),
        "{page}"
    );
    let pages = dir.path().join("man");
    let (code, _, err) = pier(dir.path(), &["man", "--dir", pages.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for page in ["pier.1", "pier-apply.1", "pier-secret-edit.1"] {
        assert!(pages.join(page).is_file(), "{page}");
    }
}

#[test]
fn init_writes_a_valid_folder_from_a_compose_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/Dockerfile"), "FROM scratch\n").unwrap();
    std::fs::write(dir.path().join("app.env"), "MODE=prod\n").unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        "# our app\nservices:\n  web:\n    image: nginx:1.27\n    ports: [\"8080:80\"]\n  api:\n    build: ./app\n    image: registry.example.com/api:latest\n    env_file: ./app.env\n",
    )
    .unwrap();
    let (code, out, err) = pier(
        dir.path(),
        &[
            "init",
            "--node",
            "web1=tcp://10.0.0.11:2376:web,eu",
            "--node",
            "db1=tcp://10.0.0.12:2376",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("valid: 2 service(s), 2 node(s)"), "{err}");
    assert!(
        out.contains("git add pier") && out.contains("pier diff") && out.contains("pier apply"),
        "{out}"
    );
    let stack = std::fs::read_to_string(dir.path().join("pier/stack.yml")).unwrap();
    assert!(
        stack.contains("# our app") && stack.contains("build: \"../app\""),
        "{stack}"
    );
    let nodes = std::fs::read_to_string(dir.path().join("pier/nodes.yml")).unwrap();
    assert!(
        nodes.contains("tags: [web, eu]") && nodes.contains("endpoint: \"tcp://10.0.0.12:2376\""),
        "{nodes}"
    );
    let pipeline = std::fs::read_to_string(dir.path().join("pier/pipeline.yml")).unwrap();
    assert!(pipeline.contains("#       build: [api]"), "{pipeline}");

    std::fs::write(dir.path().join("pier/nodes.yml"), "# mine\n").unwrap();
    let (code, _, err) = pier(dir.path(), &["init"]);
    assert_eq!(code, 2);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pier/nodes.yml")).unwrap(),
        "# mine\n"
    );
    let (code, _, err) = pier(dir.path(), &["init", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read_to_string(dir.path().join("pier/nodes.yml"))
            .unwrap()
            .contains("unix:///var/run/docker.sock")
    );

    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = pier(empty.path(), &["init"]);
    assert_eq!(code, 2);
    assert!(err.contains("no Compose file here"), "{err}");
}

/// `contrib/pier.service` is a unit systemd accepts as written (with this
/// build's binary in place of the installed one): no unknown directive, no
/// bad value. Its `Documentation=` line is left out: it names the manual
/// as installed, which this machine need not have.
#[test]
fn the_systemd_unit_verifies() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("systemd-analyze is missing: install Debian's `systemd` package to check contrib/pier.service");
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/pier.service"))
            .unwrap();
    let unit: String = unit
        .replace("/usr/local/bin/pier", env!("CARGO_BIN_EXE_pier"))
        .lines()
        .filter(|l| !l.starts_with("Documentation="))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pier.service");
    std::fs::write(&path, &unit).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    // And it would catch a mistake.
    std::fs::write(
        &path,
        unit.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NoNewPrivilege"),
        "{out:?}"
    );
}

/// An `openssl s_server` answering HTTPS on a loopback port, stopped when
/// dropped.
struct TlsServer {
    child: std::process::Child,
    port: u16,
}

impl TlsServer {
    fn start(cert: &Path, key: &Path) -> TlsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl runs (tests/run installs it)");
        let server = TlsServer { child, port };
        crate::support::wait_listening(
            port,
            "openssl s_server",
            std::time::Duration::from_secs(20),
        );
        server
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// libgit2 starts without the root certificates (parsing them was most of
/// a short command's time) and is given them before it first reaches a
/// remote: an HTTPS server the bundle in `SSL_CERT_FILE` vouches for is
/// reached (and answers with a page that is not a repository), one it does
/// not vouch for is refused, with the fix for a certificate.
#[test]
fn https_remotes_are_checked_against_the_root_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = crate::support::self_signed(dir.path(), "git", "IP:127.0.0.1");
    let (other, _) = crate::support::self_signed(dir.path(), "other", "IP:127.0.0.1");
    let server = TlsServer::start(&cert, &key);
    let url = format!("https://127.0.0.1:{}/team/app.git", server.port);
    let fetch = |bundle: &Path, cache: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_pier"))
            .args(["validate", "--repo", &url, "--cache-dir"])
            .arg(dir.path().join(cache))
            .env("SSL_CERT_FILE", bundle)
            .env_remove("SSL_CERT_DIR")
            .env("NO_COLOR", "1")
            .output()
            .expect("pier runs");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let trusted = fetch(&cert, "trusted");
    assert!(
        trusted.contains("content-type") && !trusted.contains("certificate"),
        "the server was reached over a checked connection: {trusted}"
    );
    let untrusted = fetch(&other, "untrusted");
    assert!(
        untrusted.contains("certificate is invalid")
            && untrusted.contains("not signed by a root this machine trusts"),
        "{untrusted}"
    );
}
