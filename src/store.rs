//! The state database: one SQLite file in `state_dir`, WAL, `synchronous=FULL`.
//!
//! Holds, per source, the checkpoint (file fingerprint, resume offset, hash of the bytes
//! before it, the reader's own state as JSON) and every event accepted (the outbox that
//! sinks deliver from). A chunk's events and its checkpoint commit in one transaction, so
//! a crash at any point leaves either both or neither: reading again from the stored
//! checkpoint yields the same events with the same ids, and the unique id drops them.
//! The schema is versioned (`PRAGMA user_version`) and migrated on open.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use thiserror::Error;

use crate::correlate::{Changes, CorrelatedCall};
use crate::event::Event;
use crate::source::checkpoint::Fingerprint;

/// The database file's name inside `state_dir`.
pub const DATABASE_FILE: &str = "callhook.db";

/// Schema migrations, applied in order; `user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: checkpoints and events
    "CREATE TABLE checkpoints (
        source TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        resume_offset INTEGER NOT NULL,
        tail_hash TEXT NOT NULL,
        state TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        call_id TEXT NOT NULL,
        type TEXT NOT NULL,
        json TEXT NOT NULL,
        created_at TEXT NOT NULL,
        emitted INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX events_unemitted ON events (seq) WHERE emitted = 0;",
    // 2: the outbox: one job per (event, rule with an action)
    "CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,
        event_id TEXT NOT NULL,
        rule TEXT NOT NULL,
        call_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        ordered INTEGER NOT NULL DEFAULT 1,
        action TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX jobs_pending ON jobs (id) WHERE status = 'pending';",
    // 3: correlation: events another source reported first, and the calls correlated
    "ALTER TABLE events ADD COLUMN duplicate_of TEXT;
    CREATE TABLE correlated_calls (
        key TEXT PRIMARY KEY,
        last_ms INTEGER NOT NULL,
        state TEXT NOT NULL
    );",
    // 4: endpoints that answered 410 Gone, until `callhook outbox retry`
    "CREATE TABLE disabled_endpoints (
        endpoint TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        since TEXT NOT NULL
    );",
];

/// What becomes of an event newly stored (see [`crate::correlate`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Emitted as given, with the jobs the rules made of it.
    Emit { event: Box<Event>, jobs: Vec<NewJob> },
    /// Kept as a duplicate of an event another source reported first.
    Duplicate { of: String },
    /// Kept, not yet emitted: waiting for a richer source's event.
    Held,
}

/// What a commit does for one new event: held events to emit now (as emitted, with
/// their jobs), held events it takes the place of (their id, its id), and its fate.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub released: Vec<(Event, Vec<NewJob>)>,
    pub superseded: Vec<(String, String)>,
    pub fate: Fate,
}

/// Decides, inside a commit, what becomes of each newly stored event; see
/// [`crate::correlate`].
pub trait Route {
    fn route(&mut self, event: &Event) -> Routed;
    /// What the router learned, stored with the events.
    fn changes(&mut self) -> Changes {
        Changes::default()
    }
}

/// Without correlation: every new event is emitted with the jobs the function makes.
impl<F: FnMut(&Event) -> Vec<NewJob>> Route for F {
    fn route(&mut self, event: &Event) -> Routed {
        Routed {
            released: Vec::new(),
            superseded: Vec::new(),
            fate: Fate::Emit {
                event: Box::new(event.clone()),
                jobs: self(event),
            },
        }
    }
}

/// A job for the outbox, made by a rule from a newly stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Idempotency key (`webhook-id`): the event id and the rule name.
    pub key: String,
    pub rule: String,
    /// What the job's delivery is grouped by (a webhook's origin, a command's program).
    pub endpoint: String,
    /// The rendered action, JSON.
    pub action: String,
    /// Deliver after the call's earlier jobs to the same endpoint.
    pub ordered: bool,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open state database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error(
        "state database {path} has schema version {found}, newer than this callhook knows ({known}); use a newer callhook or another state_dir"
    )]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database holds an unreadable checkpoint for {source_key}: {reason}")]
    BadCheckpoint { source_key: String, reason: String },
}

/// A held event emitted: its row gets the emitted form and is due for the output; its
/// jobs are added. `None` when the row is gone (nothing to emit).
fn release(
    tx: &rusqlite::Transaction<'_>,
    event: &Event,
    jobs: &[NewJob],
    now: &str,
) -> Result<Option<StoredEvent>, StoreError> {
    let json = event.to_json();
    let seq: Option<i64> = tx
        .prepare_cached("UPDATE events SET json = ?2, call_id = ?3, emitted = 0 WHERE id = ?1 RETURNING seq")?
        .query_row(params![event.id, json, event.call_id], |row| row.get(0))
        .optional()?;
    let Some(seq) = seq else {
        return Ok(None);
    };
    insert_jobs(tx, event, jobs, now)?;
    Ok(Some(StoredEvent {
        seq,
        id: event.id.clone(),
        json,
    }))
}

fn insert_jobs(tx: &rusqlite::Transaction<'_>, event: &Event, jobs: &[NewJob], now: &str) -> Result<(), StoreError> {
    let mut insert_job = tx.prepare_cached(
        "INSERT INTO jobs (key, event_id, rule, call_id, endpoint, action, next_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?7) ON CONFLICT (key) DO NOTHING",
    )?;
    for job in jobs {
        insert_job.execute(params![
            job.key,
            event.id,
            job.rule,
            event.call_id,
            job.endpoint,
            job.action,
            now
        ])?;
    }
    Ok(())
}

/// Stores the correlator's changed calls and deletes those it forgot.
fn store_changes(tx: &rusqlite::Transaction<'_>, changes: Changes) -> Result<(), StoreError> {
    let mut forget = tx.prepare_cached("DELETE FROM correlated_calls WHERE key = ?1")?;
    for key in &changes.forgotten {
        forget.execute([key])?;
    }
    let mut remember = tx.prepare_cached(
        "INSERT INTO correlated_calls (key, last_ms, state) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET last_ms = excluded.last_ms, state = excluded.state",
    )?;
    for call in &changes.changed {
        let state = serde_json::to_string(call).expect("call serializes");
        remember.execute(params![call.key, call.last_ms(), state])?;
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

/// A source's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub fingerprint: Fingerprint,
    /// Where reading starts again (a line start).
    pub resume_offset: u64,
    /// Hash of the bytes just before `resume_offset` (see `source::checkpoint`).
    pub tail_hash: [u8; 32],
    /// The source reader's own state, JSON.
    pub state: String,
}

impl Checkpoint {
    /// The checkpoint of a source not read by position (the call history, known by
    /// content; the hooks, read from no file): only its state, nothing to check on
    /// restart.
    pub fn state_only(state: String) -> Checkpoint {
        Checkpoint {
            fingerprint: Fingerprint { len: 0, hash: [0; 32] },
            resume_offset: 0,
            tail_hash: [0; 32],
            state,
        }
    }
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

impl Store {
    /// Opens (creating if needed) the database in `state_dir`, migrating its schema.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join(DATABASE_FILE);
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
        let mut store = Store { conn };
        store.migrate(&path)?;
        Ok(store)
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
    pub fn checkpoint(&self, source: &str) -> Result<Option<Checkpoint>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT fingerprint, resume_offset, tail_hash, state FROM checkpoints WHERE source = ?1",
                [source],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((fingerprint, offset, tail, state)) = row else {
            return Ok(None);
        };
        let bad = |reason: String| StoreError::BadCheckpoint {
            source_key: source.to_owned(),
            reason,
        };
        let fingerprint: Fingerprint = serde_json::from_str(&fingerprint).map_err(|e| bad(e.to_string()))?;
        let mut tail_hash = [0u8; 32];
        hex::decode_to_slice(&tail, &mut tail_hash).map_err(|e| bad(e.to_string()))?;
        Ok(Some(Checkpoint {
            fingerprint,
            resume_offset: offset.max(0) as u64,
            tail_hash,
            state,
        }))
    }

    /// Stores `events` (those whose id is new), what `route` makes of each new one (the
    /// event as emitted and its jobs, a duplicate's mark, or held), what `route` learned,
    /// and `checkpoint`, in one transaction. Returns the events to emit, in order; events
    /// already stored (read again after a restart) are left out and make no jobs;
    /// duplicates and held events are stored as not to be emitted.
    pub fn commit(
        &mut self,
        source: &str,
        checkpoint: &Checkpoint,
        events: &[Event],
        route: &mut dyn Route,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let now = jiff::Timestamp::now().to_string();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut stored = Vec::new();
        {
            let mut known = tx.prepare_cached("SELECT 1 FROM events WHERE id = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (id, source, call_id, type, json, created_at, emitted, duplicate_of)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for event in events {
                if known.exists([&event.id])? {
                    continue;
                }
                let routed = route.route(event);
                for (released, jobs) in &routed.released {
                    stored.extend(release(&tx, released, jobs, &now)?);
                }
                for (held, of) in &routed.superseded {
                    tx.prepare_cached("UPDATE events SET duplicate_of = ?2 WHERE id = ?1")?
                        .execute([held, of])?;
                }
                // Emitted: the form the stream shows; otherwise: as the source reported it.
                let (json, call_id, emitted, duplicate_of) = match &routed.fate {
                    Fate::Emit { event: shown, .. } => (shown.to_json(), shown.call_id.as_str(), 0, None),
                    Fate::Duplicate { of } => (event.to_json(), event.call_id.as_str(), 1, Some(of.as_str())),
                    Fate::Held => (event.to_json(), event.call_id.as_str(), 1, None),
                };
                insert.execute(params![
                    event.id,
                    source,
                    call_id,
                    event.kind.as_str(),
                    json,
                    now,
                    emitted,
                    duplicate_of
                ])?;
                if let Fate::Emit { event: emitted, jobs } = routed.fate {
                    stored.push(StoredEvent {
                        seq: tx.last_insert_rowid(),
                        id: emitted.id.clone(),
                        json,
                    });
                    insert_jobs(&tx, &emitted, &jobs, &now)?;
                }
            }
            store_changes(&tx, route.changes())?;
            let fingerprint = serde_json::to_string(&checkpoint.fingerprint).expect("fingerprint serializes");
            tx.prepare_cached(
                "INSERT INTO checkpoints (source, fingerprint, resume_offset, tail_hash, state, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (source) DO UPDATE SET fingerprint = excluded.fingerprint,
                    resume_offset = excluded.resume_offset, tail_hash = excluded.tail_hash,
                    state = excluded.state, updated_at = excluded.updated_at",
            )?
            .execute(params![
                source,
                fingerprint,
                checkpoint.resume_offset as i64,
                hex::encode(checkpoint.tail_hash),
                checkpoint.state,
                now
            ])?;
        }
        tx.commit()?;
        Ok(stored)
    }

    /// Emits held events whose wait is over (as emitted, with their jobs) and stores
    /// what the correlator learned, in one transaction; returns them to hand on.
    pub fn release(
        &mut self,
        released: &[(Event, Vec<NewJob>)],
        changes: Changes,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let now = jiff::Timestamp::now().to_string();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut stored = Vec::new();
        for (event, jobs) in released {
            stored.extend(release(&tx, event, jobs, &now)?);
        }
        store_changes(&tx, changes)?;
        tx.commit()?;
        Ok(stored)
    }

    /// The correlated calls stored, heard of at or after `since_ms` (Unix ms); a stored
    /// call that cannot be read is skipped with a warning (it only loses its memory).
    pub fn correlated_calls(&self, since_ms: i64) -> Result<Vec<CorrelatedCall>, StoreError> {
        let mut query = self
            .conn
            .prepare("SELECT key, state FROM correlated_calls WHERE last_ms >= ?1")?;
        let rows = query.query_map([since_ms], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let mut calls = Vec::new();
        for row in rows {
            let (key, state) = row?;
            match serde_json::from_str(&state) {
                Ok(call) => calls.push(call),
                Err(error) => tracing::warn!(%key, %error, "stored correlated call unreadable; forgotten"),
            }
        }
        Ok(calls)
    }

    /// Events not yet handed to the output, oldest first (at most `limit`).
    pub fn unemitted(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
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
    pub fn mark_emitted(&mut self, seqs: &[i64]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut update = tx.prepare_cached("UPDATE events SET emitted = 1 WHERE seq = ?1")?;
            for seq in seqs {
                update.execute([seq])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The connection, for the other modules' queries (the outbox).
    pub(crate) fn connection(&mut self) -> &mut Connection {
        &mut self.conn
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

    fn checkpoint(offset: u64) -> Checkpoint {
        Checkpoint {
            fingerprint: Fingerprint { len: 3, hash: [7; 32] },
            resume_offset: offset,
            tail_hash: [9; 32],
            state: "{}".into(),
        }
    }

    #[test]
    fn events_are_stored_once_with_their_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.checkpoint("s").unwrap(), None);
        let a = event("a", EventType::Ringing);
        let stored = store
            .commit("s", &checkpoint(10), std::slice::from_ref(&a), &mut |_: &Event| {
                Vec::new()
            })
            .unwrap();
        assert_eq!(stored.len(), 1);
        // read again after a restart: same id, not stored again
        let b = event("a", EventType::Ended);
        let stored = store
            .commit("s", &checkpoint(20), &[a, b], &mut |_: &Event| Vec::new())
            .unwrap();
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
