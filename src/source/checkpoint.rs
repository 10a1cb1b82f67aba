//! Knowing a file by its content: fingerprints and the hash of the bytes before an offset.
//!
//! MicroSIP truncates its log on every start and rewrites it from the beginning, so a
//! path alone says nothing about whether the bytes at a stored offset are the ones read
//! before. A checkpoint therefore keeps a fingerprint (hash of the first bytes, which
//! hold the start time of the writer) and a hash of the bytes just before the offset;
//! both must match for reading to resume there.

use std::fs::File;
use std::io;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::track::open_calls::CallRows;

/// A file's fingerprint covers at most this many first bytes.
pub const FINGERPRINT_BYTES: u64 = 1024;
/// The hash before an offset covers at most this many bytes.
pub const TAIL_BYTES: u64 = 4096;

/// Hash of a file's first bytes. A file shorter than [`FINGERPRINT_BYTES`] has a
/// fingerprint of what it has so far, which [`Fingerprint::grow`] extends later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// How many first bytes the hash covers.
    pub len: u64,
    #[serde(with = "hex_bytes")]
    pub hash: [u8; 32],
}

impl Fingerprint {
    /// The fingerprint of `file` as it is now.
    pub fn of(file: &File) -> io::Result<Fingerprint> {
        let size = file.metadata()?.len();
        let len = size.min(FINGERPRINT_BYTES);
        Ok(Fingerprint {
            len,
            hash: hash_range(file, 0, len)?.unwrap_or_default(),
        })
    }

    /// Whether `file` starts with the bytes this fingerprint was taken of.
    pub fn matches(&self, file: &File) -> io::Result<bool> {
        Ok(hash_range(file, 0, self.len)? == Some(self.hash))
    }

    /// A fingerprint over more bytes, once the file has them; `self` when it covers
    /// [`FINGERPRINT_BYTES`] already or the file has not grown.
    pub(crate) fn grow(&self, file: &File) -> io::Result<Fingerprint> {
        if self.len >= FINGERPRINT_BYTES || file.metadata()?.len() <= self.len {
            return Ok(*self);
        }
        Fingerprint::of(file)
    }
}

/// A source's checkpoint: where reading goes on after a restart, and what must still
/// be there for it to. Handed downstream with the events read up to it, and stored in
/// the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub fingerprint: Fingerprint,
    /// Where reading starts again (a line start).
    pub resume_offset: u64,
    /// Hash of the bytes just before `resume_offset` (see [`tail_hash`]).
    pub tail_hash: [u8; 32],
    /// The source reader's own state, JSON.
    pub state: String,
    /// Its open calls, as rows of their own (only those changed, unless `complete`).
    pub rows: CallRows,
}

impl Checkpoint {
    /// The checkpoint of a source not read by position (the call history, known by
    /// content; the hooks, read from no file): only its state, nothing to check on
    /// restart.
    pub(crate) fn state_only(state: String) -> Checkpoint {
        Checkpoint {
            fingerprint: Fingerprint { len: 0, hash: [0; 32] },
            resume_offset: 0,
            tail_hash: [0; 32],
            state,
            rows: CallRows::default(),
        }
    }
}

/// Hash of the (at most [`TAIL_BYTES`]) bytes before `offset`; `None` when the file is
/// shorter than `offset`.
pub(crate) fn tail_hash(file: &File, offset: u64) -> io::Result<Option<[u8; 32]>> {
    let start = offset.saturating_sub(TAIL_BYTES);
    hash_range(file, start, offset - start)
}

/// SHA-256 of `len` (at most [`TAIL_BYTES`]) bytes from `start`, or `None` when the
/// file ends before them. Read into the stack, at their offset: a followed file is
/// checked this way on every append.
fn hash_range(file: &File, start: u64, len: u64) -> io::Result<Option<[u8; 32]>> {
    let mut buffer = [0u8; TAIL_BYTES as usize];
    let Some(buffer) = buffer.get_mut(..len as usize) else {
        return Err(io::Error::other(format!("{len} bytes is more than a hash covers")));
    };
    let mut filled = 0;
    while filled < buffer.len() {
        match read_at(file, &mut buffer[filled..], start + filled as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(Sha256::digest(buffer).into()))
}

/// Reads from `offset` without moving to it first: one system call where a seek and
/// a read were two. (On Windows the file's cursor moves too; no reader here relies on
/// it, each says where it reads.)
pub(crate) fn read_at(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_at(file, buffer, offset)
    }
    #[cfg(windows)]
    {
        std::os::windows::fs::FileExt::seek_read(file, buffer, offset)
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fingerprint_grows_and_detects_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"08:00:00.000 first").unwrap();
        let file = File::open(&path).unwrap();
        let small = Fingerprint::of(&file).unwrap();
        assert_eq!(small.len, 18);
        let mut append = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        append.write_all(&vec![b'x'; 2000]).unwrap();
        assert!(small.matches(&file).unwrap());
        let grown = small.grow(&file).unwrap();
        assert_eq!(grown.len, FINGERPRINT_BYTES);
        assert!(grown.matches(&file).unwrap());
        // truncated and rewritten by a new writer start
        std::fs::write(&path, b"09:00:00.000 first").unwrap();
        let file = File::open(&path).unwrap();
        assert!(!small.matches(&file).unwrap());
        assert!(!grown.matches(&file).unwrap());
    }

    #[test]
    fn tail_hash_needs_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"abcdef").unwrap();
        let file = File::open(&path).unwrap();
        assert!(tail_hash(&file, 6).unwrap().is_some());
        assert_eq!(tail_hash(&file, 7).unwrap(), None);
        assert_ne!(tail_hash(&file, 5).unwrap(), tail_hash(&file, 6).unwrap());
        assert_eq!(tail_hash(&file, 0).unwrap(), Some(Sha256::digest(b"").into()));
    }
}
