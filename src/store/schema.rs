//! The state database's schema: migrations applied in order on open, counted in
//! `PRAGMA user_version`, so an older database is brought up to date and a newer one is
//! refused (see [`super::StoreError::TooNew`]).

/// Schema migrations, applied in order; `user_version` counts those applied.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 5: the outbox asks, per pending job, whether an earlier one of its call and
    // endpoint still waits (ordered delivery): one index seek, not a scan
    "CREATE INDEX jobs_call_order ON jobs (call_id, endpoint, id) WHERE status = 'pending';",
    // 6: a source's open calls, one row each, so a checkpoint writes only those that
    // changed instead of all of them
    "CREATE TABLE checkpoint_rows (
        source TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (source, key)
    ) WITHOUT ROWID;",
    // 7: `scope: call` rules' decisions for open calls (rule name, call id → fires),
    // written with the jobs they made, so they outlive a restart
    "CREATE TABLE call_scope (
        rule TEXT NOT NULL,
        call_id TEXT NOT NULL,
        fires INTEGER NOT NULL,
        decided_ms INTEGER NOT NULL,
        PRIMARY KEY (rule, call_id)
    );",
    // 8: the outbox reads each endpoint's oldest pending jobs (a few hundred of each):
    // one index range per endpoint, not a sort of every pending job on each read
    "CREATE INDEX jobs_endpoint_pending ON jobs (endpoint, id) WHERE status = 'pending';",
    // 9: the same, with what that read asks of each job (whether it waits behind its
    // call), so it reads the ids from the index alone, and a job's row only when the
    // job is new to the outbox
    "DROP INDEX jobs_endpoint_pending;
    CREATE INDEX jobs_endpoint_pending ON jobs (endpoint, id, ordered, call_id) WHERE status = 'pending';",
    // 10: a job's action (its rendered request, most of the row's bytes) in a table of
    // its own, written once and read when the job starts: each result rewrites the
    // job's row, and each of those rows filled a quarter of a page, so a batch of
    // results wrote (and a checkpoint copied) a page for every few jobs. A job deleted
    // takes its action along. And `jobs_pending (id)` is gone: every job went in and
    // out of it for the status page's oldest pending job alone, which is now the
    // oldest of each endpoint's, along `jobs_endpoint_pending`.
    "CREATE TABLE job_actions (
        job INTEGER PRIMARY KEY,
        action TEXT NOT NULL
    );
    INSERT INTO job_actions (job, action) SELECT id, action FROM jobs;
    ALTER TABLE jobs DROP COLUMN action;
    CREATE TRIGGER jobs_drop_action AFTER DELETE ON jobs BEGIN
        DELETE FROM job_actions WHERE job = old.id;
    END;
    DROP INDEX jobs_pending;",
    // 11: a webhook's body (most of its action) kept apart from the action's JSON, as
    // it was rendered: written and read as it is, not escaped into a JSON string and
    // read back out of one at every delivery (`NULL`: in the JSON, as jobs stored
    // before have it)
    "ALTER TABLE job_actions ADD COLUMN body TEXT;",
];
