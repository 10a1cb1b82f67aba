//! Linux: a reader's own inotify watch, waited on by the reader's thread itself.
//!
//! Through the shared watcher ([`super::hub`]) a write to a trace wakes two threads:
//! `notify`'s, which reads the event and signals the reader, then the reader. MicroSIP
//! writes every log entry on its own (~130 per call), so with 50 desks on one 2-core
//! machine those hand-overs were a quarter of the desks' CPU. Here the reader's thread
//! blocks in `poll(2)` on its own inotify descriptor and an eventfd (its [`Bell`], rung
//! to wake it for other reasons): one wake-up per write, and writes that land while it
//! reads are one wake-up. Where no inotify instance can be had (the per-user limit,
//! 128 by default), the caller falls back to the shared watcher.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchMask};

/// An eventfd that wakes the reader's `poll` from another thread.
#[derive(Clone)]
pub(crate) struct Bell(Arc<OwnedFd>);

impl Bell {
    pub(crate) fn new() -> io::Result<Bell> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor
        // that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        Ok(Bell(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd this value owns. A full
        // counter (EAGAIN) already holds a wake-up.
        unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Clears the rings so far.
    fn clear(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; non-blocking, so at most EAGAIN.
        unsafe { libc::read(self.0.as_raw_fd(), (&raw mut count).cast(), 8) };
    }
}

/// What a wait saw.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The file may have changed, or the bell rang.
    Look,
    /// Nothing happened to the file within the timeout.
    TimeUp,
    /// The folder itself went away (its watch with it): watch it again.
    FolderLost,
}

/// One folder watched for one file name, by the thread that waits on it.
pub(crate) struct DirectWatch {
    inotify: Inotify,
    name: OsString,
    buffer: Vec<u8>,
}

impl DirectWatch {
    /// Watches `folder` for changes to the file `name` in it.
    pub(crate) fn new(folder: &Path, name: OsString) -> io::Result<DirectWatch> {
        let inotify = Inotify::init()?;
        inotify.watches().add(
            folder,
            WatchMask::MODIFY
                | WatchMask::CLOSE_WRITE
                | WatchMask::ATTRIB
                | WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::MOVED_FROM
                | WatchMask::MOVED_TO
                | WatchMask::DELETE_SELF
                | WatchMask::MOVE_SELF
                | WatchMask::ONLYDIR,
        )?;
        Ok(DirectWatch {
            inotify,
            name,
            buffer: vec![0; 4096],
        })
    }

    /// Blocks until the file changes, `bell` rings or `timeout` passes. Events about
    /// other files of the folder (MicroSIP's ini beside its log) are read and waited
    /// past.
    pub(crate) fn wait(&mut self, bell: &Bell, timeout: Duration) -> Woken {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [
                libc::pollfd {
                    fd: self.inotify.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: bell.0.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // Rounded up: a wait of 0 ms before the deadline would spin.
            let millis = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
            // SAFETY: `fds` is a live array of two pollfd for descriptors this watch and
            // the bell own.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, millis) };
            if ready == 0 {
                return Woken::TimeUp;
            }
            if ready < 0 {
                // Interrupted: look anyway, it costs one round.
                return Woken::Look;
            }
            if fds[1].revents != 0 {
                bell.clear();
                // Read what the watch holds too, so it does not wake the next wait.
                return self.drain().unwrap_or(Woken::Look);
            }
            if let Some(woken) = self.drain() {
                return woken;
            }
        }
    }

    /// Reads the events waiting, in one read; `None` when none is about the file or
    /// the folder. One read, not reads until none is left: the last one would only say
    /// "nothing more" (a system call per append, on a path taken hundreds of times a
    /// second), and events left unread make the next `poll` return at once.
    fn drain(&mut self) -> Option<Woken> {
        let events = match self.inotify.read_events(&mut self.buffer) {
            Ok(events) => events,
            // WouldBlock: nothing there. Another error: look, the timer stays the net.
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return None,
            Err(_) => return Some(Woken::Look),
        };
        let mut woken = None;
        for event in events {
            let mask = event.mask;
            if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED) {
                woken = Some(Woken::FolderLost);
            } else if mask.contains(EventMask::Q_OVERFLOW) || event.name == Some(self.name.as_os_str()) {
                woken = woken.or(Some(Woken::Look));
            }
        }
        woken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_write_to_the_file_wakes_and_other_files_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let bell = Bell::new().unwrap();
        let mut watch = DirectWatch::new(dir.path(), "trace.log".into()).unwrap();
        std::fs::write(dir.path().join("other.ini"), b"x").unwrap();
        assert_eq!(watch.wait(&bell, Duration::from_millis(200)), Woken::TimeUp);
        let mut file = std::fs::File::create(dir.path().join("trace.log")).unwrap();
        file.write_all(b"line\n").unwrap();
        assert_eq!(watch.wait(&bell, Duration::from_secs(60)), Woken::Look);
        // Read once: the events of that write do not wake the next wait.
        assert_eq!(watch.wait(&bell, Duration::from_millis(100)), Woken::TimeUp);
    }

    #[test]
    fn the_bell_wakes_and_the_folder_going_away_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("logs");
        std::fs::create_dir(&folder).unwrap();
        let bell = Bell::new().unwrap();
        let mut watch = DirectWatch::new(&folder, "trace.log".into()).unwrap();
        let ringer = bell.clone();
        std::thread::spawn(move || ringer.ring());
        assert_eq!(watch.wait(&bell, Duration::from_secs(60)), Woken::Look);
        std::fs::remove_dir(&folder).unwrap();
        assert_eq!(watch.wait(&bell, Duration::from_secs(60)), Woken::FolderLost);
    }
}
