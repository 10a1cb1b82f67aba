//! A `nats` source: the central callhook's durable JetStream pull consumer.
//!
//! ```yaml
//! sources:
//!   - kind: nats
//!     nats: { url: "nats://127.0.0.1:4222", stream: CALLHOOK, durable: central }
//! ```
//!
//! The source makes the stream when it is missing (as the desks' `nats` action does)
//! and its durable consumer (explicit acks, every message from the stream's start, no
//! limit on redeliveries), then takes messages as they come: the first one waits, the
//! ones already there join it, up to `batch`. Each is read as a contract event
//! (`source::broker`); the batch is committed through the sink (events, the jobs the
//! rules make, the checkpoint `nats:<stream>:<durable>`) and only then acknowledged.
//! Refused messages are terminated (`AckKind::Term`), so JetStream drops them.
//!
//! Order matters: the central correlator takes a call's events in the order they come,
//! and drops one that comes after a later one. JetStream offers a consumer's messages
//! in stream order, but a message handed to a consumer that died (a central callhook
//! killed, a connection cut) is offered again only after `ack_wait`, after newer ones.
//! So whenever the consumer is (re)opened with messages delivered but not acknowledged,
//! it is made anew from the first one not acknowledged (its ack floor + 1): everything
//! after it comes again, in order, and the store drops what it holds already. One
//! central callhook per durable.
//!
//! The client reconnects by itself; when the broker is gone (no heartbeat, an error),
//! the consumer is opened again until it works. Runs on the source's own thread, in a
//! small runtime of its own; the commit blocks it, which only delays the next pull.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;

use super::broker::Intake;
use super::checkpoint::Checkpoint;
use super::{Sink, SourceError};
use crate::broker::nats::{DEFAULT_DUPLICATE_WINDOW, DEFAULT_STREAM, NatsServer, ServerKeys, StreamSpec, stream_name};

/// The default durable consumer name.
pub const DEFAULT_DURABLE: &str = "callhook-central";
/// Messages committed together at most, by default.
const DEFAULT_BATCH: usize = 256;
/// How long JetStream waits for an acknowledgement before offering a message again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How often the loop looks at the shutdown flag while nothing comes.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// Wait before opening the consumer again after a failure.
const REOPEN_AFTER: Duration = Duration::from_millis(500);

/// `nats:` of a `nats` source, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// The server, default `nats://127.0.0.1:4222`; `tls://host:port` for TLS.
    #[serde(default)]
    pub url: Option<String>,
    /// The stream the desks publish into (default `CALLHOOK`); made when missing, with
    /// `subjects`.
    #[serde(default)]
    pub stream: Option<String>,
    /// Subjects of a stream made here; default `["callhook.>"]`.
    #[serde(default)]
    pub subjects: Option<Vec<String>>,
    /// The durable consumer's name (default `callhook-central`): where JetStream keeps
    /// how far this callhook got. One central callhook per name.
    #[serde(default)]
    pub durable: Option<String>,
    /// Messages committed in one transaction at most; default 256.
    #[serde(default)]
    pub batch: Option<usize>,
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// `${env:NAME}` / `${file:PATH}`, resolved when connecting.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// A checked `nats` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSource {
    pub server: NatsServer,
    pub stream: StreamSpec,
    pub durable: String,
    pub batch: usize,
}

impl NatsSourceConfig {
    /// Checks every key; relative paths are relative to `base`.
    pub fn build(&self, base: &Path) -> Result<NatsSource, String> {
        let server = NatsServer::build(
            &ServerKeys {
                url: self.url.as_deref(),
                creds_file: self.creds_file.as_deref(),
                token: self.token.as_deref(),
                user: self.user.as_deref(),
                password: self.password.as_deref(),
                tls: self.tls,
                ca_file: self.ca_file.as_deref(),
            },
            base,
        )?;
        let durable = self.durable.as_deref().unwrap_or(DEFAULT_DURABLE);
        let durable = stream_name(durable).map_err(|e| format!("durable: {e}"))?;
        let batch = self.batch.unwrap_or(DEFAULT_BATCH);
        if !(1..=10_000).contains(&batch) {
            return Err(format!("batch: {batch} is not between 1 and 10000"));
        }
        let subjects = self.subjects.clone().unwrap_or_else(|| vec!["callhook.>".to_owned()]);
        if subjects.is_empty() || subjects.iter().any(|s| s.is_empty() || s.contains(char::is_whitespace)) {
            return Err("subjects: give subject filters like callhook.>".into());
        }
        Ok(NatsSource {
            server,
            stream: StreamSpec {
                name: stream_name(self.stream.as_deref().unwrap_or(DEFAULT_STREAM))
                    .map_err(|e| format!("stream: {e}"))?,
                subjects,
                duplicate_window_ms: DEFAULT_DUPLICATE_WINDOW.as_millis() as u64,
            },
            durable,
            batch,
        })
    }
}

impl NatsSource {
    /// The name of this source's checkpoint: `nats:<stream>:<durable>`.
    pub fn key(&self) -> String {
        format!("nats:{}:{}", self.stream.name, self.durable)
    }
}

/// Runs the source until `shutdown` is set (and `wake` notified, or within
/// [`LOOK_EVERY`]); see the module docs. Fails only when the sink does.
pub(crate) fn consume(
    source: NatsSource,
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
    runtime.block_on(async {
        let client = match source.server.connect(&format!("callhook {}", source.key())).await {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(source = %source.key(), "{error}; the source takes nothing");
                return Ok(());
            }
        };
        let jetstream = async_nats::jetstream::new(client);
        let mut warned = false;
        while !shutdown.load(Ordering::SeqCst) {
            match open(&jetstream, &source).await {
                Ok(consumer) => {
                    warned = false;
                    take(&consumer, &source, &mut intake, &shutdown, &wake).await?;
                }
                Err(error) if !warned => {
                    warned = true;
                    tracing::warn!(source = %source.key(), "cannot open the consumer, trying again: {error}");
                }
                Err(error) => tracing::debug!(source = %source.key(), "cannot open the consumer: {error}"),
            }
            if !shutdown.load(Ordering::SeqCst) {
                let _ = tokio::time::timeout(REOPEN_AFTER, wake.notified()).await;
            }
        }
        Ok(())
    })
}

/// The stream (made if missing) and the durable consumer, made anew from its ack floor
/// when messages were delivered and never acknowledged (see the module docs).
async fn open(jetstream: &async_nats::jetstream::Context, source: &NatsSource) -> Result<PullConsumer, String> {
    use async_nats::jetstream::stream::{Config, RetentionPolicy, StorageType};
    let stream = jetstream
        .get_or_create_stream(Config {
            name: source.stream.name.clone(),
            subjects: source.stream.subjects.clone(),
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            duplicate_window: Duration::from_millis(source.stream.duplicate_window_ms),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("stream {}: {e}", source.stream.name))?;
    let config = |deliver_policy| pull::Config {
        durable_name: Some(source.durable.clone()),
        deliver_policy,
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: -1,
        ..Default::default()
    };
    let mut consumer: PullConsumer = stream
        .get_or_create_consumer(&source.durable, config(DeliverPolicy::All))
        .await
        .map_err(|e| format!("consumer {}: {e}", source.durable))?;
    let info = consumer
        .info()
        .await
        .map_err(|e| format!("consumer {}: {e}", source.durable))?;
    if info.num_ack_pending == 0 {
        return Ok(consumer);
    }
    let start_sequence = info.ack_floor.stream_sequence + 1;
    tracing::info!(
        consumer = %source.durable,
        pending = info.num_ack_pending,
        start_sequence,
        "messages were delivered and not acknowledged: the consumer starts again from the first of them, in order"
    );
    stream
        .delete_consumer(&source.durable)
        .await
        .map_err(|e| format!("consumer {}: cannot delete it to start again: {e}", source.durable))?;
    stream
        .create_consumer(config(DeliverPolicy::ByStartSequence { start_sequence }))
        .await
        .map_err(|e| format!("consumer {}: {e}", source.durable))
}

/// Takes messages until the broker goes away or `shutdown` is set: each batch
/// committed, then acknowledged. Fails only when the sink does.
async fn take(
    consumer: &PullConsumer,
    source: &NatsSource,
    intake: &mut Intake<'_>,
    shutdown: &AtomicBool,
    wake: &tokio::sync::Notify,
) -> Result<(), SourceError> {
    let mut messages = match consumer
        .stream()
        .max_messages_per_batch(source.batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
    {
        Ok(messages) => messages,
        Err(error) => {
            tracing::warn!(source = %source.key(), "cannot pull messages: {error}");
            return Ok(());
        }
    };
    while !shutdown.load(Ordering::SeqCst) {
        let first = tokio::select! {
            next = messages.next() => next,
            () = wake.notified() => continue,
            () = tokio::time::sleep(LOOK_EVERY) => continue,
        };
        let mut batch = Vec::new();
        let mut next = first;
        loop {
            match next {
                Some(Ok(message)) => batch.push(message),
                Some(Err(error)) => {
                    tracing::warn!(source = %source.key(), "pulling messages: {error}; opening the consumer again");
                    settle(batch, intake).await?;
                    return Ok(());
                }
                None => {
                    settle(batch, intake).await?;
                    return Ok(());
                }
            }
            if batch.len() >= source.batch {
                break;
            }
            // What has arrived already joins the batch; nothing is waited for.
            match messages.next().now_or_never() {
                Some(more) => next = more,
                None => break,
            }
        }
        settle(batch, intake).await?;
    }
    Ok(())
}

/// Commits the events of `batch`, then acknowledges each message (a refused one as
/// terminated).
async fn settle(batch: Vec<async_nats::jetstream::Message>, intake: &mut Intake<'_>) -> Result<(), SourceError> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut events = Vec::with_capacity(batch.len());
    let mut refused = Vec::new();
    for (index, message) in batch.iter().enumerate() {
        match intake.read(&message.payload, message.subject.as_str()) {
            Some(event) => events.push(event),
            None => refused.push(index),
        }
    }
    intake.commit(&events)?;
    for (index, message) in batch.iter().enumerate() {
        let kind = if refused.contains(&index) {
            async_nats::jetstream::AckKind::Term
        } else {
            async_nats::jetstream::AckKind::Ack
        };
        if let Err(error) = message.ack_with(kind).await {
            // Stored already: when it is offered again, the store drops it.
            tracing::debug!(subject = %message.subject, "cannot acknowledge: {error}");
        }
    }
    Ok(())
}
