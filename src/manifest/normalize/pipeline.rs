//! The pipeline: branches, runner tags and stages.

#[allow(unused_imports)]
use super::*;

/// Normalise the pipeline.
pub fn pipeline(
    location: Location,
    spec: &PipelineSpec,
    here: &Here,
    vars: &Vars,
) -> (Pipeline, Problems) {
    let mut p = Problems::new();
    let mut names = BTreeSet::new();
    let mut stages = Vec::new();
    for (n, stage) in spec.stages.iter().flatten().enumerate() {
        let at = |key: &str| [k("stages"), i(n), k(key)];
        if !names.insert(stage.name.clone()) {
            p.push(
                here.error(
                    &at("name"),
                    format!("stage `{}` is defined twice", stage.name),
                )
                .help("stage names are unique"),
            );
        }
        let timeout = stage
            .timeout
            .as_deref()
            .and_then(|t| duration(t, here, &at("timeout"), &mut p));
        match (&stage.build, &stage.image, &stage.script) {
            (Some(services), None, None) => stages.push(Stage::Build { name: stage.name.clone(), services: services.clone(), timeout }),
            (None, Some(image), Some(script)) => stages.push(Stage::Script {
                name: stage.name.clone(),
                image: image.clone(),
                script: script.clone(),
                env: stage.env.as_ref().map(|e| environment_values(e, here, &at("env"), vars, &mut p)).unwrap_or_default(),
                timeout,
            }),
            (Some(_), _, _) => p.push(here.error(&[k("stages"), i(n)], "a build stage takes `build` only, without `image` or `script`")),
            (None, _, _) => p.push(
                here.error(&[k("stages"), i(n)], format!("stage `{}` needs `image` and `script`, or `build`", stage.name))
                    .help("a script stage runs `script` lines in a container of `image`; a build stage lists services to build"),
            ),
        }
    }
    let pipeline = Pipeline {
        branches: spec.branches.clone().unwrap_or_else(|| vec!["main".into()]),
        runner_tags: spec.runner_tags.iter().flatten().cloned().collect(),
        stages,
        location,
    };
    (pipeline, p)
}
