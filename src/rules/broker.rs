//! The `nats` and `mqtt` actions: a desk's events published to a broker, for a central
//! callhook to consume (see `crate::broker`).
//!
//! ```yaml
//! - name: to-central
//!   nats: { url: "nats://central:4222", subject: "callhook.{desk}.{type}" }
//! - name: to-central-mqtt
//!   mqtt: { url: "mqtt://central:1883", topic: "callhook/{desk}/{type}" }
//! ```
//!
//! Each event becomes one job in the outbox like a webhook: the message is the event's
//! JSON (serialized, never pasted together), sent under a subject or topic whose
//! values are made safe tokens (`broker::subject`). A NATS job is done when JetStream
//! acknowledges the publish (PubAck), an MQTT job when the broker answers the QoS 1
//! publish with PUBACK; else it is retried per `retry`. The NATS message carries
//! `Nats-Msg-Id` = the event id, so JetStream drops a repeat within its duplicate
//! window; the central store drops any later repeat by the same id.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::action::{RetryConfig, RetryPolicy};
use crate::broker::mqtt::MqttServer;
use crate::broker::nats::{NatsServer, StreamSpec};
use crate::broker::subject::{Flavor, NameTemplate, covering_filter};
use crate::duration::parse_duration;
use crate::event::Event;

/// Default subject of the `nats` action.
pub const DEFAULT_SUBJECT: &str = "callhook.{desk}.{type}";
/// Default topic of the `mqtt` action.
pub const DEFAULT_TOPIC: &str = "callhook/{desk}/{type}";
/// Default wait for the broker's acknowledgement of one publish.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// `nats:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsActionConfig {
    /// The server, `nats://host:port` (default `nats://127.0.0.1:4222`); `tls://host:port`
    /// for TLS.
    #[serde(default)]
    pub url: Option<String>,
    /// Subject template; default `callhook.{desk}.{type}`. Placeholders: `desk`, `type`,
    /// `direction`, `source`, `local_number`, `remote_number`, `outcome`, `call_id`; each
    /// value made one safe token (letters, digits, `-`, `_`; anything else `_`).
    #[serde(default)]
    pub subject: Option<String>,
    /// The JetStream stream (default `CALLHOOK`): made when missing, with the subjects
    /// the template can make for any desk (`callhook.>`), limits retention, file storage
    /// and `duplicate_window`; checked to take the subject when present.
    #[serde(default)]
    pub stream: Option<String>,
    /// How long JetStream remembers a message id to drop a repeat (default `2m`), for a
    /// stream made here.
    #[serde(default)]
    pub duplicate_window: Option<String>,
    /// A `.creds` file (JWT and NKey seed), relative to this file.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// A token; `${env:NAME}` / `${file:PATH}`, resolved when connecting.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// `${env:NAME}` / `${file:PATH}`, resolved when connecting.
    #[serde(default)]
    pub password: Option<String>,
    /// Require TLS; default false (true with `tls://` or `ca_file`).
    #[serde(default)]
    pub tls: bool,
    /// CA certificates (PEM) instead of the system's, relative to this file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long to wait for the PubAck of one publish; default 5s.
    #[serde(default)]
    pub timeout: Option<String>,
    /// When to try again (as for webhooks).
    #[serde(default)]
    pub retry: Option<RetryConfig>,
}

/// `mqtt:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttActionConfig {
    /// The broker, `mqtt://host:port` (default `mqtt://127.0.0.1:1883`); `mqtts://` for TLS.
    #[serde(default)]
    pub url: Option<String>,
    /// Topic template; default `callhook/{desk}/{type}` (placeholders as for `nats`).
    #[serde(default)]
    pub topic: Option<String>,
    /// The retained status topic: `online` while connected, `offline` as the last will;
    /// default `callhook/{desk}/status`; `""` for none.
    #[serde(default)]
    pub status_topic: Option<String>,
    /// The client id of the persistent session; default `callhook-{desk}`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// `${env:NAME}` / `${file:PATH}`, resolved when connecting.
    #[serde(default)]
    pub password: Option<String>,
    /// TLS; default false (true with `mqtts://` or `ca_file`).
    #[serde(default)]
    pub tls: bool,
    /// CA certificates (PEM) instead of the system's, relative to this file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long to wait for the PUBACK of one publish; default 5s.
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub retry: Option<RetryConfig>,
}

/// A rendered NATS publish, as kept in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatsPublish {
    pub server: NatsServer,
    pub stream: StreamSpec,
    pub subject: String,
    /// `Nats-Msg-Id`: the event id.
    pub msg_id: String,
    /// The event's JSON.
    pub body: String,
    pub timeout_ms: u64,
    pub retry: RetryPolicy,
}

/// A rendered MQTT publish, as kept in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttPublish {
    pub server: MqttServer,
    pub client_id: String,
    /// The desk's retained status topic, if any.
    pub status_topic: Option<String>,
    pub topic: String,
    /// The event's JSON.
    pub body: String,
    pub timeout_ms: u64,
    pub retry: RetryPolicy,
}

/// A checked `nats` action.
#[derive(Debug, Clone)]
pub struct NatsAction {
    server: NatsServer,
    stream: StreamSpec,
    subject: NameTemplate,
    timeout: Duration,
    retry: RetryPolicy,
}

/// A checked `mqtt` action.
#[derive(Debug, Clone)]
pub struct MqttAction {
    server: MqttServer,
    client_id: String,
    status_topic: Option<String>,
    topic: NameTemplate,
    timeout: Duration,
    retry: RetryPolicy,
}

fn timeout_and_retry(timeout: &Option<String>, retry: &Option<RetryConfig>) -> Result<(Duration, RetryPolicy), String> {
    let timeout = match timeout {
        Some(text) => parse_duration(text).map_err(|e| format!("timeout: {e}"))?,
        None => DEFAULT_TIMEOUT,
    };
    let retry = retry.as_ref().map(RetryPolicy::build).transpose()?.unwrap_or_default();
    Ok((timeout.max(Duration::from_millis(1)), retry))
}

impl NatsAction {
    /// The server this action publishes to.
    pub fn server(&self) -> &NatsServer {
        &self.server
    }

    /// Checks `config` for desk `desk`; relative paths are relative to `base`.
    pub fn build(config: &NatsActionConfig, desk: &str, base: &Path) -> Result<NatsAction, String> {
        use crate::broker::nats::{DEFAULT_DUPLICATE_WINDOW, DEFAULT_STREAM, ServerKeys, stream_name};
        let server = NatsServer::build(
            &ServerKeys {
                url: config.url.as_deref(),
                creds_file: config.creds_file.as_deref(),
                token: config.token.as_deref(),
                user: config.user.as_deref(),
                password: config.password.as_deref(),
                tls: config.tls,
                ca_file: config.ca_file.as_deref(),
            },
            base,
        )?;
        let written = config.subject.as_deref().unwrap_or(DEFAULT_SUBJECT);
        let subject = NameTemplate::parse(written, desk, Flavor::Nats).map_err(|e| format!("subject: {e}"))?;
        let duplicate_window = match &config.duplicate_window {
            Some(text) => parse_duration(text).map_err(|e| format!("duplicate_window: {e}"))?,
            None => DEFAULT_DUPLICATE_WINDOW,
        };
        let stream = StreamSpec {
            name: stream_name(config.stream.as_deref().unwrap_or(DEFAULT_STREAM))
                .map_err(|e| format!("stream: {e}"))?,
            subjects: vec![covering_filter(written, Flavor::Nats)],
            duplicate_window_ms: duplicate_window.as_millis() as u64,
        };
        let (timeout, retry) = timeout_and_retry(&config.timeout, &config.retry)?;
        Ok(NatsAction {
            server,
            stream,
            subject,
            timeout,
            retry,
        })
    }

    pub(crate) fn render(&self, event: &Event) -> NatsPublish {
        NatsPublish {
            server: self.server.clone(),
            stream: self.stream.clone(),
            subject: self.subject.render(event),
            msg_id: event.id.clone(),
            body: event.to_json(),
            timeout_ms: self.timeout.as_millis() as u64,
            retry: self.retry,
        }
    }
}

impl MqttAction {
    /// Checks `config` for desk `desk`; relative paths are relative to `base`.
    pub fn build(config: &MqttActionConfig, desk: &str, base: &Path) -> Result<MqttAction, String> {
        use crate::broker::mqtt::ServerKeys;
        use crate::broker::subject::check;
        let server = MqttServer::build(
            &ServerKeys {
                url: config.url.as_deref(),
                username: config.username.as_deref(),
                password: config.password.as_deref(),
                tls: config.tls,
                ca_file: config.ca_file.as_deref(),
            },
            base,
        )?;
        let topic = NameTemplate::parse(config.topic.as_deref().unwrap_or(DEFAULT_TOPIC), desk, Flavor::Mqtt)
            .map_err(|e| format!("topic: {e}"))?;
        let status_topic = match config.status_topic.as_deref() {
            Some("") => None,
            written => {
                let topic = written.unwrap_or("callhook/{desk}/status").replace("{desk}", desk);
                check(&topic, Flavor::Mqtt).map_err(|e| format!("status_topic: {topic:?}: {e}"))?;
                Some(topic)
            }
        };
        let client_id = config.client_id.clone().unwrap_or_else(|| format!("callhook-{desk}"));
        if client_id.is_empty() || client_id.len() > 128 {
            return Err("client_id: 1 to 128 characters".into());
        }
        let (timeout, retry) = timeout_and_retry(&config.timeout, &config.retry)?;
        Ok(MqttAction {
            server,
            client_id,
            status_topic,
            topic,
            timeout,
            retry,
        })
    }

    pub(crate) fn render(&self, event: &Event) -> MqttPublish {
        MqttPublish {
            server: self.server.clone(),
            client_id: self.client_id.clone(),
            status_topic: self.status_topic.clone(),
            topic: self.topic.render(event),
            body: event.to_json(),
            timeout_ms: self.timeout.as_millis() as u64,
            retry: self.retry,
        }
    }
}
