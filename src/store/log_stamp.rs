//! Whether anything was committed since a moment, told without running SQLite.
//!
//! Every commit, by any connection or process, writes the database's write-ahead log
//! (`state.db-wal`): its length grows, or, after a checkpoint let the log start over,
//! its pages are written again and its modification time moves. An idle daemon's
//! outbox looks at the jobs every few seconds in case a wake-up was missed; asking the
//! file system first spares it SQLite's query path, whose code pages (handed back by
//! [`crate::memory`] and mapped again at each look) were a quarter of an idle
//! daemon's resident memory.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::Store;

/// The log file's length and modification time at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStamp(Option<(u64, SystemTime)>);

impl LogStamp {
    /// The stamp of the log at `path` now; unknown when it cannot be read, and always
    /// on Windows: there a file's modification time may lag while a handle that writes
    /// it stays open (SQLite keeps the log's open for good), so the look asks SQLite.
    pub fn of(path: Option<&Path>) -> LogStamp {
        if !cfg!(unix) {
            return LogStamp(None);
        }
        let known = path
            .and_then(|path| std::fs::metadata(path).ok())
            .and_then(|meta| Some((meta.len(), meta.modified().ok()?)));
        LogStamp(known)
    }

    /// Whether the log may have been written between `self` and `now`: unless both
    /// stamps are known and equal. The file system's clock for modification times is
    /// coarse (a few ms), so a commit in the same tick as the earlier stamp, over a log
    /// started over to the same length, goes unseen: this check only stands behind a
    /// wake-up that was missed, never in front of one.
    pub fn moved(&self, now: &LogStamp) -> bool {
        self.0.is_none() || self != now
    }
}

impl Store {
    /// The database's write-ahead log file (`None` for an in-memory database).
    pub(crate) fn log_path(&self) -> Option<PathBuf> {
        let path = self.conn.path().filter(|path| !path.is_empty())?;
        Some(PathBuf::from(format!("{path}-wal")))
    }
}

#[cfg(test)]
mod tests {
    use super::LogStamp;

    #[test]
    #[cfg(unix)]
    fn a_commit_by_another_connection_moves_the_stamp() {
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = store.log_path().unwrap();
        assert_eq!(log, dir.path().join(format!("{}-wal", crate::store::DATABASE_FILE)));
        let before = LogStamp::of(Some(&log));
        assert!(!before.moved(&LogStamp::of(Some(&log))), "nothing committed: unchanged");
        let other = store.open_again().unwrap();
        other
            .conn
            .execute_batch("CREATE TABLE scratch (x); INSERT INTO scratch VALUES (1);")
            .unwrap();
        assert!(before.moved(&LogStamp::of(Some(&log))));
    }

    #[test]
    fn an_unreadable_log_always_counts_as_moved() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none-wal");
        let unknown = LogStamp::of(Some(&missing));
        assert!(unknown.moved(&LogStamp::of(Some(&missing))));
        assert!(LogStamp::of(None).moved(&LogStamp::of(None)));
    }
}
