//! The Call-IDs of calls that ended lately, so a late retransmission of their INVITE
//! (SIP retransmits for 32 s at most) does not start them again.
//!
//! A busy desk ends thousands of calls within the time they are remembered, and every
//! one is looked up by each new INVITE. They are kept as seeded 64-bit hashes of the
//! Call-ID, not the text: ~24 bytes a call instead of ~130 (the text twice, a map slot
//! and a queue slot), so 10,000 calls take 0.4 MB, not 2 MB. Two Call-IDs share a hash
//! with a chance of one in 2^64 per pair: a new call mistaken for an ended one once in
//! ~10^15 calls. The seed is the process's own, so nobody can choose Call-IDs that
//! collide. Only the newest [`NEWEST`] keep their text, for the checkpoint.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use foldhash::{HashMap, HashMapExt};
use jiff::SignedDuration;
use jiff::civil::DateTime;

use crate::bounded;

/// Remember at most this many ended Call-IDs.
const REMEMBER: usize = 10_000;
/// ... and each for this long (log time).
const REMEMBER_FOR: SignedDuration = SignedDuration::from_secs(120);
/// Expired ones are looked for once per this many calls ended (and when full).
const SWEEP_EVERY: usize = 1024;
/// The newest this many keep their Call-ID's text: a checkpoint writes them.
const NEWEST: usize = 256;

/// See the module docs.
#[derive(Debug)]
pub(super) struct EndedCalls {
    /// Call-ID hash → when the call ended.
    ended: HashMap<u64, DateTime>,
    hasher: foldhash::fast::RandomState,
    /// The newest ended, oldest first, with their text.
    newest: VecDeque<(String, DateTime)>,
    since_sweep: usize,
}

impl EndedCalls {
    pub(super) fn new() -> EndedCalls {
        EndedCalls {
            ended: HashMap::new(),
            hasher: foldhash::fast::RandomState::default(),
            newest: VecDeque::new(),
            since_sweep: 0,
        }
    }

    /// Whether the call `call_id` ended lately.
    pub(super) fn contains(&self, call_id: &str) -> bool {
        self.ended.contains_key(&self.hasher.hash_one(call_id))
    }

    /// Remembers that `call_id` ended `at`.
    pub(super) fn insert(&mut self, call_id: String, at: DateTime) {
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY || self.ended.len() >= REMEMBER {
            self.sweep(at);
        }
        self.ended.insert(self.hasher.hash_one(call_id.as_str()), at);
        if self.newest.len() == NEWEST {
            self.newest.pop_front();
        }
        self.newest.push_back((call_id, at));
    }

    /// The newest ended calls with their text, oldest first.
    pub(super) fn newest(&self) -> impl Iterator<Item = &(String, DateTime)> {
        self.newest.iter()
    }

    /// Forgets the calls ended over [`REMEMBER_FOR`] before `now`; then, if still full,
    /// the oldest quarter or so (so a full set is swept once per thousands of calls).
    fn sweep(&mut self, now: DateTime) {
        self.since_sweep = 0;
        self.ended.retain(|_, at| now.duration_since(*at) <= REMEMBER_FOR);
        if self.ended.len() >= REMEMBER {
            bounded::keep_newest(&mut self.ended, REMEMBER * 3 / 4, |at| *at);
        }
        bounded::shrink_after_burst(&mut self.ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime {
        jiff::civil::date(2026, 1, 1).at(0, 0, 0, 0) + SignedDuration::from_secs(seconds)
    }

    #[test]
    fn remembers_for_a_while_and_at_most_so_many() {
        let mut ended = EndedCalls::new();
        ended.insert("a@host".into(), at(0));
        assert!(ended.contains("a@host"));
        assert!(!ended.contains("b@host"));
        // Well past REMEMBER_FOR, a full sweep's worth of calls later: forgotten.
        for i in 0..SWEEP_EVERY {
            ended.insert(format!("{i}@host"), at(300));
        }
        assert!(!ended.contains("a@host"));
        assert!(ended.contains("0@host"));
        // Never more than REMEMBER, the newest kept.
        for i in 0..3 * REMEMBER {
            ended.insert(format!("n{i}@host"), at(400 + i as i64 / 1000));
        }
        assert!(ended.ended.len() <= REMEMBER);
        assert!(ended.contains(&format!("n{}@host", 3 * REMEMBER - 1)));
        assert!(!ended.contains("n0@host"));
        let newest: Vec<_> = ended.newest().map(|(id, _)| id.clone()).collect();
        assert_eq!(newest.len(), NEWEST);
        assert_eq!(newest.last().unwrap(), &format!("n{}@host", 3 * REMEMBER - 1));
    }
}
