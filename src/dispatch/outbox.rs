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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::params;
use tokio::sync::{Notify, mpsc};

use super::{Delivery, command, webhook};
use crate::rules::action::{Action, RetryPolicy};
use crate::store::{Store, StoreError};

/// Look at this many pending jobs per round at most.
const SCAN: usize = 1000;
/// Failures in a row that open an endpoint's circuit, and how long it stays open.
const BREAKER_FAILURES: u32 = 5;
const BREAKER_REST: Duration = Duration::from_secs(30);
/// Commands run at once, at most.
const COMMANDS_AT_ONCE: u32 = 4;
/// Even with nothing to do, look again this often (retries coming due).
const IDLE_WAKE: Duration = Duration::from_millis(500);

/// A job as the dispatcher sees it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub key: String,
    pub rule: String,
    pub call_id: String,
    pub endpoint: String,
    pub ordered: bool,
    /// The action's JSON; empty in the dispatcher's scans, which load it only for the
    /// jobs they start.
    pub action: String,
    pub status: String,
    pub attempts: u32,
    pub next_at: i64,
    pub last_error: Option<String>,
}

/// What to do with a job after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Result_ {
    Done,
    Retry {
        next_at: i64,
        error: String,
    },
    Dead {
        error: String,
    },
    /// Dead, and its endpoint disabled (410 Gone).
    Disabled {
        endpoint: String,
        error: String,
    },
}

/// An endpoint that answered 410 Gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledEndpoint {
    pub endpoint: String,
    pub reason: String,
    pub since: String,
}

/// Counters per rule, from the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleStats {
    pub rule: String,
    pub pending: u64,
    pub retrying: u64,
    pub done: u64,
    pub dead: u64,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn read_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: row.get(0)?,
        key: row.get(1)?,
        rule: row.get(2)?,
        call_id: row.get(3)?,
        endpoint: row.get(4)?,
        action: row.get(5)?,
        status: row.get(6)?,
        attempts: row.get(7)?,
        next_at: row.get(8)?,
        last_error: row.get(9)?,
        ordered: row.get(10)?,
    })
}

const COLUMNS: &str = "id, key, rule, call_id, endpoint, action, status, attempts, next_at, last_error, ordered";
/// The same without the action (the bulk of a row), for scans.
const SCAN_COLUMNS: &str = "id, key, rule, call_id, endpoint, '', status, attempts, next_at, last_error, ordered";

impl Store {
    /// Pending jobs, oldest first (at most `limit`).
    pub fn pending_jobs(&mut self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let conn = self.connection();
        let mut query = conn.prepare_cached(&format!(
            "SELECT {SCAN_COLUMNS} FROM jobs WHERE status = 'pending' ORDER BY id LIMIT ?1"
        ))?;
        let rows = query.query_map([limit as i64], read_job)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Jobs with `status` (all when `None`), oldest first.
    pub fn jobs(&mut self, status: Option<&str>, limit: usize) -> Result<Vec<Job>, StoreError> {
        let conn = self.connection();
        let mut query = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE (?1 IS NULL OR status = ?1) ORDER BY id LIMIT ?2"
        ))?;
        let rows = query.query_map(params![status, limit as i64], read_job)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A job's action JSON.
    fn job_action(&mut self, id: i64) -> Result<String, StoreError> {
        let conn = self.connection();
        let mut query = conn.prepare_cached("SELECT action FROM jobs WHERE id = ?1")?;
        Ok(query.query_row([id], |row| row.get(0))?)
    }

    fn record(&mut self, results: &[(i64, Result_)]) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        let tx = self.connection().transaction()?;
        {
            let mut done = tx.prepare_cached(
                "UPDATE jobs SET status = 'done', attempts = attempts + 1, last_error = NULL, updated_at = ?2 WHERE id = ?1",
            )?;
            let mut retry = tx.prepare_cached(
                "UPDATE jobs SET attempts = attempts + 1, next_at = ?2, last_error = ?3, updated_at = ?4 WHERE id = ?1",
            )?;
            let mut dead = tx.prepare_cached(
                "UPDATE jobs SET status = 'dead', attempts = attempts + 1, last_error = ?2, updated_at = ?3 WHERE id = ?1",
            )?;
            let mut disable = tx.prepare_cached(
                "INSERT INTO disabled_endpoints (endpoint, reason, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT (endpoint) DO UPDATE SET reason = excluded.reason",
            )?;
            for (id, result) in results {
                match result {
                    Result_::Done => done.execute(params![id, now])?,
                    Result_::Retry { next_at, error } => retry.execute(params![id, next_at, error, now])?,
                    Result_::Dead { error } => dead.execute(params![id, error, now])?,
                    Result_::Disabled { endpoint, error } => {
                        disable.execute(params![endpoint, error, now])?;
                        dead.execute(params![id, error, now])?
                    }
                };
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Makes jobs pending again, to be tried at once: the given ids, or every dead job;
    /// their endpoints, if disabled (410 Gone), are enabled again. Returns how many.
    pub fn retry_jobs(&mut self, ids: Option<&[i64]>) -> Result<usize, StoreError> {
        let now = jiff::Timestamp::now().to_string();
        let tx = self.connection().transaction()?;
        let n = match ids {
            None => {
                tx.execute("DELETE FROM disabled_endpoints", [])?;
                tx.execute(
                    "UPDATE jobs SET status = 'pending', attempts = 0, next_at = 0, updated_at = ?1 WHERE status = 'dead'",
                    [&now],
                )?
            }
            Some(ids) => {
                let mut n = 0;
                for id in ids {
                    tx.execute(
                        "DELETE FROM disabled_endpoints WHERE endpoint = (SELECT endpoint FROM jobs WHERE id = ?1)",
                        [id],
                    )?;
                    n += tx.execute(
                        "UPDATE jobs SET status = 'pending', attempts = 0, next_at = 0, updated_at = ?2 WHERE id = ?1 AND status != 'pending'",
                        params![id, now],
                    )?;
                }
                n
            }
        };
        tx.commit()?;
        Ok(n)
    }

    /// The endpoints disabled by a 410 Gone answer.
    pub fn disabled_endpoints(&mut self) -> Result<Vec<DisabledEndpoint>, StoreError> {
        let conn = self.connection();
        let mut query =
            conn.prepare_cached("SELECT endpoint, reason, since FROM disabled_endpoints ORDER BY endpoint")?;
        let rows = query.query_map([], |row| {
            Ok(DisabledEndpoint {
                endpoint: row.get(0)?,
                reason: row.get(1)?,
                since: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes jobs: the given ids, or every dead job. Returns how many.
    pub fn drop_jobs(&mut self, ids: Option<&[i64]>) -> Result<usize, StoreError> {
        let conn = self.connection();
        Ok(match ids {
            None => conn.execute("DELETE FROM jobs WHERE status = 'dead'", [])?,
            Some(ids) => {
                let mut n = 0;
                for id in ids {
                    n += conn.execute("DELETE FROM jobs WHERE id = ?1", [id])?;
                }
                n
            }
        })
    }

    /// Delivered / retrying / dead / waiting counts per rule.
    pub fn job_stats(&mut self) -> Result<Vec<RuleStats>, StoreError> {
        let conn = self.connection();
        let mut query = conn.prepare(
            "SELECT rule,
                SUM(status = 'pending' AND attempts = 0), SUM(status = 'pending' AND attempts > 0),
                SUM(status = 'done'), SUM(status = 'dead')
             FROM jobs GROUP BY rule ORDER BY rule",
        )?;
        let rows = query.query_map([], |row| {
            Ok(RuleStats {
                rule: row.get(0)?,
                pending: row.get::<_, i64>(1)? as u64,
                retrying: row.get::<_, i64>(2)? as u64,
                done: row.get::<_, i64>(3)? as u64,
                dead: row.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Per-endpoint delivery state.
#[derive(Debug, Default)]
struct Endpoint {
    in_flight: u32,
    failures_in_a_row: u32,
    open_until: Option<Instant>,
    /// Answered 410 Gone: no more deliveries.
    disabled: Option<String>,
}

/// Deliveries in flight at once, over all endpoints.
const IN_FLIGHT: usize = 256;
/// Record at most this many results per transaction.
const RESULT_BATCH: usize = 2000;

/// Runs the outbox until `stop` is notified: delivers due jobs, records results.
///
/// Pending jobs are read from the database into a queue (when told of new jobs, when
/// the queue runs dry, and every half second for retries coming due); each round starts
/// what the queue allows without another query. Results are recorded in batches, one
/// transaction each, with `synchronous=NORMAL` on this connection: a result lost to a
/// power cut only means that delivery is made again, with the same `webhook-id`; the
/// jobs themselves were committed with `synchronous=FULL` together with their events.
pub async fn run(mut store: Store, wake: Arc<Notify>, stop: Arc<Notify>) -> Result<(), StoreError> {
    store.connection().pragma_update(None, "synchronous", "NORMAL")?;
    let client = webhook::client();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Job, Delivery)>();
    // In flight: job id → its (endpoint, call), for ordering.
    let mut in_flight: HashMap<i64, (String, String)> = HashMap::new();
    let mut endpoints: HashMap<String, Endpoint> = HashMap::new();
    let mut actions: HashMap<i64, Action> = HashMap::new();
    let mut queue: Vec<Job> = Vec::new();
    let mut commands_running = 0u32;
    let mut stopping = false;
    let mut refill = true;
    let mut results: Vec<(i64, Result_)> = Vec::new();
    loop {
        // Results first: they free endpoints and calls for the next jobs.
        while results.len() < RESULT_BATCH {
            let Ok((job, delivery)) = done_rx.try_recv() else { break };
            in_flight.remove(&job.id);
            let action = actions.remove(&job.id);
            results.push(settle(
                &job,
                action.as_ref(),
                delivery,
                &mut endpoints,
                &mut commands_running,
            ));
        }
        if !results.is_empty() {
            store.record(&results)?;
            results.clear();
        }
        if stopping && in_flight.is_empty() {
            return Ok(());
        }
        if refill && !stopping {
            refill = false;
            // A 410 Gone disables an endpoint in the database; `callhook outbox retry`
            // (another process) enables it there.
            let disabled: HashMap<String, String> = store
                .disabled_endpoints()?
                .into_iter()
                .map(|d| (d.endpoint, d.reason))
                .collect();
            for (name, endpoint) in endpoints.iter_mut() {
                endpoint.disabled = disabled.get(name).cloned();
            }
            for (name, reason) in disabled {
                endpoints.entry(name).or_default().disabled = Some(reason);
            }
            queue = store
                .pending_jobs(SCAN)?
                .into_iter()
                .filter(|j| !in_flight.contains_key(&j.id))
                .collect();
        }
        let mut next_due: Option<i64> = None;
        if !stopping {
            let now = now_ms();
            let mut blocked: HashSet<(String, String)> = in_flight.values().cloned().collect();
            let mut dead = Vec::new();
            let mut kept = Vec::with_capacity(queue.len());
            for job in std::mem::take(&mut queue) {
                if in_flight.len() >= IN_FLIGHT {
                    kept.push(job);
                    continue;
                }
                let call = (job.endpoint.clone(), job.call_id.clone());
                if job.ordered && blocked.contains(&call) {
                    kept.push(job);
                    continue;
                }
                if job.next_at > now {
                    next_due = Some(next_due.map_or(job.next_at, |d| d.min(job.next_at)));
                    blocked.insert(call);
                    kept.push(job);
                    continue;
                }
                if let std::collections::hash_map::Entry::Vacant(slot) = actions.entry(job.id) {
                    match store
                        .job_action(job.id)
                        .map(|json| serde_json::from_str::<Action>(&json))
                    {
                        Ok(Ok(action)) => {
                            slot.insert(action);
                        }
                        Ok(Err(e)) => {
                            dead.push((
                                job.id,
                                Result_::Dead {
                                    error: format!("unreadable job: {e}"),
                                },
                            ));
                            continue;
                        }
                        // deleted meanwhile (`callhook outbox drop`)
                        Err(StoreError::Sql(rusqlite::Error::QueryReturnedNoRows)) => continue,
                        Err(e) => return Err(e),
                    }
                }
                let action = &actions[&job.id];
                let endpoint = endpoints.entry(job.endpoint.clone()).or_default();
                if let Some(reason) = &endpoint.disabled {
                    dead.push((
                        job.id,
                        Result_::Dead {
                            error: format!("endpoint disabled: {reason}"),
                        },
                    ));
                    actions.remove(&job.id);
                    continue;
                }
                let resting = endpoint.open_until.is_some_and(|until| until > Instant::now());
                let allowed = !resting
                    && match action {
                        Action::Webhook(request) => {
                            let limit = if endpoint.open_until.is_some() {
                                1
                            } else {
                                request.concurrency.max(1)
                            };
                            endpoint.in_flight < limit
                        }
                        Action::Command(_) => commands_running < COMMANDS_AT_ONCE,
                    };
                if !allowed {
                    blocked.insert(call);
                    kept.push(job);
                    continue;
                }
                endpoint.in_flight += 1;
                if matches!(action, Action::Command(_)) {
                    commands_running += 1;
                }
                blocked.insert(call.clone());
                in_flight.insert(job.id, call);
                let action = action.clone();
                let client = client.clone();
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let delivery = match &action {
                        Action::Webhook(request) => webhook::send(&client, request, &job.key).await,
                        Action::Command(spec) => command::run(spec).await,
                    };
                    let _ = done.send((job, delivery));
                });
            }
            queue = kept;
            if !dead.is_empty() {
                store.record(&dead)?;
            }
            // The queue ran dry while more may wait in the database.
            if queue.is_empty() {
                refill = in_flight.len() < IN_FLIGHT;
            }
        }
        let wait = match next_due {
            Some(due) => Duration::from_millis((due - now_ms()).clamp(1, IDLE_WAKE.as_millis() as i64) as u64),
            None => IDLE_WAKE,
        };
        tokio::select! {
            () = wake.notified() => refill = true,
            Some((job, delivery)) = done_rx.recv() => {
                in_flight.remove(&job.id);
                let action = actions.remove(&job.id);
                results.push(settle(&job, action.as_ref(), delivery, &mut endpoints, &mut commands_running));
            }
            () = tokio::time::sleep(wait) => refill = true,
            () = stop.notified(), if !stopping => stopping = true,
        }
    }
}

/// Turns one delivery into the job's next state, updating its endpoint.
fn settle(
    job: &Job,
    action: Option<&Action>,
    delivery: Delivery,
    endpoints: &mut HashMap<String, Endpoint>,
    commands_running: &mut u32,
) -> (i64, Result_) {
    let endpoint = endpoints.entry(job.endpoint.clone()).or_default();
    endpoint.in_flight = endpoint.in_flight.saturating_sub(1);
    let policy = match action {
        Some(Action::Webhook(request)) => request.retry,
        _ => RetryPolicy::default(),
    };
    if matches!(action, Some(Action::Command(_))) {
        *commands_running = commands_running.saturating_sub(1);
    }
    let attempt = job.attempts + 1;
    let result = match delivery {
        Delivery::Done(what) => {
            tracing::debug!(rule = %job.rule, job = job.id, "delivered ({what})");
            endpoint.failures_in_a_row = 0;
            endpoint.open_until = None;
            Result_::Done
        }
        Delivery::Retry { reason, after } => {
            endpoint.failures_in_a_row += 1;
            if endpoint.failures_in_a_row >= BREAKER_FAILURES {
                endpoint.open_until = Some(Instant::now() + BREAKER_REST);
            }
            match policy.delay_after(attempt) {
                Some(delay) => {
                    let delay = after.unwrap_or(delay);
                    tracing::warn!(rule = %job.rule, job = job.id, attempt, "delivery failed, retrying in {delay:.1?}: {reason}");
                    Result_::Retry {
                        next_at: now_ms() + delay.as_millis() as i64,
                        error: reason,
                    }
                }
                None => {
                    tracing::error!(rule = %job.rule, job = job.id, attempt, "delivery failed, giving up: {reason}");
                    Result_::Dead { error: reason }
                }
            }
        }
        Delivery::GiveUp(reason) => {
            tracing::error!(rule = %job.rule, job = job.id, "delivery failed for good: {reason}");
            Result_::Dead { error: reason }
        }
        Delivery::Disable(reason) => {
            tracing::error!(rule = %job.rule, endpoint = %job.endpoint, "endpoint answered 410 Gone; disabled until `callhook outbox retry`: {reason}");
            endpoint.disabled = Some(reason.clone());
            Result_::Disabled {
                endpoint: job.endpoint.clone(),
                error: reason,
            }
        }
    };
    (job.id, result)
}
