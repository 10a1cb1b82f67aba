//! What the status page and the metrics read of the state database: each source's
//! checkpoint, the last calls' events and deliveries, counts. Read-only, but for
//! enabling an endpoint again.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// A source's checkpoint, as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRow {
    pub key: String,
    pub resume_offset: u64,
    pub updated_at: String,
}

/// One delivery (job) of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: i64,
    pub event_id: String,
    pub rule: String,
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A pending job, as `/healthz` and `callhook status` look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingJob {
    pub id: i64,
    pub rule: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// When it is due (Unix ms): for the job due longest ago, when it was made or
    /// last retried if it has no retry time.
    pub next_at: i64,
    pub last_error: Option<String>,
}

/// The statement reading the pending job made first: the oldest of each endpoint's
/// (one seek each along `jobs_endpoint_pending`), the oldest of those. No index holds
/// the pending jobs by id alone: every job went in and out of one for this alone.
fn oldest_pending_sql() -> String {
    format!(
        "{} SELECT id, rule, created_at, next_at, last_error FROM jobs
         WHERE id = (SELECT MIN((SELECT MIN(id) FROM jobs WHERE status = 'pending' AND endpoint = name))
                     FROM names WHERE name IS NOT NULL)",
        super::jobs::PENDING_ENDPOINTS
    )
}

/// A job whose last attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedJob {
    pub id: i64,
    pub rule: String,
    pub status: String,
    pub error: String,
    pub updated_at: String,
}

impl Store {
    /// The pending job made first, and the one due longest ago (none when none waits).
    pub fn waiting_extremes(&self) -> Result<(Option<WaitingJob>, Option<WaitingJob>), StoreError> {
        let read = |sql: &str| -> Result<Option<WaitingJob>, StoreError> {
            Ok(self
                .conn
                .query_row(sql, [], |row| {
                    Ok(WaitingJob {
                        id: row.get(0)?,
                        rule: row.get(1)?,
                        created_at: row.get(2)?,
                        next_at: row.get(3)?,
                        last_error: row.get(4)?,
                    })
                })
                .optional()?)
        };
        let oldest = read(&oldest_pending_sql())?;
        // Due: its retry time, or when it was made or last retried (`next_at` is 0
        // then). A job waiting behind an earlier job of its call (ordered) is not due.
        let overdue = read(&format!(
            "SELECT id, rule, created_at,
                    MAX(next_at, CAST((julianday(updated_at) - 2440587.5) * 86400000 AS INTEGER)) AS due,
                    last_error
             FROM jobs AS j WHERE status = 'pending' AND NOT {}
             ORDER BY due, id LIMIT 1",
            super::jobs::WAITS_BEHIND_ITS_CALL
        ))?;
        Ok((oldest, overdue))
    }

    /// The `limit` jobs that failed last (retrying or dead), newest first.
    pub fn last_errors(&self, limit: usize) -> Result<Vec<FailedJob>, StoreError> {
        let mut query = self.conn.prepare_cached(
            "SELECT id, rule, status, last_error, updated_at FROM jobs
             WHERE last_error IS NOT NULL AND status != 'done' ORDER BY updated_at DESC, id DESC LIMIT ?1",
        )?;
        let rows = query.query_map([limit as i64], |row| {
            Ok(FailedJob {
                id: row.get(0)?,
                rule: row.get(1)?,
                status: row.get(2)?,
                error: row.get(3)?,
                updated_at: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every source's checkpoint.
    pub fn source_rows(&self) -> Result<Vec<SourceRow>, StoreError> {
        let mut query = self
            .conn
            .prepare_cached("SELECT source, resume_offset, updated_at FROM checkpoints ORDER BY source")?;
        let rows = query.query_map([], |row| {
            Ok(SourceRow {
                key: row.get(0)?,
                resume_offset: row.get::<_, i64>(1)?.max(0) as u64,
                updated_at: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The JSON of the last `limit` events shown (not duplicates), newest first.
    pub(crate) fn recent_events(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut query = self
            .conn
            .prepare_cached("SELECT json FROM events WHERE duplicate_of IS NULL ORDER BY seq DESC LIMIT ?1")?;
        let rows = query.query_map([limit as i64], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The deliveries of the events of `call_ids`, oldest first.
    pub(crate) fn deliveries_of(&self, call_ids: &[String]) -> Result<Vec<DeliveryRow>, StoreError> {
        let mut query = self.conn.prepare_cached(
            "SELECT id, event_id, rule, status, attempts, last_error, created_at, updated_at
             FROM jobs WHERE call_id = ?1 ORDER BY id",
        )?;
        let mut deliveries = Vec::new();
        for call_id in call_ids {
            let rows = query.query_map([call_id], |row| {
                Ok(DeliveryRow {
                    id: row.get(0)?,
                    event_id: row.get(1)?,
                    rule: row.get(2)?,
                    status: row.get(3)?,
                    attempts: row.get(4)?,
                    last_error: row.get(5)?,
                    created_at: row.get(6)?,
                    updated_at: row.get(7)?,
                })
            })?;
            for row in rows {
                deliveries.push(row?);
            }
        }
        Ok(deliveries)
    }

    /// Enables an endpoint a 410 Gone disabled; its dead jobs stay dead (retry them on
    /// their own). Returns whether it was disabled.
    pub(crate) fn enable_endpoint(&mut self, endpoint: &str) -> Result<bool, StoreError> {
        let enabled = self
            .conn
            .execute("DELETE FROM disabled_endpoints WHERE endpoint = ?1", params![endpoint])?
            > 0;
        self.tell_the_outbox();
        Ok(enabled)
    }
}

#[cfg(test)]
mod tests {
    use super::oldest_pending_sql;
    use crate::store::Store;

    /// The oldest pending job is the oldest of every endpoint's, found by seeks alone: no
    /// step of the read scans the jobs (a large backlog must not slow the status page).
    #[test]
    fn the_oldest_pending_job_is_found_by_seeks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (key, endpoint, status) in [("a", "y", "done"), ("b", "y", "pending"), ("c", "x", "pending")] {
            store
                .conn
                .execute(
                    "INSERT INTO jobs (key, event_id, rule, call_id, endpoint, status, next_at, created_at, updated_at)
                     VALUES (?1, 'e', 'r', 'c', ?2, ?3, 0, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                    [key, endpoint, status],
                )
                .unwrap();
        }
        let (oldest, _) = store.waiting_extremes().unwrap();
        assert_eq!(oldest.unwrap().id, 2);
        let steps = store.query_plan(&oldest_pending_sql(), []);
        assert!(
            steps
                .iter()
                .all(|step| !step.starts_with("SCAN") || step == "SCAN names"),
            "{steps:?}"
        );
        store.conn.execute("UPDATE jobs SET status = 'done'", []).unwrap();
        assert!(store.waiting_extremes().unwrap().0.is_none());
    }
}
