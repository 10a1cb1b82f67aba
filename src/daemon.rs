//! `callhook run`: starts every stage, wires them together, shuts them down in order.
//!
//! Each source runs on a thread of its own ([`follow`]) with its own database
//! connection: file reading and SQLite are blocking work, and a thread per watched file
//! (one or two on a desktop) costs nothing. Stored events flow over a channel to the
//! output thread, which hands them on (stdout as NDJSON, or a channel for embedding and
//! tests) and marks them emitted. Events stored by an earlier run but never emitted (it
//! crashed in between) go out first.
//!
//! Shutdown (Ctrl-C, SIGTERM, or the future passed to [`run`]) sets a flag and wakes every
//! source; each commits its checkpoint and stops, then the output drains.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use thiserror::Error;

use crate::config::{Config, SourceKindConfig};
use crate::correlate::Correlator;
use crate::rules::{RuleEngine, SharedEngine};
use crate::source::follow::{Downstream, FollowError, SharedCorrelator, follow};
use crate::source::hook;
use crate::source::hook_inbox::Inbox;
use crate::source::watch::Wakeup;
use crate::store::{Store, StoreError, StoredEvent};

/// Where events go once stored.
#[derive(Debug, Clone)]
pub enum Output {
    /// Nowhere yet (rules come later): they are stored and marked emitted.
    None,
    /// NDJSON on stdout, flushed after each batch.
    Stdout,
    /// Each event's JSON line into a channel (embedding, tests).
    Channel(mpsc::Sender<String>),
}

/// A reason the daemon could not start or had to stop.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("source {source_key} stopped: {error}")]
    Source { source_key: String, error: FollowError },
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("outbox stopped: {0}")]
    Outbox(StoreError),
    #[error("cannot listen for hooks on {address}: {error}")]
    HookListen {
        address: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A source's work, run on its own thread.
type Task = Box<dyn FnOnce() + Send>;
/// Wakes a source's thread (to see the shutdown flag).
type Wake = Box<dyn Fn() + Send>;

/// Runs until `shutdown` completes or a stage fails for good.
pub async fn run(config: Config, output: Output, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    // Fail early, in the caller's terms, when the database cannot be used.
    let mut output_store = Store::open(&config.state_dir)?;
    // Before any source runs, so no event can be both in the backlog and in a batch.
    emit_backlog(&mut output_store, &output);
    let stop = Arc::new(AtomicBool::new(false));
    let engine: SharedEngine = Arc::new(std::sync::Mutex::new(RuleEngine::new(config.rules.clone())));
    if !config.rules.is_empty() {
        tracing::info!(
            rules = config.rules.len(),
            "rules loaded: {}",
            config.rules.names().collect::<Vec<_>>().join(", ")
        );
    }
    let correlator = restore_correlator(&output_store, &config)?;
    let (events_tx, events_rx) = mpsc::channel::<Vec<StoredEvent>>();
    let outbox_wake = Arc::new(tokio::sync::Notify::new());
    let outbox_stop = Arc::new(tokio::sync::Notify::new());
    let outbox = tokio::spawn(crate::dispatch::outbox::run(
        Store::open(&config.state_dir)?,
        outbox_wake.clone(),
        outbox_stop.clone(),
    ));
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<DaemonError>();

    let output_thread = std::thread::Builder::new()
        .name("output".into())
        .spawn(move || emit(output_store, output, events_rx))
        .map_err(DaemonError::Thread)?;

    let downstream = || Downstream {
        correlator: correlator.clone(),
        rules: engine.clone(),
        jobs_waiting: outbox_wake.clone(),
        output: events_tx.clone(),
    };
    let releaser_stop = Arc::new(AtomicBool::new(false));
    let releaser = if correlator.lock().unwrap_or_else(|e| e.into_inner()).holds_events() {
        let store = Store::open(&config.state_dir)?;
        Some(start_releaser(
            downstream(),
            store,
            releaser_stop.clone(),
            failed_tx.clone(),
        )?)
    } else {
        None
    };
    let mut sources: Vec<(JoinHandle<()>, Wake)> = Vec::new();
    let mut hook_listener = None;
    for source in config.sources.iter().cloned() {
        let store = Store::open(&config.state_dir)?;
        let stop = stop.clone();
        let failed = failed_tx.clone();
        let downstream = downstream();
        let name = format!("source {}", source.key());
        let source_key = source.key();
        let report = move |error: FollowError| {
            let _ = failed.send(DaemonError::Source { source_key, error });
        };
        let (task, wake): (Task, Wake) = if source.kind == SourceKindConfig::Hook {
            let inbox = Inbox::new(&config.state_dir);
            let (listener, intake) = start_hook_listener(&source, &inbox).await?;
            let (wake_intake, poll) = (intake.sender.clone(), source.poll_interval);
            hook_listener = Some((listener, inbox.clone()));
            (
                Box::new(move || {
                    if let Err(error) = hook::take_messages(store, inbox, intake.receiver, poll, stop, downstream) {
                        report(error);
                    }
                }),
                Box::new(move || {
                    let _ = wake_intake.send(hook::Intake::Wake);
                }),
            )
        } else {
            let wakeup = Wakeup::new(&source.path, source.poll_interval);
            let waker = wakeup.waker();
            (
                Box::new(move || {
                    if let Err(error) = follow(&source, store, wakeup, stop, downstream) {
                        report(error);
                    }
                }),
                Box::new(move || waker.wake()),
            )
        };
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(task)
            .map_err(DaemonError::Thread)?;
        sources.push((handle, wake));
    }
    drop(events_tx);
    drop(failed_tx);

    let reload = reload_rules(config.clone(), engine.clone());
    let failure = tokio::select! {
        () = shutdown => None,
        Some(error) = failed_rx.recv() => Some(error),
        () = reload => None,
    };
    // No new hook messages; those queued are still stored (or spooled by their sender).
    if let Some((listener, inbox)) = hook_listener {
        listener.abort();
        inbox.withdraw();
    }
    stop.store(true, Ordering::SeqCst);
    for (_, wake) in &sources {
        wake();
    }
    let joined = tokio::task::spawn_blocking(move || {
        for (handle, _) in sources {
            let _ = handle.join();
        }
        releaser_stop.store(true, Ordering::SeqCst);
        if let Some(releaser) = releaser {
            let _ = releaser.join();
        }
        let _ = output_thread.join();
    });
    let _ = joined.await;
    // Sources are stopped: no new jobs. Deliveries under way finish (bounded by their
    // timeouts); the rest stay pending for the next start.
    outbox_stop.notify_one();
    let outbox_failure = match outbox.await {
        Ok(Ok(())) | Err(_) => None,
        Ok(Err(error)) => Some(DaemonError::Outbox(error)),
    };
    match failure.or_else(|| failed_rx.try_recv().ok()).or(outbox_failure) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Hot reload: when a configuration file changes (checked every second) or on SIGHUP,
/// loads it again; valid new rules apply to the next event, an invalid file keeps the
/// old rules and logs every problem. Changes to sources or `state_dir` need a restart.
/// Never completes.
async fn reload_rules(config: Config, engine: SharedEngine) {
    let Some(main) = config.files.first().cloned() else {
        return std::future::pending().await;
    };
    let stamp = |files: &[std::path::PathBuf]| -> Vec<Option<std::time::SystemTime>> {
        files
            .iter()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect()
    };
    let mut files = config.files.clone();
    let mut seen = stamp(&files);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let forced = match hangup.as_mut() {
            Some(signal) => tokio::select! {
                _ = tick.tick() => false,
                _ = signal.recv() => true,
            },
            None => {
                tick.tick().await;
                false
            }
        };
        #[cfg(not(unix))]
        let forced = {
            tick.tick().await;
            false
        };
        let now = stamp(&files);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        match Config::load(&main) {
            Ok(new) => {
                if new
                    .sources
                    .iter()
                    .map(|s| s.key())
                    .ne(config.sources.iter().map(|s| s.key()))
                    || new.state_dir != config.state_dir
                {
                    tracing::warn!(
                        "sources or state_dir changed in {}: restart callhook to apply",
                        main.display()
                    );
                }
                tracing::info!(rules = new.rules.len(), "rules reloaded from {}", main.display());
                engine
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .replace(new.rules.clone());
                files = new.files.clone();
                seen = stamp(&files);
            }
            Err(error) => tracing::error!("configuration not reloaded, the old rules stay: {error}"),
        }
    }
}

/// The correlator, knowing the calls of the last hours that an earlier run stored (and
/// the events it held).
fn restore_correlator(store: &Store, config: &Config) -> Result<SharedCorrelator, DaemonError> {
    let since = jiff::Timestamp::now() - crate::correlate::REMEMBER_OPEN;
    let kinds = config.sources.iter().map(|s| s.kind.event_source());
    let mut correlator = Correlator::new(config.correlation_window).hold(config.correlation_wait(), kinds);
    correlator.restore(store.correlated_calls(since.as_millisecond())?);
    if !correlator.is_empty() {
        tracing::debug!(calls = correlator.len(), "correlated calls restored");
    }
    Ok(Arc::new(std::sync::Mutex::new(correlator)))
}

/// Both ends of the queue from the hook listener to the hook source's thread.
struct Intake {
    sender: mpsc::Sender<hook::Intake>,
    receiver: mpsc::Receiver<hook::Intake>,
}

/// Binds the hook listener (loopback), makes the token if needed, says where in the
/// state directory, and starts accepting.
async fn start_hook_listener(
    source: &crate::config::Source,
    inbox: &Inbox,
) -> Result<(tokio::task::JoinHandle<()>, Intake), DaemonError> {
    let (listener, address, token) =
        hook::bind(source.listen, inbox)
            .await
            .map_err(|error| DaemonError::HookListen {
                address: source.listen,
                error,
            })?;
    tracing::info!(%address, "listening for callhook hook");
    let (sender, receiver) = mpsc::channel();
    let listener = tokio::spawn(hook::listen(listener, token, sender.clone()));
    Ok((listener, Intake { sender, receiver }))
}

/// Starts the releaser thread: emits events held for a richer source once their wait is
/// over, and all still held when `stop` is set.
fn start_releaser(
    downstream: Downstream,
    store: Store,
    stop: Arc<AtomicBool>,
    failed: tokio::sync::mpsc::UnboundedSender<DaemonError>,
) -> Result<JoinHandle<()>, DaemonError> {
    std::thread::Builder::new()
        .name("correlation".into())
        .spawn(move || {
            if let Err(error) = release_held(downstream, store, &stop) {
                let _ = failed.send(DaemonError::Source {
                    source_key: "correlation".into(),
                    error: FollowError::Store(error),
                });
            }
        })
        .map_err(DaemonError::Thread)
}

/// How often the releaser looks for held events whose wait is over.
const RELEASE_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// The releaser thread: held events out when their wait is over, all when stopping.
fn release_held(downstream: Downstream, mut store: Store, stop: &AtomicBool) -> Result<(), StoreError> {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(RELEASE_EVERY);
        downstream.release_due(&mut store, jiff::Timestamp::now().as_millisecond())?;
    }
    downstream.release_due(&mut store, i64::MAX)?;
    Ok(())
}

/// Hands on the events an earlier run stored but did not emit (it stopped in between).
fn emit_backlog(store: &mut Store, output: &Output) {
    loop {
        match store.unemitted(1000) {
            Ok(batch) if !batch.is_empty() => hand_on(store, output, batch),
            Ok(_) => break,
            Err(error) => {
                tracing::warn!(%error, "cannot read events left by an earlier run");
                break;
            }
        }
    }
}

/// The output thread: each stored batch, in order.
fn emit(mut store: Store, output: Output, batches: mpsc::Receiver<Vec<StoredEvent>>) {
    for batch in batches {
        hand_on(&mut store, &output, batch);
    }
}

fn hand_on(store: &mut Store, output: &Output, batch: Vec<StoredEvent>) {
    match output {
        Output::None => {}
        Output::Stdout => {
            let mut stdout = std::io::stdout().lock();
            for event in &batch {
                let _ = writeln!(stdout, "{}", event.json);
            }
            let _ = stdout.flush();
        }
        Output::Channel(sender) => {
            for event in &batch {
                let _ = sender.send(event.json.clone());
            }
        }
    }
    let seqs: Vec<i64> = batch.iter().map(|e| e.seq).collect();
    if let Err(error) = store.mark_emitted(&seqs) {
        tracing::warn!(%error, "cannot mark events as emitted; they may be emitted again after a restart");
    }
}
