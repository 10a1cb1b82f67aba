//! Delivering a `nats` job: one JetStream publish, done when JetStream acknowledges it.
//!
//! One client per server (as configured: URL, credentials, TLS) for the dispatcher's
//! whole life ([`NatsLinks`]): it connects in the background and reconnects by itself,
//! so a server that is down only makes jobs wait (each attempt answers "not connected"
//! at once and is retried per the rule's `retry`). Before the first publish on a
//! connection the stream is made when missing, or checked. The message carries
//! `Nats-Msg-Id` = the event id: JetStream drops a repeat within the stream's duplicate
//! window (a publish whose PubAck was lost, then made again), and says so in its PubAck.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::Delivery;
use crate::broker::nats::NatsServer;
use crate::rules::broker::NatsPublish;

/// A connected client and the streams made or checked on it.
struct Link {
    jetstream: async_nats::jetstream::Context,
    client: async_nats::Client,
    streams: std::sync::Mutex<HashSet<String>>,
}

/// The dispatcher's NATS clients, one per server.
#[derive(Default)]
pub struct NatsLinks {
    links: tokio::sync::Mutex<HashMap<NatsServer, Arc<Link>>>,
}

impl NatsLinks {
    async fn link(&self, server: &NatsServer) -> Result<Arc<Link>, String> {
        let mut links = self.links.lock().await;
        if let Some(link) = links.get(server) {
            return Ok(link.clone());
        }
        let client = server.connect("callhook outbox").await?;
        let link = Arc::new(Link {
            jetstream: async_nats::jetstream::new(client.clone()),
            client,
            streams: Default::default(),
        });
        links.insert(server.clone(), link.clone());
        Ok(link)
    }

    /// Connects to `server` now, before any job needs it: a connection takes a few
    /// round trips (more with TLS), and a publish made while it is still being set up
    /// is answered "not connected" and waits for its retry.
    pub async fn connect_early(&self, server: &NatsServer) {
        if let Err(reason) = self.link(server).await {
            tracing::warn!(url = %server.url, "cannot connect yet: {reason}");
        }
    }

    /// Publishes `publish` once; done on its PubAck.
    pub async fn send(&self, publish: &NatsPublish) -> Delivery {
        let link = match self.link(&publish.server).await {
            Ok(link) => link,
            Err(reason) => return retry(reason),
        };
        if link.client.connection_state() != async_nats::connection::State::Connected {
            return retry(format!("not connected to {} (connecting)", publish.server.url));
        }
        let timeout = Duration::from_millis(publish.timeout_ms.max(1));
        let ready = link
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&publish.stream.name);
        if !ready {
            let made = tokio::time::timeout(
                timeout,
                crate::broker::nats::ensure_stream(&link.jetstream, &publish.stream, &publish.subject),
            )
            .await;
            match made {
                Ok(Ok(())) => {
                    link.streams
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(publish.stream.name.clone());
                }
                Ok(Err(reason)) => return retry(reason),
                Err(_) => return retry(format!("stream {}: no answer within {timeout:?}", publish.stream.name)),
            }
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", publish.msg_id.as_str());
        let sent = tokio::time::timeout(timeout, async {
            let ack = link
                .jetstream
                .publish_with_headers(publish.subject.clone(), headers, publish.body.clone().into())
                .await?;
            ack.await
        })
        .await;
        match sent {
            Ok(Ok(ack)) => Delivery::Done(format!(
                "stream {} seq {}{}",
                ack.stream,
                ack.sequence,
                if ack.duplicate {
                    " (a repeat, dropped by JetStream)"
                } else {
                    ""
                }
            )),
            Ok(Err(error)) => {
                use async_nats::jetstream::context::PublishErrorKind;
                match error.kind() {
                    PublishErrorKind::MaxPayloadExceeded => Delivery::GiveUp(format!("{}: {error}", publish.subject)),
                    PublishErrorKind::StreamNotFound => {
                        // Deleted meanwhile: make it again on the next attempt.
                        link.streams
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&publish.stream.name);
                        retry(format!("{}: {error}", publish.subject))
                    }
                    _ => retry(format!("{}: {error}", publish.subject)),
                }
            }
            Err(_) => retry(format!("{}: no PubAck within {timeout:?}", publish.subject)),
        }
    }
}

fn retry(reason: String) -> Delivery {
    Delivery::Retry { reason, after: None }
}
