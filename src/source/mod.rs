//! Sources: the watched files (and the hook channel), each turned into batches of call
//! events handed to a [`Sink`].
//!
//! A source knows how to read its input and where it was, nothing of what follows: it
//! hands each [`Batch`] (its key, the events read, the checkpoint after them) to the
//! sink it is given, which returns once the batch is durable. The wiring gives it the
//! checkpoint an earlier run committed. [`start`] is the one place that dispatches on
//! the source kind:
//!
//! - `sip_trace`, `call_log`: files that grow ([`follow`], with [`tail`] to read what
//!   is new, [`checkpoint`] to know a file by its content, [`watch`] to wake, and
//!   [`reader`] for bytes → events: [`sip_trace`] composes the PJSIP parser and the SIP
//!   tracker, [`call_log`] the call-log parser and tracker).
//! - `history`: `microsip.ini`, rewritten whole on each change ([`snapshot`]).
//! - `hook`: messages from `callhook hook` over loopback or from the spool ([`hook`],
//!   [`hook_inbox`]).
//! - `nats`, `mqtt`: events other callhooks published to a broker ([`nats`], [`mqtt`],
//!   with [`broker`] to read and commit them); they keep the `source` they were made with.
//!
//! [`config`] holds what the configuration says of a source.

pub mod broker;
pub mod call_log;
pub mod checkpoint;
pub mod config;
pub mod follow;
pub mod hook;
pub mod hook_inbox;
pub mod mqtt;
pub mod nats;
pub mod reader;
pub mod sip_trace;
pub mod snapshot;
pub mod tail;
pub mod watch;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use thiserror::Error;

use self::checkpoint::Checkpoint;
use self::config::{BrokerSource, Kind, Source};
use self::hook_inbox::Inbox;
use self::reader::Appended;
use self::watch::Wakeup;
use crate::event::Event;
use crate::metrics::Metrics;

/// What a source hands downstream in one go.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The source's name in the state database ([`Source::key`]).
    pub key: &'a str,
    /// Where reading goes on after these events.
    pub checkpoint: &'a Checkpoint,
    /// The events read, in order (may be empty: only the checkpoint moved).
    pub events: &'a [Event],
    /// When the first of the bytes behind these events was appended to the file, as
    /// near as the source knows (for the append → event latency), if it knows.
    pub appended: Option<std::time::SystemTime>,
}

/// Why a sink could not take a batch (the database failed, say).
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where a source's batches go. `commit` returns once events and checkpoint are
/// durable together; an error stops the source (its checkpoint did not move, so a
/// restart reads the batch again).
pub trait Sink: Send {
    fn commit(&mut self, batch: Batch<'_>) -> Result<(), SinkError>;
}

/// A source stopped for good.
#[derive(Debug, Error)]
pub enum SourceError {
    #[error("cannot hand events on: {0}")]
    Downstream(SinkError),
    #[error("cannot listen for hooks on {address}: {error}")]
    HookListen {
        address: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// A source's work, run on its own thread.
type Task = Box<dyn FnOnce() -> Result<(), SourceError> + Send>;
/// Wakes a source's thread (to see the shutdown flag).
type Wake = Box<dyn Fn() + Send>;

/// A source running on a thread of its own.
pub struct Running {
    thread: JoinHandle<()>,
    wake: Wake,
    /// A hook source's listener, the files that announce it, and its address.
    listener: Option<(tokio::task::JoinHandle<()>, Inbox, std::net::SocketAddr)>,
}

impl Running {
    /// Makes the source look at the shutdown flag now.
    pub(crate) fn wake(&self) {
        (self.wake)();
    }

    /// Takes no new hook messages (those queued are still stored); no-op for files.
    pub(crate) fn stop_listening(&mut self) {
        if let Some((listener, inbox, address)) = self.listener.take() {
            listener.abort();
            inbox.withdraw(address);
        }
    }

    /// Waits for the thread to end (after shutdown was set and it was woken).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Starts `source` on a thread of its own, from the checkpoint `stored`, handing its
/// batches to `sink` until `shutdown` is set. A failure after the start goes to
/// `failed` with the source's key. Hook sources listen on loopback (their spool and
/// token live in `state_dir`), so this runs inside a tokio runtime. What it reads, and
/// whether it is followed, is counted in `metrics`.
pub async fn start(
    source: Source,
    stored: Option<Checkpoint>,
    state_dir: &Path,
    shutdown: Arc<AtomicBool>,
    mut sink: Box<dyn Sink>,
    metrics: &Metrics,
    failed: impl FnOnce(SourceError) + Send + 'static,
) -> Result<Running, SourceError> {
    let name = format!("source {}", source.key());
    let counts = metrics.source(&source.key(), source.kind.as_str(), &source.path.display().to_string());
    let health = counts.clone();
    let mut listener = None;
    let (task, wake): (Task, Wake) = match source.kind {
        Kind::SipTrace | Kind::CallLog => {
            let format = match source.kind {
                Kind::SipTrace => Appended::SipTrace,
                _ => Appended::CallLog,
            };
            let wakeup = Wakeup::new(&source.path, source.poll_interval);
            let waker = wakeup.waker();
            (
                Box::new(move || follow::follow(&source, format, stored, wakeup, shutdown, &mut *sink, counts)),
                Box::new(move || waker.wake()),
            )
        }
        Kind::History => {
            let wakeup = Wakeup::new(&source.path, source.poll_interval);
            let waker = wakeup.waker();
            (
                Box::new(move || snapshot::follow_snapshots(&source, stored, wakeup, shutdown, &mut *sink, &counts)),
                Box::new(move || waker.wake()),
            )
        }
        Kind::Nats | Kind::Mqtt => broker_task(source, stored, shutdown, sink),
        Kind::Hook => {
            let inbox = Inbox::new(state_dir);
            let (task, address, intake) = hook::start_listener(&source, &inbox).await?;
            listener = Some((task, inbox.clone(), address));
            let poll = source.poll_interval;
            let wake_intake = intake.sender.clone();
            (
                Box::new(move || {
                    hook::take_messages(
                        stored,
                        inbox,
                        intake.receiver,
                        intake.sender,
                        poll,
                        shutdown,
                        &mut *sink,
                    )
                }),
                Box::new(move || {
                    let _ = wake_intake.send(hook::Intake::Wake);
                }),
            )
        }
    };
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            if let Err(error) = task() {
                health.set_problem(Some(format!("stopped: {error}")));
                failed(error);
            }
        })
        .map_err(SourceError::Thread)?;
    Ok(Running { thread, wake, listener })
}

/// A `nats` or `mqtt` source's task and its waker.
fn broker_task(
    source: Source,
    stored: Option<Checkpoint>,
    shutdown: Arc<AtomicBool>,
    mut sink: Box<dyn Sink>,
) -> (Task, Wake) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let waker = wake.clone();
    let task: Task = match source.broker {
        Some(BrokerSource::Nats(nats)) => Box::new(move || nats::consume(nats, stored, shutdown, wake, &mut *sink)),
        Some(BrokerSource::Mqtt(mqtt)) => Box::new(move || mqtt::consume(mqtt, stored, shutdown, wake, &mut *sink)),
        None => Box::new(move || {
            tracing::error!(source = %source.key(), "a broker source without its settings takes nothing");
            Ok(())
        }),
    };
    (task, Box::new(move || waker.notify_one()))
}
