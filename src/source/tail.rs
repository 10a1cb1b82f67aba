//! Following one file as it grows: new bytes, truncation, replacement, rotation.
//!
//! Each [`Tail::poll`] re-reads from the stored position, so it does not matter what
//! woke it (a file-system event, the poll timer, nothing at all). Before reading it
//! checks that the file is still the one it was reading:
//!
//! - smaller than the position, or its first bytes changed: truncated (MicroSIP does
//!   this on every start, on settings changes and on resume) or rewritten in place;
//!   reading restarts at 0;
//! - the path names another file now (renamed away and re-created, deleted and
//!   re-created): the old file is read to its end first, then the new one from 0;
//! - the path does not exist yet: nothing happens until it does.
//!
//! Never in the writer's way: files are opened with [`open_shared`] (on Windows read,
//! write and delete sharing, so MicroSIP can truncate, rename or delete its log while it
//! is read), and on Windows a path whose file was deleted while still open here (the
//! name stays taken, "delete pending", until the last handle closes) makes the tail read
//! the old file to its end and let go of it, so the writer can create it anew.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::checkpoint::{Fingerprint, read_at};

/// Bytes read at a time, at most.
const READ_CHUNK: usize = 256 * 1024;
/// Bytes read at a time when less is waiting: an append is a few KB.
const SMALL_READ: usize = 16 * 1024;
/// Read at most this much per poll, so a backlog (a long downtime, `start_at:
/// beginning` on a big log) becomes many batches of bounded size, not one holding every
/// event of the backlog in memory; [`Tail::has_more`] says to poll again at once.
/// 1 MB: a batch costs about five times its bytes while it is committed (events, their
/// JSON, the correlator's changed calls); at 4 MB the catch-up of 50,000 open calls
/// peaked 20 MB above what the daemon keeps, and the allocator kept most of it.
const READ_PER_POLL: u64 = 4 * READ_CHUNK as u64;

/// What a poll found.
#[derive(Debug, PartialEq, Eq)]
pub enum TailEvent<'a> {
    /// The file appeared (it did not exist before); its bytes follow from offset 0.
    Appeared,
    /// The file was truncated or rewritten in place; its bytes follow from offset 0.
    Truncated,
    /// The path now names another file; the old one has been read to its end and the
    /// new one's bytes follow from offset 0.
    Rotated,
    /// New bytes, in order.
    Data(&'a [u8]),
}

/// One followed file; see the module docs.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    file: Option<File>,
    position: u64,
    fingerprint: Option<Fingerprint>,
    buffer: Vec<u8>,
    /// The last poll stopped before the end.
    more: bool,
    /// The open file's modification time at the last poll.
    modified: Option<SystemTime>,
}

impl Tail {
    /// Follows `path`, which need not exist yet.
    pub fn new(path: impl Into<PathBuf>) -> Tail {
        Tail {
            path: path.into(),
            file: None,
            position: 0,
            fingerprint: None,
            buffer: Vec::new(),
            more: false,
            modified: None,
        }
    }

    /// Starts reading `file` (opened from this tail's path) at `position`.
    pub fn start(&mut self, file: File, position: u64, fingerprint: Option<Fingerprint>) {
        self.file = Some(file);
        self.position = position;
        self.fingerprint = fingerprint;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Offset of the next byte to read.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The open file, if any (for checkpoint hashes).
    pub(crate) fn file_mut(&mut self) -> Option<&mut File> {
        self.file.as_mut()
    }

    /// The fingerprint of the file being read, taken when first read.
    pub(crate) fn fingerprint(&self) -> Option<Fingerprint> {
        self.fingerprint
    }

    /// Reads whatever is new, handing each finding to `on` in order.
    ///
    /// A round with new bytes costs the open file's `fstat`, the path's `stat`, a read
    /// of the first bytes (the fingerprint) and one read of the new ones: this runs
    /// for every append MicroSIP makes (hundreds a second on a busy desk).
    pub(crate) fn poll(&mut self, mut on: impl FnMut(TailEvent<'_>)) -> io::Result<()> {
        if self.file.is_none() {
            match open_shared(&self.path) {
                Ok(file) => {
                    self.start(file, 0, None);
                    on(TailEvent::Appeared);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let mut open = self.file.as_ref().map(File::metadata).transpose()?;
        if !self.path_is_same_file(open.as_ref())? {
            // The old file is read to its end before the new one is taken up.
            self.read_to_end(&mut on, u64::MAX, u64::MAX)?;
            match open_shared(&self.path) {
                Ok(file) => {
                    open = Some(file.metadata()?);
                    self.start(file, 0, None);
                    on(TailEvent::Rotated);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if delete_pending(&e) => {
                    // Deleted while open here: closing is what frees the name. A file
                    // created there later is new (`Appeared`, read from 0).
                    self.file = None;
                    self.fingerprint = None;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        let (Some(file), Some(open)) = (self.file.as_ref(), open) else {
            return Ok(());
        };
        let size = open.len();
        self.modified = open.modified().ok();
        let rewritten = match self.fingerprint {
            Some(fingerprint) if size >= fingerprint.len => !fingerprint.matches(file)?,
            _ => false,
        };
        if size < self.position || rewritten {
            self.position = 0;
            self.fingerprint = None;
            on(TailEvent::Truncated);
        }
        self.read_to_end(&mut on, READ_PER_POLL, size)
    }

    /// Whether the last poll stopped before the file's end (see [`READ_PER_POLL`]).
    pub(crate) fn has_more(&self) -> bool {
        self.more
    }

    /// The open file's modification time when it was last polled.
    pub(crate) fn modified(&self) -> Option<SystemTime> {
        self.modified
    }

    /// Reads from the position to `end` (the size a poll found; what was appended
    /// since wakes the next one) or to the end of the open file, `limit` bytes at most.
    fn read_to_end(&mut self, on: &mut impl FnMut(TailEvent<'_>), limit: u64, end: u64) -> io::Result<()> {
        self.more = false;
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        let mut taken = 0u64;
        // Sized to what is waiting: whole chunks in a catch-up, and small again after
        // it (each watched file kept 256 KB for good otherwise).
        let waiting = usize::try_from(end.saturating_sub(self.position)).unwrap_or(usize::MAX);
        let want = waiting.clamp(SMALL_READ, READ_CHUNK);
        if self.buffer.len() < want {
            self.buffer.resize(want, 0);
        } else if self.buffer.len() >= 4 * want {
            self.buffer.truncate(want);
            self.buffer.shrink_to_fit();
        }
        while self.position < end {
            if taken >= limit {
                self.more = true;
                break;
            }
            let read = match read_at(file, &mut self.buffer, self.position) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.position += read as u64;
            taken += read as u64;
            on(TailEvent::Data(&self.buffer[..read]));
        }
        self.fingerprint = Some(match self.fingerprint {
            Some(fingerprint) => fingerprint.grow(file)?,
            None => Fingerprint::of(file)?,
        });
        Ok(())
    }

    /// Whether the path still names the open file. A path that is gone (deleted, or
    /// renamed and not yet re-created) still counts as the same file: the open handle
    /// is read on.
    #[cfg(unix)]
    fn path_is_same_file(&self, open: Option<&std::fs::Metadata>) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let Some(open) = open else {
            return Ok(true);
        };
        match std::fs::metadata(&self.path) {
            Ok(at_path) => Ok(open.dev() == at_path.dev() && open.ino() == at_path.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Whether the path still names the open file, judged by content: std offers no
    /// stable file id on Windows, and a file that took the path over starts with other
    /// bytes (a new writer's start time).
    #[cfg(not(unix))]
    fn path_is_same_file(&self, _open: Option<&std::fs::Metadata>) -> io::Result<bool> {
        let Some(fingerprint) = self.fingerprint else {
            return Ok(true);
        };
        match open_shared(&self.path) {
            Ok(at_path) => {
                let size = at_path.metadata()?.len();
                if size < fingerprint.len {
                    // shorter than what we read: truncated in place or a new file; the
                    // size check in `poll` handles the in-place case
                    return Ok(true);
                }
                fingerprint.matches(&at_path)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) if delete_pending(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Opens a followed file for reading without getting in its writer's way. On Windows
/// with read, write and delete sharing (`FILE_SHARE_READ | FILE_SHARE_WRITE |
/// FILE_SHARE_DELETE`): MicroSIP opens its log with truncation on every start and may
/// be asked to delete or rename it, none of which may fail because callhook reads it.
/// (std's default is the same today; it is spelt out so that it stays so.)
pub fn open_shared(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        const FILE_SHARE_READ: u32 = 0x1;
        const FILE_SHARE_WRITE: u32 = 0x2;
        const FILE_SHARE_DELETE: u32 = 0x4;
        options.share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE);
    }
    options.open(path)
}

/// Whether opening a path failed because its file is deleted but still open (Windows
/// reports `STATUS_DELETE_PENDING` as access denied); elsewhere never.
fn delete_pending(error: &io::Error) -> bool {
    cfg!(windows) && error.kind() == io::ErrorKind::PermissionDenied
}

/// Where to start reading a file seen for the first time at its end: just after its
/// last complete line (so a line being written is read whole), with that line's number.
pub(crate) fn end_of_last_line(file: &mut File) -> io::Result<(u64, u64)> {
    let size = file.metadata()?.len();
    file.seek(SeekFrom::Start(0))?;
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut lines = 0u64;
    let mut last_newline_end = 0u64;
    let mut offset = 0u64;
    while offset < size {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buffer[..read];
        lines += memchr::memchr_iter(b'\n', chunk).count() as u64;
        if let Some(last) = memchr::memrchr(b'\n', chunk) {
            last_newline_end = offset + last as u64 + 1;
        }
        offset += read as u64;
    }
    Ok((last_newline_end, lines + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Polls and returns what was seen, data joined per poll.
    fn poll(tail: &mut Tail) -> Vec<String> {
        let mut seen = Vec::new();
        let mut data = String::new();
        tail.poll(|event| match event {
            TailEvent::Data(bytes) => data.push_str(&String::from_utf8_lossy(bytes)),
            other => {
                if !data.is_empty() {
                    seen.push(std::mem::take(&mut data));
                }
                seen.push(format!("{other:?}"));
            }
        })
        .unwrap();
        if !data.is_empty() {
            seen.push(data);
        }
        seen
    }

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn appears_grows_truncates_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("MicroSIP_log.txt");
        let mut tail = Tail::new(&path);
        assert!(poll(&mut tail).is_empty(), "absent file: nothing");
        append(&path, "one\ntw");
        assert_eq!(poll(&mut tail), ["Appeared", "one\ntw"]);
        assert!(poll(&mut tail).is_empty());
        append(&path, "o\n");
        assert_eq!(poll(&mut tail), ["o\n"]);
        // MicroSIP restart: truncate and write anew (shorter)
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(poll(&mut tail), ["Truncated", "new\n"]);
        // truncated and rewritten past the old position before the next poll
        std::fs::write(&path, "NEW first line written again, longer than before\n").unwrap();
        assert_eq!(
            poll(&mut tail),
            ["Truncated", "NEW first line written again, longer than before\n"]
        );
        // rotation: rename away, writer appends to the old one, then a new file appears
        let rotated = dir.path().join("MicroSIP_log.txt.1");
        std::fs::rename(&path, &rotated).unwrap();
        append(&rotated, "last words\n");
        append(&path, "fresh\n");
        assert_eq!(poll(&mut tail), ["last words\n", "Rotated", "fresh\n"]);
        // delete: the handle is read on; a re-created file is a new file
        std::fs::remove_file(&path).unwrap();
        assert!(poll(&mut tail).is_empty());
        append(&path, "again\n");
        let seen = poll(&mut tail);
        assert_eq!(seen, ["Rotated", "again\n"]);
    }

    #[test]
    fn start_at_end_of_last_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nunfinished").unwrap();
        let mut file = File::open(&path).unwrap();
        assert_eq!(end_of_last_line(&mut file).unwrap(), (4, 3));
        std::fs::write(&path, "").unwrap();
        let mut file = File::open(&path).unwrap();
        assert_eq!(end_of_last_line(&mut file).unwrap(), (0, 1));
    }
}
