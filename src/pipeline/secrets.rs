//! What no pipeline log may show: the values the manifests took from pier's
//! environment or from SOPS files, secrets' contents, and the registry
//! passwords. One list for the daemon's runs
//! and `pier pipeline run`, so both mask alike.

use crate::manifest::Vars;
use crate::manifest::model::{Manifest, Stage};

/// Secrets shorter than this are refused: masking them would garble logs.
pub const MIN_SECRET_LEN: usize = 4;

/// Values to mask in the logs of a pipeline of `manifest`: `passwords`,
/// every value of `vars` (the variables the allow-list admits) that a
/// stage's `env` or a build arg took by name, or that equals what the
/// manifest wrote there, and the values of the variables the manifests
/// interpolated (`interpolated`) that are long enough to mask.
///
/// Fails naming a variable given to a stage or build whose value is too
/// short to mask.
pub fn pipeline_secrets(
    manifest: &Manifest,
    interpolated: &std::collections::BTreeSet<String>,
    vars: &Vars,
    passwords: Vec<String>,
) -> Result<Vec<String>, String> {
    let mut secrets = passwords;
    let from_environment = |key: &str, value: Option<&String>| {
        vars.get(key)
            .filter(|v| value.is_none_or(|value| value == *v))
            .map(|v| (key.to_string(), v.clone()))
    };
    let mut given = Vec::new();
    for stage in manifest.pipeline.iter().flat_map(|p| p.stages.iter()) {
        if let Stage::Script { env, .. } = stage {
            given.extend(
                env.iter()
                    .filter_map(|(key, value)| from_environment(key, value.as_ref())),
            );
        }
    }
    for service in manifest.services.values() {
        for (key, value) in service.build.iter().flat_map(|b| &b.args) {
            given.extend(from_environment(key, value.as_ref()));
        }
    }
    if let Some((key, _)) = given
        .iter()
        .find(|(_, v)| !v.is_empty() && v.chars().count() < MIN_SECRET_LEN)
    {
        return Err(format!(
            "the value of {key} in pier's environment is shorter than {MIN_SECRET_LEN} characters, too short to mask in logs; use a longer one"
        ));
    }
    secrets.extend(given.into_iter().map(|(_, v)| v));
    // Values the allow-list lets manifests interpolate are not secrets by
    // that list's word; they are masked all the same when long enough
    // to mask without garbling the log.
    secrets.extend(
        interpolated
            .iter()
            .filter_map(|name| vars.get(name))
            .filter(|v| v.chars().count() >= MIN_SECRET_LEN)
            .cloned(),
    );
    // What SOPS files gave, and secrets' contents.
    secrets.extend(
        manifest
            .secret_values
            .0
            .iter()
            .filter(|v| v.chars().count() >= MIN_SECRET_LEN)
            .cloned(),
    );
    secrets.retain(|s| !s.is_empty());
    secrets.sort();
    secrets.dedup();
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> crate::manifest::Loaded {
        let files = [crate::manifest::SourceFile {
            path: "pier/p.yml".into(),
            text: text.into(),
        }];
        let vars: Vars = [
            ("TOKEN", "t0ken-value"),
            ("TINY", "ab"),
            ("OTHER", "unused-value"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        crate::manifest::load_and_validate(&files, &vars, &crate::manifest::MemoryTree::default())
    }

    #[test]
    fn values_given_by_name_are_masked_and_short_ones_refused() {
        let vars: Vars = [
            ("TOKEN", "t0ken-value"),
            ("TINY", "ab"),
            ("OTHER", "unused-value"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let loaded = manifest(
            "pipeline:\n  stages:\n    - { name: test, image: x, script: [\"true\"], env: { TOKEN: } }\n",
        );
        let secrets = pipeline_secrets(
            &loaded.manifest,
            &loaded.interpolated,
            &vars,
            vec!["registry-pw".into()],
        )
        .unwrap();
        assert_eq!(secrets, ["registry-pw", "t0ken-value"]);
        let loaded = manifest(
            "pipeline:\n  stages:\n    - { name: test, image: x, script: [\"true\"], env: { TINY: } }\n",
        );
        let error = pipeline_secrets(&loaded.manifest, &loaded.interpolated, &vars, Vec::new())
            .unwrap_err();
        assert!(
            error.contains("TINY") && error.contains("shorter than 4"),
            "{error}"
        );
    }
}
