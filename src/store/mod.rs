//! The state database: one SQLite file in `state_dir`, WAL, `synchronous=FULL`.
//!
//! Holds, per source, the checkpoint (file fingerprint, resume offset, hash of the bytes
//! before it, the reader's own state as JSON); every event accepted, with whether it
//! was emitted, held or kept as another's duplicate; the correlator's memory of recent
//! calls; what `scope: call` rules decided for open calls; and the outbox's jobs
//! (`jobs`). The store decides nothing: the pipeline
//! hands it a [`Commit`] of rows already decided, and it writes them, the checkpoint
//! included, in one transaction. So a crash at any point leaves either all or nothing
//! of a batch: reading again from the stored checkpoint yields the same events with the
//! same ids, and the unique id drops them. The schema is versioned (`schema`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use thiserror::Error;

use crate::event::Event;

pub use self::jobs::{DisabledEndpoint, JobRow, JobUpdate, RuleStats, StoredJob};
pub(crate) use self::jobs::{Pending, PendingQuery};
pub use self::log_stamp::LogStamp;
use self::schema::MIGRATIONS;
pub use self::status::{DeliveryRow, FailedJob, SourceRow, WaitingJob};

mod jobs;
mod log_stamp;
mod schema;
mod status;

/// The database file's name inside `state_dir`.
pub const DATABASE_FILE: &str = "callhook.db";
/// The folder in the state dir where a process that changed the outbox's jobs (`callhook
/// outbox retry`) leaves a note for the running daemon's outbox, which watches it. The
/// outbox used to watch the database's log instead: woken by every write of its own
/// process too, that watch was ~40 % of a busy desk's CPU.
pub const WAKE_DIR: &str = "wake";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    /// The state directory or database is not this account's alone (see `private`).
    #[error("{0}")]
    NotPrivate(std::io::Error),
    #[error("cannot open state database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error(
        "state database {path} has schema version {found}, newer than this callhook knows ({known}); use a newer callhook or another state_dir"
    )]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A thread that writes to the database (the outbox's recorder) could not start or
    /// stopped.
    #[error("state database writer: {0}")]
    Thread(std::io::Error),
}

impl StoreError {
    /// Another writer held the database for longer than the busy limit (a machine
    /// too loaded to let it finish): trying again later can succeed.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            StoreError::Sql(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

/// How [`Store::in_transaction`] begins: deferred (the lock its first statement needs,
/// taken then), or immediate: a writer that takes the write lock at its start, waiting
/// there for another writer, so that what it reads is the latest commit and it never
/// upgrades a read lock to write (a wait SQLite cannot make: it fails with `SQLITE_BUSY`).
#[derive(Clone, Copy)]
enum Begin {
    Deferred,
    Immediate,
}

/// Writes one event row; returns the event to hand on, if it is one.
fn write_event(
    tx: &rusqlite::Connection,
    source: &str,
    row: &EventRow,
    now: &str,
) -> Result<Option<StoredEvent>, StoreError> {
    match row {
        EventRow::New {
            event,
            emit,
            duplicate_of,
            jobs,
        } => {
            let json = event.to_json();
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO events (id, source, call_id, type, json, created_at, emitted, duplicate_of)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    event.id,
                    source,
                    event.call_id,
                    event.kind.as_str(),
                    json,
                    now,
                    !emit,
                    duplicate_of
                ])?;
            if inserted == 0 || !emit {
                return Ok(None);
            }
            let seq = tx.last_insert_rowid();
            jobs::insert(tx, event, jobs, now)?;
            Ok(Some(StoredEvent {
                seq,
                id: event.id.clone(),
                json,
            }))
        }
        EventRow::Released { event, jobs } => {
            let json = event.to_json();
            let seq: Option<i64> = tx
                .prepare_cached("UPDATE events SET json = ?2, call_id = ?3, emitted = 0 WHERE id = ?1 RETURNING seq")?
                .query_row(params![event.id, json, event.call_id], |row| row.get(0))
                .optional()?;
            let Some(seq) = seq else {
                return Ok(None); // the row is gone: nothing to emit
            };
            jobs::insert(tx, event, jobs, now)?;
            Ok(Some(StoredEvent {
                seq,
                id: event.id.clone(),
                json,
            }))
        }
        EventRow::Superseded { id, by } => {
            tx.prepare_cached("UPDATE events SET duplicate_of = ?2 WHERE id = ?1")?
                .execute([id, by])?;
            Ok(None)
        }
    }
}

/// Stores the correlator's changed calls and deletes those it forgot.
fn write_calls(tx: &rusqlite::Connection, commit: &Commit) -> Result<(), StoreError> {
    let mut forget = tx.prepare_cached("DELETE FROM correlated_calls WHERE key = ?1")?;
    for key in &commit.calls_forgotten {
        forget.execute([key])?;
    }
    let mut remember = tx.prepare_cached(
        "INSERT INTO correlated_calls (key, last_ms, state) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET last_ms = excluded.last_ms, state = excluded.state",
    )?;
    for (key, last_ms, state) in &commit.calls_changed {
        remember.execute(params![key, last_ms, state])?;
    }
    Ok(())
}

/// Stores the call-scope decisions made and deletes those dropped.
fn write_scope(tx: &rusqlite::Connection, commit: &Commit) -> Result<(), StoreError> {
    if commit.scope_decided.is_empty() && commit.scope_dropped.is_empty() {
        return Ok(());
    }
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let mut decide = tx.prepare_cached(
        "INSERT INTO call_scope (rule, call_id, fires, decided_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (rule, call_id) DO UPDATE SET fires = excluded.fires, decided_ms = excluded.decided_ms",
    )?;
    for (rule, call_id, fires) in &commit.scope_decided {
        decide.execute(params![rule, call_id, fires, now_ms])?;
    }
    let mut drop = tx.prepare_cached("DELETE FROM call_scope WHERE rule = ?1 AND call_id = ?2")?;
    for (rule, call_id) in &commit.scope_dropped {
        drop.execute([rule, call_id])?;
    }
    Ok(())
}

/// Busy handler: retry every millisecond, give up after [`BUSY_LIMIT`].
fn retry_busy(attempt: i32) -> bool {
    if Duration::from_millis(attempt.max(0) as u64) >= BUSY_LIMIT {
        return false;
    }
    std::thread::sleep(Duration::from_millis(1));
    true
}

/// How long a transaction waits for another writer before failing.
const BUSY_LIMIT: Duration = Duration::from_secs(10);

/// A source's checkpoint as stored: where reading goes on and what must still be there
/// for it to (the source's own types, serialized by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    /// The file's identity (JSON).
    pub fingerprint: String,
    /// Where reading starts again (a line start).
    pub resume_offset: u64,
    /// Hash of the bytes just before `resume_offset`, hex.
    pub tail_hash: String,
    /// The source reader's own state, JSON.
    pub state: String,
    /// Rows of that state kept apart (a trace's open calls), by key: the value, or
    /// `None` for a row to delete. When `complete` they are all of them (the rows
    /// stored before are replaced); a stored checkpoint is read back complete.
    pub rows: Vec<(String, Option<String>)>,
    pub complete: bool,
}

/// One row of a commit, decided before it (see [`Store::commit`]); rows are written in
/// order.
#[derive(Debug, Clone, PartialEq)]
pub enum EventRow {
    /// A new event, in the form to store (the emitted form when `emit`): handed on with
    /// its jobs when `emit`, else kept as a duplicate of `duplicate_of` or held.
    New {
        event: Event,
        emit: bool,
        duplicate_of: Option<String>,
        jobs: Vec<JobRow>,
    },
    /// A held event emitted now: its row gets this emitted form, it is handed on and
    /// its jobs are added.
    Released { event: Event, jobs: Vec<JobRow> },
    /// A held event another one (`by`) takes the place of.
    Superseded { id: String, by: String },
}

/// What a commit writes besides events: the source's checkpoint and the correlator's
/// memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Commit {
    /// The source and its checkpoint (none for events released by the clock).
    pub checkpoint: Option<(String, CheckpointRow)>,
    pub events: Vec<EventRow>,
    /// Correlated calls changed: (key, last heard of in Unix ms, state JSON).
    pub calls_changed: Vec<(String, i64, String)>,
    /// Correlated calls forgotten, by key.
    pub calls_forgotten: Vec<String>,
    /// `scope: call` decisions made: (rule, call id, fires).
    pub scope_decided: Vec<(String, String, bool)>,
    /// `scope: call` decisions no longer needed: (rule, call id).
    pub scope_dropped: Vec<(String, String)>,
}

/// [`Store::commit`]'s writes, in its transaction `tx`.
fn write_commit(tx: &rusqlite::Connection, commit: &Commit) -> Result<Vec<StoredEvent>, StoreError> {
    let now = jiff::Timestamp::now().to_string();
    let mut stored = Vec::new();
    let source = commit.checkpoint.as_ref().map_or("", |(key, _)| key.as_str());
    for row in &commit.events {
        stored.extend(write_event(tx, source, row, &now)?);
    }
    write_calls(tx, commit)?;
    write_scope(tx, commit)?;
    if let Some((key, checkpoint)) = &commit.checkpoint {
        tx.prepare_cached(
            "INSERT INTO checkpoints (source, fingerprint, resume_offset, tail_hash, state, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (source) DO UPDATE SET fingerprint = excluded.fingerprint,
                resume_offset = excluded.resume_offset, tail_hash = excluded.tail_hash,
                state = excluded.state, updated_at = excluded.updated_at",
        )?
        .execute(params![
            key,
            checkpoint.fingerprint,
            checkpoint.resume_offset as i64,
            checkpoint.tail_hash,
            checkpoint.state,
            now
        ])?;
        write_checkpoint_rows(tx, key, checkpoint)?;
    }
    Ok(stored)
}

/// A checkpoint's rows: replaced when it says they are complete, else changed one by one.
fn write_checkpoint_rows(
    tx: &rusqlite::Connection,
    source: &str,
    checkpoint: &CheckpointRow,
) -> Result<(), StoreError> {
    if checkpoint.complete {
        tx.prepare_cached("DELETE FROM checkpoint_rows WHERE source = ?1")?
            .execute([source])?;
    }
    let mut upsert = tx.prepare_cached(
        "INSERT INTO checkpoint_rows (source, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (source, key) DO UPDATE SET value = excluded.value",
    )?;
    let mut delete = tx.prepare_cached("DELETE FROM checkpoint_rows WHERE source = ?1 AND key = ?2")?;
    for (key, value) in &checkpoint.rows {
        match value {
            Some(value) => upsert.execute(params![source, key, value])?,
            None => delete.execute(params![source, key])?,
        };
    }
    Ok(())
}

/// An event as stored: its place in the outbox and its JSON line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: String,
    pub json: String,
}

/// A connection to the state database. Each thread that writes opens its own.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

/// Page cache per connection, in KiB (SQLite takes a negative `cache_size` as KiB).
const CACHE_KIB: i64 = -256;
/// A transaction of this many rows or more (events and jobs a source commits, results
/// the outbox records) is written with a page cache of [`LARGE_WRITE_CACHE_KIB`]. A
/// backlog read at once (a megabyte of log per commit, thousands of jobs; the outbox's
/// results, a hundred or more per commit) touches more pages than [`CACHE_KIB`] holds:
/// SQLite then wrote pages to the log before the commit to make room (and again at the
/// commit), and dropped every page it had only read, to read it again for the next row
/// (the indexes on Call-IDs and keys take rows all over): a third of the source
/// thread's commit time in the dispatch bench. The pages are taken only as the
/// transaction touches them, and let go after it.
const LARGE_WRITE_ROWS: usize = 64;
const LARGE_WRITE_CACHE_KIB: i64 = -8192;

impl Store {
    /// Opens (creating if needed) the database in `state_dir`, migrating its schema.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        crate::private::ensure_dir(state_dir).map_err(|source| match source.kind() {
            std::io::ErrorKind::PermissionDenied => StoreError::NotPrivate(source),
            _ => StoreError::CreateDir {
                path: state_dir.to_owned(),
                source,
            },
        })?;
        let path = state_dir.join(DATABASE_FILE);
        // Owner-only before SQLite opens it: its journal files take the database's mode.
        let private = |file: &Path| crate::private::restrict_file(file).map_err(StoreError::NotPrivate);
        if !path.exists() {
            crate::private::file_options()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|source| StoreError::CreateDir {
                    path: path.clone(),
                    source,
                })?;
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            private(Path::new(&name))?;
        }
        let open_error = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_error)?;
        // Writers (sources, the output) wait for each other's short transactions. SQLite's
        // own busy timeout sleeps in steps of up to 100 ms, far above what a commit takes;
        // retrying every millisecond keeps events flowing within milliseconds.
        conn.busy_handler(Some(retry_busy)).map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_error)?;
        // A daemon holds a connection per source, the outbox's and the output's: at
        // SQLite's default 2 MB of page cache each, 10,000 calls read at once left ~3 MB
        // more in an idle daemon than with this cap (19.5 against 16.4 MB). What a commit or a read of pending jobs touches is the
        // B-trees' right edges and a few index pages; a miss costs a read from the
        // system's file cache.
        conn.pragma_update(None, "cache_size", CACHE_KIB).map_err(open_error)?;
        let mut store = Store { conn };
        store.migrate(&path)?;
        Ok(store)
    }

    /// Another connection to this connection's database, for another thread that writes.
    pub(crate) fn open_again(&self) -> Result<Store, StoreError> {
        let path = self.conn.path().map(PathBuf::from).unwrap_or_default();
        Store::open(path.parent().unwrap_or(Path::new("")))
    }

    /// Tells a running daemon's outbox to look at the jobs again (see [`WAKE_DIR`]). Best
    /// effort: without the note it looks within a few seconds anyway.
    pub(crate) fn tell_the_outbox(&self) {
        let Some(state_dir) = self.conn.path().map(Path::new).and_then(Path::parent) else {
            return;
        };
        let folder = state_dir.join(WAKE_DIR);
        let note = crate::private::ensure_dir(&folder).and_then(|()| {
            use std::io::Write;
            crate::private::file_options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(folder.join("outbox"))?
                .write_all(b"look\n")
        });
        if let Err(error) = note {
            tracing::debug!(%error, "cannot leave a note for the running outbox; it looks within seconds");
        }
    }

    /// Opens the database in `state_dir` to read only: nothing is created or migrated
    /// and no lock is taken, so it works beside a running daemon (and fails when there
    /// is no database).
    pub fn open_read_only(state_dir: &Path) -> Result<Store, StoreError> {
        let path = state_dir.join(DATABASE_FILE);
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        conn.busy_handler(Some(retry_busy)).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Store { conn })
    }

    fn migrate(&mut self, path: &Path) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: version,
                known,
            });
        }
        for migration in &MIGRATIONS[version as usize..] {
            tx.execute_batch(migration)?;
        }
        tx.pragma_update(None, "user_version", known)?;
        tx.commit()?;
        Ok(())
    }

    /// The stored checkpoint of `source`, if any.
    pub(crate) fn checkpoint(&self, source: &str) -> Result<Option<CheckpointRow>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT fingerprint, resume_offset, tail_hash, state FROM checkpoints WHERE source = ?1",
                [source],
                |row| {
                    Ok(CheckpointRow {
                        fingerprint: row.get(0)?,
                        resume_offset: row.get::<_, i64>(1)?.max(0) as u64,
                        tail_hash: row.get(2)?,
                        state: row.get(3)?,
                        rows: Vec::new(),
                        complete: true,
                    })
                },
            )
            .optional()?;
        let Some(mut row) = row else {
            return Ok(None);
        };
        let mut query = self
            .conn
            .prepare_cached("SELECT key, value FROM checkpoint_rows WHERE source = ?1 ORDER BY key")?;
        let rows = query.query_map([source], |r| Ok((r.get(0)?, Some(r.get(1)?))))?;
        row.rows = rows.collect::<Result<_, _>>()?;
        Ok(Some(row))
    }

    /// Which of `ids` are stored already (events read again after a restart).
    pub(crate) fn known_events<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<HashSet<String>, StoreError> {
        let mut known = self.conn.prepare_cached("SELECT 1 FROM events WHERE id = ?1")?;
        let mut found = HashSet::new();
        for id in ids {
            if known.exists([id])? {
                found.insert(id.to_owned());
            }
        }
        Ok(found)
    }

    /// Writes `commit` in one transaction: its events in order (an event whose id is
    /// stored already is left alone and makes no jobs), their jobs, the correlator's
    /// memory and the checkpoint. Returns the events to hand on, in order.
    pub fn commit(&mut self, commit: &Commit) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = commit
            .events
            .iter()
            .map(|row| match row {
                EventRow::New { jobs, .. } | EventRow::Released { jobs, .. } => 1 + jobs.len(),
                EventRow::Superseded { .. } => 1,
            })
            .sum();
        self.sized_for(rows, |store| {
            store.in_transaction(Begin::Immediate, |tx| write_commit(tx, commit))
        })
    }

    /// Runs `write`, a transaction of about `rows` rows, with a page cache large enough
    /// for it when it is large (see [`LARGE_WRITE_ROWS`]); the cache is set back to its
    /// cap after, which frees the pages it took above it.
    fn sized_for<T>(
        &mut self,
        rows: usize,
        write: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if rows < LARGE_WRITE_ROWS {
            return write(self);
        }
        self.conn.pragma_update(None, "cache_size", LARGE_WRITE_CACHE_KIB)?;
        let written = write(self);
        // What was written stands either way: a cache left large costs memory only.
        if let Err(error) = self.conn.pragma_update(None, "cache_size", CACHE_KIB) {
            tracing::warn!(%error, "cannot set the page cache back to its cap");
        }
        written
    }

    /// Runs `body` in one transaction, begun as `begin` says and committed when `body`
    /// succeeds, rolled back when it or the commit fails. `BEGIN` and `COMMIT` are
    /// prepared once per connection: rusqlite's `transaction()` parses both anew every
    /// time, and the source, the output, the outbox and its recorder each run one or
    /// more transactions for every event.
    fn in_transaction<T>(
        &self,
        begin: Begin,
        body: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let begin = match begin {
            Begin::Deferred => "BEGIN",
            Begin::Immediate => "BEGIN IMMEDIATE",
        };
        self.conn.prepare_cached(begin)?.execute([])?;
        let result = body(&self.conn).and_then(|value| {
            self.conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(value)
        });
        if result.is_err()
            && !self.conn.is_autocommit()
            && let Err(error) = self.conn.prepare_cached("ROLLBACK").and_then(|mut r| r.execute([]))
        {
            tracing::warn!(%error, "cannot roll back a failed transaction");
        }
        result
    }

    /// The correlated calls stored, heard of at or after `since_ms` (Unix ms), as
    /// (key, state JSON).
    pub(crate) fn correlated_calls(&self, since_ms: i64) -> Result<Vec<(String, String)>, StoreError> {
        let mut query = self
            .conn
            .prepare("SELECT key, state FROM correlated_calls WHERE last_ms >= ?1")?;
        let rows = query.query_map([since_ms], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The call-scope decisions stored, made at or after `since_ms` (Unix ms), oldest
    /// first, as (rule, call id, fires); older ones (calls whose end never came) are
    /// deleted.
    pub(crate) fn call_scope(&self, since_ms: i64) -> Result<Vec<(String, String, bool)>, StoreError> {
        self.conn
            .execute("DELETE FROM call_scope WHERE decided_ms < ?1", [since_ms])?;
        let mut query = self
            .conn
            .prepare("SELECT rule, call_id, fires FROM call_scope ORDER BY decided_ms")?;
        let rows = query.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Events not yet handed to the output, oldest first (at most `limit`).
    pub(crate) fn unemitted(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let mut query = self
            .conn
            .prepare_cached("SELECT seq, id, json FROM events WHERE emitted = 0 ORDER BY seq LIMIT ?1")?;
        let rows = query.query_map([limit as i64], |row| {
            Ok(StoredEvent {
                seq: row.get(0)?,
                id: row.get(1)?,
                json: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks events as handed to the output.
    pub(crate) fn mark_emitted(&mut self, seqs: &[i64]) -> Result<(), StoreError> {
        self.in_transaction(Begin::Deferred, |tx| {
            let mut update = tx.prepare_cached("UPDATE events SET emitted = 1 WHERE seq = ?1")?;
            for seq in seqs {
                update.execute([seq])?;
            }
            Ok(())
        })
    }

    /// Lowers this connection to `synchronous=NORMAL`, for writes that may be lost to a
    /// power cut without harm (the outbox's delivery results: a lost one only means a
    /// delivery is made again, with the same `webhook-id`).
    pub(crate) fn relax_sync(&mut self) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(())
    }

    /// Leaves the write-ahead log's checkpoints (which fsync the log and the database) to
    /// the other connections, which commit after this one (marking events emitted,
    /// recording deliveries): a commit here then never waits for one.
    pub(crate) fn leave_checkpoints(&mut self) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(())
    }

    /// Takes the write-ahead log's checkpoints at a threshold of this connection's own,
    /// between 750 and 1,250 pages (SQLite's default is 1,000 everywhere). Daemons
    /// started together on one disk and fed alike (a terminal server's desks, the fleet
    /// bench's 50) would otherwise checkpoint in the same instant: each checkpoint
    /// fsyncs megabytes, and every commit that fsyncs on that disk meanwhile waits
    /// behind all of them (fsyncs of 100–200 ms at 50 daemons, measured with `perf
    /// trace`, where one alone takes under 1 ms).
    pub(crate) fn spread_checkpoints(&mut self) -> Result<(), StoreError> {
        use std::hash::{BuildHasher, Hasher};
        // std's RandomState is keyed at random per process: a random number, no crate.
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let pages = 750 + (random % 501) as i64;
        self.conn.pragma_update(None, "wal_autocheckpoint", pages)?;
        Ok(())
    }

    /// Number of events stored.
    pub fn event_count(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM events", [], |row| row.get::<_, i64>(0))? as u64)
    }

    /// All stored events' JSON, oldest first (for tests and inspection).
    pub fn all_events(&self) -> Result<Vec<String>, StoreError> {
        let mut query = self.conn.prepare("SELECT json FROM events ORDER BY seq")?;
        let rows = query.query_map([], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The steps of SQLite's plan for `sql` with `params` (`EXPLAIN QUERY PLAN`'s
    /// `detail` column, e.g. `SEARCH j USING COVERING INDEX …`): the tests of the reads
    /// that must stay index-only check them.
    #[cfg(test)]
    pub(crate) fn query_plan(&self, sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        let mut plan = self.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        plan.query_map(params, |row| row.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CONTRACT_VERSION, Direction, EventType, SourceKind, event_id};

    fn event(call: &str, kind: EventType) -> Event {
        Event {
            v: CONTRACT_VERSION,
            id: event_id(SourceKind::SipTrace, Direction::Inbound, call, kind),
            kind,
            at: jiff::Timestamp::UNIX_EPOCH.to_zoned_datetime(jiff::tz::TimeZone::UTC),
            call_id: call.into(),
            direction: Direction::Inbound,
            local_number: "1".into(),
            remote_number: "2".into(),
            remote_name: None,
            outcome: None,
            status_code: None,
            ended_by: None,
            ring_s: None,
            talk_s: None,
            source: SourceKind::SipTrace,
            source_path: "x".into(),
        }
    }

    fn checkpoint(offset: u64) -> CheckpointRow {
        CheckpointRow {
            fingerprint: "{}".into(),
            resume_offset: offset,
            tail_hash: "09".repeat(32),
            state: "{}".into(),
            rows: Vec::new(),
            complete: true,
        }
    }

    #[test]
    fn checkpoint_rows_are_replaced_when_complete_and_changed_one_by_one_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let commit = |rows: Vec<(&str, Option<&str>)>, complete: bool| Commit {
            checkpoint: Some((
                "s".into(),
                CheckpointRow {
                    rows: rows
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
                        .collect(),
                    complete,
                    ..checkpoint(1)
                },
            )),
            ..Commit::default()
        };
        let stored = |store: &Store| store.checkpoint("s").unwrap().unwrap().rows;
        store
            .commit(&commit(vec![("a", Some("1")), ("b", Some("2"))], true))
            .unwrap();
        store
            .commit(&commit(vec![("a", None), ("c", Some("3")), ("b", Some("4"))], false))
            .unwrap();
        assert_eq!(
            stored(&store),
            vec![("b".into(), Some("4".into())), ("c".into(), Some("3".into()))]
        );
        store.commit(&commit(vec![("d", Some("5"))], true)).unwrap();
        assert_eq!(stored(&store), vec![("d".into(), Some("5".into()))]);
    }

    fn emit(events: &[Event], offset: u64) -> Commit {
        Commit {
            checkpoint: Some(("s".into(), checkpoint(offset))),
            events: events
                .iter()
                .map(|event| EventRow::New {
                    event: event.clone(),
                    emit: true,
                    duplicate_of: None,
                    jobs: Vec::new(),
                })
                .collect(),
            ..Commit::default()
        }
    }

    #[test]
    fn the_job_due_longest_ago_is_one_that_could_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let job = |key: &str, endpoint: &str| JobRow {
            key: key.into(),
            rule: "r".into(),
            endpoint: endpoint.into(),
            action: "{}".into(),
            body: None,
            ordered: true,
        };
        let mut commit = emit(&[event("c1", EventType::Ringing)], 1);
        if let EventRow::New { jobs, .. } = &mut commit.events[0] {
            *jobs = vec![job("a", "e1"), job("b", "e1")];
        }
        store.commit(&commit).unwrap();
        let now = jiff::Timestamp::now().as_millisecond();
        // Made just now (no retry time yet): due now, not long ago.
        let (_, overdue) = store.waiting_extremes().unwrap();
        assert!((overdue.unwrap().next_at - now).abs() < 60_000);
        // The first retries in an hour; the second waits behind it, so is not due.
        let first = store.jobs(None, 1).unwrap()[0].id;
        let later = now + 3_600_000;
        store
            .record_jobs(&[(
                first,
                JobUpdate::Retry {
                    next_at: later,
                    error: "HTTP 503".into(),
                },
            )])
            .unwrap();
        let (oldest, overdue) = store.waiting_extremes().unwrap();
        assert_eq!(oldest.unwrap().id, first);
        assert_eq!(overdue.unwrap().next_at, later);
        // Made (or retried by hand) 200 s ago and still not tried: due 200 s ago.
        let mut commit = emit(&[event("c2", EventType::Ringing)], 2);
        if let EventRow::New { jobs, .. } = &mut commit.events[0] {
            *jobs = vec![job("c", "e2")];
        }
        store.commit(&commit).unwrap();
        store
            .conn
            .execute(
                "UPDATE jobs SET updated_at = '2000-01-01T00:00:00Z' WHERE key = 'c'",
                [],
            )
            .unwrap();
        let (_, overdue) = store.waiting_extremes().unwrap();
        assert_eq!(overdue.unwrap().next_at, 946_684_800_000);
    }

    #[test]
    fn events_are_stored_once_with_their_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.checkpoint("s").unwrap(), None);
        let a = event("a", EventType::Ringing);
        let stored = store.commit(&emit(std::slice::from_ref(&a), 10)).unwrap();
        assert_eq!(stored.len(), 1);
        // read again after a restart: same id, not stored again
        let b = event("a", EventType::Ended);
        assert_eq!(store.known_events([a.id.as_str(), b.id.as_str()]).unwrap().len(), 1);
        let stored = store.commit(&emit(&[a, b], 20)).unwrap();
        assert_eq!(
            stored.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            vec![event("a", EventType::Ended).id]
        );
        assert_eq!(store.event_count().unwrap(), 2);
        assert_eq!(store.checkpoint("s").unwrap(), Some(checkpoint(20)));
        drop(store);
        // survives reopening; migrations are idempotent
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.checkpoint("s").unwrap().unwrap().resume_offset, 20);
        let pending = store.unemitted(10).unwrap();
        assert_eq!(pending.len(), 2);
        store.mark_emitted(&[pending[0].seq]).unwrap();
        assert_eq!(store.unemitted(10).unwrap().len(), 1);
    }

    #[test]
    fn held_events_are_released_or_superseded() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let held = event("h", EventType::Ringing);
        let mut commit = emit(std::slice::from_ref(&held), 1);
        if let EventRow::New { emit, .. } = &mut commit.events[0] {
            *emit = false;
        }
        assert!(store.commit(&commit).unwrap().is_empty());
        let mut shown = held.clone();
        shown.call_id = "public".into();
        let released = store
            .commit(&Commit {
                events: vec![EventRow::Released {
                    event: shown,
                    jobs: Vec::new(),
                }],
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(released.len(), 1);
        assert!(released[0].json.contains("\"public\""));
    }

    #[test]
    fn newer_schema_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let error = Store::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("schema version 99"), "{error}");
    }
}
