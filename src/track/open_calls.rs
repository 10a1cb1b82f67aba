//! A tracker's open calls by Call-ID, remembering which of them changed since the last
//! checkpoint.
//!
//! A checkpoint must keep every open call (to end it as `unknown` if its trace is gone
//! after a restart). Written whole, that costs as much per commit as there are open
//! calls: 2,000 calls a source may keep open made every event's commit rewrite ~1 MB.
//! So a checkpoint takes [`CallRows`]: one row per call changed or ended since the last
//! one committed, or every open call when nothing was committed yet (the rows stored
//! before are then replaced).

// Seeded (Call-IDs are the caller's choice) and quicker than std's SipHash.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use serde::Serialize;

/// Open calls with their changes since the last committed checkpoint.
#[derive(Debug)]
pub(crate) struct OpenCalls<C> {
    calls: HashMap<String, C>,
    /// Call-IDs changed, started or ended since the last commit; `None` when every
    /// open call must be written (nothing committed yet, or too many changes to list).
    changed: Option<HashSet<String>>,
}

/// Rows of a checkpoint, keyed by Call-ID: the call's state (JSON) or `None` when it
/// ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallRows {
    /// The rows are every open call: those stored before are replaced.
    pub complete: bool,
    pub rows: Vec<(String, Option<String>)>,
}

impl<C: Serialize> OpenCalls<C> {
    pub(crate) fn new() -> OpenCalls<C> {
        OpenCalls {
            calls: HashMap::new(),
            changed: None,
        }
    }

    fn mark(&mut self, call_id: &str) {
        let limit = 2 * self.calls.len() + 4096;
        if let Some(changed) = &mut self.changed {
            changed.insert(call_id.to_owned());
            // A replay never commits: listing every call it saw would only grow.
            if changed.len() > limit {
                self.changed = None;
            }
        }
    }

    pub(crate) fn contains_key(&self, call_id: &str) -> bool {
        self.calls.contains_key(call_id)
    }

    pub(crate) fn get(&self, call_id: &str) -> Option<&C> {
        self.calls.get(call_id)
    }

    pub(crate) fn get_mut(&mut self, call_id: &str) -> Option<&mut C> {
        if self.calls.contains_key(call_id) {
            self.mark(call_id);
        }
        self.calls.get_mut(call_id)
    }

    pub(crate) fn insert(&mut self, call_id: String, call: C) {
        self.mark(&call_id);
        self.calls.insert(call_id, call);
    }

    pub(crate) fn remove(&mut self, call_id: &str) -> Option<C> {
        let call = self.calls.remove(call_id)?;
        self.mark(call_id);
        Some(call)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &C> {
        self.calls.values()
    }

    /// Every call, each counted as changed.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut C> {
        self.changed = None;
        self.calls.values_mut()
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &String> {
        self.calls.keys()
    }

    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }

    /// The rows a checkpoint taken now writes.
    pub(crate) fn rows(&self) -> CallRows {
        let row = |id: &String| (id.clone(), self.calls.get(id).map(to_json));
        match &self.changed {
            Some(changed) => CallRows {
                complete: false,
                rows: changed.iter().map(row).collect(),
            },
            None => CallRows {
                complete: true,
                rows: self.calls.keys().map(row).collect(),
            },
        }
    }

    /// The checkpoint taken by [`OpenCalls::rows`] was committed.
    pub(crate) fn committed(&mut self) {
        self.changed = Some(HashSet::new());
    }
}

fn to_json<C: Serialize>(call: &C) -> String {
    serde_json::to_string(call).expect("a call serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(calls: &OpenCalls<u32>) -> (bool, Vec<(String, Option<String>)>) {
        let mut rows = calls.rows();
        rows.rows.sort();
        (rows.complete, rows.rows)
    }

    #[test]
    fn only_what_changed_since_the_commit_is_written() {
        let mut calls = OpenCalls::new();
        calls.insert("a".into(), 1);
        calls.insert("b".into(), 2);
        assert_eq!(
            rows(&calls),
            (
                true,
                vec![("a".into(), Some("1".into())), ("b".into(), Some("2".into()))]
            )
        );
        calls.committed();
        assert_eq!(rows(&calls), (false, vec![]));
        *calls.get_mut("a").unwrap() = 3;
        calls.remove("b");
        assert!(calls.get_mut("missing").is_none());
        assert_eq!(
            rows(&calls),
            (false, vec![("a".into(), Some("3".into())), ("b".into(), None)])
        );
        calls.values_mut().for_each(|v| *v += 1);
        assert_eq!(rows(&calls), (true, vec![("a".into(), Some("4".into()))]));
    }

    #[test]
    fn never_committed_changes_are_not_listed_forever() {
        let mut calls = OpenCalls::new();
        calls.committed();
        for i in 0..10_000 {
            calls.insert(i.to_string(), i);
            calls.remove(&i.to_string());
        }
        assert_eq!(rows(&calls), (true, vec![]));
    }
}
