//! Wake-ups for a followed file: "it may have changed", nothing more.
//!
//! A native watcher (`notify`: inotify, ReadDirectoryChangesW, FSEvents) on the file's
//! folder wakes the reader within a millisecond of a write. It is only a hint: on
//! Windows no change events arrive while MicroSIP holds the file open, network shares
//! send none, and a folder that does not exist yet cannot be watched. So the reader also
//! polls on a timer ([`Wakeup::wait`]), and the watcher is retried while it is missing.
//!
//! Where the watcher can be trusted (a watched folder on Linux or macOS) the timer is
//! only a slow safety net ([`SAFETY_NET`]), so an idle daemon does not wake; on Windows,
//! or without a watcher, it is the source's `poll_interval`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
mod direct;
mod hub;

pub use hub::FolderWatch;

/// Retry a missing native watcher this often.
const RETRY_WATCH: Duration = Duration::from_secs(5);

/// With change notifications that can be trusted, look anyway this often (a change the
/// watcher missed is seen this late at worst).
pub const SAFETY_NET: Duration = Duration::from_secs(5);

/// Whether a working watcher's events can be trusted to cover every write. Not on
/// Windows: ReadDirectoryChangesW reports nothing while MicroSIP holds its log open.
pub const NOTIFICATIONS_COVER_WRITES: bool = !cfg!(windows);

/// How long to wait between looks: `poll_interval` unless a trusted watcher runs.
pub fn poll_timeout(watching: bool, poll_interval: Duration) -> Duration {
    if watching && NOTIFICATIONS_COVER_WRITES {
        poll_interval.max(SAFETY_NET)
    } else {
        poll_interval
    }
}

/// Watches `folder` (not recursively) and calls `on_change` for each event about a file
/// with one of `names` (every event when empty). `lost` is set when the folder itself went
/// away (its watch is gone with it), so the caller can watch it again. The watch lasts
/// as long as the returned [`FolderWatch`].
///
/// Every watch of the process shares one native watcher, so one thread: with a watcher
/// each, a trace and a configuration file in one folder woke two threads per write
/// (the `notify` threads were a fifth of the machine's CPU with 50 desks on it).
pub fn watch_folder(
    folder: &Path,
    names: Vec<std::ffi::OsString>,
    lost: Arc<AtomicBool>,
    on_change: impl Fn() + Send + Sync + 'static,
) -> notify::Result<FolderWatch> {
    // One spelling per folder: events name the path the folder was watched by.
    let folder = std::fs::canonicalize(folder).map_err(notify::Error::io)?;
    hub::add(
        folder,
        hub::Interest {
            names,
            lost,
            on_change: Box::new(on_change),
        },
    )
}

/// An event that says something was opened or read, nothing changed.
pub(super) fn is_only_a_read(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(kind, notify::EventKind::Access(access) if !matches!(access, AccessKind::Close(AccessMode::Write)))
}

/// Wakes one reader: from file-system events, from [`Waker::wake`], or on its poll timer.
pub struct Wakeup {
    path: PathBuf,
    sender: SyncSender<()>,
    receiver: Receiver<()>,
    watcher: Option<FolderWatch>,
    /// Set by the watcher when its folder went away (then it watches nothing).
    lost: Arc<AtomicBool>,
    last_attempt: Option<Instant>,
    poll_interval: Duration,
    /// Linux: the reader's own inotify watch, waited on by its thread (see `direct`);
    /// the shared watcher is the fallback.
    #[cfg(target_os = "linux")]
    direct: Option<direct::DirectWatch>,
    /// Linux: wakes the direct watch's wait.
    #[cfg(target_os = "linux")]
    bell: Option<direct::Bell>,
}

/// Wakes a [`Wakeup`] from another thread (shutdown, tests).
#[derive(Clone)]
pub struct Waker {
    sender: SyncSender<()>,
    #[cfg(target_os = "linux")]
    bell: Option<direct::Bell>,
}

impl Waker {
    pub(crate) fn wake(&self) {
        // A full channel already holds a wake-up: nothing is lost.
        let _ = self.sender.try_send(());
        #[cfg(target_os = "linux")]
        if let Some(bell) = &self.bell {
            bell.ring();
        }
    }
}

impl Wakeup {
    /// Wake-ups for `path`, polling every `poll_interval` at least where change
    /// notifications are missing or cannot be trusted (see the module docs).
    pub fn new(path: &Path, poll_interval: Duration) -> Wakeup {
        let (sender, receiver) = sync_channel(1);
        let mut wakeup = Wakeup {
            path: path.to_owned(),
            sender,
            receiver,
            watcher: None,
            lost: Arc::new(AtomicBool::new(false)),
            last_attempt: None,
            poll_interval,
            #[cfg(target_os = "linux")]
            direct: None,
            #[cfg(target_os = "linux")]
            bell: direct::Bell::new().ok(),
        };
        wakeup.ensure_watcher();
        wakeup
    }

    pub(crate) fn waker(&self) -> Waker {
        Waker {
            sender: self.sender.clone(),
            #[cfg(target_os = "linux")]
            bell: self.bell.clone(),
        }
    }

    /// Whether file-system events are coming (else only the poll timer wakes).
    pub(crate) fn is_watching(&self) -> bool {
        #[cfg(target_os = "linux")]
        if self.direct.is_some() {
            return true;
        }
        self.watcher.is_some()
    }

    /// Blocks until woken or the poll timeout passes. Several wake-ups that arrived
    /// meanwhile count as one.
    pub fn wait(&mut self) {
        let timeout = poll_timeout(self.is_watching(), self.poll_interval);
        #[cfg(target_os = "linux")]
        if let (Some(direct), Some(bell)) = (&mut self.direct, &self.bell) {
            if direct.wait(bell, timeout) == direct::Woken::FolderLost {
                self.lost.store(true, Ordering::SeqCst);
            }
            while self.receiver.try_recv().is_ok() {}
            self.ensure_watcher();
            return;
        }
        match self.receiver.recv_timeout(timeout) {
            Ok(()) | Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
        }
        while self.receiver.try_recv().is_ok() {}
        self.ensure_watcher();
    }

    fn ensure_watcher(&mut self) {
        if self.lost.swap(false, Ordering::SeqCst) {
            tracing::debug!(path = %self.path.display(), "folder watch lost; watching again");
            self.watcher = None;
            #[cfg(target_os = "linux")]
            {
                self.direct = None;
            }
            self.last_attempt = None;
        }
        if self.is_watching() || self.last_attempt.is_some_and(|t| t.elapsed() < RETRY_WATCH) {
            return;
        }
        self.last_attempt = Some(Instant::now());
        let folder = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        #[cfg(target_os = "linux")]
        if self.bell.is_some()
            && let Some(name) = self.path.file_name()
        {
            match direct::DirectWatch::new(&folder, name.to_owned()) {
                Ok(watch) => {
                    tracing::debug!(folder = %folder.display(), "watching for changes (own inotify)");
                    self.direct = Some(watch);
                    return;
                }
                Err(error) => {
                    tracing::debug!(folder = %folder.display(), %error, "no inotify of its own; the shared watcher");
                }
            }
        }
        let names = self.path.file_name().map(|n| n.to_owned()).into_iter().collect();
        let sender = self.sender.clone();
        let on_change = move || {
            // A full channel already holds a wake-up.
            let _ = sender.try_send(());
        };
        match watch_folder(&folder, names, self.lost.clone(), on_change) {
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
