//! The pipeline: what follows the sources. Correlate → rules → one store commit of
//! rows already decided → hand the emitted events on.
//!
//! Two halves, so every command drives the same decisions:
//!
//! - [`Router`] decides, without I/O: each new event goes past the [`Correlator`]
//!   (emitted, a duplicate of another source's, or held for a richer source), and each
//!   event emitted gets the jobs its rules make. `callhook replay` and `callhook test`
//!   use it alone, with the events' own times as the clock.
//! - [`Pipeline`] is the daemon's: per source thread, it takes a [`Batch`], asks the
//!   store which events are stored already (read again after a restart), lets the
//!   router decide for the new ones, and writes events, held and duplicate rows, jobs,
//!   the correlator's memory, the `scope: call` decisions the rules made (restored
//!   on start, so a call judged before a restart goes on whole after it) and the
//!   source's checkpoint in one transaction
//!   ([`Store::commit`]). Only then are the events handed to the output and the outbox
//!   woken. The router is shared by all sources and held through each commit, so
//!   sources decide and store one after another.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use thiserror::Error;

use crate::correlate::{CorrelatedCall, Correlator, Fate};
use crate::event::Event;
use crate::metrics::Metrics;
use crate::rules::call_scope::CallDecision;
use crate::rules::{Job, SharedEngine};
use crate::source::checkpoint::{Checkpoint, Fingerprint};
use crate::source::{Batch, Sink, SinkError};
use crate::store::{CheckpointRow, Commit, EventRow, JobRow, Store, StoreError, StoredEvent};
use crate::track::open_calls::CallRows;

/// With nothing held, the releaser still looks this often (ms): a safety net only.
const IDLE_RELEASER_MS: i64 = 60_000;

/// What the router decided for one event, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// Emitted in this form (`released`: it was held before), with its jobs.
    Emit {
        event: Event,
        jobs: Vec<Job>,
        released: bool,
    },
    /// Another source reported it first: kept, fires nothing.
    Duplicate { event: Event, of: String },
    /// Held for a richer source's event.
    Held { event: Event },
    /// A held event (`id`) that this one (`by`) takes the place of.
    Superseded { id: String, by: String },
}

/// The deciding half of the pipeline; see the module docs.
#[derive(Debug)]
pub struct Router {
    correlator: Correlator,
}

impl Router {
    pub fn new(correlator: Correlator) -> Router {
        Router { correlator }
    }

    /// Whether events can be held (then [`Router::release_due`] must be called).
    pub(crate) fn holds_events(&self) -> bool {
        self.correlator.holds_events()
    }

    /// Decides for `event`, new to the store, seen at `now_ms` (Unix ms: the wall
    /// clock live, the event's time in a replay); `jobs` makes the jobs of each event
    /// emitted. Appends to `out`. The event is taken by value and handed on as
    /// decided, not copied (see [`crate::correlate::Decision::event`]).
    pub(crate) fn route(
        &mut self,
        event: Event,
        now_ms: i64,
        jobs: &mut dyn FnMut(&Event) -> Vec<Job>,
        out: &mut Vec<Decided>,
    ) {
        let decision = self.correlator.correlate(event, now_ms);
        for released in decision.released {
            out.push(emit(released, true, jobs));
        }
        for (id, by) in decision.superseded {
            out.push(Decided::Superseded { id, by });
        }
        out.push(match decision.fate {
            Fate::Emit => emit(decision.event, false, jobs),
            Fate::Duplicate { of } => Decided::Duplicate {
                event: decision.event,
                of,
            },
            Fate::Hold => Decided::Held { event: decision.event },
        });
    }

    /// Emits the events held for a richer source whose wait is over at `now_ms` (all
    /// of them with `i64::MAX`). Appends to `out`.
    pub(crate) fn release_due(
        &mut self,
        now_ms: i64,
        jobs: &mut dyn FnMut(&Event) -> Vec<Job>,
        out: &mut Vec<Decided>,
    ) {
        for event in self.correlator.due(now_ms) {
            out.push(emit(event, true, jobs));
        }
    }

    /// Events held for a richer source's now.
    pub(crate) fn held(&self) -> usize {
        self.correlator.held()
    }

    /// When the earliest held event's wait is over (Unix ms), if any is held.
    pub(crate) fn next_due(&self) -> Option<i64> {
        self.correlator.next_due()
    }

    /// Forgets what the correlator learned since last asked, where nothing is stored
    /// (a replay).
    pub(crate) fn discard_changes(&mut self) {
        self.correlator.discard_changes();
    }

    /// What the correlator learned since last asked, as rows to store: (key, last
    /// heard of, state JSON) of calls changed, keys of calls forgotten.
    pub(crate) fn take_changes(&mut self) -> (Vec<(String, i64, String)>, Vec<String>) {
        let changes = self.correlator.take_changes();
        let changed = changes
            .changed
            .iter()
            .map(|call| {
                let state = serde_json::to_string(call).expect("call serializes");
                (call.key.to_string(), call.last_ms(), state)
            })
            .collect();
        (changed, changes.forgotten)
    }
}

fn emit(event: Event, released: bool, jobs: &mut dyn FnMut(&Event) -> Vec<Job>) -> Decided {
    Decided::Emit {
        jobs: jobs(&event),
        event,
        released,
    }
}

/// The pipeline could not go on.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("state database holds an unreadable checkpoint for {key}: {reason}")]
    BadCheckpoint { key: String, reason: String },
}

/// What all sources of one daemon share downstream.
pub struct Shared {
    router: Mutex<Router>,
    rules: SharedEngine,
    /// Woken when a commit made jobs: the outbox delivers them at once.
    jobs_waiting: Arc<tokio::sync::Notify>,
    output: mpsc::Sender<Vec<StoredEvent>>,
    metrics: Metrics,
    /// Set (and signalled) when the releaser should look again: an event was held (a
    /// new deadline), or the daemon stops.
    release_wake: (Mutex<bool>, Condvar),
}

impl Shared {
    /// The router, knowing the calls (and held events) an earlier run stored since
    /// `since_ms`; a stored call that cannot be read is forgotten with a warning.
    pub fn new(
        mut correlator: Correlator,
        store: &Store,
        since_ms: i64,
        rules: SharedEngine,
        jobs_waiting: Arc<tokio::sync::Notify>,
        output: mpsc::Sender<Vec<StoredEvent>>,
        metrics: Metrics,
    ) -> Result<Arc<Shared>, PipelineError> {
        let mut calls: Vec<CorrelatedCall> = Vec::new();
        for (key, state) in store.correlated_calls(since_ms)? {
            match serde_json::from_str(&state) {
                Ok(call) => calls.push(call),
                Err(error) => tracing::warn!(%key, %error, "stored correlated call unreadable; forgotten"),
            }
        }
        correlator.restore(calls);
        if !correlator.is_empty() {
            tracing::debug!(calls = correlator.len(), "correlated calls restored");
        }
        let decisions = store.call_scope(since_ms)?;
        {
            let mut engine = rules.lock().unwrap_or_else(|e| e.into_inner());
            if !decisions.is_empty() {
                tracing::debug!(decisions = decisions.len(), "scope: call decisions restored");
            }
            engine.restore_call_scope(decisions.into_iter().map(|(rule, call_id, fires)| CallDecision {
                rule,
                call_id,
                fires,
            }));
            engine.record_call_scope();
        }
        Ok(Arc::new(Shared {
            router: Mutex::new(Router::new(correlator)),
            rules,
            jobs_waiting,
            output,
            metrics,
            release_wake: (Mutex::new(false), Condvar::new()),
        }))
    }

    /// Whether events can be held, so a releaser must run.
    pub(crate) fn holds_events(&self) -> bool {
        self.router().holds_events()
    }

    /// Makes [`Pipeline::wait_for_due`] return now.
    pub(crate) fn wake_releaser(&self) {
        let (flag, signal) = &self.release_wake;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        signal.notify_all();
    }

    fn router(&self) -> std::sync::MutexGuard<'_, Router> {
        // A poisoned lock means a panic mid-decision; what the router knows is still
        // usable.
        self.router.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn jobs(&self, event: &Event) -> Vec<Job> {
        // A poisoned lock means a rule evaluation panicked; the rules themselves are
        // immutable and the limits' state is still usable.
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).jobs(event)
    }

    /// The rules' call-scope decisions since last asked, as rows for the commit that
    /// stores the jobs they made (asked with the router held, like those jobs).
    fn scope_changes(&self) -> ScopeRows {
        let changes = self
            .rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_call_scope_changes();
        let decided = changes
            .decided
            .into_iter()
            .map(|d| (d.rule, d.call_id, d.fires))
            .collect();
        (decided, changes.dropped)
    }
}

/// How often a commit is tried again while the database stays busy.
const BUSY_TRIES: u64 = 10;

/// The daemon's pipeline for one thread (a source, or the releaser): its own database
/// connection, the shared router and rules. See the module docs.
pub struct Pipeline {
    shared: Arc<Shared>,
    store: Store,
}

impl Pipeline {
    pub fn new(shared: Arc<Shared>, store: Store) -> Pipeline {
        Pipeline { shared, store }
    }

    /// The checkpoint committed for source `key`, if any.
    pub(crate) fn stored_checkpoint(&self, key: &str) -> Result<Option<Checkpoint>, PipelineError> {
        let Some(row) = self.store.checkpoint(key)? else {
            return Ok(None);
        };
        let bad = |reason: String| PipelineError::BadCheckpoint {
            key: key.to_owned(),
            reason,
        };
        let fingerprint: Fingerprint = serde_json::from_str(&row.fingerprint).map_err(|e| bad(e.to_string()))?;
        let mut tail_hash = [0u8; 32];
        hex::decode_to_slice(&row.tail_hash, &mut tail_hash).map_err(|e| bad(e.to_string()))?;
        Ok(Some(Checkpoint {
            fingerprint,
            resume_offset: row.resume_offset,
            tail_hash,
            state: row.state,
            rows: CallRows {
                complete: row.complete,
                rows: row.rows,
            },
        }))
    }

    /// Commits `commit`, trying again while the database stays busy (a loaded machine):
    /// the rows are decided already, and the router's memory has moved on with them, so
    /// giving up would stop the daemon.
    fn commit_patiently(&mut self, commit: &Commit) -> Result<Vec<StoredEvent>, StoreError> {
        let mut tries = 0;
        loop {
            match self.store.commit(commit) {
                Err(error) if error.is_busy() && tries < BUSY_TRIES => {
                    tries += 1;
                    tracing::warn!("state database busy for long (try {tries} of {BUSY_TRIES}); trying again: {error}");
                    std::thread::sleep(Duration::from_millis(100 * tries));
                }
                result => return result,
            }
        }
    }

    /// Decides for the batch's new events and commits them with the checkpoint; then
    /// hands the emitted ones on.
    pub(crate) fn commit(&mut self, batch: Batch<'_>) -> Result<(), PipelineError> {
        // Memory is handed back only once the daemon is quiet.
        crate::memory::active();
        let shared = self.shared.clone();
        // Held through the commit, so sources decide and store one after another.
        let mut router = shared.router();
        let known = self.store.known_events(batch.events.iter().map(|e| e.id.as_str()))?;
        let mut seen: HashSet<&str> = HashSet::new();
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let mut decided = Vec::new();
        for event in batch.events {
            // Read again after a restart, or twice in one batch: stored already.
            if known.contains(&event.id) || !seen.insert(&event.id) {
                continue;
            }
            router.route(event.clone(), now_ms, &mut |e| shared.jobs(e), &mut decided);
        }
        let tally = Tally::of(&decided);
        let held = decided.iter().any(|d| matches!(d, Decided::Held { .. }));
        let mut commit = rows(decided, router.take_changes(), shared.scope_changes());
        commit.checkpoint = Some((batch.key.to_owned(), checkpoint_row(batch.checkpoint)));
        let made_jobs = has_jobs(&commit);
        let stored = self.commit_patiently(&commit)?;
        tally.count(&shared.metrics, &stored, batch.appended, router.held());
        drop(router);
        if held {
            self.shared.wake_releaser();
        }
        self.hand_on(stored, made_jobs);
        Ok(())
    }

    /// Blocks until the earliest held event's wait is over, another event is held, or
    /// [`Shared::wake_releaser`] is called: the releaser sleeps until there is work,
    /// not on a tick.
    pub(crate) fn wait_for_due(&self) {
        let due = self.shared.router().next_due();
        let (flag, signal) = &self.shared.release_wake;
        let mut woken = flag.lock().unwrap_or_else(|e| e.into_inner());
        if !*woken {
            // Nothing held: sleep until woken (a long timeout only as a safety net).
            let wait_ms = due.map_or(IDLE_RELEASER_MS, |due| {
                (due - jiff::Timestamp::now().as_millisecond()).clamp(0, IDLE_RELEASER_MS) + 1
            });
            let timeout = std::time::Duration::from_millis(wait_ms as u64);
            woken = signal.wait_timeout(woken, timeout).unwrap_or_else(|e| e.into_inner()).0;
        }
        *woken = false;
    }

    /// Emits the events held for a richer source whose wait is over at `now_ms` (all
    /// with `i64::MAX`); returns how many.
    pub(crate) fn release_due(&mut self, now_ms: i64) -> Result<usize, PipelineError> {
        let shared = self.shared.clone();
        let mut router = shared.router();
        let mut decided = Vec::new();
        router.release_due(now_ms, &mut |e| shared.jobs(e), &mut decided);
        if decided.is_empty() {
            return Ok(0);
        }
        let tally = Tally::of(&decided);
        let commit = rows(decided, router.take_changes(), shared.scope_changes());
        let made_jobs = has_jobs(&commit);
        let stored = self.store.commit(&commit)?;
        tally.count(&shared.metrics, &stored, None, router.held());
        drop(router);
        let count = stored.len();
        self.hand_on(stored, made_jobs);
        Ok(count)
    }

    fn hand_on(&self, stored: Vec<StoredEvent>, made_jobs: bool) {
        if made_jobs {
            self.shared.jobs_waiting.notify_one();
        }
        if !stored.is_empty() {
            // The receiver is gone only while shutting down; the events are stored.
            let _ = self.shared.output.send(stored);
        }
    }
}

impl Sink for Pipeline {
    fn commit(&mut self, batch: Batch<'_>) -> Result<(), SinkError> {
        Pipeline::commit(self, batch).map_err(Into::into)
    }
}

/// An emitted event's id, source kind, type, outcome, and its jobs' (rule, key).
type Counted = (
    String,
    &'static str,
    &'static str,
    Option<&'static str>,
    Vec<(String, String)>,
);

/// What the emitted events of a commit count for, taken before it (the decisions are
/// consumed by it) and counted once it is stored.
struct Tally {
    /// Per event emitted: id, source kind, type, outcome, and its jobs' (rule, key).
    emitted: Vec<Counted>,
}

impl Tally {
    fn of(decided: &[Decided]) -> Tally {
        let emitted = decided
            .iter()
            .filter_map(|decided| match decided {
                Decided::Emit { event, jobs, .. } => Some((
                    event.id.clone(),
                    event.source.as_str(),
                    event.kind.as_str(),
                    event.outcome.map(|o| o.as_str()),
                    jobs.iter().map(|j| (j.rule.clone(), j.key.clone())).collect(),
                )),
                _ => None,
            })
            .collect();
        Tally { emitted }
    }

    /// Counts the events `stored` (not stored before) and their rules' firings;
    /// `appended` is when their bytes were appended, `held` what the correlator holds.
    fn count(self, metrics: &Metrics, stored: &[StoredEvent], appended: Option<std::time::SystemTime>, held: usize) {
        metrics.set_held_events(held);
        let stored: HashSet<&str> = stored.iter().map(|e| e.id.as_str()).collect();
        for (id, source, kind, outcome, jobs) in self.emitted {
            if !stored.contains(id.as_str()) {
                continue;
            }
            metrics.event_emitted(source, kind, outcome, appended);
            for (rule, key) in jobs {
                metrics.rule_fired(&rule, &key, appended);
            }
        }
    }
}

/// Call-scope decisions made (rule, call id, fires) and dropped (rule, call id).
type ScopeRows = (Vec<(String, String, bool)>, Vec<(String, String)>);

/// The decisions as rows for the store, with the correlator's changes and the rules'
/// call-scope decisions.
fn rows(
    decided: Vec<Decided>,
    (calls_changed, calls_forgotten): (Vec<(String, i64, String)>, Vec<String>),
    (scope_decided, scope_dropped): ScopeRows,
) -> Commit {
    let job_rows = |jobs: Vec<Job>| -> Vec<JobRow> {
        jobs.into_iter()
            .map(|job| JobRow {
                key: job.key,
                rule: job.rule,
                endpoint: job.endpoint,
                action: job.action,
                body: job.body,
                ordered: job.ordered,
            })
            .collect()
    };
    let events = decided
        .into_iter()
        .map(|decided| match decided {
            Decided::Emit {
                event,
                jobs,
                released: true,
            } => EventRow::Released {
                event,
                jobs: job_rows(jobs),
            },
            Decided::Emit { event, jobs, .. } => EventRow::New {
                event,
                emit: true,
                duplicate_of: None,
                jobs: job_rows(jobs),
            },
            Decided::Duplicate { event, of } => EventRow::New {
                event,
                emit: false,
                duplicate_of: Some(of),
                jobs: Vec::new(),
            },
            Decided::Held { event } => EventRow::New {
                event,
                emit: false,
                duplicate_of: None,
                jobs: Vec::new(),
            },
            Decided::Superseded { id, by } => EventRow::Superseded { id, by },
        })
        .collect();
    Commit {
        checkpoint: None,
        events,
        calls_changed,
        calls_forgotten,
        scope_decided,
        scope_dropped,
    }
}

fn has_jobs(commit: &Commit) -> bool {
    commit.events.iter().any(|row| match row {
        EventRow::New { jobs, .. } | EventRow::Released { jobs, .. } => !jobs.is_empty(),
        EventRow::Superseded { .. } => false,
    })
}

fn checkpoint_row(checkpoint: &Checkpoint) -> CheckpointRow {
    CheckpointRow {
        fingerprint: serde_json::to_string(&checkpoint.fingerprint).expect("fingerprint serializes"),
        resume_offset: checkpoint.resume_offset,
        tail_hash: hex::encode(checkpoint.tail_hash),
        state: checkpoint.state.clone(),
        rows: checkpoint.rows.rows.clone(),
        complete: checkpoint.rows.complete,
    }
}
