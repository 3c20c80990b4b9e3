//! How a service runs and is replaced: restart policies, logging,
//! placement (strategy, replicas, constraints), health checks, rollout
//! settings and dependencies.

#[allow(unused_imports)]
use super::*;

pub(super) fn restart(spec: &ServiceSpec, here: &Here, p: &mut Problems) -> Restart {
    let from_restart = spec.restart.as_deref().and_then(|r| {
        let parsed = match r {
            "no" | "\"no\"" => Some(Restart::No),
            "always" => Some(Restart::Always),
            "unless-stopped" => Some(Restart::UnlessStopped),
            "on-failure" => Some(Restart::OnFailure { max_retries: None }),
            other => other
                .strip_prefix("on-failure:")
                .and_then(|n| n.parse().ok())
                .map(|n| Restart::OnFailure {
                    max_retries: Some(n),
                }),
        };
        if parsed.is_none() {
            p.push(
                here.error(&[k("restart")], format!("unknown restart policy `{r}`"))
                    .help("use `no`, `always`, `on-failure[:N]` or `unless-stopped`"),
            );
        }
        parsed
    });
    let from_autorestart = spec.autorestart.as_deref().and_then(|r| {
        // Tutum's API spelled these in capitals (`ALWAYS`), and stackfiles
        // exported from it kept them.
        let parsed = match r.to_ascii_lowercase().as_str() {
            "off" => Some(Restart::No),
            "on_failure" => Some(Restart::OnFailure { max_retries: None }),
            "always" => Some(Restart::Always),
            _ => None,
        };
        if parsed.is_none() {
            p.push(
                here.error(&[k("autorestart")], format!("unknown autorestart `{r}`"))
                    .help("use `off`, `on_failure` or `always`"),
            );
        }
        parsed
    });
    match (from_restart, from_autorestart) {
        (Some(a), Some(b)) if a != b => {
            p.push(
                Diagnostic::error(
                    here.key_loc("autorestart"),
                    "`autorestart` and `restart` disagree",
                )
                .key(here.key_path(&[k("autorestart")]))
                .related(here.key_loc("restart"))
                .help("they set the same thing: keep one"),
            );
            a
        }
        (a, b) => a.or(b).unwrap_or_default(),
    }
}

/// `logging`, or its older spelling `log_driver` + `log_opt`.
pub(super) fn logging(
    spec: &ServiceSpec,
    here: &Here,
    p: &mut Problems,
) -> Option<(String, BTreeMap<String, String>)> {
    let options = |map: Option<&BTreeMap<String, Scalar>>| -> BTreeMap<String, String> {
        map.into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    };
    let older = spec.log_driver.is_some() || spec.log_opt.is_some();
    match (&spec.logging, older) {
        (Some(_), true) => {
            p.push(
                here.error(
                    &[k("log_driver")],
                    "`logging` and `log_driver`/`log_opt` set the same thing",
                )
                .help("keep `logging: {driver, options}`"),
            );
            None
        }
        (Some(logging), false) => {
            let Some(driver) = logging.driver.clone() else {
                p.push(
                    here.error(&[k("logging")], "`logging` needs a `driver`")
                        .help("e.g. `logging: { driver: json-file, options: { max-size: 10m } }`"),
                );
                return None;
            };
            Some((driver, options(logging.options.as_ref())))
        }
        (None, true) => {
            let Some(driver) = spec.log_driver.clone() else {
                p.push(
                    here.error(&[k("log_opt")], "`log_opt` needs `log_driver`")
                        .help("name the driver the options are for"),
                );
                return None;
            };
            Some((driver, options(spec.log_opt.as_ref())))
        }
        (None, false) => None,
    }
}

/// `deploy.restart_policy` as Compose maps it to an engine restart policy.
pub(super) fn deploy_restart(
    policy: &RestartPolicySpec,
    here: &Here,
    p: &mut Problems,
) -> Option<Restart> {
    let at = [k("deploy"), k("restart_policy"), k("condition")];
    match policy.condition.as_deref() {
        Some("none") => Some(Restart::No),
        Some("on-failure" | "on_failure") => Some(Restart::OnFailure {
            max_retries: policy.max_attempts,
        }),
        None | Some("any") => Some(if policy.max_attempts.is_some() {
            Restart::OnFailure {
                max_retries: policy.max_attempts,
            }
        } else {
            Restart::Always
        }),
        Some(other) => {
            p.push(
                here.error(&at, format!("unknown restart condition `{other}`"))
                    .help("use `none`, `on-failure` or `any`"),
            );
            None
        }
    }
}

pub(super) fn autodestroy(spec: &ServiceSpec, here: &Here, p: &mut Problems) -> Autodestroy {
    // Tutum's documented spellings are `no` and `on-success`; its API
    // wrote them in capitals (`ON_SUCCESS`).
    let written = spec.autodestroy.as_deref().map(str::to_ascii_lowercase);
    match written.as_deref() {
        None | Some("off" | "no") => Autodestroy::Off,
        Some("on_success" | "on-success") => Autodestroy::OnSuccess,
        Some("always") => Autodestroy::Always,
        Some(other) => {
            p.push(
                here.error(
                    &[k("autodestroy")],
                    format!("unknown autodestroy `{other}`"),
                )
                .help("use `no` (or `off`), `on-success` (or `on_success`) or `always`"),
            );
            Autodestroy::Off
        }
    }
}

pub(super) fn strategy(spec: &ServiceSpec, here: &Here, p: &mut Problems) -> Strategy {
    match spec.deployment_strategy.as_deref() {
        None | Some("emptiest_node") => Strategy::EmptiestNode,
        Some("high_availability") => Strategy::HighAvailability,
        Some("every_node") => Strategy::EveryNode,
        Some(other) => {
            let help = match crate::manifest::diagnostic::did_you_mean(
                other,
                ["emptiest_node", "high_availability", "every_node"],
            ) {
                Some(best) => format!("did you mean `{best}`?"),
                None => "use `emptiest_node`, `high_availability` or `every_node`".into(),
            };
            p.push(
                here.error(
                    &[k("deployment_strategy")],
                    format!("unknown deployment strategy `{other}`"),
                )
                .help(help),
            );
            Strategy::EmptiestNode
        }
    }
}

pub(super) fn replicas(
    spec: &ServiceSpec,
    strategy: Strategy,
    here: &Here,
    p: &mut Problems,
) -> Option<u32> {
    let tutum = spec.target_num_containers;
    let compose = spec.deploy.as_ref().and_then(|d| d.replicas);
    let at_compose = || here.loc(&[k("deploy"), k("replicas")]);
    if let (Some(a), Some(b)) = (tutum, compose)
        && a != b
    {
        p.push(
            Diagnostic::error(
                here.key_loc("target_num_containers"),
                format!("`target_num_containers: {a}` and `deploy.replicas: {b}` disagree"),
            )
            .key(here.key_path(&[k("target_num_containers")]))
            .related(at_compose())
            .help("they set the same thing: keep one"),
        );
    }
    let replicas = tutum.or(compose);
    if strategy == Strategy::EveryNode {
        if replicas.is_some() {
            let location = if tutum.is_some() {
                here.key_loc("target_num_containers")
            } else {
                at_compose()
            };
            p.push(
                Diagnostic::error(location, "an `every_node` service cannot be scaled")
                    .key(here.key_path(&[k("deployment_strategy")]))
                    .help("it runs one container on every matching node; remove the replica count, or choose another strategy"),
            );
        }
        return None;
    }
    Some(replicas.unwrap_or(1))
}

pub(super) fn healthcheck(
    spec: &HealthcheckSpec,
    here: &Here,
    p: &mut Problems,
) -> Option<Healthcheck> {
    let at = |key: &str| [k("healthcheck"), k(key)];
    let test = if spec.disable == Some(true) {
        vec!["NONE".to_string()]
    } else {
        match &spec.test {
            None => Vec::new(),
            Some(StringOrList::One(line)) => vec!["CMD-SHELL".into(), line.clone()],
            Some(StringOrList::Many(parts)) => {
                if !matches!(
                    parts.first().map(String::as_str),
                    Some("CMD" | "CMD-SHELL" | "NONE")
                ) {
                    p.push(
                        here.error(
                            &at("test"),
                            "a health check test list starts with `CMD`, `CMD-SHELL` or `NONE`",
                        )
                        .help("e.g. `[\"CMD\", \"wget\", \"-q\", \"-O-\", \"http://localhost/\"]`"),
                    );
                    return None;
                }
                parts.clone()
            }
        }
    };
    Some(Healthcheck {
        test,
        interval: spec
            .interval
            .as_deref()
            .and_then(|d| duration(d, here, &at("interval"), p)),
        timeout: spec
            .timeout
            .as_deref()
            .and_then(|d| duration(d, here, &at("timeout"), p)),
        retries: spec.retries,
        start_period: spec
            .start_period
            .as_deref()
            .and_then(|d| duration(d, here, &at("start_period"), p)),
    })
}

pub(super) fn constraint(
    text: &str,
    here: &Here,
    n: usize,
    p: &mut Problems,
) -> Option<Constraint> {
    let parsed = (|| {
        let (subject, equal, value) = if let Some((l, r)) = text.split_once("==") {
            (l.trim(), true, r.trim())
        } else {
            let (l, r) = text.split_once("!=")?;
            (l.trim(), false, r.trim())
        };
        let subject = match subject {
            "node.tags" | "node.tag" => ConstraintSubject::Tag { key: None },
            "node.name" | "node.hostname" => ConstraintSubject::NodeName,
            other => ConstraintSubject::Tag {
                key: Some(other.strip_prefix("node.labels.")?.to_string()),
            },
        };
        (!value.is_empty()).then(|| Constraint {
            subject,
            equal,
            value: value.to_string(),
        })
    })();
    if parsed.is_none() {
        p.push(
            here.error(&[k("deploy"), k("placement"), k("constraints"), i(n)], format!("cannot read constraint `{text}`"))
                .help("write `node.labels.KEY == VALUE` (a node tag `KEY=VALUE`), `node.tags == TAG` or `node.name == NAME`, or the same with `!=`"),
        );
    }
    parsed
}

pub(super) fn update_config(
    spec: &UpdateConfigSpec,
    here: &Here,
    p: &mut Problems,
) -> UpdateConfig {
    let at = |key: &str| [k("deploy"), k("update_config"), k(key)];
    let mut config = UpdateConfig::default();
    if let Some(n) = spec.parallelism {
        if n == 0 {
            p.push(here.error(&at("parallelism"), "`parallelism` must be at least 1"));
        } else {
            config.parallelism = n;
        }
    }
    if let Some(d) = spec
        .delay
        .as_deref()
        .and_then(|d| duration(d, here, &at("delay"), p))
    {
        config.delay = d;
    }
    if let Some(d) = spec
        .monitor
        .as_deref()
        .and_then(|d| duration(d, here, &at("monitor"), p))
    {
        config.monitor = d;
    }
    config.order_written = spec.order.is_some();
    match spec.order.as_deref() {
        None | Some("stop-first") => {}
        Some("start-first") => config.order = UpdateOrder::StartFirst,
        Some(other) => p.push(
            here.error(&at("order"), format!("unknown update order `{other}`"))
                .help("use `stop-first` or `start-first`"),
        ),
    }
    match spec.failure_action.as_deref() {
        None | Some("rollback") => {}
        Some("pause") => p.push(
            here.error(&at("failure_action"), "`failure_action: pause` is not supported yet")
                .help("pier puts the replaced replica back and stops the rollout (`rollback`); remove the key or write `rollback`"),
        ),
        Some(other) => p.push(
            here.error(
                &at("failure_action"),
                format!("unknown failure action `{other}`"),
            )
            .help("use `rollback`"),
        ),
    }
    config
}

/// The services whose replacement replaces this one (`restart: true`) and
/// those that may be missing (`required: false`).
pub(super) fn dependency_options(spec: &ServiceSpec) -> (BTreeSet<String>, BTreeSet<String>) {
    let Some(DependsOnSpec::Map(map)) = &spec.depends_on else {
        return Default::default();
    };
    let pick = |wanted: fn(&DependsOnConditionSpec) -> bool| {
        map.iter()
            .filter(|(_, options)| wanted(options))
            .map(|(name, _)| name.clone())
            .collect()
    };
    (
        pick(|o| o.restart == Some(true)),
        pick(|o| o.required == Some(false)),
    )
}

pub(super) fn depends_on(
    spec: &ServiceSpec,
    here: &Here,
    p: &mut Problems,
) -> BTreeMap<String, DependsOnCondition> {
    match &spec.depends_on {
        None => BTreeMap::new(),
        Some(DependsOnSpec::List(names)) => names.iter().map(|n| (n.clone(), DependsOnCondition::ServiceStarted)).collect(),
        Some(DependsOnSpec::Map(map)) => map
            .iter()
            .map(|(name, c)| {
                let condition = match c.condition.as_deref() {
                    None | Some("service_started") => DependsOnCondition::ServiceStarted,
                    Some("service_healthy") => DependsOnCondition::ServiceHealthy,
                    Some("service_completed_successfully") => DependsOnCondition::ServiceCompletedSuccessfully,
                    Some(other) => {
                        p.push(here.error(&[k("depends_on"), k(name), k("condition")], format!("unknown condition `{other}`")).help("use `service_started`, `service_healthy` or `service_completed_successfully`"));
                        DependsOnCondition::ServiceStarted
                    }
                };
                (name.clone(), condition)
            })
            .collect(),
    }
}

pub(super) fn link(text: &str) -> Link {
    match text.split_once(':') {
        Some((service, alias)) => Link {
            service: service.to_string(),
            alias: alias.to_string(),
        },
        None => Link {
            service: text.to_string(),
            alias: text.to_string(),
        },
    }
}

/// `hooks`: each a command line, a timeout and a node; `on_failure` is
/// `alert` (only `post_deploy` has one).
pub(super) fn hooks(
    spec: &crate::manifest::spec::HooksSpec,
    here: &Here,
    p: &mut Problems,
) -> crate::manifest::model::Hooks {
    let one = |hook: &crate::manifest::spec::HookSpec, phase: &'static str, p: &mut Problems| {
        let at = [k("hooks"), k(phase)];
        let command = match &hook.command {
            StringOrList::Many(args) => Some(args.clone()),
            StringOrList::One(line) => shell_words::split(line).ok().or_else(|| {
                p.push(here.error(
                    &[k("hooks"), k(phase), k("command")],
                    "the command has an unclosed quote",
                ));
                None
            }),
        }?;
        if command.is_empty() {
            p.push(here.error(
                &[k("hooks"), k(phase), k("command")],
                "the command is empty",
            ));
            return None;
        }
        match (phase, hook.on_failure.as_deref()) {
            (_, None) | ("post_deploy", Some("alert")) => {}
            ("pre_deploy", Some(_)) => p.push(
                here.error(&[k("hooks"), k(phase), k("on_failure")], "`pre_deploy` has no `on_failure`: when it fails, nothing is replaced")
            ),
            (_, Some(other)) => p.push(
                here.error(&[k("hooks"), k(phase), k("on_failure")], format!("`on_failure: {other}` is not supported"))
                    .help("`alert` reports the failure and leaves the rollout in place; to undo a release, `pier rollback`"),
            ),
        }
        let timeout = match &hook.timeout {
            Some(text) => {
                let mut path = at.to_vec();
                path.push(k("timeout"));
                duration(text, here, &path, p)?
            }
            None => crate::manifest::model::HOOK_TIMEOUT,
        };
        Some(crate::manifest::model::Hook {
            command,
            timeout,
            node: hook.node.clone(),
        })
    };
    crate::manifest::model::Hooks {
        pre_deploy: spec
            .pre_deploy
            .as_ref()
            .and_then(|h| one(h, "pre_deploy", p)),
        post_deploy: spec
            .post_deploy
            .as_ref()
            .and_then(|h| one(h, "post_deploy", p)),
    }
}

/// Compose's `post_start` / `pre_stop` entries.
pub(super) fn container_hooks(
    spec: Option<&[crate::manifest::spec::LifecycleHookSpec]>,
    key: &'static str,
    here: &Here,
    vars: &Vars,
    p: &mut Problems,
) -> Vec<crate::manifest::model::LifecycleHook> {
    let mut out = Vec::new();
    for (n, hook) in spec.unwrap_or_default().iter().enumerate() {
        let at = [k(key), i(n)];
        let command = match &hook.command {
            StringOrList::Many(args) => args.clone(),
            StringOrList::One(line) => match shell_words::split(line) {
                Ok(args) => args,
                Err(_) => {
                    p.push(here.error(
                        &[k(key), i(n), k("command")],
                        "the command has an unclosed quote",
                    ));
                    continue;
                }
            },
        };
        if command.is_empty() {
            p.push(here.error(&[k(key), i(n), k("command")], "the command is empty"));
            continue;
        }
        let env = hook
            .environment
            .as_ref()
            .map(|e| {
                let mut path = at.to_vec();
                path.push(k("environment"));
                environment_values(e, here, &path, vars, p)
            })
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
            .collect();
        out.push(crate::manifest::model::LifecycleHook {
            command,
            user: hook.user.clone(),
            privileged: hook.privileged.unwrap_or(false),
            working_dir: hook.working_dir.clone(),
            env,
        });
    }
    out
}
