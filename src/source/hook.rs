//! The live task of a `hook` source: messages from `callhook hook` in, call events out.
//!
//! Two ways in, one way on. A listener on a loopback port ([`listen`]) takes request
//! lines, checks the token and queues each message with a way to answer; a thread
//! ([`take_messages`]) takes what is queued (in batches, so a burst of hooks costs one
//! commit), applies it to the open hook calls (`HookCalls`), commits events and state
//! in one transaction, and only then answers `ok`. The same thread takes spooled
//! messages (left while no daemon ran, or when it answered too late) at start and on each
//! look, and deletes each file once its events are stored. A crash between storing and
//! deleting only makes the message be read again: its id is in the stored state and the
//! copy is dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::checkpoint::Checkpoint;
use super::config::Source;
use super::hook_inbox::{Challenge, Hello, Inbox, MAX_REQUEST, Request, Role, proof, random_hex, same_token};
use super::{Batch, Sink, SourceError};
use crate::event::Event;
use crate::parse::hook::HookMessage;
use crate::track::hook::{HookCalls, HookState, Ignored};

/// The hook source's checkpoint name in the state database.
pub const HOOK_SOURCE_KEY: &str = "hook";
/// How long a connection may take to send its request line.
const REQUEST_WITHIN: Duration = Duration::from_secs(2);

/// What reaches the hook thread.
pub enum Intake {
    /// A message from the listener, answered once stored (`true`) or not (`false`).
    Message(HookMessage, oneshot::Sender<bool>),
    /// Look at the shutdown flag (and the spool) now.
    Wake,
}

/// Both ends of the queue from the hook listener to the hook thread.
pub struct Queue {
    pub sender: Sender<Intake>,
    pub receiver: Receiver<Intake>,
}

/// Binds the hook listener (loopback), makes the token if needed, says where in the
/// state directory, and starts accepting; returns the accepting task and the queue its
/// messages arrive in.
pub async fn start_listener(
    source: &Source,
    inbox: &Inbox,
) -> Result<(tokio::task::JoinHandle<()>, SocketAddr, Queue), SourceError> {
    let (listener, address, token) = bind(source.listen, inbox)
        .await
        .map_err(|error| SourceError::HookListen {
            address: source.listen,
            error,
        })?;
    tracing::info!(%address, "listening for callhook hook");
    let (sender, receiver) = std::sync::mpsc::channel();
    let task = tokio::spawn(listen(listener, token, sender.clone()));
    Ok((task, address, Queue { sender, receiver }))
}

/// Binds the loopback listener, makes a new token, says in the state directory where
/// it listens; returns the listener, its address and the token.
pub async fn bind(address: SocketAddr, inbox: &Inbox) -> std::io::Result<(TcpListener, SocketAddr, String)> {
    let listener = TcpListener::bind(address).await?;
    let token = inbox.new_token()?;
    let bound = listener.local_addr()?;
    inbox.announce(bound)?;
    Ok((listener, bound, token))
}

/// Accepts connections until dropped (the daemon aborts it on shutdown).
///
/// At most [`MAX_CONNECTIONS`] are served at once (each for at most twice
/// [`REQUEST_WITHIN`]); a connection beyond them is closed at once, and its forwarder
/// spools. When accepting fails (no file descriptors left), it waits before trying
/// again instead of spinning. Refusals are logged at most once a second.
pub async fn listen(listener: TcpListener, token: String, intake: Sender<Intake>) {
    let token: Arc<str> = token.into();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let warnings = Arc::new(std::sync::Mutex::new(Warnings::default()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn(&warnings, format!("cannot accept hook connections: {error}"));
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            warn(
                &warnings,
                format!("{MAX_CONNECTIONS} hook connections open already; one from {peer} closed (its hook spools)"),
            );
            continue;
        };
        let token = token.clone();
        let intake = intake.clone();
        let warnings = warnings.clone();
        tokio::spawn(async move {
            if let Err(reason) = serve(stream, &token, intake).await {
                warn(&warnings, format!("hook request from {peer} refused: {reason}"));
            }
            drop(slot);
        });
    }
}

/// Hook connections served at once, at most.
pub const MAX_CONNECTIONS: usize = 64;
/// How long to wait after `accept` failed (out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Warnings of the listener, at most one a second, with the count of those left out.
#[derive(Default)]
struct Warnings {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

fn warn(warnings: &std::sync::Mutex<Warnings>, message: String) {
    let mut warnings = warnings.lock().unwrap_or_else(|e| e.into_inner());
    let now = std::time::Instant::now();
    if warnings
        .last
        .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
    {
        warnings.suppressed += 1;
        return;
    }
    let suppressed = std::mem::take(&mut warnings.suppressed);
    warnings.last = Some(now);
    if suppressed > 0 {
        tracing::warn!("{message} ({suppressed} more like it in the last second not shown)");
    } else {
        tracing::warn!("{message}");
    }
}

/// One connection: the forwarder's hello, our challenge, its request, one answer; see
/// `hook_inbox` for the exchange.
async fn serve(stream: TcpStream, token: &str, intake: Sender<Intake>) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(2 * (MAX_REQUEST as u64 + 1)));
    let hello: Result<Hello, String> = read_line(&mut reader).await;
    let hello = match hello {
        Ok(hello) if hello.hello.len() == 64 => hello.hello,
        Ok(_) | Err(_) => {
            let _ = write.write_all(b"error: not a hook request\n").await;
            let _ = write.shutdown().await;
            return Err(hello.err().unwrap_or_else(|| "nonce of the wrong length".to_owned()));
        }
    };
    let nonce = random_hex::<32>().map_err(|e| e.to_string())?;
    let challenge = Challenge {
        proof: proof(token, Role::Daemon, &hello, &nonce),
        nonce: nonce.clone(),
    };
    let mut line = serde_json::to_vec(&challenge).map_err(|e| e.to_string())?;
    line.push(b'\n');
    write.write_all(&line).await.map_err(|e| e.to_string())?;
    let answer = |text: &'static str| async move {
        let _ = write.write_all(text.as_bytes()).await;
        let _ = write.shutdown().await;
    };
    let request: Request = match read_line(&mut reader).await {
        Ok(request) => request,
        Err(reason) => {
            answer("error: not a hook request\n").await;
            return Err(reason);
        }
    };
    if !same_token(&request.proof, &proof(token, Role::Forwarder, &hello, &nonce)) {
        answer("error: wrong token\n").await;
        return Err("wrong token (is it from another callhook install, or an older token?)".to_owned());
    }
    let (stored_tx, stored_rx) = oneshot::channel();
    if intake.send(Intake::Message(request.message, stored_tx)).is_err() {
        answer("error: shutting down\n").await;
        return Ok(());
    }
    match stored_rx.await {
        Ok(true) => answer("ok\n").await,
        _ => answer("error: not stored\n").await,
    }
    Ok(())
}

/// Reads one JSON line of at most [`MAX_REQUEST`] bytes within [`REQUEST_WITHIN`].
async fn read_line<T: serde::de::DeserializeOwned>(
    reader: &mut BufReader<tokio::io::Take<tokio::net::tcp::OwnedReadHalf>>,
) -> Result<T, String> {
    let mut line = Vec::new();
    let mut limited = (&mut *reader).take(MAX_REQUEST as u64 + 1);
    match tokio::time::timeout(REQUEST_WITHIN, limited.read_until(b'\n', &mut line)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no request line within {REQUEST_WITHIN:?}")),
    }
    if line.len() > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    serde_json::from_slice(&line).map_err(|e| format!("not a hook request: {e}"))
}

/// The hook thread; see the module docs. Runs until `shutdown` is set (and a
/// [`Intake::Wake`] or the poll interval makes it look).
pub(crate) fn take_messages(
    stored: Option<Checkpoint>,
    inbox: Inbox,
    intake: Receiver<Intake>,
    intake_wake: Sender<Intake>,
    poll: Duration,
    shutdown: Arc<AtomicBool>,
    sink: &mut dyn Sink,
) -> Result<(), SourceError> {
    let state = stored.and_then(|c| serde_json::from_str::<HookState>(&c.state).ok());
    let mut taker = Taker {
        calls: state.map(HookCalls::resume).unwrap_or_default(),
        sink,
    };
    let (spool_watch, spool_lost) = watch_spool(&inbox, &intake_wake);
    let mut first = None;
    loop {
        // What is queued and what is spooled go into one commit, in the order the hooks
        // ran: a message spooled because the daemon was slow comes before the next
        // hook's message, which may arrive over loopback first.
        let mut messages: Vec<(HookMessage, Option<oneshot::Sender<bool>>)> = Vec::new();
        for item in first.take().into_iter().chain(intake.try_iter()) {
            if let Intake::Message(message, answer) = item {
                messages.push((message, Some(answer)));
            }
        }
        let spooled = read_spool(&inbox, &mut messages);
        if !messages.is_empty() {
            messages.sort_by_key(|(m, _)| m.at.timestamp());
            let mut events = Vec::new();
            let mut answers = Vec::new();
            for (message, answer) in messages {
                taker.apply(&message, &mut events);
                answers.extend(answer);
            }
            let stored = taker.commit(&events);
            for answer in answers {
                let _ = answer.send(stored.is_ok());
            }
            stored?;
            if !spooled.is_empty() {
                tracing::info!(messages = spooled.len(), "took spooled hook messages");
            }
            for path in spooled {
                if let Err(error) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %error, "cannot delete a spooled hook message; it will be read again and dropped as a copy");
                }
            }
        }
        if shutdown.load(Ordering::SeqCst) {
            return Ok(());
        }
        let watching = spool_watch.is_some() && !spool_lost.load(Ordering::SeqCst);
        first = match intake.recv_timeout(super::watch::poll_timeout(watching, poll)) {
            Ok(intake) => Some(intake),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
    }
}

/// Watches the spool folder (made if missing), so a spooled message is taken at once
/// and the thread need not poll for them; `None` (then it polls) where that fails. The
/// flag is set when the watch was lost.
fn watch_spool(inbox: &Inbox, wake: &Sender<Intake>) -> (Option<super::watch::FolderWatch>, Arc<AtomicBool>) {
    let lost = Arc::new(AtomicBool::new(false));
    let dir = inbox.spool_dir();
    if let Err(error) = crate::private::ensure_dir(&dir) {
        tracing::debug!(path = %dir.display(), %error, "cannot make the hook spool; polling it");
        return (None, lost);
    }
    let wake = wake.clone();
    let on_change = move || {
        let _ = wake.send(Intake::Wake);
    };
    match super::watch::watch_folder(&dir, Vec::new(), lost.clone(), on_change) {
        Ok(watcher) => (Some(watcher), lost),
        Err(error) => {
            tracing::debug!(path = %dir.display(), %error, "cannot watch the hook spool; polling it");
            (None, lost)
        }
    }
}

struct Taker<'a> {
    calls: HookCalls,
    sink: &'a mut dyn Sink,
}

impl Taker<'_> {
    fn apply(&mut self, message: &HookMessage, events: &mut Vec<Event>) {
        match self.calls.apply(message) {
            Ok(event) => events.push(event),
            Err(Ignored::NoCall) => tracing::info!(
                event = %message.event,
                number = %message.number,
                "hook for a call whose start no hook reported (callhook not running then?); ignored"
            ),
            Err(ignored) => {
                tracing::debug!(event = %message.event, number = %message.number, ?ignored, "hook changes nothing")
            }
        }
    }

    fn commit(&mut self, events: &[Event]) -> Result<(), SourceError> {
        let checkpoint =
            Checkpoint::state_only(serde_json::to_string(self.calls.state()).expect("hook state serializes"));
        self.sink
            .commit(Batch {
                key: HOOK_SOURCE_KEY,
                checkpoint: &checkpoint,
                events,
                appended: None,
            })
            .map_err(SourceError::Downstream)
    }
}

/// Adds every spooled message to `messages`; returns their files, to delete once
/// stored. An unreadable file is renamed out of the way and reported.
fn read_spool(inbox: &Inbox, messages: &mut Vec<(HookMessage, Option<oneshot::Sender<bool>>)>) -> Vec<PathBuf> {
    let mut taken = Vec::new();
    for path in inbox.spooled() {
        match Inbox::read_spooled(&path) {
            Ok(message) => {
                messages.push((message, None));
                taken.push(path);
            }
            Err(reason) => {
                let aside = Inbox::set_aside(&path);
                tracing::warn!(path = %path.display(), "spooled hook message unreadable, kept as {}: {reason}",
                    aside.map_or_else(|e| format!("is (cannot rename: {e})"), |p| p.display().to_string()));
            }
        }
    }
    taken
}
