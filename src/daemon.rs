//! `callhook run`: builds every stage from the configuration, wires them, shuts them
//! down in order.
//!
//! ```text
//! source threads ──Batch──▶ Pipeline (correlate → rules → one store commit) ──▶ output thread
//!                                   │ jobs in the same commit                     (stdout / channel)
//!                                   └──────── wakes ──▶ outbox task ──▶ webhooks, commands
//! ```
//!
//! Each source runs on a thread of its own ([`source::start`]) with its own
//! [`Pipeline`] (and database connection): file reading and SQLite are blocking work,
//! and a thread per watched file (one to three on a desktop) costs nothing. The
//! pipeline commits each batch's events, jobs and checkpoint in one transaction, then
//! hands the events to the output thread, which writes them (stdout as NDJSON, or a
//! channel for embedding and tests) and marks them emitted, and wakes the outbox
//! ([`crate::dispatch::outbox`]). Events stored by an earlier run but never emitted (it
//! crashed in between) go out first. When a poorer source's events may be held for a
//! richer one's ([`crate::correlate`]), a releaser thread emits them when their wait is
//! over. Rules are reloaded when their files change (`reload_rules`).
//!
//! Shutdown (Ctrl-C, SIGTERM, or the future passed to [`run`]) sets a flag and wakes every
//! source; each commits its checkpoint and stops, then the releaser emits what is still
//! held, the output drains, and the outbox finishes deliveries under way.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use thiserror::Error;

use crate::config::Config;
use crate::correlate::Correlator;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineError, Shared};
use crate::rules::{RuleEngine, SharedEngine};
use crate::source::config::Kind;
use crate::source::{self, Running, SourceError};
use crate::store::{Store, StoreError, StoredEvent};

/// Where events go once stored.
#[derive(Debug, Clone)]
pub enum Output {
    /// Nowhere (the rules act on them): they are stored and marked emitted.
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
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("source {source_key} stopped: {error}")]
    Source { source_key: String, error: SourceError },
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("outbox stopped: {0}")]
    Outbox(StoreError),
    #[error("cannot serve the status page on {address}: {source}")]
    Status {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "another callhook run{} uses state directory {}; stop it first, or give this one another state_dir",
        .pid.map(|p| format!(" (PID {p})")).unwrap_or_default(),
        .state_dir.display()
    )]
    AlreadyRunning {
        state_dir: std::path::PathBuf,
        pid: Option<u32>,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A stage that failed after the start.
type Failures = tokio::sync::mpsc::UnboundedSender<DaemonError>;

/// Runs until `shutdown` completes or a stage fails for good.
pub async fn run(config: Config, output: Output, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    run_with(config, output, Metrics::new(), shutdown).await
}

/// [`run`], counting into `metrics` (which the caller may serve, as the demo does).
pub async fn run_with(
    config: Config,
    output: Output,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    // Fail early, in the caller's terms, when the database cannot be used.
    let mut output_store = Store::open(&config.state_dir)?;
    // Marking events emitted needs no fsync: one lost to a power cut is only printed
    // again (stdout is at-least-once, with the same id).
    output_store.relax_sync()?;
    output_store.spread_checkpoints()?;
    // Two daemons on one state directory would deliver every job twice.
    let _lock = lock_state_dir(&config.state_dir)?;
    // Before any source runs, so no event can be both in the backlog and in a batch.
    emit_backlog(&mut output_store, &output);
    let engine: SharedEngine = Arc::new(std::sync::Mutex::new(RuleEngine::new(config.rules.clone())));
    if !config.rules.is_empty() {
        tracing::info!(
            rules = config.rules.len(),
            "rules loaded: {}",
            config.rules.names().collect::<Vec<_>>().join(", ")
        );
    }
    let (events_tx, events_rx) = mpsc::channel::<Vec<StoredEvent>>();
    let outbox_wake = Arc::new(tokio::sync::Notify::new());
    let shared = shared_pipeline(
        &output_store,
        &config,
        engine.clone(),
        outbox_wake.clone(),
        events_tx,
        &metrics,
    )?;
    let outbox_stop = Arc::new(tokio::sync::Notify::new());
    // A change another process makes (`callhook outbox retry`) wakes the outbox too.
    let database_changed = Arc::new(tokio::sync::Notify::new());
    let _database_watch = watch_outbox_notes(&config.state_dir, &database_changed);
    let outbox = tokio::spawn(crate::dispatch::outbox::run_watching(
        Store::open(&config.state_dir)?,
        outbox_wake,
        database_changed,
        outbox_stop.clone(),
        literal_keys(&engine),
        config.rules.nats_servers(),
        metrics.clone(),
    ));
    let output_thread = std::thread::Builder::new()
        .name("output".into())
        .spawn(move || emit(output_store, output, events_rx))
        .map_err(DaemonError::Thread)?;
    start_status_page(&config, &metrics).await?;
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<DaemonError>();
    let stop = Arc::new(AtomicBool::new(false));
    let releaser = start_releaser(&shared, &config, &failed_tx)?;
    // Freed heap and start-up code pages go back to the system once all is quiet.
    crate::memory::trim_when_idle(crate::memory::QUIET);
    let mut sources = start_sources(&config, &shared, &stop, &failed_tx, &metrics).await?;
    drop(shared);
    drop(failed_tx);

    let failure = tokio::select! {
        () = shutdown => None,
        Some(error) = failed_rx.recv() => Some(error),
        () = reload_rules(config.clone(), engine) => None,
    };
    // No new hook messages; those queued are still stored (or spooled by their sender).
    for source in &mut sources {
        source.stop_listening();
    }
    stop.store(true, Ordering::SeqCst);
    for source in &sources {
        source.wake();
    }
    let joined = tokio::task::spawn_blocking(move || {
        for source in sources {
            source.join();
        }
        if let Some(releaser) = releaser {
            releaser.stop.store(true, Ordering::SeqCst);
            releaser.shared.wake_releaser();
            let _ = releaser.thread.join();
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

/// Serves the status page, `/metrics` and `/healthz` when `status:` asks for them.
async fn start_status_page(config: &Config, metrics: &Metrics) -> Result<(), DaemonError> {
    let Some(status) = &config.status else {
        return Ok(());
    };
    crate::status::start(
        status,
        Store::open(&config.state_dir)?,
        config.sources.clone(),
        metrics.clone(),
    )
    .await
    .map_err(|source| DaemonError::Status {
        address: status.listen,
        source,
    })?;
    Ok(())
}

/// The file whose lock says a daemon runs on a state directory, with its PID inside.
pub const LOCK_FILE: &str = "callhook.lock";

/// Takes the state directory's lock for as long as the returned file is open (the
/// operating system lets go of it when the process ends, however it ends).
fn lock_state_dir(state_dir: &std::path::Path) -> Result<std::fs::File, DaemonError> {
    let path = state_dir.join(LOCK_FILE);
    let lock_error = |source| DaemonError::Lock {
        path: path.clone(),
        source,
    };
    let mut file = crate::private::file_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(lock_error)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            // Windows keeps a locked file from being read: then the PID stays unknown.
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.trim().parse().ok());
            return Err(DaemonError::AlreadyRunning {
                state_dir: state_dir.to_owned(),
                pid,
            });
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(lock_error(error)),
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| std::io::Seek::rewind(&mut file))
        .and_then(|()| file.write_all(pid.as_bytes()))
        .map_err(lock_error)?;
    Ok(file)
}

/// What every source's pipeline shares: the correlator, knowing the calls of the last
/// hours that an earlier run stored (and the events it held), and the rules.
fn shared_pipeline(
    store: &Store,
    config: &Config,
    engine: SharedEngine,
    jobs_waiting: Arc<tokio::sync::Notify>,
    output: mpsc::Sender<Vec<StoredEvent>>,
    metrics: &Metrics,
) -> Result<Arc<Shared>, DaemonError> {
    let since = jiff::Timestamp::now() - crate::correlate::REMEMBER_OPEN;
    // A broker's events keep the kind of source they were made with at the desk.
    let kinds = config.sources.iter().filter_map(|s| s.kind.events());
    let correlator = Correlator::new(config.correlation_window).hold(config.correlation_wait(), kinds);
    Ok(Shared::new(
        correlator,
        store,
        since.as_millisecond(),
        engine,
        jobs_waiting,
        output,
        metrics.clone(),
    )?)
}

/// Starts every source on its own thread, each from its stored checkpoint with its own
/// pipeline.
async fn start_sources(
    config: &Config,
    shared: &Arc<Shared>,
    stop: &Arc<AtomicBool>,
    failed: &Failures,
    metrics: &Metrics,
) -> Result<Vec<Running>, DaemonError> {
    let mut sources = Vec::new();
    for source in config.sources.iter().cloned() {
        let mut store = Store::open(&config.state_dir)?;
        if matches!(source.kind, Kind::SipTrace | Kind::CallLog) {
            // No fsync per commit (WAL, synchronous=NORMAL): a power cut can take the
            // last commits, never a part of one, and then the checkpoint is older too, so
            // the same bytes, still in the file, are read again and give the same events
            // with the same ids and jobs (README, "Durability"). Not for the hook source:
            // its sender was told "stored" and sends nothing again; nor for the history,
            // a file rewritten in place whose older states are gone.
            store.relax_sync()?;
            // Nor a checkpoint of the log (two fsyncs): the output and the outbox,
            // committing right after, take them, off the path to the event.
            store.leave_checkpoints()?;
        }
        let pipeline = Pipeline::new(shared.clone(), store);
        let stored = pipeline.stored_checkpoint(&source.key())?;
        let source_key = source.key();
        let failed = failed.clone();
        let report = move |error: SourceError| {
            let _ = failed.send(DaemonError::Source { source_key, error });
        };
        let source_key = source.key();
        let running = source::start(
            source,
            stored,
            &config.state_dir,
            stop.clone(),
            Box::new(pipeline),
            metrics,
            report,
        )
        .await
        .map_err(|error| DaemonError::Source { source_key, error })?;
        sources.push(running);
    }
    Ok(sources)
}

/// The signing secrets written literally in the rules in force (they change with a
/// reload), for the outbox: jobs name them, never hold them.
fn literal_keys(engine: &SharedEngine) -> crate::rules::secret_ref::LiteralKeys {
    let engine = engine.clone();
    crate::rules::secret_ref::LiteralKeys::new(move |rule, index| {
        let rules = engine.lock().ok()?.rules().clone();
        rules.literal_key(rule, index)
    })
}

/// Hot reload: when a configuration file changes (told by a watcher on its folder; else
/// checked every second, and every few seconds anyway) or on SIGHUP, loads it again;
/// valid new rules apply to the next event, an invalid file keeps the old rules and
/// logs every problem. Changes to sources or `state_dir` need a restart. Never
/// completes.
async fn reload_rules(config: Config, engine: SharedEngine) {
    let Some(main) = config.files.first().cloned() else {
        return std::future::pending().await;
    };
    let mut files = config.files.clone();
    let mut seen = SeenConfig::of(&files);
    let changed = Arc::new(tokio::sync::Notify::new());
    // Kept for their events only.
    let mut _watchers = watch_config(&files, &changed);
    let mut tick = tokio::time::interval(crate::source::watch::poll_timeout(
        !_watchers.is_empty(),
        std::time::Duration::from_secs(1),
    ));
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let (forced, timer) = match hangup.as_mut() {
            Some(signal) => tokio::select! {
                _ = tick.tick() => (false, true),
                () = changed.notified() => (false, false),
                _ = signal.recv() => (true, false),
            },
            None => tokio::select! {
                _ = tick.tick() => (false, true),
                () = changed.notified() => (false, false),
            },
        };
        #[cfg(not(unix))]
        let (forced, timer) = tokio::select! {
            _ = tick.tick() => (false, true),
            () = changed.notified() => (false, false),
        };
        if !seen.moved(&files, timer) && !forced {
            continue;
        }
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
                seen = SeenConfig::of(&files);
                _watchers = watch_config(&files, &changed);
            }
            Err(crate::config::ConfigError::Invalid { problems, .. }) => {
                // One log line per problem, as `callhook check` lists them.
                for problem in &problems {
                    tracing::error!("{problem}");
                }
                tracing::error!(
                    "configuration not reloaded ({}), the old rules stay",
                    crate::problem::summary(&problems)
                );
            }
            Err(error) => tracing::error!("configuration not reloaded, the old rules stay: {error}"),
        }
    }
}

/// The configuration files as the reload last saw them.
///
/// Their bytes, not their modification times, tell a change: a change told while a file
/// is being written (truncated, not yet filled) and the write that fills it can share
/// one mtime (the kernel's clock for it is coarse), and the filled file would then look
/// unchanged and never be loaded. Configuration files are a few KB. The timer's look
/// first asks the file system for each file's length and mtime, and reads the bytes
/// only when one moved: opening the files wakes every watcher of their folder (often
/// MicroSIP's, where the sources' readers wait), and an idle daemon's periodic look
/// should run as little code as it can. A change told by a watcher is always read.
struct SeenConfig {
    meta: Vec<Option<(u64, std::time::SystemTime)>>,
    bytes: Vec<Option<Vec<u8>>>,
}

impl SeenConfig {
    fn of(files: &[std::path::PathBuf]) -> SeenConfig {
        SeenConfig {
            meta: Self::meta(files),
            bytes: Self::bytes(files),
        }
    }

    fn bytes(files: &[std::path::PathBuf]) -> Vec<Option<Vec<u8>>> {
        files.iter().map(|f| std::fs::read(f).ok()).collect()
    }

    fn meta(files: &[std::path::PathBuf]) -> Vec<Option<(u64, std::time::SystemTime)>> {
        let of = |f: &std::path::PathBuf| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        };
        files.iter().map(of).collect()
    }

    /// Whether `files` changed since last seen (`timer`: a look of the timer's, not a
    /// watcher's event); remembers what it saw.
    fn moved(&mut self, files: &[std::path::PathBuf], timer: bool) -> bool {
        let meta = Self::meta(files);
        if timer && meta == self.meta {
            return false;
        }
        let now = SeenConfig {
            meta,
            bytes: Self::bytes(files),
        };
        let moved = now.bytes != self.bytes;
        *self = now;
        moved
    }
}

/// Watchers on the folders of the configuration files, each waking `changed`; none
/// where watching fails (then the caller polls every second).
fn watch_config(
    files: &[std::path::PathBuf],
    changed: &Arc<tokio::sync::Notify>,
) -> Vec<crate::source::watch::FolderWatch> {
    let mut folders: std::collections::BTreeMap<std::path::PathBuf, Vec<std::ffi::OsString>> = Default::default();
    for file in files {
        let folder = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        folders
            .entry(folder)
            .or_default()
            .extend(file.file_name().map(|n| n.to_owned()));
    }
    let mut watchers = Vec::new();
    for (folder, names) in folders {
        let changed = changed.clone();
        let lost = Arc::new(AtomicBool::new(false));
        match crate::source::watch::watch_folder(&folder, names, lost, move || changed.notify_one()) {
            Ok(watcher) => watchers.push(watcher),
            Err(error) => {
                tracing::debug!(folder = %folder.display(), %error, "cannot watch the configuration; checking it every second");
                return Vec::new();
            }
        }
    }
    watchers
}

/// A watcher on the state dir's [`crate::store::WAKE_DIR`], where another process
/// that changed the jobs (`callhook outbox retry`, the status page) leaves a note:
/// wakes `changed`. `None` where watching fails (the outbox then looks at the database
/// every few seconds).
fn watch_outbox_notes(
    state_dir: &std::path::Path,
    changed: &Arc<tokio::sync::Notify>,
) -> Option<crate::source::watch::FolderWatch> {
    let changed = changed.clone();
    let folder = state_dir.join(crate::store::WAKE_DIR);
    let lost = Arc::new(AtomicBool::new(false));
    crate::private::ensure_dir(&folder)
        .map_err(notify::Error::io)
        .and_then(|()| crate::source::watch::watch_folder(&folder, Vec::new(), lost, move || changed.notify_one()))
        .map_err(|error| tracing::debug!(%error, "cannot watch the state dir; the outbox polls the database"))
        .ok()
}

/// The releaser thread and its stop flag.
struct Releaser {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

/// Starts the releaser thread when events can be held: it emits them once their wait
/// is over, and all still held when its stop flag is set.
fn start_releaser(shared: &Arc<Shared>, config: &Config, failed: &Failures) -> Result<Option<Releaser>, DaemonError> {
    if !shared.holds_events() {
        return Ok(None);
    }
    let pipeline = Pipeline::new(shared.clone(), Store::open(&config.state_dir)?);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let failed = failed.clone();
    let thread = std::thread::Builder::new()
        .name("correlation".into())
        .spawn(move || {
            if let Err(error) = release_held(pipeline, &flag) {
                let _ = failed.send(DaemonError::Pipeline(error));
            }
        })
        .map_err(DaemonError::Thread)?;
    Ok(Some(Releaser {
        thread,
        stop,
        shared: shared.clone(),
    }))
}

/// The releaser thread: held events out when their wait is over, all when stopping.
/// It sleeps until the earliest wait is over or another event is held: no tick.
fn release_held(mut pipeline: Pipeline, stop: &AtomicBool) -> Result<(), PipelineError> {
    while !stop.load(Ordering::SeqCst) {
        pipeline.wait_for_due();
        pipeline.release_due(jiff::Timestamp::now().as_millisecond())?;
    }
    pipeline.release_due(i64::MAX)?;
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
