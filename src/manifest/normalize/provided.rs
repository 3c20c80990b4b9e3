//! A service's `configs` and `secrets`: which top-level entry, where in the
//! container, owned by whom, with which mode. (Their contents are read
//! once the whole manifests are loaded: `manifest::provided`.)

#[allow(unused_imports)]
use super::*;
use crate::manifest::model::{ProvidedKind, ProvidedRef};
use crate::manifest::spec::{ProvidedRefSpec, Scalar};

/// Compose's default for both.
const DEFAULT_MODE: u32 = 0o444;

pub(super) fn provided_refs(spec: &ServiceSpec, here: &Here, p: &mut Problems) -> Vec<ProvidedRef> {
    let mut out = Vec::new();
    for (kind, entries) in [
        (ProvidedKind::Config, &spec.configs),
        (ProvidedKind::Secret, &spec.secrets),
    ] {
        for (n, entry) in entries.iter().flatten().enumerate() {
            if let Some(reference) = one(kind, entry, here, &[k(kind.key()), i(n)], p) {
                out.push(reference);
            }
        }
    }
    out
}

fn one(
    kind: ProvidedKind,
    entry: &ProvidedRefSpec,
    here: &Here,
    at: &[Seg],
    p: &mut Problems,
) -> Option<ProvidedRef> {
    let (source, target, uid, gid, mode) = match entry {
        ProvidedRefSpec::Short(name) => (name.clone(), None, None, None, None),
        ProvidedRefSpec::Long(long) => (
            long.source.clone(),
            long.target.clone(),
            long.uid.as_ref(),
            long.gid.as_ref(),
            long.mode.as_ref(),
        ),
    };
    let target = match (kind, target) {
        (ProvidedKind::Secret, None) => format!("/run/secrets/{source}"),
        (ProvidedKind::Secret, Some(t)) if !t.starts_with('/') => format!("/run/secrets/{t}"),
        (ProvidedKind::Config, None) => format!("/{source}"),
        (ProvidedKind::Config, Some(t)) if !t.starts_with('/') => format!("/{t}"),
        (_, Some(t)) => t,
    };
    if target.split('/').any(|part| part == "..") || target.ends_with('/') {
        p.push(here.error(
            at,
            format!("`{target}` is not a file path in the container"),
        ));
        return None;
    }
    let id = |value: Option<&Scalar>, key: &str, p: &mut Problems| match value {
        None => Some(0),
        Some(value) => value.to_string().parse::<u32>().ok().or_else(|| {
            let mut path = at.to_vec();
            path.push(k(key));
            p.push(here.error(&path, format!("`{value}` is not a numeric id")));
            None
        }),
    };
    let (uid, gid) = (id(uid, "uid", p)?, id(gid, "gid", p)?);
    let mode = match mode {
        None => DEFAULT_MODE,
        Some(value) => match parse_mode(value) {
            Some(mode) => mode,
            None => {
                let mut path = at.to_vec();
                path.push(k("mode"));
                p.push(
                    here.error(&path, format!("`{value}` is not a file mode"))
                        .help("write it in octal, such as \"0440\""),
                );
                return None;
            }
        },
    };
    Some(ProvidedRef {
        kind,
        source,
        target,
        uid,
        gid,
        mode,
    })
}

/// A mode in octal: `"0440"`, `"440"`, or the number YAML made of `0440`.
fn parse_mode(value: &Scalar) -> Option<u32> {
    let mode = match value {
        Scalar::Str(text) => u32::from_str_radix(text.trim_start_matches("0o"), 8).ok()?,
        Scalar::Int(n) => {
            // `0440` read as YAML 1.2 is the decimal 440: its digits are
            // the octal ones meant.
            let digits = n.to_string();
            if digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                u32::from_str_radix(&digits, 8).ok()?
            } else {
                u32::try_from(*n).ok()?
            }
        }
        _ => return None,
    };
    (mode <= 0o7777).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_however_written() {
        assert_eq!(parse_mode(&Scalar::Str("0440".into())), Some(0o440));
        assert_eq!(parse_mode(&Scalar::Str("400".into())), Some(0o400));
        assert_eq!(parse_mode(&Scalar::Int(440)), Some(0o440));
        assert_eq!(parse_mode(&Scalar::Str("0999".into())), None);
    }
}
