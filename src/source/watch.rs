//! Wake-ups for a followed file: "it may have changed", nothing more.
//!
//! A native watcher (`notify`: inotify, ReadDirectoryChangesW, FSEvents) on the file's
//! folder wakes the reader within a millisecond of a write. It is only a hint: on
//! Windows no change events arrive while MicroSIP holds the file open, network shares
//! send none, and a folder that does not exist yet cannot be watched. So the reader also
//! polls on a timer ([`Wakeup::wait`]), and the watcher is retried while it is missing.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

/// Retry a missing native watcher this often.
const RETRY_WATCH: Duration = Duration::from_secs(5);

/// Wakes one reader: from file-system events, from [`Waker::wake`], or on its poll timer.
pub struct Wakeup {
    path: PathBuf,
    sender: SyncSender<()>,
    receiver: Receiver<()>,
    watcher: Option<RecommendedWatcher>,
    last_attempt: Option<Instant>,
    poll_interval: Duration,
}

/// Wakes a [`Wakeup`] from another thread (shutdown, tests).
#[derive(Clone)]
pub struct Waker(SyncSender<()>);

impl Waker {
    pub(crate) fn wake(&self) {
        // A full channel already holds a wake-up: nothing is lost.
        let _ = self.0.try_send(());
    }
}

impl Wakeup {
    /// Wake-ups for `path`, polling every `poll_interval` at least.
    pub fn new(path: &Path, poll_interval: Duration) -> Wakeup {
        let (sender, receiver) = sync_channel(1);
        let mut wakeup = Wakeup {
            path: path.to_owned(),
            sender,
            receiver,
            watcher: None,
            last_attempt: None,
            poll_interval,
        };
        wakeup.ensure_watcher();
        wakeup
    }

    pub(crate) fn waker(&self) -> Waker {
        Waker(self.sender.clone())
    }

    /// Whether file-system events are coming (else only the poll timer wakes).
    pub(crate) fn is_watching(&self) -> bool {
        self.watcher.is_some()
    }

    /// Blocks until woken or the poll interval passes. Several wake-ups that arrived
    /// meanwhile count as one.
    pub fn wait(&mut self) {
        match self.receiver.recv_timeout(self.poll_interval) {
            Ok(()) | Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
        }
        while self.receiver.try_recv().is_ok() {}
        self.ensure_watcher();
    }

    fn ensure_watcher(&mut self) {
        if self.watcher.is_some() || self.last_attempt.is_some_and(|t| t.elapsed() < RETRY_WATCH) {
            return;
        }
        self.last_attempt = Some(Instant::now());
        let folder = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = self.path.file_name().map(|n| n.to_owned());
        let sender = self.sender.clone();
        let handler = move |result: notify::Result<notify::Event>| {
            let Ok(event) = result else { return };
            let ours = event.paths.is_empty() || event.paths.iter().any(|p| p.file_name() == name.as_deref());
            if ours && let Err(TrySendError::Full(())) = sender.try_send(()) {
                // already woken
            }
        };
        match notify::recommended_watcher(handler).and_then(|mut watcher| {
            watcher.watch(&folder, RecursiveMode::NonRecursive)?;
            Ok(watcher)
        }) {
            Ok(watcher) => {
                tracing::debug!(folder = %folder.display(), "watching for changes");
                self.watcher = Some(watcher);
            }
            Err(error) => {
                tracing::debug!(folder = %folder.display(), %error, "no file-system events; polling only");
            }
        }
    }
}
