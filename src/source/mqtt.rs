//! An `mqtt` source: the central callhook's subscription to the desks' MQTT topics.
//!
//! ```yaml
//! sources:
//!   - kind: mqtt
//!     mqtt: { url: "mqtt://127.0.0.1:1883", client_id: callhook-central }
//! ```
//!
//! A persistent session (`clean_session: false`, the same `client_id` every time)
//! subscribes at QoS 1 to `topics` (default `callhook/+/ringing`, `callhook/+/answered`,
//! `callhook/+/ended`: every desk's events, not their status topics), so the broker
//! keeps what arrives while this callhook is away and offers again what it was sent
//! but did not acknowledge. Acknowledgements are manual: a message is acknowledged
//! (PUBACK) only after the commit that stored its event and the jobs it made. Messages
//! are read as contract events (`source::broker`); refused ones are acknowledged too,
//! so the broker does not offer them again.
//!
//! The client's event loop runs as a task that reconnects by itself (every 0.5 s while
//! the broker is away) and subscribes again on each connection; the source's loop takes
//! what it forwards, in the order it came: the first message waits, those already
//! there join it, up to `batch`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::broker::Intake;
use super::checkpoint::Checkpoint;
use super::{Sink, SourceError};
use crate::broker::mqtt::{MqttServer, ServerKeys};

/// The default client id of the central session.
pub const DEFAULT_CLIENT_ID: &str = "callhook-central";
/// The default subscriptions: every desk's events under the default topic template.
pub const DEFAULT_TOPICS: [&str; 3] = ["callhook/+/ringing", "callhook/+/answered", "callhook/+/ended"];
/// Messages committed together at most, by default.
const DEFAULT_BATCH: usize = 256;
/// How often the loop looks at the shutdown flag while nothing comes.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// Wait before connecting again after the broker went away.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// `mqtt:` of an `mqtt` source, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// The broker, default `mqtt://127.0.0.1:1883`; `mqtts://host:port` for TLS.
    #[serde(default)]
    pub url: Option<String>,
    /// Topic filters subscribed to at QoS 1; default `callhook/+/ringing`,
    /// `callhook/+/answered`, `callhook/+/ended`.
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    /// The persistent session's client id (default `callhook-central`). One central
    /// callhook per id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Messages committed in one transaction at most; default 256 (the broker's own
    /// limit on unacknowledged messages in flight is usually lower).
    #[serde(default)]
    pub batch: Option<usize>,
    #[serde(default)]
    pub username: Option<String>,
    /// `${env:NAME}` / `${file:PATH}`, resolved when connecting.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// A checked `mqtt` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSource {
    pub server: MqttServer,
    pub topics: Vec<String>,
    pub client_id: String,
    pub batch: usize,
}

impl MqttSourceConfig {
    /// Checks every key; relative paths are relative to `base`.
    pub fn build(&self, base: &Path) -> Result<MqttSource, String> {
        let server = MqttServer::build(
            &ServerKeys {
                url: self.url.as_deref(),
                username: self.username.as_deref(),
                password: self.password.as_deref(),
                tls: self.tls,
                ca_file: self.ca_file.as_deref(),
            },
            base,
        )?;
        let topics = self
            .topics
            .clone()
            .unwrap_or_else(|| DEFAULT_TOPICS.iter().map(|t| (*t).to_owned()).collect());
        if topics.is_empty() || topics.iter().any(|t| t.is_empty() || t.contains('\0')) {
            return Err("topics: give topic filters like callhook/+/ended".into());
        }
        let client_id = self.client_id.clone().unwrap_or_else(|| DEFAULT_CLIENT_ID.to_owned());
        if client_id.is_empty() || client_id.len() > 128 {
            return Err("client_id: 1 to 128 characters".into());
        }
        let batch = self.batch.unwrap_or(DEFAULT_BATCH);
        if !(1..=10_000).contains(&batch) {
            return Err(format!("batch: {batch} is not between 1 and 10000"));
        }
        Ok(MqttSource {
            server,
            topics,
            client_id,
            batch,
        })
    }
}

impl MqttSource {
    /// The name of this source's checkpoint: `mqtt:<client_id>`.
    pub fn key(&self) -> String {
        format!("mqtt:{}", self.client_id)
    }
}

/// Runs the source until `shutdown` is set (and `wake` notified, or within
/// [`LOOK_EVERY`]); see the module docs. Fails only when the sink does.
pub(crate) fn consume(
    source: MqttSource,
    stored: Option<Checkpoint>,
    shutdown: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
    sink: &mut dyn Sink,
) -> Result<(), SourceError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SourceError::Thread)?;
    let mut intake = Intake::new(source.key(), stored, sink);
    let mut options = match source.server.options(&source.client_id, None) {
        Ok(options) => options,
        Err(error) => {
            tracing::error!(source = %source.key(), "{error}; the source takes nothing");
            return Ok(());
        }
    };
    options.set_manual_acks(true);
    runtime.block_on(async {
        let (client, eventloop) = AsyncClient::new(options, 1024);
        let (sender, mut received) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(eventloop, client.clone(), source.clone(), sender));
        let result = take(&client, &source, &mut received, &mut intake, &shutdown, &wake).await;
        let _ = client.try_disconnect();
        task.abort();
        result
    })
}

/// The client's event loop: forwards each message, subscribes on each connection,
/// reconnects after a failure.
async fn drive(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    source: MqttSource,
    messages: mpsc::UnboundedSender<rumqttc::Publish>,
) {
    let mut warned = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if messages.send(publish).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                tracing::info!(source = %source.key(), session_present = connack.session_present, "connected to the MQTT broker");
                warned = false;
                for topic in &source.topics {
                    if let Err(error) = client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                        tracing::warn!(source = %source.key(), %topic, "cannot subscribe: {error}");
                    }
                }
            }
            Ok(_) => {}
            Err(error) => {
                if !warned {
                    warned = true;
                    tracing::warn!(source = %source.key(), "MQTT broker {}: {error}; connecting again", source.server.url);
                }
                tokio::time::sleep(RECONNECT_AFTER).await;
            }
        }
    }
}

/// Takes forwarded messages until `shutdown` is set: each batch committed, then
/// acknowledged. Fails only when the sink does.
async fn take(
    client: &AsyncClient,
    source: &MqttSource,
    received: &mut mpsc::UnboundedReceiver<rumqttc::Publish>,
    intake: &mut Intake<'_>,
    shutdown: &AtomicBool,
    wake: &tokio::sync::Notify,
) -> Result<(), SourceError> {
    while !shutdown.load(Ordering::SeqCst) {
        let first = tokio::select! {
            first = received.recv() => first,
            () = wake.notified() => continue,
            () = tokio::time::sleep(LOOK_EVERY) => continue,
        };
        let Some(first) = first else { return Ok(()) };
        let mut batch = vec![first];
        while batch.len() < source.batch {
            match received.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let mut events = Vec::with_capacity(batch.len());
        for publish in &batch {
            events.extend(intake.read(&publish.payload, &publish.topic));
        }
        intake.commit(&events)?;
        for publish in &batch {
            if let Err(error) = client.ack(publish).await {
                // Stored already: when it is offered again, the store drops it.
                tracing::debug!(topic = %publish.topic, "cannot acknowledge: {error}");
            }
        }
    }
    Ok(())
}
