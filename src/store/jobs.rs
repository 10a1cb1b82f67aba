//! The outbox's jobs in the state database: new jobs written with the events that made
//! them ([`insert`], inside [`Store::commit`]'s transaction), and the queries and updates
//! of the dispatcher and of `callhook outbox`.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};
use crate::event::Event;

/// A new job, made by a rule from an event being committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    /// Idempotency key (sent as `webhook-id`).
    pub key: String,
    pub rule: String,
    /// What deliveries are grouped by (a webhook's origin, a command's program).
    pub endpoint: String,
    /// The rendered action, JSON; a webhook's with its body left empty ...
    pub action: String,
    /// ... and its body here, as rendered (stored apart: not escaped into the JSON).
    pub body: Option<String>,
    /// Deliver after the call's earlier jobs to the same endpoint.
    pub ordered: bool,
}

/// Adds `event`'s jobs, each action in `job_actions` beside its row (a key stored
/// already is left alone).
pub(super) fn insert(tx: &rusqlite::Connection, event: &Event, jobs: &[JobRow], now: &str) -> Result<(), StoreError> {
    let mut insert_job = tx.prepare_cached(
        "INSERT INTO jobs (key, event_id, rule, call_id, endpoint, ordered, next_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?7) ON CONFLICT (key) DO NOTHING",
    )?;
    let mut insert_action = tx.prepare_cached("INSERT INTO job_actions (job, action, body) VALUES (?1, ?2, ?3)")?;
    for job in jobs {
        let added = insert_job.execute(params![
            job.key,
            event.id,
            job.rule,
            event.call_id,
            job.endpoint,
            job.ordered,
            now
        ])?;
        if added > 0 {
            insert_action.execute(params![tx.last_insert_rowid(), job.action, job.body])?;
        }
    }
    Ok(())
}

/// A job as stored, read back (by the outbox, `callhook outbox`).
#[derive(Debug, Clone)]
pub struct StoredJob {
    pub id: i64,
    pub key: String,
    pub rule: String,
    pub call_id: String,
    pub endpoint: String,
    pub ordered: bool,
    /// The action's JSON; empty where a read of the dispatcher's left it out (see
    /// [`PendingQuery::with_action`]), to be read when the job's turn comes.
    pub action: String,
    /// A webhook's body, kept apart from its action's JSON (`None`: in the JSON).
    pub body: Option<String>,
    pub status: String,
    pub attempts: u32,
    pub next_at: i64,
    pub last_error: Option<String>,
    /// When the job was made (Unix ms).
    pub created_ms: i64,
}

/// A job's action as read back: id, JSON, a webhook's body kept apart.
pub(crate) type StoredAction = (i64, String, Option<String>);

/// What became of a job after a delivery attempt, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobUpdate {
    /// Delivered.
    Done,
    /// Failed for now: pending again, due at `next_at` (Unix ms).
    Retry { next_at: i64, error: String },
    /// Given up: kept for `callhook outbox`.
    Dead { error: String },
    /// Dead, and its endpoint disabled (410 Gone).
    Disabled { endpoint: String, error: String },
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

fn read_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredJob> {
    read_job_with(row, true)
}

/// A row of [`COLUMNS`] as a job, its action left empty unless `with_action`: rusqlite
/// copies a column only when asked, so a scan leaves the bulk of the rows it passes
/// over where it is.
fn read_job_with(row: &rusqlite::Row<'_>, with_action: bool) -> rusqlite::Result<StoredJob> {
    Ok(StoredJob {
        id: row.get(0)?,
        key: row.get(1)?,
        rule: row.get(2)?,
        call_id: row.get(3)?,
        endpoint: row.get(4)?,
        // A job without its action (none should be) reads as one that cannot be sent.
        action: if with_action {
            row.get::<_, Option<String>>(5)?.unwrap_or_default()
        } else {
            String::new()
        },
        status: row.get(6)?,
        attempts: row.get(7)?,
        next_at: row.get(8)?,
        last_error: row.get(9)?,
        ordered: row.get(10)?,
        created_ms: row.get::<_, Option<i64>>(11)?.unwrap_or(0),
        body: if with_action { row.get(12)? } else { None },
    })
}

const COLUMNS: &str = "j.id, j.key, j.rule, j.call_id, j.endpoint, a.action, j.status, j.attempts, j.next_at, j.last_error, j.ordered, CAST((julianday(j.created_at) - 2440587.5) * 86400000 AS INTEGER), a.body";
/// The jobs, `j`, each with its action, `a` ([`COLUMNS`] reads both).
const JOBS_WITH_ACTIONS: &str = "jobs AS j LEFT JOIN job_actions AS a ON a.job = j.id";
/// A pending job `j` that must wait: `ordered`, with an earlier job of its call to its
/// endpoint still pending (waiting for its retry, or not tried yet).
pub(super) const WAITS_BEHIND_ITS_CALL: &str = "(j.ordered AND EXISTS (
    SELECT 1 FROM jobs AS e WHERE e.status = 'pending' AND e.call_id = j.call_id
    AND e.endpoint = j.endpoint AND e.id < j.id))";

/// A read of the pending jobs ([`Store::pending_work`]): whose, how many, and what the
/// reader has already.
pub(crate) struct PendingQuery<'a> {
    /// The endpoints to read (`None`: every endpoint with pending jobs).
    pub only: Option<&'a [String]>,
    /// At most this many jobs of one endpoint ...
    pub per_endpoint: usize,
    /// ... and this many in all.
    pub limit: usize,
    /// Jobs counted but not returned: the outbox's own (in flight, or their results
    /// not committed yet). Their rows are not read.
    pub known: &'a dyn Fn(i64) -> bool,
    /// Jobs the reader holds already, not started (its queues): returned as their id
    /// alone ([`Pending::Held`]), their rows not read.
    pub held: &'a dyn Fn(i64) -> bool,
    /// The first this many jobs read of each endpoint come with their action; the
    /// others with none (read when their turn comes).
    pub with_action: usize,
}

/// A pending job as [`Store::pending_work`] returns it.
// Unboxed: made and taken apart within one read of the pending jobs, and a box would
// cost an allocation for each job read.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Pending {
    /// One the query said the reader holds: its row was not read.
    Held(i64),
    /// One new to the reader, its row read.
    Read(StoredJob),
}

/// What [`Store::pending_work`] read.
pub(crate) struct PendingWork {
    /// The endpoints disabled by a 410 Gone answer.
    pub disabled: Vec<DisabledEndpoint>,
    /// The pending jobs not `known`, oldest first.
    pub jobs: Vec<Pending>,
    /// Jobs read of each endpoint, the `known` ones included.
    pub per_endpoint: HashMap<String, usize>,
    /// Jobs read in all, the `known` ones included (at most the query's `limit`).
    pub total: usize,
}

impl Store {
    /// The disabled endpoints (410 Gone) and the pending jobs, read from one snapshot
    /// of the database. Read apart, a `callhook outbox retry` committed between the two
    /// reads showed its jobs pending again while their endpoint still looked disabled,
    /// and the outbox killed them again at once.
    ///
    /// Pending jobs come oldest first: at most `per_endpoint` of each endpoint and
    /// `limit` in all, so a backlog for one endpoint (a receiver that is down) never
    /// keeps another's jobs out of the dispatcher's view. Left out are the `ordered`
    /// jobs that must wait: a later job of a call to an endpoint while an earlier job of
    /// the same call and endpoint is still pending (waiting for its retry, or not tried
    /// yet), so a call's order holds through failures, across scans and restarts; it
    /// comes once the earlier one is done or dead. With `only`, the jobs of those
    /// endpoints alone (the outbox reads again only the endpoints whose jobs it ran
    /// out of, not every other's it holds already). The jobs the query calls `known`
    /// count toward the limits but are not returned; those it calls `held` come as
    /// their id.
    pub(crate) fn pending_work(&mut self, query: &PendingQuery<'_>) -> Result<PendingWork, StoreError> {
        self.snapshot(|conn| {
            let disabled = disabled_in(conn)?;
            let (jobs, per_endpoint, total) = pending_in(conn, query)?;
            Ok(PendingWork {
                disabled,
                jobs,
                per_endpoint,
                total,
            })
        })
    }

    /// Runs `read` in one read transaction (the outbox reads many times a second: see
    /// [`Store::in_transaction`]).
    fn snapshot<T>(&self, read: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.in_transaction(super::Begin::Deferred, read)
    }

    /// Jobs of `rule` that are over (done or dead): id, call id, status, last error.
    #[allow(clippy::type_complexity)]
    pub(crate) fn finished_jobs_of(
        &self,
        rule: &str,
    ) -> Result<Vec<(i64, String, String, Option<String>)>, StoreError> {
        let mut query = self.conn.prepare_cached(
            "SELECT id, call_id, status, last_error FROM jobs WHERE rule = ?1 AND status != 'pending' ORDER BY id",
        )?;
        let rows = query.query_map([rule], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Jobs with `status` (all when `None`), oldest first.
    pub fn jobs(&mut self, status: Option<&str>, limit: usize) -> Result<Vec<StoredJob>, StoreError> {
        let conn = &mut self.conn;
        let mut query = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM {JOBS_WITH_ACTIONS} WHERE (?1 IS NULL OR j.status = ?1) ORDER BY j.id LIMIT ?2"
        ))?;
        let rows = query.query_map(params![status, limit as i64], read_job)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One job, action included; `None` when there is no such job.
    pub fn job(&mut self, id: i64) -> Result<Option<StoredJob>, StoreError> {
        let conn = &mut self.conn;
        let mut query = conn.prepare(&read_one_sql())?;
        let mut rows = query.query_map([id], read_job)?;
        Ok(rows.next().transpose()?)
    }

    /// The action of each job of `ids` still in the database (id, JSON, body), read in
    /// one transaction: one each cost a read transaction each (locks taken and the page
    /// cache checked anew), more than the lookup itself.
    pub(crate) fn job_actions(&mut self, ids: &[i64]) -> Result<Vec<StoredAction>, StoreError> {
        self.snapshot(|conn| {
            let mut query = conn.prepare_cached("SELECT action, body FROM job_actions WHERE job = ?1")?;
            let mut found = Vec::with_capacity(ids.len());
            for &id in ids {
                if let Some((action, body)) = query.query_row([id], |row| Ok((row.get(0)?, row.get(1)?))).optional()? {
                    found.push((id, action, body));
                }
            }
            Ok(found)
        })
    }

    /// Records what became of jobs (id, update), in one transaction.
    pub(crate) fn record_jobs(&mut self, results: &[(i64, JobUpdate)]) -> Result<(), StoreError> {
        self.sized_for(results.len(), |store| store.write_results(results))
    }

    fn write_results(&mut self, results: &[(i64, JobUpdate)]) -> Result<(), StoreError> {
        let now = jiff::Timestamp::now().to_string();
        self.in_transaction(super::Begin::Deferred, |tx| {
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
                    JobUpdate::Done => done.execute(params![id, now])?,
                    JobUpdate::Retry { next_at, error } => retry.execute(params![id, next_at, error, now])?,
                    JobUpdate::Dead { error } => dead.execute(params![id, error, now])?,
                    JobUpdate::Disabled { endpoint, error } => {
                        disable.execute(params![endpoint, error, now])?;
                        dead.execute(params![id, error, now])?
                    }
                };
            }
            Ok(())
        })
    }

    /// Makes jobs pending again, to be tried at once: the given ids, or every dead job;
    /// their endpoints, if disabled (410 Gone), are enabled again. Returns how many.
    pub fn retry_jobs(&mut self, ids: Option<&[i64]>) -> Result<usize, StoreError> {
        let now = jiff::Timestamp::now().to_string();
        let tx = self.conn.transaction()?;
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
        self.tell_the_outbox();
        Ok(n)
    }

    /// The endpoints disabled by a 410 Gone answer.
    pub fn disabled_endpoints(&mut self) -> Result<Vec<DisabledEndpoint>, StoreError> {
        disabled_in(&self.conn)
    }

    /// Deletes jobs (their actions go with them): the given ids, or every dead job.
    /// Returns how many.
    pub fn drop_jobs(&mut self, ids: Option<&[i64]>) -> Result<usize, StoreError> {
        let conn = &mut self.conn;
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

    /// A number that changes when another connection (a source, another process) commits:
    /// SQLite's `PRAGMA data_version`. The outbox asks whether anyone else wrote since it
    /// last read the pending jobs.
    pub(crate) fn data_version(&self) -> Result<i64, StoreError> {
        // Cached: asked after every change another connection makes.
        let mut query = self.conn.prepare_cached("PRAGMA data_version")?;
        Ok(query.query_row([], |row| row.get(0))?)
    }

    /// Delivered / retrying / dead / waiting counts per rule.
    pub fn job_stats(&mut self) -> Result<Vec<RuleStats>, StoreError> {
        let conn = &mut self.conn;
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

/// The endpoints with pending jobs, as `names(name)` (a last row `NULL`): found by
/// skipping from one to the next along the `jobs_endpoint_pending` index, a seek each,
/// however many jobs wait.
pub(super) const PENDING_ENDPOINTS: &str = "WITH RECURSIVE names(name) AS (
    SELECT MIN(endpoint) FROM jobs WHERE status = 'pending'
    UNION ALL
    SELECT (SELECT MIN(endpoint) FROM jobs WHERE status = 'pending' AND endpoint > name)
    FROM names WHERE name IS NOT NULL
)";

/// The pending jobs of [`Store::pending_work`]: each endpoint's oldest, read apart
/// along the `jobs_endpoint_pending` index (the endpoints found by skipping from one to
/// the next in it), then the oldest `limit` of all. One query over every pending job,
/// numbered per endpoint and sorted, cost a sort of the whole backlog on each read.
fn pending_in(conn: &rusqlite::Connection, query: &PendingQuery<'_>) -> Result<PendingJobs, StoreError> {
    if let Some(names) = query.only {
        return pending_of(conn, names, query);
    }
    let mut endpoints = conn.prepare_cached(&format!(
        "{PENDING_ENDPOINTS} SELECT name FROM names WHERE name IS NOT NULL"
    ))?;
    let names = endpoints
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    pending_of(conn, &names, query)
}

/// The jobs of [`pending_in`] not known, the jobs read per endpoint, and in all.
type PendingJobs = (Vec<Pending>, HashMap<String, usize>, usize);

/// The oldest pending jobs of each endpoint of `names` (at most `per_endpoint` each),
/// then the oldest `limit` of them all; the `known` ones counted and left out, the
/// `held` ones given by id. Their ids come from the index alone; a row is read only for
/// a job new to the reader. Read whole, the rows of the jobs in flight and queued (most
/// of each read, the action text their bulk) cost a read of their pages from the
/// system's file cache after every commit of another connection (SQLite drops a
/// connection's page cache then): 15 % of the outbox's CPU in the dispatch bench.
fn pending_of(
    conn: &rusqlite::Connection,
    names: &[String],
    query: &PendingQuery<'_>,
) -> Result<PendingJobs, StoreError> {
    let mut oldest = conn.prepare_cached(&oldest_sql(query.per_endpoint))?;
    // (id, endpoint's place in `names`)
    let mut ids: Vec<(i64, usize)> = Vec::new();
    for (place, name) in names.iter().enumerate() {
        for id in oldest.query_map([name], |row| row.get::<_, i64>(0))? {
            ids.push((id?, place));
        }
    }
    ids.sort_unstable_by_key(|(id, _)| *id);
    ids.truncate(query.limit);
    let total = ids.len();
    let mut read = conn.prepare_cached(&read_one_sql())?;
    let mut jobs = Vec::with_capacity(total);
    let mut counts = vec![0; names.len()];
    let mut read_of = vec![0; names.len()];
    for (id, place) in ids {
        counts[place] += 1;
        if (query.known)(id) {
            continue;
        }
        if (query.held)(id) {
            jobs.push(Pending::Held(id));
            continue;
        }
        read_of[place] += 1;
        let with_action = read_of[place] <= query.with_action;
        // In the read's snapshot, so the row is there.
        if let Some(job) = read.query_row([id], |row| read_job_with(row, with_action)).optional()? {
            jobs.push(Pending::Read(job));
        }
    }
    let mut per_endpoint: HashMap<String, usize> = HashMap::new();
    for (name, count) in names.iter().zip(counts) {
        if count > 0 {
            per_endpoint.insert(name.clone(), count);
        }
    }
    Ok((jobs, per_endpoint, total))
}

/// The statement reading one job's row, by id, as [`read_job_with`] takes it. The id
/// is compared with `(SELECT ?1)` for the reason [`oldest_sql`] gives: with `j.id = ?1`
/// SQLite carries the bound id over to the join's `a.job` and prepared the statement
/// anew at every run, ~150 µs of the outbox's thread for each job it read (most of its
/// time between a commit and the request, `scripts/profile-live`).
fn read_one_sql() -> String {
    format!("SELECT {COLUMNS} FROM {JOBS_WITH_ACTIONS} WHERE j.id = (SELECT ?1)")
}

/// The text of [`pending_of`]'s statement: the ids of an endpoint's oldest pending jobs
/// that need not wait, from the `jobs_endpoint_pending` and `jobs_call_order` indexes
/// alone (each holds the columns asked of it), made so that it stays prepared: SQLite
/// plans with the values bound to a `LIMIT ?` or to an indexed `endpoint = ?` and then
/// prepares the statement anew at every run (the outbox reads after every commit: that
/// was two thirds of a desk's outbox CPU in the fleet bench). So the limit, a constant
/// of the outbox, is written into it, and the endpoint is compared with `(SELECT ?1)`,
/// a value the planner cannot look into.
fn oldest_sql(per_endpoint: usize) -> String {
    format!(
        "SELECT j.id FROM jobs AS j INDEXED BY jobs_endpoint_pending
         WHERE status = 'pending' AND endpoint = (SELECT ?1)
           AND NOT {WAITS_BEHIND_ITS_CALL}
         ORDER BY id LIMIT {per_endpoint}"
    )
}

/// The endpoints disabled by a 410 Gone answer.
fn disabled_in(conn: &rusqlite::Connection) -> Result<Vec<DisabledEndpoint>, StoreError> {
    let mut query = conn.prepare_cached("SELECT endpoint, reason, since FROM disabled_endpoints ORDER BY endpoint")?;
    let rows = query.query_map([], |row| {
        Ok(DisabledEndpoint {
            endpoint: row.get(0)?,
            reason: row.get(1)?,
            since: row.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::{oldest_sql, read_one_sql};

    /// Stores a job of endpoint `x` made by event `e` and rule `r`, with `action`.
    fn add_job(store: &super::Store, key: &str, call_id: &str, ordered: bool, action: &str) {
        store
            .conn
            .execute(
                "INSERT INTO jobs (key, event_id, rule, call_id, endpoint, ordered, next_at, created_at, updated_at)
                 VALUES (?1, 'e', 'r', ?2, 'x', ?3, 0, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                rusqlite::params![key, call_id, ordered],
            )
            .unwrap();
        store
            .conn
            .execute(
                "INSERT INTO job_actions (job, action) VALUES (?1, ?2)",
                rusqlite::params![store.conn.last_insert_rowid(), action],
            )
            .unwrap();
    }

    /// A read of every pending job, none known or held, the first `with_action` of each
    /// endpoint with their actions.
    fn every_pending_job(with_action: usize) -> super::PendingQuery<'static> {
        super::PendingQuery {
            only: None,
            per_endpoint: 256,
            limit: 1000,
            known: &|_| false,
            held: &|_| false,
            with_action,
        }
    }

    /// The outbox reads the pending jobs after every commit: the statements must stay
    /// prepared (a bound `LIMIT`, or an id the planner carried over to a join, made
    /// SQLite prepare them anew at every run).
    #[test]
    fn the_pending_jobs_read_is_prepared_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = super::Store::open(dir.path()).unwrap();
        for (newest, key) in (1..).zip(["a", "b", "c", "d", "e"]) {
            add_job(&store, key, key, true, "{}");
            // Each read finds one job it does not know yet: a new id to read by.
            let query = super::PendingQuery {
                known: &|id| id < newest,
                ..every_pending_job(0)
            };
            assert_eq!(store.pending_work(&query).unwrap().jobs.len(), 1);
        }
        for sql in [oldest_sql(256), read_one_sql()] {
            let query = store.conn.prepare_cached(&sql).unwrap();
            let run = query.get_status(rusqlite::StatementStatus::Run);
            let prepared_again = query.get_status(rusqlite::StatementStatus::RePrepare);
            assert!(run >= 5, "{sql}: run {run} times");
            assert_eq!(prepared_again, 0, "{sql}: prepared again");
        }
    }

    /// A read of the pending jobs counts the jobs the reader knows, gives the ids of
    /// those it holds and reads the others, the first `with_action` of them with their
    /// action.
    #[test]
    fn known_jobs_are_counted_held_ones_given_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = super::Store::open(dir.path()).unwrap();
        for key in ["a", "b", "c", "d", "e"] {
            add_job(&store, key, key, false, "{}");
        }
        let query = super::PendingQuery {
            only: None,
            per_endpoint: 256,
            limit: 4,
            known: &|id| id == 1,
            held: &|id| id == 3,
            with_action: 1,
        };
        let work = store.pending_work(&query).unwrap();
        let jobs: Vec<(i64, Option<&str>)> = work
            .jobs
            .iter()
            .map(|pending| match pending {
                super::Pending::Held(id) => (*id, None),
                super::Pending::Read(job) => (job.id, Some(job.action.as_str())),
            })
            .collect();
        assert_eq!(jobs, [(2, Some("{}")), (3, None), (4, Some(""))]);
        assert_eq!((work.total, work.per_endpoint["x"]), (4, 4));
    }

    /// The read of an endpoint's pending job ids touches no job's row: its index and the
    /// call-order index hold all it asks (SQLite reads a partial index's `status =
    /// 'pending'` as known).
    #[test]
    fn the_pending_ids_come_from_indexes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::Store::open(dir.path()).unwrap();
        let steps = store.query_plan(&oldest_sql(256), ["x"]);
        let searches: Vec<&String> = steps.iter().filter(|step| step.starts_with("SEARCH")).collect();
        assert_eq!(searches.len(), 2, "{steps:?}");
        assert!(searches.iter().all(|step| step.contains("COVERING INDEX")), "{steps:?}");
    }

    /// A job stored before its action had a table of its own (schema 9) is sent as it
    /// was after the upgrade, and its action goes when it is dropped.
    #[test]
    fn an_old_databases_jobs_keep_their_actions() {
        let dir = tempfile::tempdir().unwrap();
        let old = rusqlite::Connection::open(dir.path().join(super::super::DATABASE_FILE)).unwrap();
        for migration in &super::super::schema::MIGRATIONS[..9] {
            old.execute_batch(migration).unwrap();
        }
        old.pragma_update(None, "user_version", 9).unwrap();
        for key in ["a", "b"] {
            old.execute(
                "INSERT INTO jobs (key, event_id, rule, call_id, endpoint, ordered, action, next_at, created_at, updated_at)
                 VALUES (?1, 'e', 'r', 'c', 'x', 0, ?2, 0, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                [key, &format!("{{\"job\":\"{key}\"}}")],
            )
            .unwrap();
        }
        drop(old);
        let mut store = super::Store::open(dir.path()).unwrap();
        let query = every_pending_job(usize::MAX);
        let actions: Vec<String> = store
            .pending_work(&query)
            .unwrap()
            .jobs
            .into_iter()
            .map(|pending| match pending {
                super::Pending::Read(job) => job.action,
                super::Pending::Held(id) => panic!("job {id} held"),
            })
            .collect();
        assert_eq!(actions, ["{\"job\":\"a\"}", "{\"job\":\"b\"}"]);
        assert_eq!(store.job(2).unwrap().unwrap().action, "{\"job\":\"b\"}");
        assert_eq!(store.drop_jobs(Some(&[1])).unwrap(), 1);
        assert_eq!(
            store.job_actions(&[1, 2]).unwrap(),
            [(2, "{\"job\":\"b\"}".to_owned(), None)]
        );
    }

    /// The actions of jobs read together; a job gone gets none.
    #[test]
    fn actions_are_read_together() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = super::Store::open(dir.path()).unwrap();
        for (key, action) in [("a", "{\"x\":1}"), ("b", "{\"x\":2}")] {
            add_job(&store, key, "c", true, action);
        }
        let found = store.job_actions(&[2, 9, 1]).unwrap();
        assert_eq!(
            found,
            vec![(2, "{\"x\":2}".to_owned(), None), (1, "{\"x\":1}".to_owned(), None)]
        );
    }
}
