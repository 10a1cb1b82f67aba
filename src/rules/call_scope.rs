//! What `scope: call` rules decided for the calls still open: per (rule name, call id),
//! whether the rule fires for that call's events. A decision is made at the call's
//! `ringing` and dropped at its `ended`.
//!
//! The daemon makes the decisions durable: with [`CallDecisions::record`] on, every
//! decision made and dropped is also kept as a change, which the pipeline takes
//! ([`CallDecisions::take_changes`]) and commits in the same transaction as the jobs
//! the decision made; on start it hands the stored ones back
//! ([`CallDecisions::restore`]). So a call whose `ringing` was judged before a restart
//! (kill -9 included) is sent whole or not at all after it, too. `callhook replay` and
//! `callhook test` do not record (nothing is stored).

use std::collections::HashMap;

/// Decisions remembered at most; past it the oldest half is forgotten (far more open
/// calls than any phone has: only calls whose `ended` never came pile up).
const REMEMBERED: usize = 20_000;

/// One decision: rule `rule` fires (`fires`) or not for call `call_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallDecision {
    pub rule: String,
    pub call_id: String,
    pub fires: bool,
}

/// Decisions made and dropped since last taken (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallScopeChanges {
    /// Made at a call's first event.
    pub decided: Vec<CallDecision>,
    /// Dropped (the call ended, or it was forgotten): (rule, call id).
    pub dropped: Vec<(String, String)>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct CallDecisions {
    /// (rule, call id) → (fires, order made).
    by_call: HashMap<(String, String), (bool, u64)>,
    made: u64,
    recording: bool,
    changes: CallScopeChanges,
}

impl CallDecisions {
    /// Keeps every change from now on, to be taken with [`CallDecisions::take_changes`].
    pub fn record(&mut self) {
        self.recording = true;
    }

    /// What rule `rule` decided for call `call_id`, if it did.
    pub fn get(&self, rule: &str, call_id: &str) -> Option<bool> {
        // A tuple of Strings cannot be looked up by (&str, &str); one allocation per
        // call-scoped rule and event is nothing next to rendering its action.
        self.by_call
            .get(&(rule.to_owned(), call_id.to_owned()))
            .map(|(fires, _)| *fires)
    }

    /// Rule `rule` decided `fires` for call `call_id`.
    pub fn decide(&mut self, rule: &str, call_id: &str, fires: bool) {
        if self.by_call.len() >= REMEMBERED {
            self.forget_oldest();
        }
        self.made += 1;
        self.by_call
            .insert((rule.to_owned(), call_id.to_owned()), (fires, self.made));
        if self.recording {
            self.changes.decided.push(CallDecision {
                rule: rule.to_owned(),
                call_id: call_id.to_owned(),
                fires,
            });
        }
    }

    /// Call `call_id` ended: rule `rule`'s decision is no longer needed.
    pub fn drop_call(&mut self, rule: &str, call_id: &str) {
        let key = (rule.to_owned(), call_id.to_owned());
        if self.by_call.remove(&key).is_some() && self.recording {
            self.changes.dropped.push(key);
        }
    }

    fn forget_oldest(&mut self) {
        let mut order: Vec<u64> = self.by_call.values().map(|(_, made)| *made).collect();
        order.sort_unstable();
        let cut = order[order.len() / 2 - 1];
        let old: Vec<(String, String)> = self
            .by_call
            .iter()
            .filter(|(_, (_, made))| *made <= cut)
            .map(|(key, _)| key.clone())
            .collect();
        for key in old {
            self.by_call.remove(&key);
            if self.recording {
                self.changes.dropped.push(key);
            }
        }
    }

    /// The decisions an earlier run stored, oldest first.
    pub fn restore(&mut self, decisions: impl IntoIterator<Item = CallDecision>) {
        for decision in decisions {
            self.made += 1;
            self.by_call
                .insert((decision.rule, decision.call_id), (decision.fires, self.made));
        }
    }

    /// Keeps only the decisions of rules `keep` says are still call-scoped (after the
    /// rules were reloaded); the others are dropped.
    pub fn retain_rules(&mut self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<(String, String)> = self.by_call.keys().filter(|(rule, _)| !keep(rule)).cloned().collect();
        for (rule, call_id) in gone {
            self.drop_call(&rule, &call_id);
        }
    }

    /// The changes since last taken (empty unless recording).
    pub fn take_changes(&mut self) -> CallScopeChanges {
        std::mem::take(&mut self.changes)
    }

    pub fn len(&self) -> usize {
        self.by_call.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_call.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_kept_only_when_recording() {
        let mut calls = CallDecisions::default();
        calls.decide("zammad", "c1", true);
        assert_eq!(calls.take_changes(), CallScopeChanges::default());
        calls.record();
        calls.decide("zammad", "c2", false);
        calls.drop_call("zammad", "c1");
        calls.drop_call("zammad", "never");
        let changes = calls.take_changes();
        assert_eq!(
            changes.decided,
            [CallDecision {
                rule: "zammad".into(),
                call_id: "c2".into(),
                fires: false
            }]
        );
        assert_eq!(changes.dropped, [("zammad".to_owned(), "c1".to_owned())]);
        assert_eq!(calls.get("zammad", "c2"), Some(false));
        assert_eq!(calls.get("zammad", "c1"), None);
        assert!(calls.take_changes().decided.is_empty());
    }

    #[test]
    fn past_the_limit_the_oldest_half_goes() {
        let mut calls = CallDecisions::default();
        calls.record();
        for n in 0..REMEMBERED {
            calls.decide("r", &n.to_string(), true);
        }
        calls.take_changes();
        calls.decide("r", "new", true);
        assert_eq!(calls.get("r", "0"), None);
        assert_eq!(calls.get("r", &(REMEMBERED - 1).to_string()), Some(true));
        assert_eq!(calls.get("r", "new"), Some(true));
        assert_eq!(calls.take_changes().dropped.len(), REMEMBERED / 2);
    }
}
