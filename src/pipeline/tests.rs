//! Unit tests of the pipeline: masking, confinement and stage records.

use super::*;

/// A secret split across chunks at every possible point is masked, and
/// nothing is lost or doubled.
#[test]
fn a_secret_split_across_chunks_is_masked() {
    let secrets = vec!["hunter22".to_string(), "s3cr".to_string()];
    let text = "a hunter22 b s3cr c hunter22";
    for split in 0..=text.len() {
        for second in split..=text.len() {
            let mut masker = Masker::new(&secrets);
            let mut out = masker.push(&text[..split]);
            out.push_str(&masker.push(&text[split..second]));
            out.push_str(&masker.push(&text[second..]));
            out.push_str(&masker.finish());
            assert_eq!(out, "a *** b *** c ***", "split at {split} and {second}");
        }
    }
}

/// Raw output split inside a character, at every byte: a secret that
/// holds multi-byte characters is still masked, and the text around
/// it arrives whole.
#[test]
fn a_secret_split_inside_a_character_is_masked() {
    let secrets = vec!["pässwörd-€".to_string()];
    let text = "é pässwörd-€ ü".as_bytes();
    for split in 0..=text.len() {
        for second in split..=text.len() {
            let mut masker = Masker::new(&secrets);
            let mut out = masker.push_bytes(&text[..split]);
            out.push_str(&masker.push_bytes(&text[split..second]));
            out.push_str(&masker.push_bytes(&text[second..]));
            out.push_str(&masker.finish());
            assert_eq!(out, "é *** ü", "split at bytes {split} and {second}");
        }
    }
    let mut masker = Masker::new(&secrets);
    let mut out = masker.push_bytes(b"a\xffb\xe2\x82");
    out.push_str(&masker.finish());
    assert_eq!(out, "a\u{fffd}b\u{fffd}", "bytes that are not UTF-8");
}

#[test]
fn stage_scripts_echo_and_stop_at_the_first_failure() {
    let script = stage_script(&["echo 'hi'".into(), "false".into()]);
    assert_eq!(
        script,
        "#!/bin/sh\ncd /workspace || exit 1\nprintf '$ %s\\n' 'echo '\\''hi'\\'''\nsh -c 'echo '\\''hi'\\''' || exit $?\nprintf '$ %s\\n' 'false'\nsh -c 'false' || exit $?\n"
    );
}

#[test]
fn tags_split_after_the_registry_port() {
    assert_eq!(
        split_tag("10.0.0.1:5000/app/web:latest"),
        ("10.0.0.1:5000/app/web", "latest")
    );
    assert_eq!(
        split_tag("10.0.0.1:5000/app/web"),
        ("10.0.0.1:5000/app/web", "latest")
    );
    assert_eq!(split_tag("web:1"), ("web", "1"));
}

#[test]
fn secrets_are_masked() {
    assert_eq!(
        mask("user pier pw s3cr3t!", &["s3cr3t!".into()]),
        "user pier pw ***"
    );
}

#[test]
fn the_stage_script_is_an_executable_one_file_archive() {
    let tar = one_file_archive("b.sh", b"true");
    let entries: Vec<(String, u32)> = tar::Archive::new(tar.as_slice())
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
    assert_eq!(entries, [("b.sh".to_string(), 0o755)]);
}
