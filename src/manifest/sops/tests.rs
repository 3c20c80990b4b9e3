//! Round trips through pier's own writer; the interplay with the real
//! `sops` binary is tested in `tests/manifests/sops.rs`.

use super::*;

const KEY: &str = "AGE-SECRET-KEY-1S8PWKF2D5ME86GK95VGKNXT9KPMZL6PE4NFNYVVLNUDA5LWNWXFQXVG8X5";
const OTHER_KEY: &str =
    "AGE-SECRET-KEY-1X0MWHNA40FL09NFTH34PP30HPAH0EK4J448W8WTN342K5PHCEN9SGEKH6M";

fn keys() -> Keys {
    Keys::parse(KEY).unwrap()
}

#[test]
fn every_format_round_trips_and_keeps_plain_what_is_marked_so() {
    let keys = keys();
    let recipients = keys.recipients();
    let cases: [(&str, &[u8]); 4] = [
        ("s.yaml", b"db:\n    password: \"hunter22\"\n    port: 5432\n    ratio: 1.5\n    \"on\": true\nnote_unencrypted: \"visible\"\n"),
        ("s.json", b"{\n\t\"a\": \"b\",\n\t\"z\": [\n\t\t1,\n\t\t\"two\"\n\t]\n}\n"),
        ("s.env", b"DB_PASSWORD=hunter22\nMULTI=a\\nb\n# a comment\n"),
        ("cert.pem", b"raw \xff bytes\n"),
    ];
    for (path, plain) in cases {
        let sealed = encrypt(Format::of(path), plain, &recipients).unwrap();
        assert!(is_encrypted(path, &sealed), "{path}");
        let text = String::from_utf8_lossy(&sealed);
        assert!(
            !text.contains("hunter22") && !text.contains("two"),
            "{path}: {text}"
        );
        let opened = decrypt(path, &sealed, &keys).unwrap();
        assert_eq!(opened.plaintext(), plain, "{path}");
    }
    let sealed = encrypt(Format::Yaml, cases[0].1, &recipients).unwrap();
    assert!(String::from_utf8_lossy(&sealed).contains("note_unencrypted: \"visible\""));
}

#[test]
fn a_changed_value_or_a_foreign_key_is_refused() {
    let keys = keys();
    let sealed = encrypt(Format::Dotenv, b"A=one\nB=two\n", &keys.recipients()).unwrap();
    let text = String::from_utf8(sealed).unwrap();
    // B's value moved to A: it does not decrypt at A's path.
    let lines: Vec<&str> = text.lines().collect();
    let b_value = lines[1].split_once('=').unwrap().1;
    let moved = text.replacen(lines[0], &format!("A={b_value}"), 1);
    assert!(matches!(
        decrypt("x.env", moved.as_bytes(), &keys),
        Err(SopsError::Malformed(_))
    ));
    // A value removed: the MAC no longer matches.
    let removed = text.replacen(&format!("{}\n", lines[1]), "", 1);
    assert_eq!(
        decrypt("x.env", removed.as_bytes(), &keys).err(),
        Some(SopsError::Mac)
    );
    assert_eq!(
        decrypt("x.env", text.as_bytes(), &Keys::none()).err(),
        Some(SopsError::NoKey)
    );
    let other = Keys::parse(OTHER_KEY).unwrap();
    assert!(matches!(
        decrypt("x.env", text.as_bytes(), &other),
        Err(SopsError::NotForThisKey(_))
    ));
}

#[test]
fn files_without_a_sops_section_are_not_taken_for_encrypted() {
    assert!(!is_encrypted("a.yaml", b"sops: yes\n"));
    assert!(!is_encrypted("a.env", b"A=sops\n"));
    assert!(!is_encrypted("a.pem", b"-----BEGIN-----\n"));
}

#[test]
fn the_fingerprint_key_depends_on_the_key_only() {
    assert_eq!(keys().fingerprint_key(), keys().fingerprint_key());
    assert!(keys().fingerprint_key().is_some());
    assert!(Keys::none().fingerprint_key().is_none());
}
