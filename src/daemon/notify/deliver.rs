//! Delivery of notifications: one bounded queue and one task per target.
//!
//! The daemon only ever offers an event to a queue, which never waits: a
//! full queue drops the event and counts it. The task tries each event up
//! to `attempts` times, with exponential backoff between tries, and counts
//! what it delivered, gave up or dropped, for the status document and the
//! `pier_notifications_total` metric. Addresses and secrets never appear
//! in what it reports: errors are told without their URL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::config::{Destination, NotifyConfig, Security, Smtp, Target};
use super::{Event, EventKind};
use crate::daemon::metrics::Metrics;
use crate::daemon::status::TargetStatus;

/// Events waiting per target; more are dropped (and counted).
const QUEUE: usize = 256;

/// The header that carries the body's HMAC-SHA256, GitHub's way:
/// `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-pier-signature-256";

/// A target's queue, as the notifier sees it.
pub struct Queue {
    name: String,
    events: Option<Vec<EventKind>>,
    sender: mpsc::Sender<Event>,
    stats: Arc<Mutex<TargetStatus>>,
    metrics: Metrics,
}

impl Queue {
    /// Start the target's delivery task on the current runtime.
    pub fn start(target: Target, config: &NotifyConfig, metrics: Metrics) -> Queue {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let stats = Arc::new(Mutex::new(TargetStatus {
            name: target.name.clone(),
            kind: target.destination.kind().into(),
            ..Default::default()
        }));
        let worker = Worker {
            name: target.name.clone(),
            transport: Transport::new(&target.destination, config.timeout),
            attempts: config.attempts,
            retry_max: config.retry_max,
            stats: stats.clone(),
            metrics: metrics.clone(),
        };
        tokio::spawn(worker.run(receiver));
        Queue {
            name: target.name,
            events: target.events,
            sender,
            stats,
            metrics,
        }
    }

    /// Queue `event` if this target hears it; never waits.
    pub fn offer(&self, event: &Event) {
        if self
            .events
            .as_ref()
            .is_some_and(|e| !e.contains(&event.event))
        {
            return;
        }
        self.stats.lock().expect("target stats").pending += 1;
        if self.sender.try_send(event.clone()).is_err() {
            let mut stats = self.stats.lock().expect("target stats");
            stats.pending -= 1;
            stats.dropped += 1;
            drop(stats);
            self.metrics.notification(&self.name, "dropped");
            warn!(target = %self.name, event = event.event.as_str(), "notification queue full; dropped");
        }
    }

    pub fn status(&self) -> TargetStatus {
        self.stats.lock().expect("target stats").clone()
    }
}

struct Worker {
    name: String,
    transport: Transport,
    attempts: u32,
    retry_max: Duration,
    stats: Arc<Mutex<TargetStatus>>,
    metrics: Metrics,
}

impl Worker {
    async fn run(self, mut receiver: mpsc::Receiver<Event>) {
        while let Some(event) = receiver.recv().await {
            let result = self.deliver(&event).await;
            let mut stats = self.stats.lock().expect("target stats");
            stats.pending -= 1;
            match result {
                Ok(()) => stats.delivered += 1,
                Err(error) => {
                    stats.failed += 1;
                    stats.last_error = error;
                }
            }
        }
    }

    /// Try `event` until it is delivered or every attempt failed.
    async fn deliver(&self, event: &Event) -> Result<(), String> {
        // One id for every try, so a receiver can tell a retry it already took.
        let delivery = format!(
            "{}-{}",
            event.at,
            DELIVERIES.fetch_add(1, Ordering::Relaxed)
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.transport.send(event, &delivery).await {
                Ok(()) => {
                    debug!(target = %self.name, event = event.event.as_str(), "notification delivered");
                    self.metrics.notification(&self.name, "delivered");
                    return Ok(());
                }
                Err(error) if attempt >= self.attempts => {
                    warn!(target = %self.name, event = event.event.as_str(), attempts = attempt, %error, "notification not delivered; giving up");
                    self.metrics.notification(&self.name, "failed");
                    return Err(error);
                }
                Err(error) => {
                    self.stats.lock().expect("target stats").last_error = error.clone();
                    self.metrics.notification(&self.name, "retried");
                    let wait = crate::daemon::backoff(attempt - 1, self.retry_max);
                    debug!(target = %self.name, %error, ?wait, "notification not delivered; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// How one target's events leave the daemon.
enum Transport {
    Webhook {
        client: reqwest::Client,
        url: String,
        secret: Option<String>,
    },
    Slack {
        client: reqwest::Client,
        url: String,
    },
    Smtp {
        settings: Smtp,
        timeout: Duration,
    },
}

static DELIVERIES: AtomicU64 = AtomicU64::new(0);

impl Transport {
    fn new(destination: &Destination, timeout: Duration) -> Transport {
        let client = || {
            reqwest::Client::builder()
                .timeout(timeout)
                .user_agent(concat!("pier/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("an HTTP client with a timeout builds")
        };
        match destination {
            Destination::Webhook { url, secret } => Transport::Webhook {
                client: client(),
                url: url.clone(),
                secret: secret.clone(),
            },
            Destination::Slack { url } => Transport::Slack {
                client: client(),
                url: url.clone(),
            },
            Destination::Smtp(settings) => Transport::Smtp {
                settings: settings.clone(),
                timeout,
            },
        }
    }

    async fn send(&self, event: &Event, delivery: &str) -> Result<(), String> {
        match self {
            Transport::Webhook {
                client,
                url,
                secret,
            } => {
                let body = serde_json::to_vec(event).expect("events serialize");
                let mut request = client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-pier-event", event.event.as_str())
                    .header("x-pier-delivery", delivery);
                if let Some(secret) = secret {
                    request = request.header(SIGNATURE_HEADER, sign(secret, &body));
                }
                post(request.body(body)).await
            }
            Transport::Slack { client, url } => {
                let body = serde_json::json!({ "text": slack_text(event) });
                post(client.post(url).json(&body)).await
            }
            Transport::Smtp { settings, timeout } => mail(settings, *timeout, event).await,
        }
    }
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post(request: reqwest::RequestBuilder) -> Result<(), String> {
    // The URL may hold a secret (a Slack webhook's does): errors drop it.
    let response = request
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

/// Slack's text of `event`. Branch names and log tails are whatever a
/// pusher or a container wrote: `<`, `>` and `&` are escaped so they make
/// no link or `<!channel>` mention, control characters go, and a run of
/// backticks cannot close the block the details are quoted in.
fn slack_text(event: &Event) -> String {
    let mut text = format!(
        "*pier · {}* {}",
        slack_escape(&event.stack),
        slack_escape(&plain_text(&event.summary, false))
    );
    if !event.details.is_empty() {
        let details = slack_escape(&plain_text(&event.details, true)).replace("```", "`\u{200b}``");
        text.push_str(&format!("\n```{details}```"));
    }
    text
}

fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` without control characters (terminal escapes, carriage returns
/// that would overwrite a line); line breaks and tabs are kept where
/// `multiline`, else made spaces.
fn plain_text(text: &str, multiline: bool) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\n' | '\t' if multiline => Some(c),
            '\n' | '\t' | '\r' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

/// The mail of `event`: its summary as subject, the details and the
/// event's fields as text.
fn message(settings: &Smtp, event: &Event) -> Result<lettre::Message, String> {
    use lettre::message::header::ContentType;
    let mut builder = lettre::Message::builder()
        .from(settings.from.parse().map_err(|e| format!("from: {e}"))?)
        .subject(plain_text(
            &format!("[pier {}] {}", event.stack, event.summary),
            false,
        ))
        .header(ContentType::TEXT_PLAIN);
    for to in &settings.to {
        builder = builder.to(to.parse().map_err(|e| format!("to: {e}"))?);
    }
    let mut body = format!("{}\n\n", plain_text(&event.summary, false));
    if !event.details.is_empty() {
        body.push_str(&format!("{}\n\n", plain_text(&event.details, true)));
    }
    body.push_str(&format!(
        "event: {}\nstack: {}\nbranch: {}\n",
        event.event.as_str(),
        event.stack,
        plain_text(&event.branch, false)
    ));
    for (name, value) in [
        ("commit", &event.commit),
        ("node", &event.node),
        ("service", &event.service),
    ] {
        if let Some(value) = value {
            body.push_str(&format!("{name}: {value}\n"));
        }
    }
    builder.body(body).map_err(|e| e.to_string())
}

async fn mail(settings: &Smtp, timeout: Duration, event: &Event) -> Result<(), String> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let message = message(settings, event)?;
    let builder = match settings.security {
        Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
            .map_err(|e| e.to_string())?,
        Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
            .map_err(|e| e.to_string())?,
        Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host),
    };
    let mut builder = builder.port(settings.port).timeout(Some(timeout));
    if let Some((user, password)) = &settings.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    builder
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            event: EventKind::PipelineFailed,
            stack: "shop".into(),
            branch: "main".into(),
            commit: Some("abc123".into()),
            node: None,
            service: None,
            summary: "the pipeline of abc123 on main failed".into(),
            details: "test: exit 1".into(),
            at: 1,
        }
    }

    #[test]
    fn the_signature_is_the_one_github_receivers_check() {
        let body = br#"{"event":"pipeline_failed"}"#;
        let signature = sign("key", body);
        assert!(crate::daemon::api::github_signature_valid(
            "key",
            body,
            signature.as_bytes()
        ));
        assert!(!crate::daemon::api::github_signature_valid(
            "other",
            body,
            signature.as_bytes()
        ));
    }

    #[test]
    fn a_mail_names_the_stack_in_its_subject_and_lists_the_event() {
        let settings = Smtp {
            host: "mail.test".into(),
            port: 25,
            security: Security::None,
            credentials: None,
            from: "pier@ops.test".into(),
            to: vec!["a@ops.test".into(), "b@ops.test".into()],
        };
        let text = String::from_utf8(message(&settings, &event()).unwrap().formatted()).unwrap();
        assert!(
            text.contains("Subject: [pier shop] the pipeline of abc123 on main failed"),
            "{text}"
        );
        assert!(text.contains("To: a@ops.test, b@ops.test"), "{text}");
        assert!(
            text.contains("test: exit 1") && text.contains("commit: abc123"),
            "{text}"
        );
    }

    /// A branch name or log tail cannot mention a channel, make a link,
    /// leave the quoted block or send terminal escapes.
    #[test]
    fn what_a_pusher_or_container_wrote_is_escaped() {
        let mut hostile = event();
        hostile.summary =
            "the pipeline of abc on <!channel>|<https://evil.test|login> failed".into();
        hostile.details = "ok```\n<!here> \u{1b}[31mred\r\u{7}done".into();
        let text = slack_text(&hostile);
        assert!(!text.contains("<!") && !text.contains("<https"), "{text}");
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        assert_eq!(text.matches("```").count(), 2, "{text}");
        assert!(
            !text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{7}'),
            "{text:?}"
        );
        let settings = Smtp {
            host: "mail.test".into(),
            port: 25,
            security: Security::None,
            credentials: None,
            from: "pier@ops.test".into(),
            to: vec!["a@ops.test".into()],
        };
        hostile.branch = "feature\u{1b}[2J".into();
        let mail = String::from_utf8(message(&settings, &hostile).unwrap().formatted()).unwrap();
        assert!(
            !mail.contains('\u{1b}') && !mail.contains('\u{7}'),
            "{mail:?}"
        );
        assert!(mail.contains("branch: feature[2J"), "{mail}");
    }

    #[test]
    fn slack_text_quotes_the_details() {
        assert_eq!(
            slack_text(&event()),
            "*pier · shop* the pipeline of abc123 on main failed\n```test: exit 1```"
        );
    }
}
