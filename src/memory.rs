//! Memory a quiet daemon hands back to the system.
//!
//! A daemon that watches three files sits idle most of the day, and its resident set
//! is what users see in the task manager. Two things keep it above what it holds:
//!
//! - **Freed heap.** glibc keeps freed memory in its arenas when live data sits above
//!   it (calls still open are allocated between a catch-up's transient batches), so a
//!   daemon that read 50,000 open calls stayed ~20 MB above its live data.
//! - **Code pages of start-up.** The executable's code is mapped as it runs, in 64 KB
//!   runs around each page touched (the kernel's fault-around). Reading the
//!   configuration, compiling templates, migrating the database, a catch-up: about
//!   10 MB of code that an idle daemon never runs again stays mapped. Those pages are
//!   clean copies of the file: dropped from this process's page tables, they stay in
//!   the page cache and come back with a minor fault when the code runs again.
//!
//! [`trim_when_idle`] does both once the pipeline has been quiet for a while: not per batch
//! (trimming walks every arena and the next event would refault its code), and never
//! on a timer while nothing happens (an idle daemon must not wake up).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::Duration;

/// How long the pipeline must be quiet before memory is handed back.
pub const QUIET: Duration = Duration::from_secs(5);

/// The process's trimming thread, once [`trim_when_idle`] started it.
static TRIM: OnceLock<Inner> = OnceLock::new();

struct Inner {
    /// Bumped by every [`active`].
    activity: AtomicU64,
    /// The trimming thread is parked with no timeout: the next activity must unpark it.
    asleep: AtomicBool,
    thread: Thread,
}

/// Starts the process's trimming thread (`callhook run`): memory is handed back once
/// nothing called [`active`] for `quiet`. Where nothing can be handed back (not Linux
/// with glibc), starts nothing. A second call does nothing.
pub fn trim_when_idle(quiet: Duration) {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || TRIM.get().is_some() {
        return;
    }
    let spawned = std::thread::Builder::new().name("idle-trim".into()).spawn(move || {
        // Set before this thread was unparked below, or never (no trimming then).
        while TRIM.get().is_none() {
            std::thread::park();
        }
        if let Some(inner) = TRIM.get() {
            trim_when_quiet(inner, quiet);
        }
    });
    if let Ok(handle) = spawned {
        let _ = TRIM.set(Inner {
            activity: AtomicU64::new(1),
            asleep: AtomicBool::new(false),
            thread: handle.thread().clone(),
        });
        handle.thread().unpark();
    }
}

/// Notes work done (a batch committed, jobs delivered): memory is handed back
/// [`QUIET`] after the last call. Two atomic operations; wakes the trimming thread only
/// when it sleeps; nothing when no trimming thread runs.
pub fn active() {
    if let Some(inner) = TRIM.get() {
        inner.activity.fetch_add(1, Ordering::SeqCst);
        if inner.asleep.swap(false, Ordering::SeqCst) {
            inner.thread.unpark();
        }
    }
}

/// The trimming thread: waits for `quiet` without activity, trims, then sleeps until
/// the next activity.
fn trim_when_quiet(inner: &Inner, quiet: Duration) {
    loop {
        // Quiet long enough? (A spurious wake-up waits out the rest.)
        let seen = inner.activity.load(Ordering::Relaxed);
        let until = std::time::Instant::now() + quiet;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            std::thread::park_timeout(left);
            if left.is_zero() {
                break;
            }
        }
        if inner.activity.load(Ordering::Relaxed) != seen {
            continue;
        }
        release_freed_memory();
        hand_back_code_pages();
        // Sleep until the next activity, with no timeout.
        // SeqCst on both sides: an activity either sees `asleep` and unparks, or
        // this loop sees the activity.
        inner.asleep.store(true, Ordering::SeqCst);
        while inner.activity.load(Ordering::SeqCst) == seen {
            std::thread::park();
        }
        inner.asleep.store(false, Ordering::SeqCst);
    }
}

/// Gives the heap's free pages back to the system (glibc's `malloc_trim`; elsewhere
/// nothing). Walks every arena: call it once per burst, not per batch.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only gives free pages of the allocator's own heaps back.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops the executable's clean pages (code, read-only data) from this process's page
/// tables (Linux). Only mappings of the executable itself that are read-only and hold
/// no written page (`Anonymous: 0 kB`: the relocated read-only data is written once at
/// start, and is left alone): the same bytes come back from the file, through the page
/// cache, at their next use. Returns the bytes of the mappings handed back.
pub fn hand_back_code_pages() -> usize {
    #[cfg(target_os = "linux")]
    {
        let (Ok(exe), Ok(smaps)) = (
            std::fs::read_link("/proc/self/exe"),
            std::fs::read_to_string("/proc/self/smaps"),
        ) else {
            return 0;
        };
        clean_mappings(&smaps, &exe)
            .into_iter()
            .map(|(start, end)| {
                // SAFETY: the range is a whole read-only mapping of this process's own
                // executable, none of its pages written (so none can be: it is not
                // writable), backed by the unchanged file: MADV_DONTNEED only unmaps
                // its pages, and each comes back from the file at its next use.
                let done = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
                if done == 0 { end - start } else { 0 }
            })
            .sum()
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// The read-only mappings of `exe` in a `/proc/self/smaps` text with no written page,
/// as address ranges.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn clean_mappings(smaps: &str, exe: &std::path::Path) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    // The mapping being read, while it still qualifies.
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(mapping) = Mapping::of_header(line) {
            found.extend(current.take());
            let read_only = mapping.perms == "r-xp" || mapping.perms == "r--p";
            current = (read_only && std::path::Path::new(mapping.path) == exe).then_some(mapping.range);
        } else if let Some(anonymous) = line.strip_prefix("Anonymous:")
            && anonymous.trim() != "0 kB"
        {
            current = None;
        }
    }
    found.extend(current);
    found
}

/// A mapping's first line in `smaps`: `start-end perms offset device inode path`.
struct Mapping<'a> {
    range: (usize, usize),
    perms: &'a str,
    /// Empty for an anonymous mapping.
    path: &'a str,
}

impl<'a> Mapping<'a> {
    /// `None` for one of a mapping's field lines (`Rss: ...`).
    fn of_header(line: &'a str) -> Option<Mapping<'a>> {
        let mut fields = line.split_ascii_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let range = (
            usize::from_str_radix(start, 16).ok()?,
            usize::from_str_radix(end, 16).ok()?,
        );
        let perms = fields.next()?;
        // offset, device, inode, then the path (which may hold spaces).
        let path = line.splitn(6, ' ').nth(5).unwrap_or_default().trim_start();
        (range.1 > range.0).then_some(Mapping { range, perms, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executables_unwritten_read_only_mappings_are_taken() {
        let smaps = "\
5590d8ad0000-5590d8bd0000 r--p 00000000 fe:01 123 /opt/call hook/callhook
Rss:                1860 kB
Anonymous:             0 kB
5590d8bd0000-5590d9bd0000 r-xp 00100000 fe:01 123 /opt/call hook/callhook
Rss:                3108 kB
Anonymous:             0 kB
5590d9bd0000-5590d9cd0000 r--p 01100000 fe:01 123 /opt/call hook/callhook
Rss:                 604 kB
Anonymous:           604 kB
5590d9cd0000-5590d9dd0000 rw-p 01200000 fe:01 123 /opt/call hook/callhook
Anonymous:            36 kB
7f0000000000-7f0000100000 r-xp 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
7ffd1fdc6000-7ffd1fde7000 rw-p 00000000 00:00 0                          [stack]
";
        let exe = std::path::Path::new("/opt/call hook/callhook");
        assert_eq!(
            clean_mappings(smaps, exe),
            vec![(0x5590d8ad0000, 0x5590d8bd0000), (0x5590d8bd0000, 0x5590d9bd0000)]
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn code_handed_back_still_runs() {
        let handed_back = hand_back_code_pages();
        assert!(handed_back > 0, "the test binary's own code mapping was not found");
        // The code runs on: its pages come back from the file.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(maps.contains("r-xp"));
        assert_eq!(format!("{}", 6 * 7), "42");
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_quiet_process_is_trimmed_and_activity_wakes_the_trimmer() {
        trim_when_idle(Duration::from_millis(20));
        let inner = TRIM.get().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !inner.asleep.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "never trimmed while quiet");
            std::thread::sleep(Duration::from_millis(5));
        }
        active();
        assert!(
            !inner.asleep.load(Ordering::SeqCst),
            "activity did not wake the trimmer"
        );
        while !inner.asleep.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "not trimmed again after activity");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
