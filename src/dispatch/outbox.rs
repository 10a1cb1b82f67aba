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
//! endpoint rests for 30 s, then one job tests it), and `410 Gone` disables it (its
//! jobs go dead until `callhook outbox retry`). Jobs of one call to one endpoint go in
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
const SCAN: usize = 4000;
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
    Retry { next_at: i64, error: String },
    Dead { error: String },
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
    })
}

const COLUMNS: &str = "id, key, rule, call_id, endpoint, action, status, attempts, next_at, last_error";

impl Store {
    /// Pending jobs, oldest first (at most `limit`).
    pub fn pending_jobs(&mut self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let conn = self.connection();
        let mut query = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE status = 'pending' ORDER BY id LIMIT ?1"
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
            for (id, result) in results {
                match result {
                    Result_::Done => done.execute(params![id, now])?,
                    Result_::Retry { next_at, error } => retry.execute(params![id, next_at, error, now])?,
                    Result_::Dead { error } => dead.execute(params![id, error, now])?,
                };
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Makes jobs pending again, to be tried at once: the given ids, or every dead job.
    /// Returns how many.
    pub fn retry_jobs(&mut self, ids: Option<&[i64]>) -> Result<usize, StoreError> {
        let now = jiff::Timestamp::now().to_string();
        let conn = self.connection();
        Ok(match ids {
            None => conn.execute(
                "UPDATE jobs SET status = 'pending', attempts = 0, next_at = 0, updated_at = ?1 WHERE status = 'dead'",
                [&now],
            )?,
            Some(ids) => {
                let mut n = 0;
                for id in ids {
                    n += conn.execute(
                        "UPDATE jobs SET status = 'pending', attempts = 0, next_at = 0, updated_at = ?2 WHERE id = ?1 AND status != 'pending'",
                        params![id, now],
                    )?;
                }
                n
            }
        })
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

/// Runs the outbox until `stop` is notified: delivers due jobs, records results.
pub async fn run(mut store: Store, wake: Arc<Notify>, stop: Arc<Notify>) -> Result<(), StoreError> {
    let client = webhook::client();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Job, Delivery)>();
    let mut in_flight: HashSet<i64> = HashSet::new();
    let mut endpoints: HashMap<String, Endpoint> = HashMap::new();
    let mut commands_running = 0u32;
    let mut stopping = false;
    loop {
        // Results first: they free endpoints and calls for the next jobs.
        let mut results = Vec::new();
        while let Ok((job, delivery)) = done_rx.try_recv() {
            in_flight.remove(&job.id);
            results.push(settle(&job, delivery, &mut endpoints, &mut commands_running));
        }
        if !results.is_empty() {
            store.record(&results)?;
        }
        if stopping && in_flight.is_empty() {
            return Ok(());
        }
        let mut next_due: Option<i64> = None;
        if !stopping {
            let now = now_ms();
            let mut blocked: HashSet<(String, String)> = HashSet::new();
            for job in store.pending_jobs(SCAN)? {
                let action: Action = match serde_json::from_str(&job.action) {
                    Ok(action) => action,
                    Err(e) => {
                        store.record(&[(
                            job.id,
                            Result_::Dead {
                                error: format!("unreadable job: {e}"),
                            },
                        )])?;
                        continue;
                    }
                };
                let ordered = match &action {
                    Action::Webhook(request) => request.ordered,
                    Action::Command(_) => true,
                };
                let call = (job.endpoint.clone(), job.call_id.clone());
                if in_flight.contains(&job.id) || (ordered && blocked.contains(&call)) {
                    blocked.insert(call);
                    continue;
                }
                if job.next_at > now {
                    next_due = Some(next_due.map_or(job.next_at, |d| d.min(job.next_at)));
                    blocked.insert(call);
                    continue;
                }
                let endpoint = endpoints.entry(job.endpoint.clone()).or_default();
                if let Some(reason) = &endpoint.disabled {
                    let error = format!("endpoint disabled: {reason}");
                    store.record(&[(job.id, Result_::Dead { error })])?;
                    continue;
                }
                if endpoint.open_until.is_some_and(|until| until > Instant::now()) {
                    blocked.insert(call);
                    continue;
                }
                let allowed = match &action {
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
                    continue;
                }
                endpoint.in_flight += 1;
                if matches!(action, Action::Command(_)) {
                    commands_running += 1;
                }
                blocked.insert(call);
                in_flight.insert(job.id);
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
        }
        let wait = match next_due {
            Some(due) => Duration::from_millis((due - now_ms()).clamp(1, IDLE_WAKE.as_millis() as i64) as u64),
            None => IDLE_WAKE,
        };
        tokio::select! {
            () = wake.notified() => {}
            Some((job, delivery)) = done_rx.recv() => {
                in_flight.remove(&job.id);
                let result = settle(&job, delivery, &mut endpoints, &mut commands_running);
                store.record(&[result])?;
            }
            () = tokio::time::sleep(wait) => {}
            () = stop.notified(), if !stopping => stopping = true,
        }
    }
}

/// Turns one delivery into the job's next state, updating its endpoint.
fn settle(
    job: &Job,
    delivery: Delivery,
    endpoints: &mut HashMap<String, Endpoint>,
    commands_running: &mut u32,
) -> (i64, Result_) {
    let endpoint = endpoints.entry(job.endpoint.clone()).or_default();
    endpoint.in_flight = endpoint.in_flight.saturating_sub(1);
    let action: Option<Action> = serde_json::from_str(&job.action).ok();
    let policy = match &action {
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
            Result_::Dead { error: reason }
        }
    };
    (job.id, result)
}
