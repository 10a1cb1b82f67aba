//! One native watcher for the whole process (see [`super::watch_folder`]): the folders
//! watched, who wants to hear of each, and the handler that tells them.
//!
//! Two locks, so the handler can never wait for a `watch` call that waits for it: the
//! registry (taken briefly, by the handler and by [`add`] and [`FolderWatch`]'s drop)
//! and the watcher itself (held around `watch`/`unwatch` calls only, which `notify`
//! answers from its own thread).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

/// What one caller wants to hear of a folder.
pub(super) struct Interest {
    /// The file names it cares about (all when empty).
    pub names: Vec<std::ffi::OsString>,
    /// Set when the folder itself went away.
    pub lost: Arc<AtomicBool>,
    pub on_change: Box<dyn Fn() + Send + Sync>,
}

type Registry = HashMap<PathBuf, Vec<(u64, Interest)>>;

struct Hub {
    registry: RwLock<Registry>,
    /// Made on the first watch; `None` again never (a failed start is retried).
    watcher: Mutex<Option<RecommendedWatcher>>,
    next: AtomicU64,
}

fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(|| Hub {
        registry: RwLock::default(),
        watcher: Mutex::default(),
        next: AtomicU64::new(0),
    })
}

/// A folder watched for one caller; dropping it ends that caller's interest (and the
/// native watch, when it was the last).
pub struct FolderWatch {
    folder: PathBuf,
    id: u64,
}

impl std::fmt::Debug for FolderWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderWatch").field("folder", &self.folder).finish()
    }
}

/// Registers `interest` in `folder` (canonical) and (re)starts the native watch on it:
/// again even when it was watched, since a folder removed and made anew needs a new one.
pub(super) fn add(folder: PathBuf, interest: Interest) -> notify::Result<FolderWatch> {
    let hub = hub();
    let mut guard = hub.watcher.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        *guard = Some(notify::recommended_watcher(handle)?);
    }
    let id = hub.next.fetch_add(1, Ordering::Relaxed);
    write(hub).entry(folder.clone()).or_default().push((id, interest));
    let watch = FolderWatch { folder, id };
    let started = match guard.as_mut() {
        Some(watcher) => watcher.watch(&watch.folder, RecursiveMode::NonRecursive),
        None => Ok(()),
    };
    // On failure `watch` is dropped, taking the interest out again; its drop takes
    // this lock.
    drop(guard);
    started?;
    Ok(watch)
}

impl Drop for FolderWatch {
    fn drop(&mut self) {
        let hub = hub();
        let mut watcher = hub.watcher.lock().unwrap_or_else(|e| e.into_inner());
        let last = {
            let mut registry = write(hub);
            let Some(interests) = registry.get_mut(&self.folder) else {
                return;
            };
            interests.retain(|(id, _)| *id != self.id);
            let last = interests.is_empty();
            if last {
                registry.remove(&self.folder);
            }
            last
        };
        if last && let Some(watcher) = watcher.as_mut() {
            // Gone already when the folder was removed.
            let _ = watcher.unwatch(&self.folder);
        }
    }
}

fn write(hub: &Hub) -> std::sync::RwLockWriteGuard<'_, Registry> {
    hub.registry.write().unwrap_or_else(|e| e.into_inner())
}

/// The native watcher's handler: tells each interest in the folder of each path.
fn handle(result: notify::Result<notify::Event>) {
    let registry = hub().registry.read().unwrap_or_else(|e| e.into_inner());
    let Ok(event) = result else {
        // The watcher failed: every watch may be gone.
        return tell_everyone(&registry, true);
    };
    // Reading the folder (or a file in it) is reported too: the reader woken by it
    // would read again and be woken again, for ever. A file closed after writing
    // still counts.
    if super::is_only_a_read(&event.kind) {
        return;
    }
    if event.need_rescan() || event.paths.is_empty() {
        return tell_everyone(&registry, event.need_rescan());
    }
    for path in &event.paths {
        // The folder itself (removed or renamed: its watch is gone).
        if let Some(interests) = registry.get(path) {
            for (_, interest) in interests {
                interest.lost.store(true, Ordering::SeqCst);
                (interest.on_change)();
            }
        }
        let (Some(folder), Some(name)) = (path.parent(), path.file_name()) else {
            continue;
        };
        for (_, interest) in registry.get(folder).into_iter().flatten() {
            if interest.names.is_empty() || interest.names.iter().any(|n| n == name) {
                (interest.on_change)();
            }
        }
    }
}

/// Wakes every interest; `lost` also tells each that its watch may be gone.
fn tell_everyone(registry: &Registry, lost: bool) {
    for (_, interest) in registry.values().flatten() {
        if lost {
            interest.lost.store(true, Ordering::SeqCst);
        }
        (interest.on_change)();
    }
}
