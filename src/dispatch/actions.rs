//! The actions of the jobs the outbox starts: read from the database in batches, parsed
//! once each, and kept until the job's delivery is over.
//!
//! A job's action (its rendered request, JSON) is the bulk of its row, so the reads of
//! the pending jobs leave it out and it is read when the job is about to start. Read one
//! by one, each read was a read transaction of its own (SQLite's shared-memory locks, two
//! `fcntl` calls, and its page cache dropped whenever another connection had committed
//! since): a tenth of the outbox's CPU in the dispatch bench. So when the next job of a
//! queue has no action yet, the actions of the jobs after it are read with it, in one
//! transaction ([`AHEAD`]). Most need no read at all: the read of the pending jobs
//! brings the actions of the jobs it returns, copied from rows it steps on anyway (the
//! lookups cost a tenth of the outbox's CPU again), and they are parsed from there as
//! each job's turn comes ([`Actions::take_from`]). Read again, a job comes with its
//! action again; a job the outbox reads one by one has none ([`WITH_READ`]).

use std::sync::Arc;

use foldhash::{HashMap, HashSet};

use crate::rules::action::Action;
use crate::store::{Store, StoreError, StoredJob};

/// How many queued jobs' actions one read brings at most.
pub(super) const AHEAD: usize = 64;
/// How many jobs of an endpoint a read of the pending jobs brings with their action:
/// all it returns (at most the outbox's `SCAN_PER_ENDPOINT`, 256). So a backlog keeps
/// up to that many actions' text per endpoint in memory, the jobs it starts next;
/// with 128, a third of the jobs in the dispatch bench still needed a lookup.
pub(super) const WITH_READ: usize = usize::MAX;

/// A job's action as read: ready to send, or why it cannot be.
pub(super) type Loaded = Result<Arc<Action>, String>;

/// The actions read, by job id.
#[derive(Default)]
pub(super) struct Actions {
    loaded: HashMap<i64, Loaded>,
}

impl Actions {
    /// Reads the actions of `ids` not read yet, in one transaction, unless the first of
    /// them is read already (the rest came with it). A job gone from the database
    /// (`callhook outbox drop`) gets no entry.
    pub(super) fn load(&mut self, store: &mut Store, ids: &[i64]) -> Result<(), StoreError> {
        if ids.first().is_none_or(|first| self.loaded.contains_key(first)) {
            return Ok(());
        }
        let missing: Vec<i64> = ids.iter().copied().filter(|id| !self.loaded.contains_key(id)).collect();
        for (id, json, body) in store.job_actions(&missing)? {
            self.loaded.insert(id, parse(&json, body));
        }
        Ok(())
    }

    /// Parses the actions that `jobs` brought from the read of the pending jobs, unless
    /// parsed already, and lets go of their text.
    pub(super) fn take_from<'a>(&mut self, jobs: impl Iterator<Item = &'a mut StoredJob>) {
        for job in jobs {
            if job.action.is_empty() {
                continue;
            }
            let json = std::mem::take(&mut job.action);
            let body = job.body.take();
            self.loaded.entry(job.id).or_insert_with(|| parse(&json, body));
        }
    }

    /// Job `id`'s action, if read (`None`: not read, or the job is gone).
    pub(super) fn get(&self, id: i64) -> Option<&Loaded> {
        self.loaded.get(&id)
    }

    /// Forgets job `id`'s action (its delivery is over), returning it.
    pub(super) fn remove(&mut self, id: i64) -> Option<Arc<Action>> {
        self.loaded.remove(&id).and_then(Result::ok)
    }

    /// Forgets the actions of the jobs not in `keep` (read ahead for jobs that a later
    /// read of the pending jobs no longer gave: dropped, or done by now).
    pub(super) fn retain(&mut self, keep: &HashSet<i64>) {
        self.loaded.retain(|id, _| keep.contains(id));
    }
}

/// A job's action from its JSON and body, or why it cannot be read.
fn parse(json: &str, body: Option<String>) -> Loaded {
    Action::from_stored(json, body)
        .map(Arc::new)
        .map_err(|e| format!("unreadable job: {e}"))
}
