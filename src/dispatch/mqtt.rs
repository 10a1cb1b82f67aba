//! Delivering an `mqtt` job: one QoS 1 publish, done when the broker answers PUBACK.
//!
//! One connection per broker and client id for the dispatcher's life ([`MqttLinks`]),
//! a persistent session (`clean_session: false`) with the desk's last will: its status
//! topic becomes `offline` (retained) when the desk is gone without saying goodbye, and
//! is set `online` (retained) on each connection. Publishes on a connection go one at a
//! time, so the broker's PUBACK names the one just sent: its packet id is the first new
//! one the client's event loop reports sending. When the connection drops, or an
//! answer does not come in time, the connection is dropped with everything queued in
//! it and made anew for the next job: the job is retried from the outbox, never
//! reported done for a publish the broker did not acknowledge.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Delivery;
use crate::rules::broker::MqttPublish;

/// What the event loop task reports.
enum Report {
    Connected,
    /// A publish written with this packet id.
    Sent(u16),
    Acked(u16),
    Gone(String),
}

/// One live connection.
struct Connection {
    client: AsyncClient,
    reports: mpsc::UnboundedReceiver<Report>,
    task: tokio::task::JoinHandle<()>,
    connected: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection slot: empty until the first job, and again after a failure.
type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// The dispatcher's MQTT connections, one per (broker, client id).
#[derive(Default)]
pub struct MqttLinks {
    links: std::sync::Mutex<HashMap<(String, String), Slot>>,
}

impl MqttLinks {
    /// Publishes `publish` once at QoS 1; done on its PUBACK.
    pub async fn send(&self, publish: &MqttPublish) -> Delivery {
        let key = (
            serde_json::to_string(&publish.server).unwrap_or_default(),
            publish.client_id.clone(),
        );
        let link = self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let deadline = Instant::now() + Duration::from_millis(publish.timeout_ms.max(1));
        // One publish at a time per connection (see the module docs).
        let mut slot = link.lock().await;
        let result = deliver(&mut slot, publish, deadline).await;
        if result.is_err() {
            // Whatever it still holds is dropped with it; the outbox tries again.
            *slot = None;
        }
        match result {
            Ok(()) => Delivery::Done(format!("PUBACK from {}", publish.server.url)),
            Err(reason) => Delivery::Retry {
                reason: format!("{} topic {}: {reason}", publish.server.url, publish.topic),
                after: None,
            },
        }
    }
}

async fn deliver(slot: &mut Option<Connection>, publish: &MqttPublish, deadline: Instant) -> Result<(), String> {
    if slot.is_none() {
        *slot = Some(connect(publish)?);
    }
    let connection = slot.as_mut().expect("made just above");
    // Reports left from between jobs (a connection cut meanwhile).
    while let Ok(report) = connection.reports.try_recv() {
        match report {
            Report::Gone(reason) => return Err(reason),
            Report::Connected => connection.connected = true,
            _ => {}
        }
    }
    if !connection.connected {
        wait_for(connection, deadline, |r| matches!(r, Report::Connected)).await?;
        connection.connected = true;
        if let Some(status) = &publish.status_topic {
            send_one(connection, status, b"online".to_vec(), true, deadline).await?;
        }
    }
    send_one(
        connection,
        &publish.topic,
        publish.body.clone().into_bytes(),
        false,
        deadline,
    )
    .await
}

/// Publishes at QoS 1 and waits for its PUBACK.
async fn send_one(
    connection: &mut Connection,
    topic: &str,
    payload: Vec<u8>,
    retain: bool,
    deadline: Instant,
) -> Result<(), String> {
    connection
        .client
        .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        .map_err(|e| format!("cannot queue the publish: {e}"))?;
    let mut pkid = 0;
    wait_for(connection, deadline, |r| match r {
        Report::Sent(id) => {
            pkid = *id;
            false
        }
        Report::Acked(id) => pkid != 0 && *id == pkid,
        _ => false,
    })
    .await
}

/// Reads reports until `done` says so; the connection going away or `deadline` is an
/// error.
async fn wait_for(
    connection: &mut Connection,
    deadline: Instant,
    mut done: impl FnMut(&Report) -> bool,
) -> Result<(), String> {
    loop {
        let report = tokio::time::timeout_at(deadline, connection.reports.recv())
            .await
            .map_err(|_| "no answer in time".to_owned())?
            .ok_or_else(|| "connection closed".to_owned())?;
        if let Report::Gone(reason) = &report {
            return Err(reason.clone());
        }
        if done(&report) {
            return Ok(());
        }
    }
}

/// A new connection: its client, and a task polling its event loop until it fails.
fn connect(publish: &MqttPublish) -> Result<Connection, String> {
    let will = publish.status_topic.as_deref().map(|t| (t, "offline"));
    let options = publish.server.options(&publish.client_id, will)?;
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let (sender, reports) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let report = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Report::Connected,
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Report::Sent(pkid),
                Ok(Event::Incoming(Packet::PubAck(ack))) => Report::Acked(ack.pkid),
                Ok(_) => continue,
                Err(error) => {
                    let _ = sender.send(Report::Gone(error.to_string()));
                    return;
                }
            };
            if sender.send(report).is_err() {
                return;
            }
        }
    });
    Ok(Connection {
        client,
        reports,
        task,
        connected: false,
    })
}
