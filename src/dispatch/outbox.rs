//! The outbox: claiming due jobs, delivering them, recording what happened.
//!
//! Jobs are rows in the state database, written in the same transaction as the events
//! that made them. The dispatcher picks due `pending` jobs in order, delivers them
//! concurrently (within each endpoint's limit), and records results in batches:
//! `done`; `pending` again with a later `next_at` (retry, backoff with jitter or the
//! server's `Retry-After`); or `dead` (given up, kept for `callhook outbox`). A crash
//! before a result is recorded leaves the job pending: it is delivered again, with the
//! same `webhook-id`, so receivers can drop the duplicate.
//!
//! Per endpoint: a concurrency limit, a circuit breaker (after 5 failures in a row the
//! endpoint rests for 30 s, then one job tests it), and `410 Gone` disables it: its
//! jobs go dead until `callhook outbox retry` of one of them (or `--all-dead`) enables
//! it again. Disabled endpoints are stored, so a restart keeps them disabled, and the
//! running outbox looks at the stored list on each refill, so a retry from another
//! process takes effect at once. Jobs of one call to one endpoint go in
//! event order when the rule says `ordered` (the default).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use tokio::sync::{Notify, mpsc};

use super::actions::{self, Actions};
use super::recorder::Recorder;
use super::{Delivery, command, webhook};
use super::{mqtt::MqttLinks, nats::NatsLinks};
use crate::broker::nats::NatsServer;
use crate::metrics::Metrics;
use crate::rules::action::{Action, RetryPolicy};
use crate::rules::secret_ref::LiteralKeys;
use crate::store::{JobUpdate, LogStamp, Pending, PendingQuery, Store, StoreError, StoredJob};

/// Look at this many pending jobs per round at most ...
const SCAN: usize = 1000;
/// ... and at most this many of one endpoint, so a backlog for one (a receiver that is
/// down) never keeps another's jobs waiting. A read walks each endpoint's oldest jobs
/// along an index (`jobs_endpoint_pending`), so its cost is what it returns, not the
/// backlog's size.
const SCAN_PER_ENDPOINT: usize = 256;
/// Failures in a row that open an endpoint's circuit, and how long it stays open.
const BREAKER_FAILURES: u32 = 5;
const BREAKER_REST: Duration = Duration::from_secs(30);
/// Broker publishes in flight at once per server, at most.
const BROKER_IN_FLIGHT: u32 = 64;
/// Commands run at once, at most.
const COMMANDS_AT_ONCE: u32 = 4;
/// With nothing due, look at the database anyway this often: a safety net. New jobs
/// wake the outbox (the commit that made them, or a change to the database another
/// process made, such as `callhook outbox retry`), and retries coming due, or an
/// endpoint's rest ending, set a timer to that moment. The look reads the jobs only
/// when the database's log was written since the last read ([`LogStamp`]) and another
/// connection committed (`PRAGMA data_version`).
const SAFETY_NET: Duration = Duration::from_secs(5);

/// How soon to look again after a wake-up that found the database unchanged, and the
/// longest wait of those looks (a commit's fsync can take that long on a slow disk).
const RECHECK_FIRST: Duration = Duration::from_millis(2);
const RECHECK_LAST: Duration = Duration::from_millis(512);

/// Per-endpoint delivery state.
#[derive(Debug, Default)]
struct Endpoint {
    in_flight: u32,
    /// Calls with a job in flight to this endpoint (call id → how many): a later
    /// `ordered` job of one of them waits.
    calls: HashMap<String, u32>,
    /// Its pending jobs read from the database, not started yet, oldest first. Kept per
    /// endpoint so that one at its limit costs nothing per round, however long its queue.
    queue: VecDeque<StoredJob>,
    /// The last read left some of its pending jobs out (it gave as many as allowed): read
    /// again when its queue runs dry.
    more: bool,
    failures_in_a_row: u32,
    /// When the failures in a row began (Unix ms).
    failing_since: Option<i64>,
    open_until: Option<Instant>,
    /// Answered 410 Gone: no more deliveries.
    disabled: Option<String>,
}

/// Deliveries in flight at once, over all endpoints.
const IN_FLIGHT: usize = 256;
/// Hand at most this many results to the recorder at once ...
const RESULT_BATCH: usize = 2000;
/// ... and hold a result this long at most before handing it on, so that one
/// transaction records many deliveries (one each cost more than the delivery itself);
/// a result is handed on at once when nothing else is in flight, and before every read
/// of the pending jobs. The recorder commits on a thread of its own (see
/// [`super::recorder`]); a job whose result it has not committed yet is passed over
/// by the reads of pending jobs.
const RESULT_WAIT: Duration = Duration::from_millis(5);

/// Runs the outbox until `stop` is notified: delivers due jobs, records results.
///
/// Pending jobs are read from the database into a queue per endpoint (all of them when
/// `wake` tells of new jobs and the database changed, when every queue ran dry, and
/// when a retry comes due; one endpoint's alone when its queue ran dry and the
/// database holds more of its jobs); each round starts what the queues allow without
/// another query. Idle, it sleeps until the
/// next retry is due (at most [`SAFETY_NET`]). Results are recorded in batches, one
/// transaction each, on a thread and connection of their own with `synchronous=NORMAL`
/// (the outbox stops when they cannot be recorded): a result lost to a
/// power cut only means that delivery is made again, with the same `webhook-id`; the
/// jobs themselves were committed with `synchronous=FULL` together with their events.
/// Secrets are read as each job is sent; `keys` gives the signing secrets written
/// literally in the rules in force. Each delivery is counted in `metrics`, and the
/// outbox reports there when it stops on an error.
pub async fn run(
    store: Store,
    wake: Arc<Notify>,
    stop: Arc<Notify>,
    keys: LiteralKeys,
    metrics: Metrics,
) -> Result<(), StoreError> {
    run_watching(store, wake, Arc::new(Notify::new()), stop, keys, Vec::new(), metrics).await
}

/// [`run`], also told by `changed` when another process changed the jobs (`callhook
/// outbox retry` leaves a note in the state dir's [`crate::store::WAKE_DIR`], which the
/// daemon watches): it then looks whether another connection committed, shortly after.
/// It connects to the `nats` servers at once (see [`NatsLinks::connect_early`]).
pub async fn run_watching(
    store: Store,
    wake: Arc<Notify>,
    changed: Arc<Notify>,
    stop: Arc<Notify>,
    keys: LiteralKeys,
    nats: Vec<NatsServer>,
    metrics: Metrics,
) -> Result<(), StoreError> {
    metrics.set_outbox_problem(None);
    let result = deliver(store, wake, changed, stop, keys, nats, metrics.clone()).await;
    if let Err(error) = &result {
        metrics.set_outbox_problem(Some(format!("stopped: {error}")));
    }
    result
}

async fn deliver(
    store: Store,
    wake: Arc<Notify>,
    changed: Arc<Notify>,
    stop: Arc<Notify>,
    keys: LiteralKeys,
    nats: Vec<NatsServer>,
    metrics: Metrics,
) -> Result<(), StoreError> {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(StoredJob, Delivery)>();
    let mut outbox = Outbox::open(store, keys, done_tx, nats, metrics)?;
    let mut stopping = false;
    let mut refill = true;
    let mut seen_version = None;
    // The log as it was when the jobs were last read (see [`SAFETY_NET`]).
    let log = outbox.store.log_path();
    let mut seen_log = LogStamp::of(None);
    // Woken while the database looked unchanged: a commit may be under way (its log
    // written, its fsync not over, so not yet visible): look again after this long,
    // twice as long each time, up to [`RECHECK_LAST`].
    let mut recheck: Option<Duration> = None;
    loop {
        // Results first: they free endpoints and calls for the next jobs.
        while outbox.results.len() < RESULT_BATCH
            && let Ok((job, delivery)) = done_rx.try_recv()
        {
            outbox.settled(job, delivery);
        }
        if refill || stopping || outbox.in_flight.is_empty() || outbox.results_due() {
            outbox.record()?;
        }
        if stopping && outbox.in_flight.is_empty() {
            return outbox.recorder.finish().await;
        }
        let mut next_due = None;
        if !stopping {
            let mut found = false;
            if std::mem::take(&mut refill) {
                seen_log = LogStamp::of(log.as_deref());
                seen_version = Some(outbox.store.data_version()?);
                found = outbox.refill(None)?;
            }
            next_due = outbox.start_due()?;
            // An endpoint with more jobs in the database ran dry: read on for it alone.
            let dry = outbox.ran_dry();
            if !dry.is_empty() && outbox.refill(Some(&dry))? {
                continue;
            }
            // Every queue ran dry while more may wait in the database: read on at once
            // while reading finds new jobs.
            refill = outbox.wants_refill();
            if refill && found {
                continue;
            }
        }
        let wait = wait_for(next_due, recheck);
        // Results waiting are recorded at the top of the loop once due.
        let record_in = outbox.record_in().filter(|&record_in| record_in < wait);
        tokio::select! {
            // Told of new jobs: read them if another connection committed (this one's
            // own results are known); if that commit is not visible yet, look again.
            () = wake.notified() => {
                refill = seen_version != Some(outbox.store.data_version()?);
                recheck = (!refill).then_some(RECHECK_FIRST);
            }
            () = changed.notified() => {
                recheck.get_or_insert(RECHECK_FIRST);
            }
            Some((job, delivery)) = done_rx.recv() => outbox.settled(job, delivery),
            committed = outbox.recorder.answer() => outbox.recorder.committed(committed?),
            () = tokio::time::sleep(record_in.unwrap_or(wait)) => match recheck.filter(|&after| after <= wait) {
                _ if record_in.is_some() => {}
                // Not due yet: was the commit published meanwhile?
                Some(after) => {
                    refill = seen_version != Some(outbox.store.data_version()?);
                    recheck = (!refill && after < RECHECK_LAST).then(|| after * 2);
                }
                // A job's time came: read. Else the safety net's look: read if a
                // wake-up was missed, that is if another connection committed since.
                None => {
                    refill = next_due.is_some_and(|due| due <= now_ms())
                        || (seen_log.moved(&LogStamp::of(log.as_deref()))
                            && seen_version != Some(outbox.store.data_version()?));
                    recheck = None;
                }
            },
            () = stop.notified(), if !stopping => stopping = true,
        }
    }
}

/// How long the outbox may sleep: until the next job waiting for its retry time is
/// due (at most [`SAFETY_NET`]), or until the next look for a commit under way.
fn wait_for(next_due: Option<i64>, recheck: Option<Duration>) -> Duration {
    let wait = match next_due {
        Some(due) => Duration::from_millis((due - now_ms()).clamp(1, SAFETY_NET.as_millis() as i64) as u64),
        None => SAFETY_NET,
    };
    recheck.map_or(wait, |after| wait.min(after))
}

/// The dispatcher's state between rounds.
struct Outbox {
    store: Store,
    /// HTTP clients by `ca_file` (`None`: the system's trust only), made when first needed.
    clients: HashMap<Option<PathBuf>, webhook::Client>,
    /// Literal signing secrets of the rules in force.
    keys: LiteralKeys,
    /// Broker connections (NATS, MQTT), kept for the outbox's life.
    brokers: Arc<(NatsLinks, MqttLinks)>,
    /// Where finished deliveries report.
    done: mpsc::UnboundedSender<(StoredJob, Delivery)>,
    /// The jobs in flight.
    in_flight: HashSet<i64>,
    /// Every endpoint seen, with its queue of jobs read and not started.
    endpoints: HashMap<String, Endpoint>,
    /// The actions of jobs started or about to be, read in batches and parsed once each
    /// (shared with the task delivering it, not copied).
    actions: Actions,
    /// Rounds so far: each round's first endpoint is the next one's in turn, so the
    /// overall limit ([`IN_FLIGHT`]) favours none.
    turn: usize,
    commands_running: u32,
    /// Results not recorded yet ...
    results: Vec<(i64, JobUpdate)>,
    /// ... and since when the oldest of them waits.
    results_since: Option<Instant>,
    /// Commits the results handed to it; holds their jobs until it has.
    recorder: Recorder,
    /// The backlog found at start being delivered, shown on a terminal.
    catch_up: Option<indicatif::ProgressBar>,
    metrics: Metrics,
}

/// What a queued job needs before it can start.
enum Readiness {
    /// Start it now, with this action.
    Go(Arc<Action>),
    /// Keep it queued; `due` when it waits for its retry time.
    Wait { due: Option<i64> },
    /// Do not deliver: record this.
    Settle(JobUpdate),
    /// Gone from the database meanwhile (`callhook outbox drop`).
    Dropped,
}

impl Outbox {
    /// The outbox on `store`, its results recorded on a connection of their own; each
    /// delivery's result comes back through `done`. `store` itself only reads (the
    /// pending jobs, whether another connection committed), so its sync level and
    /// checkpoints are the recorder's business.
    fn open(
        store: Store,
        keys: LiteralKeys,
        done: mpsc::UnboundedSender<(StoredJob, Delivery)>,
        nats: Vec<NatsServer>,
        metrics: Metrics,
    ) -> Result<Outbox, StoreError> {
        let recorder = Recorder::start(store.open_again()?)?;
        let mut outbox = Outbox {
            store,
            clients: HashMap::new(),
            keys,
            brokers: Arc::default(),
            done,
            in_flight: HashSet::new(),
            endpoints: HashMap::new(),
            actions: Actions::default(),
            turn: 0,
            commands_running: 0,
            results: Vec::new(),
            results_since: None,
            recorder,
            catch_up: None,
            metrics,
        };
        outbox.catch_up = catch_up_bar(&mut outbox.store)?;
        outbox.connect_early(nats);
        Ok(outbox)
    }

    /// Connects to the `nats` servers now (see [`NatsLinks::connect_early`]).
    fn connect_early(&self, servers: Vec<NatsServer>) {
        for server in servers {
            let brokers = self.brokers.clone();
            tokio::spawn(async move { brokers.0.connect_early(&server).await });
        }
    }

    /// A delivery finished: its result, to record with the next batch.
    fn settled(&mut self, job: StoredJob, delivery: Delivery) {
        self.in_flight.remove(&job.id);
        let action = self.actions.remove(job.id);
        let result = settle(
            &job,
            action.as_deref(),
            delivery,
            &mut self.endpoints,
            &mut self.commands_running,
        );
        let kind = match action.as_deref() {
            Some(Action::Command(_)) => "command",
            _ => "webhook",
        };
        let outcome = match &result.1 {
            JobUpdate::Done => "done",
            JobUpdate::Retry { .. } => "retry",
            JobUpdate::Dead { .. } => "dead",
            JobUpdate::Disabled { .. } => "disabled",
        };
        self.metrics.delivered(&job.rule, kind, outcome, &job.key);
        if outcome != "retry"
            && let Some(bar) = &self.catch_up
        {
            bar.inc(1);
            if bar.position() >= bar.length().unwrap_or(0) {
                bar.finish_and_clear();
                self.catch_up = None;
            }
        }
        self.push_result(result);
    }

    fn push_result(&mut self, result: (i64, JobUpdate)) {
        self.results_since.get_or_insert_with(Instant::now);
        self.results.push(result);
    }

    /// Whether the results waiting should be recorded now: many, or the oldest waited
    /// long enough.
    fn results_due(&self) -> bool {
        self.results.len() >= RESULT_BATCH || self.results_since.is_some_and(|since| since.elapsed() >= RESULT_WAIT)
    }

    /// How long until the results waiting are due to be recorded (`None`: none waits).
    fn record_in(&self) -> Option<Duration> {
        self.results_since
            .map(|since| (since + RESULT_WAIT).saturating_duration_since(Instant::now()))
    }

    /// Hands the results waiting to the recorder.
    fn record(&mut self) -> Result<(), StoreError> {
        self.results_since = None;
        self.recorder.send(std::mem::take(&mut self.results))
    }

    /// Reads the pending jobs again, of every endpoint or `only` of some, and which
    /// endpoints are disabled: a 410 Gone disables one in the database; `callhook
    /// outbox retry` (another process) enables it there. The results waiting are handed
    /// on first; a job whose result is not committed yet still looks pending there, and
    /// is passed over as a job in flight is (an endpoint it disabled stays disabled).
    /// Returns whether a job not queued before, in flight nor being recorded was found.
    fn refill(&mut self, only: Option<&[String]>) -> Result<bool, StoreError> {
        self.record()?;
        // The queues read again, taken apart: the read gives the ids of the jobs still
        // pending among them (their rows do not change while they wait here), in order.
        let mut queued: HashMap<i64, StoredJob> = HashMap::new();
        for (name, endpoint) in self.endpoints.iter_mut() {
            if only.is_none_or(|only| only.contains(name)) {
                queued.extend(endpoint.queue.drain(..).map(|job| (job.id, job)));
                endpoint.more = false;
            }
        }
        let (in_flight, recorder) = (&self.in_flight, &self.recorder);
        let work = self.store.pending_work(&PendingQuery {
            only,
            per_endpoint: SCAN_PER_ENDPOINT,
            limit: SCAN,
            known: &|id| in_flight.contains(&id) || recorder.holds(id),
            held: &|id| queued.contains_key(&id),
            with_action: actions::WITH_READ,
        })?;
        // Cut at the overall limit: every endpoint read may have more.
        let cut = work.total >= SCAN;
        let disabled: HashMap<String, String> = work.disabled.into_iter().map(|d| (d.endpoint, d.reason)).collect();
        for (name, endpoint) in self.endpoints.iter_mut() {
            let stored = disabled.get(name).cloned();
            if stored.is_some() || !self.recorder.disables(name) {
                endpoint.disabled = stored;
            }
        }
        for (name, reason) in disabled {
            self.endpoints.entry(name).or_default().disabled = Some(reason);
        }
        let mut found = false;
        for pending in work.jobs {
            let job = match pending {
                Pending::Held(id) => match queued.remove(&id) {
                    Some(job) => job,
                    None => continue,
                },
                Pending::Read(job) => {
                    found = true;
                    job
                }
            };
            let endpoint = match self.endpoints.get_mut(job.endpoint.as_str()) {
                Some(endpoint) => endpoint,
                None => self.endpoints.entry(job.endpoint.clone()).or_default(),
            };
            endpoint.queue.push_back(job);
        }
        for (name, count) in work.per_endpoint {
            if let Some(endpoint) = self.endpoints.get_mut(&name) {
                // All it gave in flight already: nothing to read on for until some finish.
                endpoint.more = (count >= SCAN_PER_ENDPOINT || cut) && !endpoint.queue.is_empty();
            }
        }
        // Actions read ahead for jobs this read no longer gave.
        let mut keep = self.in_flight.clone();
        keep.extend(self.endpoints.values().flat_map(|e| e.queue.iter().map(|job| job.id)));
        self.actions.retain(&keep);
        Ok(found)
    }

    /// The endpoints whose queue ran dry while the database holds more of their jobs
    /// than the last read gave.
    fn ran_dry(&self) -> Vec<String> {
        if self.in_flight.len() >= IN_FLIGHT {
            return Vec::new();
        }
        self.endpoints
            .iter()
            .filter(|(_, e)| e.more && e.queue.is_empty())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Whether to read the pending jobs again: there is room for more deliveries and
    /// every queue ran dry (jobs may have come since, or been freed by results just
    /// recorded: a call's next `ordered` job).
    fn wants_refill(&self) -> bool {
        self.in_flight.len() < IN_FLIGHT && self.endpoints.values().all(|e| e.queue.is_empty())
    }

    /// Starts every queued job that may go now, each endpoint's in order; returns when
    /// the next one waiting for its retry time is due (Unix ms).
    fn start_due(&mut self) -> Result<Option<i64>, StoreError> {
        let now = now_ms();
        let mut names: Vec<String> = self
            .endpoints
            .iter()
            .filter(|(_, e)| !e.queue.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        if names.is_empty() {
            return Ok(None);
        }
        names.sort_unstable();
        let first = self.turn % names.len();
        names.rotate_left(first);
        self.turn = self.turn.wrapping_add(1);
        let mut next_due: Option<i64> = None;
        for name in names {
            if self.in_flight.len() >= IN_FLIGHT {
                break;
            }
            if let Some(due) = self.start_endpoint(&name, now)? {
                next_due = Some(next_due.map_or(due, |d| d.min(due)));
            }
        }
        Ok(next_due)
    }

    /// Starts the jobs of endpoint `name`'s queue that may go now, oldest first, until
    /// it is at its limit; returns when the next one waiting for its retry time is due.
    fn start_endpoint(&mut self, name: &str, now: i64) -> Result<Option<i64>, StoreError> {
        let Some(endpoint) = self.endpoints.get_mut(name) else {
            return Ok(None);
        };
        let mut queue = std::mem::take(&mut endpoint.queue);
        self.actions.take_from(queue.iter_mut().take(actions::AHEAD));
        let upcoming: Vec<i64> = queue.iter().take(actions::AHEAD).map(|job| job.id).collect();
        self.actions.load(&mut self.store, &upcoming)?;
        let mut next_due: Option<i64> = None;
        // Jobs passed over, put back in front; and their calls, which a later `ordered`
        // job of the same call must not overtake.
        let mut passed = Vec::new();
        let mut waiting: HashSet<String> = HashSet::new();
        while let Some(job) = queue.pop_front() {
            if self.in_flight.len() >= IN_FLIGHT {
                queue.push_front(job);
                break;
            }
            let busy =
                |calls: &HashMap<String, u32>| calls.contains_key(&job.call_id) || waiting.contains(&job.call_id);
            if job.ordered && self.endpoints.get(name).is_some_and(|e| busy(&e.calls)) {
                passed.push(job);
                continue;
            }
            match self.readiness(&job, now)? {
                Readiness::Go(action) => self.start(job, action),
                Readiness::Wait { due: Some(due) } => {
                    next_due = Some(next_due.map_or(due, |d| d.min(due)));
                    waiting.insert(job.call_id.clone());
                    passed.push(job);
                }
                // At its limit: the rest waits, unlooked at.
                Readiness::Wait { due: None } => {
                    queue.push_front(job);
                    break;
                }
                Readiness::Settle(update) => {
                    self.actions.remove(job.id);
                    self.push_result((job.id, update));
                }
                Readiness::Dropped => {}
            }
        }
        for job in passed.into_iter().rev() {
            queue.push_front(job);
        }
        if let Some(endpoint) = self.endpoints.get_mut(name) {
            endpoint.queue = queue;
        }
        Ok(next_due)
    }

    /// Whether `job` may start now: due, its action readable, its endpoint enabled,
    /// resting or not, and within its concurrency limit.
    fn readiness(&mut self, job: &StoredJob, now: i64) -> Result<Readiness, StoreError> {
        let down_since = self.endpoints.get(&job.endpoint).and_then(|e| e.failing_since);
        if job.next_at > now && down_since.is_none() {
            return Ok(Readiness::Wait { due: Some(job.next_at) });
        }
        // Read with the jobs after it when its turn came (see [`actions`]); again here
        // for a job passed over then.
        self.actions.load(&mut self.store, &[job.id])?;
        let action = match self.actions.get(job.id) {
            Some(Ok(action)) => action.clone(),
            Some(Err(error)) => return Ok(Readiness::Settle(JobUpdate::Dead { error: error.clone() })),
            None => return Ok(Readiness::Dropped),
        };
        if let Some(dead) = down_too_long(job, &action, down_since, now) {
            return Ok(Readiness::Settle(dead));
        }
        if job.next_at > now {
            return Ok(Readiness::Wait { due: Some(job.next_at) });
        }
        let endpoint = self.endpoints.entry(job.endpoint.clone()).or_default();
        if let Some(reason) = &endpoint.disabled {
            return Ok(Readiness::Settle(JobUpdate::Dead {
                error: format!("endpoint disabled: {reason}"),
            }));
        }
        if let Some(until) = endpoint.open_until.filter(|until| *until > Instant::now()) {
            // Resting: look again when the rest is over.
            let rest_ms = i64::try_from(until.duration_since(Instant::now()).as_millis()).unwrap_or(i64::MAX);
            return Ok(Readiness::Wait {
                due: Some(now.saturating_add(rest_ms).saturating_add(1)),
            });
        }
        let allowed = match action.as_ref() {
            Action::Webhook(request) => {
                // A circuit just closed again lets one job test the endpoint.
                let limit = if endpoint.open_until.is_some() {
                    1
                } else {
                    request.concurrency.max(1)
                };
                endpoint.in_flight < limit
            }
            Action::Command(_) => self.commands_running < COMMANDS_AT_ONCE,
            // Publishes are pipelined on one connection (MQTT's go one at a time).
            Action::Nats(_) | Action::Mqtt(_) => endpoint.in_flight < BROKER_IN_FLIGHT,
        };
        Ok(if allowed {
            Readiness::Go(action)
        } else {
            Readiness::Wait { due: None }
        })
    }

    /// Starts delivering `job`, `action`, on a task of its own.
    fn start(&mut self, job: StoredJob, action: Arc<Action>) {
        let endpoint = self.endpoints.entry(job.endpoint.clone()).or_default();
        endpoint.in_flight += 1;
        *endpoint.calls.entry(job.call_id.clone()).or_default() += 1;
        if matches!(*action, Action::Command(_)) {
            self.commands_running += 1;
        }
        self.in_flight.insert(job.id);
        let client = match action.as_ref() {
            Action::Webhook(request) => match self.client(request.ca_file.as_ref()) {
                Ok(client) => Some(client),
                Err(reason) => {
                    let _ = self.done.send((job, Delivery::Retry { reason, after: None }));
                    return;
                }
            },
            Action::Command(_) | Action::Nats(_) | Action::Mqtt(_) => None,
        };
        let brokers = self.brokers.clone();
        let done = self.done.clone();
        let keys = self.keys.clone();
        tokio::spawn(async move {
            // Boxed: tokio moves a task's future into place when spawned and writes its
            // output over it when done, each time a copy of the whole future, and a
            // webhook's holds hyper's state; the box is a pointer.
            let delivery = Box::pin(deliver_once(&action, client, &job.key, &keys, &brokers)).await;
            let _ = done.send((job, delivery));
        });
    }

    /// The client for webhooks trusting `ca_file` besides the system's roots.
    fn client(&mut self, ca_file: Option<&PathBuf>) -> Result<webhook::Client, String> {
        if let Some(client) = self.clients.get(&ca_file.cloned()) {
            return Ok(client.clone());
        }
        let client = webhook::client_with(ca_file.map(PathBuf::as_path))?;
        self.clients.insert(ca_file.cloned(), client.clone());
        Ok(client)
    }
}

/// Delivers `action` once, as job `key` (a webhook with `client`, signed with `keys`;
/// a publish through `brokers`).
async fn deliver_once(
    action: &Action,
    client: Option<webhook::Client>,
    key: &str,
    keys: &LiteralKeys,
    brokers: &(NatsLinks, MqttLinks),
) -> Delivery {
    match (action, client) {
        (Action::Webhook(request), Some(client)) => webhook::send(&client, request, key, keys).await,
        (Action::Command(spec), _) => command::run(spec).await,
        (Action::Webhook(_), None) => Delivery::GiveUp("no HTTP client".into()),
        (Action::Nats(publish), _) => brokers.0.send(publish).await,
        (Action::Mqtt(publish), _) => brokers.1.send(publish).await,
    }
}

/// A job whose endpoint has failed for longer than the job's whole retry span, all the
/// time the job waited: it goes dead now. One attempt at a time per circuit-breaker rest
/// would take days to get through a backlog that could not be delivered in time anyway.
fn down_too_long(job: &StoredJob, action: &Action, down_since: Option<i64>, now: i64) -> Option<JobUpdate> {
    let Action::Webhook(request) = action else {
        return None;
    };
    let down_for = now.saturating_sub(down_since?);
    let waited = now.saturating_sub(job.created_ms).min(down_for);
    let span = i64::try_from(request.retry.span().as_millis()).unwrap_or(i64::MAX);
    (waited > span).then(|| JobUpdate::Dead {
        error: format!(
            "endpoint failing for {:.0?}, longer than this job's retry span ({:.0?}); last error: {}",
            Duration::from_millis(down_for as u64),
            Duration::from_millis(span as u64),
            job.last_error.as_deref().unwrap_or("none")
        ),
    })
}

/// A backlog this large at start gets a progress bar (on a terminal only).
const CATCH_UP_SHOWN: u64 = 100;

/// A progress bar over the jobs waiting at start, when stderr is a terminal and there
/// are many: catching up after a receiver was down, or callhook was not running.
fn catch_up_bar(store: &mut Store) -> Result<Option<indicatif::ProgressBar>, StoreError> {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return Ok(None);
    }
    let waiting: u64 = store.job_stats()?.iter().map(|s| s.pending + s.retrying).sum();
    if waiting < CATCH_UP_SHOWN {
        return Ok(None);
    }
    let style = indicatif::ProgressStyle::with_template(
        "outbox catching up {wide_bar} {pos}/{len} jobs ({per_sec}, {eta} left)",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    Ok(Some(indicatif::ProgressBar::new(waiting).with_style(style)))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Turns one delivery into the job's next state, updating its endpoint.
fn settle(
    job: &StoredJob,
    action: Option<&Action>,
    delivery: Delivery,
    endpoints: &mut HashMap<String, Endpoint>,
    commands_running: &mut u32,
) -> (i64, JobUpdate) {
    let endpoint = endpoints.entry(job.endpoint.clone()).or_default();
    endpoint.in_flight = endpoint.in_flight.saturating_sub(1);
    if let Some(count) = endpoint.calls.get_mut(&job.call_id) {
        *count -= 1;
        if *count == 0 {
            endpoint.calls.remove(&job.call_id);
        }
    }
    let policy = match action {
        Some(Action::Webhook(request)) => request.retry,
        Some(Action::Nats(publish)) => publish.retry,
        Some(Action::Mqtt(publish)) => publish.retry,
        _ => RetryPolicy::default(),
    };
    // A broker's client reconnects by itself and an attempt while it is away fails at
    // once: no circuit breaker, the job's own backoff paces the attempts.
    let breaker = !matches!(action, Some(Action::Nats(_) | Action::Mqtt(_)));
    if matches!(action, Some(Action::Command(_))) {
        *commands_running = commands_running.saturating_sub(1);
    }
    let attempt = job.attempts + 1;
    let result = match delivery {
        Delivery::Done(what) => {
            tracing::debug!(rule = %job.rule, job = job.id, "delivered ({what})");
            endpoint.failures_in_a_row = 0;
            endpoint.failing_since = None;
            endpoint.open_until = None;
            JobUpdate::Done
        }
        Delivery::Retry { reason, after } => {
            endpoint.failures_in_a_row += 1;
            endpoint.failing_since.get_or_insert_with(now_ms);
            if breaker && endpoint.failures_in_a_row >= BREAKER_FAILURES {
                endpoint.open_until = Some(Instant::now() + BREAKER_REST);
            }
            match policy.delay_after(attempt) {
                Some(delay) => {
                    let delay = after.unwrap_or(delay);
                    tracing::warn!(rule = %job.rule, job = job.id, attempt, "delivery failed, retrying in {delay:.1?}: {reason}");
                    JobUpdate::Retry {
                        next_at: now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                        error: reason,
                    }
                }
                None => {
                    tracing::error!(rule = %job.rule, job = job.id, attempt, "delivery failed, giving up: {reason}");
                    JobUpdate::Dead { error: reason }
                }
            }
        }
        Delivery::GiveUp(reason) => {
            tracing::error!(rule = %job.rule, job = job.id, "delivery failed for good: {reason}");
            JobUpdate::Dead { error: reason }
        }
        Delivery::Disable(reason) => {
            tracing::error!(rule = %job.rule, endpoint = %job.endpoint, "endpoint answered 410 Gone; disabled until `callhook outbox retry`: {reason}");
            endpoint.disabled = Some(reason.clone());
            JobUpdate::Disabled {
                endpoint: job.endpoint.clone(),
                error: reason,
            }
        }
    };
    (job.id, result)
}
