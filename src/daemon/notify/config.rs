//! The notification file (`pier daemon --notify FILE`): where notifications
//! go and which events each target hears. It is the operator's, never the
//! repository's: secrets in it are named by environment variable, or
//! written in the file itself, which then must be private to the daemon.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::EventKind;

/// The file's form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyFile {
    /// How long a service stays Degraded before `service_degraded` is sent.
    #[serde(default, with = "humantime_serde_opt")]
    degraded_after: Option<Duration>,
    /// Attempts per notification before it is given up.
    #[serde(default)]
    attempts: Option<u32>,
    /// The longest wait between two attempts.
    #[serde(default, with = "humantime_serde_opt")]
    retry_max: Option<Duration>,
    /// How long one attempt may take.
    #[serde(default, with = "humantime_serde_opt")]
    timeout: Option<Duration>,
    targets: BTreeMap<String, TargetFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    #[serde(default)]
    webhook: Option<WebhookFile>,
    #[serde(default)]
    slack: Option<SlackFile>,
    #[serde(default)]
    smtp: Option<SmtpFile>,
    /// The events this target hears; every one when absent.
    #[serde(default)]
    events: Option<Vec<EventKind>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFile {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_env: Option<String>,
    /// The variable holding the HMAC key the body is signed with.
    #[serde(default)]
    secret_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlackFile {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmtpFile {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    security: Security,
    #[serde(default)]
    username_env: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    from: String,
    to: Vec<String>,
}

/// How the connection to an SMTP server is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain SMTP upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network.
    None,
}

impl Security {
    fn default_port(self) -> u16 {
        match self {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::None => 25,
        }
    }
}

/// Where one target delivers.
#[derive(Clone)]
pub enum Destination {
    /// A JSON body, signed with HMAC-SHA256 when a secret is set.
    Webhook {
        url: String,
        secret: Option<String>,
    },
    /// A Slack-compatible incoming webhook: `{"text": ...}`.
    Slack {
        url: String,
    },
    Smtp(Smtp),
}

#[derive(Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub credentials: Option<(String, String)>,
    pub from: String,
    pub to: Vec<String>,
}

impl Destination {
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::Webhook { .. } => "webhook",
            Destination::Slack { .. } => "slack",
            Destination::Smtp(_) => "smtp",
        }
    }
}

/// One target: a name (for status, metrics and logs, which never show its
/// address), where it delivers and what it hears.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub destination: Destination,
    /// `None`: every event.
    pub events: Option<Vec<EventKind>>,
}

impl Target {
    pub fn hears(&self, kind: EventKind) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.contains(&kind))
    }
}

/// The notification settings, read and checked.
#[derive(Clone)]
pub struct NotifyConfig {
    pub targets: Vec<Target>,
    pub degraded_after: Duration,
    pub attempts: u32,
    pub retry_max: Duration,
    pub timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            targets: Vec::new(),
            degraded_after: Duration::from_secs(300),
            attempts: 8,
            retry_max: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for NotifyConfig {
    // Addresses and secrets stay out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|t| format!("{} ({})", t.name, t.destination.kind()))
            .collect();
        f.debug_struct("NotifyConfig")
            .field("targets", &targets)
            .field("degraded_after", &self.degraded_after)
            .finish()
    }
}

impl NotifyConfig {
    /// Read a notification file (YAML or JSON), with the daemon's environment.
    pub fn from_file(path: &str) -> Result<NotifyConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the notification file {path}: {e}"))?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        NotifyConfig::parse(&text, &env)
            .map_err(|e| format!("the notification file {path} is not valid: {e}"))
    }

    /// Parse the file's text; `env` reads the variables it names.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<NotifyConfig, String> {
        let file: NotifyFile = serde_saphyr::from_str(text)
            .map_err(|e| e.to_string().trim_start_matches("error: ").to_string())?;
        let defaults = NotifyConfig::default();
        let mut targets = Vec::new();
        for (name, target) in file.targets {
            let destination = destination(&name, target.webhook, target.slack, target.smtp, env)?;
            targets.push(Target {
                name,
                destination,
                events: target.events,
            });
        }
        let attempts = file.attempts.unwrap_or(defaults.attempts);
        if attempts == 0 {
            return Err("attempts: must be at least 1".into());
        }
        Ok(NotifyConfig {
            targets,
            degraded_after: file.degraded_after.unwrap_or(defaults.degraded_after),
            attempts,
            retry_max: file.retry_max.unwrap_or(defaults.retry_max),
            timeout: file.timeout.unwrap_or(defaults.timeout),
        })
    }
}

fn destination(
    name: &str,
    webhook: Option<WebhookFile>,
    slack: Option<SlackFile>,
    smtp: Option<SmtpFile>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Destination, String> {
    let at = format!("targets.{name}");
    match (webhook, slack, smtp) {
        (Some(hook), None, None) => Ok(Destination::Webhook {
            url: url(&format!("{at}.webhook"), hook.url, hook.url_env, env)?,
            secret: hook
                .secret_env
                .map(|var| variable(&format!("{at}.webhook.secret_env"), &var, env))
                .transpose()?,
        }),
        (None, Some(slack), None) => Ok(Destination::Slack {
            url: url(&format!("{at}.slack"), slack.url, slack.url_env, env)?,
        }),
        (None, None, Some(smtp)) => {
            let credentials = match (smtp.username_env, smtp.password_env) {
                (None, None) => None,
                (Some(user), Some(password)) => Some((
                    variable(&format!("{at}.smtp.username_env"), &user, env)?,
                    variable(&format!("{at}.smtp.password_env"), &password, env)?,
                )),
                _ => {
                    return Err(format!(
                        "{at}.smtp: give both `username_env` and `password_env`, or neither"
                    ));
                }
            };
            if smtp.to.is_empty() {
                return Err(format!("{at}.smtp.to: name at least one recipient"));
            }
            for address in std::iter::once(&smtp.from).chain(&smtp.to) {
                address
                    .parse::<lettre::Address>()
                    .map_err(|e| format!("{at}.smtp: `{address}` is not a mail address ({e})"))?;
            }
            Ok(Destination::Smtp(Smtp {
                port: smtp.port.unwrap_or(smtp.security.default_port()),
                host: smtp.host,
                security: smtp.security,
                credentials,
                from: smtp.from,
                to: smtp.to,
            }))
        }
        _ => Err(format!(
            "{at}: give exactly one of `webhook`, `slack` and `smtp`"
        )),
    }
}

/// A target's URL: written in the file, or read from the variable named.
fn url(
    at: &str,
    written: Option<String>,
    from_env: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let url = match (written, from_env) {
        (Some(url), None) => url,
        (None, Some(var)) => variable(&format!("{at}.url_env"), &var, env)?,
        _ => return Err(format!("{at}: give exactly one of `url` and `url_env`")),
    };
    match url::Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(url),
        // The URL may hold a secret (Slack's do): never repeat it.
        _ => Err(format!("{at}: the URL is not an http:// or https:// URL")),
    }
}

fn variable(at: &str, name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    env(name).ok_or_else(|| {
        format!("{at}: the variable `{name}` is not set in the daemon's environment")
    })
}

/// Durations written like `30s` or `5m`.
mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like 30s or 5m: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOOK_SECRET" => Some("s3cret".into()),
            "SLACK_URL" => Some("https://hooks.slack.test/T/B/X".into()),
            "MAIL_USER" => Some("pier".into()),
            "MAIL_PASSWORD" => Some("pw".into()),
            _ => None,
        }
    }

    #[test]
    fn a_file_with_each_kind_of_target_parses() {
        let config = NotifyConfig::parse(
            "degraded_after: 2m\nattempts: 3\ntargets:\n  ops:\n    webhook: { url: 'https://ops.test/hook', secret_env: HOOK_SECRET }\n    events: [pipeline_failed, node_down]\n  chat:\n    slack: { url_env: SLACK_URL }\n  mail:\n    smtp: { host: mail.test, username_env: MAIL_USER, password_env: MAIL_PASSWORD, from: pier@ops.test, to: [oncall@ops.test] }\n",
            &env,
        )
        .unwrap();
        assert_eq!(config.degraded_after, Duration::from_secs(120));
        assert_eq!(config.attempts, 3);
        let names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["chat", "mail", "ops"]);
        let ops = &config.targets[2];
        assert!(ops.hears(EventKind::NodeDown));
        assert!(!ops.hears(EventKind::DeployStarted));
        assert!(config.targets[0].hears(EventKind::DeployStarted));
        match &ops.destination {
            Destination::Webhook { secret, .. } => assert_eq!(secret.as_deref(), Some("s3cret")),
            _ => panic!("ops is a webhook"),
        }
        match &config.targets[1].destination {
            Destination::Smtp(smtp) => {
                assert_eq!(smtp.port, 587);
                assert_eq!(smtp.credentials, Some(("pier".into(), "pw".into())));
            }
            _ => panic!("mail is smtp"),
        }
    }

    #[test]
    fn mistakes_are_named_and_secrets_never_repeated() {
        for (text, expected) in [
            (
                "targets:\n  a:\n    webhook: { url: x }\n    slack: { url: x }\n",
                "exactly one of `webhook`",
            ),
            (
                "targets:\n  a:\n    slack: { url_env: NOT_SET }\n",
                "`NOT_SET` is not set",
            ),
            (
                "targets:\n  a:\n    slack: { url: 'ftp://secret-token' }\n",
                "not an http",
            ),
            (
                "targets:\n  a:\n    webhook: { url: 'https://x.test' }\n    events: [deploy_exploded]\n",
                "deploy_exploded",
            ),
            (
                "targets:\n  a:\n    smtp: { host: h, from: nobody, to: [a@b.test] }\n",
                "not a mail address",
            ),
            (
                "targets:\n  a:\n    smtp: { host: h, username_env: MAIL_USER, from: a@b.test, to: [a@b.test] }\n",
                "or neither",
            ),
            ("degraded_after: soon\ntargets: {}\n", "not a duration"),
            ("targets: {}\nretries: 3\n", "retries"),
        ] {
            let error = NotifyConfig::parse(text, &env)
                .err()
                .unwrap_or_else(|| panic!("{text} parsed"));
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains("secret-token"), "{error}");
        }
    }
}
