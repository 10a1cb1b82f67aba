//! The live task of one source (SIP trace or call-log CSV): wake, read, commit, hand on.
//!
//! Takes a [`Source`], its own [`Store`] connection, and a channel to the output; runs
//! until the shutdown flag is set. Each round reads what is new ([`Tail`]), turns it into
//! events ([`LiveReader`]), stores events and checkpoint in one transaction, and only
//! then hands the newly stored events on. After a crash the stored checkpoint says where
//! to read again; events read twice keep their ids and the store drops them, so nothing
//! is lost or repeated.
//!
//! Starting up, the stored checkpoint is trusted only if the file still holds the bytes
//! it was taken of (fingerprint, hash before the offset). Otherwise MicroSIP truncated or
//! replaced its log meanwhile: the calls open back then end as `unknown` and the file is
//! read from its start. A file seen for the first time is read from its end by default.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::civil::Date;
use thiserror::Error;

use super::checkpoint::{Fingerprint, tail_hash};
use super::reader::LiveReader;
use super::snapshot::follow_snapshots;
use super::tail::{Tail, TailEvent};
use super::watch::Wakeup;
use crate::config::{Source, SourceKindConfig, StartAt};
use crate::correlate::{Changes, Correlator, Verdict};
use crate::event::Event;
use crate::parse::log_time::file_day;
use crate::rules::SharedEngine;
use crate::store::{Checkpoint, Fate, NewJob, Route, Routed, Store, StoreError, StoredEvent};

/// Without new events, a moved offset is checkpointed at most this often.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A source stopped for good.
#[derive(Debug, Error)]
pub enum FollowError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs one source until `shutdown` is set; see the module docs. `wakeup` wakes it
/// (file-system events, the poll timer, shutdown). A `history` source, rewritten whole
/// rather than appended to, is followed by [`follow_snapshots`] instead.
pub fn follow(
    source: &Source,
    mut store: Store,
    mut wakeup: Wakeup,
    shutdown: Arc<AtomicBool>,
    downstream: Downstream,
) -> Result<(), FollowError> {
    if source.kind == SourceKindConfig::History {
        return follow_snapshots(source, store, wakeup, shutdown, downstream);
    }
    let mut follower = Follower::start(source, &mut store, downstream)?;
    if !wakeup.is_watching() {
        tracing::info!(path = %source.path.display(), "no file-system events for this folder; polling every {:?}", source.poll_interval);
    }
    loop {
        follower.poll(&mut store)?;
        if shutdown.load(Ordering::SeqCst) {
            break;
        }
        wakeup.wait();
    }
    follower.commit(&mut store)?;
    Ok(())
}

/// Where a source's events go: past the correlator (shared by all sources) into the
/// store with the jobs the rules make of them, then to the output; the outbox is woken
/// when there are jobs.
pub struct Downstream {
    pub correlator: SharedCorrelator,
    pub rules: SharedEngine,
    /// Woken when a commit made jobs: the outbox delivers them at once.
    pub jobs_waiting: Arc<tokio::sync::Notify>,
    pub output: Sender<Vec<StoredEvent>>,
}

/// The correlator all sources of one daemon share.
pub type SharedCorrelator = Arc<Mutex<Correlator>>;

impl Downstream {
    /// Stores `events` (the new ones), their jobs and `checkpoint` in one transaction,
    /// then hands the events to emit on.
    pub fn commit(
        &self,
        store: &mut Store,
        key: &str,
        checkpoint: &Checkpoint,
        events: &[Event],
    ) -> Result<(), StoreError> {
        // Held through the commit, so sources decide and store one after another. A
        // poisoned lock means a panic mid-decision; what it knows is still usable.
        let mut correlator = self.correlator.lock().unwrap_or_else(|e| e.into_inner());
        let mut routing = CorrelateThenRules {
            correlator: &mut correlator,
            downstream: self,
            now_ms: jiff::Timestamp::now().as_millisecond(),
            made_jobs: false,
        };
        let stored = store.commit(key, checkpoint, events, &mut routing)?;
        let made_jobs = routing.made_jobs;
        drop(correlator);
        self.hand_on(stored, made_jobs);
        Ok(())
    }

    /// Emits the events held for a richer source whose wait is over at `now_ms` (all
    /// with `i64::MAX`); returns how many.
    pub fn release_due(&self, store: &mut Store, now_ms: i64) -> Result<usize, StoreError> {
        let mut correlator = self.correlator.lock().unwrap_or_else(|e| e.into_inner());
        let due = correlator.due(now_ms);
        if due.is_empty() {
            return Ok(0);
        }
        let mut made_jobs = false;
        let released: Vec<(Event, Vec<NewJob>)> = due
            .into_iter()
            .map(|event| {
                let jobs = self.jobs(&event);
                made_jobs |= !jobs.is_empty();
                (event, jobs)
            })
            .collect();
        let stored = store.release(&released, correlator.take_changes())?;
        drop(correlator);
        let count = stored.len();
        self.hand_on(stored, made_jobs);
        Ok(count)
    }

    fn jobs(&self, event: &Event) -> Vec<NewJob> {
        // A poisoned lock means a rule evaluation panicked; the rules themselves are
        // immutable and the limits' state is still usable.
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).jobs(event)
    }

    fn hand_on(&self, stored: Vec<StoredEvent>, made_jobs: bool) {
        if made_jobs {
            self.jobs_waiting.notify_one();
        }
        if !stored.is_empty() {
            // The receiver is gone only while shutting down; the events are stored.
            let _ = self.output.send(stored);
        }
    }
}

/// The correlator, then the rules, for each event a commit stores.
struct CorrelateThenRules<'a> {
    correlator: &'a mut Correlator,
    downstream: &'a Downstream,
    now_ms: i64,
    made_jobs: bool,
}

impl CorrelateThenRules<'_> {
    fn jobs(&mut self, event: &Event) -> Vec<NewJob> {
        let jobs = self.downstream.jobs(event);
        self.made_jobs |= !jobs.is_empty();
        jobs
    }
}

impl Route for CorrelateThenRules<'_> {
    fn route(&mut self, event: &Event) -> Routed {
        let decision = self.correlator.correlate(event, self.now_ms);
        let released = decision
            .released
            .into_iter()
            .map(|event| {
                let jobs = self.jobs(&event);
                (event, jobs)
            })
            .collect();
        let fate = match decision.verdict {
            Verdict::Emit(event) => {
                let jobs = self.jobs(&event);
                Fate::Emit { event, jobs }
            }
            Verdict::Duplicate { of } => Fate::Duplicate { of },
            Verdict::Hold => Fate::Held,
        };
        Routed {
            released,
            superseded: decision.superseded,
            fate,
        }
    }

    fn changes(&mut self) -> Changes {
        self.correlator.take_changes()
    }
}

/// The state of one followed file between rounds.
struct Follower {
    key: String,
    source: Source,
    tail: Tail,
    reader: LiveReader,
    /// The stored state of an earlier run whose file is gone: its calls end when the
    /// file appears.
    lost: Option<String>,
    /// Events read and not yet committed.
    pending: Vec<Event>,
    last_commit: Instant,
    committed_position: u64,
    errors: u64,
    downstream: Downstream,
}

impl Follower {
    fn start(source: &Source, store: &mut Store, downstream: Downstream) -> Result<Follower, FollowError> {
        let key = source.key();
        let today = today(source);
        let mut follower = Follower {
            key: key.clone(),
            source: source.clone(),
            tail: Tail::new(&source.path),
            reader: LiveReader::new(source, today),
            lost: None,
            pending: Vec::new(),
            last_commit: Instant::now(),
            committed_position: 0,
            errors: 0,
            downstream,
        };
        let stored = store.checkpoint(&key)?;
        let file = match super::tail::open_shared(&source.path) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(error) => {
                tracing::warn!(path = %source.path.display(), %error, "cannot open yet; will retry");
                None
            }
        };
        let path = source.path.display();
        match (file, stored) {
            (Some(mut file), Some(checkpoint)) => {
                let resumed = still_valid(&mut file, &checkpoint)
                    .unwrap_or(false)
                    .then(|| LiveReader::resume(source, &checkpoint.state))
                    .flatten();
                match resumed {
                    Some((reader, offset)) => {
                        tracing::info!(path = %path, offset, "resuming from checkpoint");
                        follower.reader = reader;
                        follower.tail.start(file, offset, Some(checkpoint.fingerprint));
                        follower.committed_position = offset;
                    }
                    None => {
                        tracing::info!(path = %path, "file was truncated or replaced while callhook was not running; reading it from the start");
                        LiveReader::end_lost_calls(source, &checkpoint.state, &mut |e| follower.pending.push(e));
                        follower.tail.start(file, 0, None);
                    }
                }
            }
            (Some(mut file), None) => {
                let date = match source.start_at {
                    StartAt::End => today,
                    StartAt::Beginning => modification_day(&file, source).unwrap_or(today),
                };
                let (reader, offset) = LiveReader::first_time(source, &mut file, date);
                tracing::info!(path = %path, offset, "new file; reading from its {}", if offset == 0 { "start" } else { "end" });
                follower.reader = reader;
                follower.tail.start(file, offset, None);
            }
            (None, stored) => {
                tracing::info!(path = %path, "waiting for the file to appear");
                follower.lost = stored.map(|c| c.state);
            }
        }
        Ok(follower)
    }

    /// One round: read what is new, commit, hand on.
    fn poll(&mut self, store: &mut Store) -> Result<(), FollowError> {
        let Follower {
            tail,
            reader,
            pending,
            lost,
            source,
            errors,
            ..
        } = self;
        let mut on_event = |event: Event| pending.push(event);
        let path = tail.path().display().to_string();
        let mut on_error = |line: u64, message: String| {
            *errors += 1;
            if *errors <= 100 {
                tracing::warn!("{path}:{line}: {message}");
            }
        };
        let result = tail.poll(|change| match change {
            TailEvent::Data(bytes) => reader.push(bytes, &mut on_event, &mut on_error),
            TailEvent::Appeared => {
                tracing::info!(path = %path, "file appeared; reading it from the start");
                if let Some(lost) = lost.take() {
                    LiveReader::end_lost_calls(source, &lost, &mut on_event);
                }
                *reader = LiveReader::new(source, today(source));
            }
            TailEvent::Truncated => {
                tracing::info!(path = %path, open_calls = reader.open_calls(), "file truncated (MicroSIP restarted?); open calls end as unknown");
                reader.truncated(source, today(source), &mut on_event);
            }
            TailEvent::Rotated => {
                tracing::info!(path = %path, "file replaced by a new one; reading it from the start");
                reader.next_file(today(source));
            }
        });
        if let Err(error) = result {
            tracing::warn!(path = %path, %error, "cannot read; will retry");
        }
        let moved = self.tail.position() != self.committed_position;
        if !self.pending.is_empty() || (moved && self.last_commit.elapsed() >= CHECKPOINT_EVERY) {
            self.commit(store)?;
        }
        Ok(())
    }

    /// Stores pending events with the checkpoint, then hands the new ones on.
    fn commit(&mut self, store: &mut Store) -> Result<(), FollowError> {
        let (resume_offset, state) = self.reader.checkpoint();
        let known = self.tail.fingerprint();
        let Some(file) = self.tail.file_mut() else {
            return Ok(()); // nothing read yet: nothing to remember
        };
        let fingerprint = match known {
            Some(fingerprint) => fingerprint,
            None => match Fingerprint::of(file) {
                Ok(fingerprint) => fingerprint,
                Err(_) => return Ok(()),
            },
        };
        let Ok(Some(tail)) = tail_hash(file, resume_offset) else {
            // The file changed under us; the next round sees how and commits then.
            return Ok(());
        };
        let checkpoint = Checkpoint {
            fingerprint,
            resume_offset,
            tail_hash: tail,
            state,
        };
        self.downstream.commit(store, &self.key, &checkpoint, &self.pending)?;
        self.pending.clear();
        self.last_commit = Instant::now();
        self.committed_position = self.tail.position();
        Ok(())
    }
}

/// Whether `file` still holds the bytes `checkpoint` was taken of.
fn still_valid(file: &mut File, checkpoint: &Checkpoint) -> io::Result<bool> {
    let size = file.metadata()?.len();
    Ok(size >= checkpoint.resume_offset
        && checkpoint.fingerprint.matches(file)?
        && tail_hash(file, checkpoint.resume_offset)? == Some(checkpoint.tail_hash))
}

fn today(source: &Source) -> Date {
    jiff::Timestamp::now()
        .to_zoned_datetime(source.time_zone.clone())
        .date()
}

fn modification_day(file: &File, source: &Source) -> Option<Date> {
    file_day(file.metadata().ok()?.modified().ok()?, &source.time_zone)
}
