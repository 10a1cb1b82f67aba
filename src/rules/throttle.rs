//! Keyed rate limits for rules: `throttle` (at most N firings per key per window) and
//! `threshold` (fire only once N matching events came within a window).
//!
//! Time is the events' own time (`at`), passed in: replays, `callhook test` and the live
//! daemon judge alike, and tests set time instead of sleeping.

use std::collections::{HashMap, VecDeque};

use jiff::{SignedDuration, Timestamp};

/// Keys remembered at most; beyond, the least recently used half is forgotten.
const MAX_KEYS: usize = 10_000;

/// Recent times per key, for one rule's limit.
#[derive(Debug, Default)]
pub struct Window {
    hits: HashMap<String, VecDeque<Timestamp>>,
}

impl Window {
    /// Throttle: allows and records a firing for `key` at `at` when fewer than `max`
    /// were allowed within `per` before it.
    pub fn allow(&mut self, key: &str, at: Timestamp, per: SignedDuration, max: u32) -> bool {
        let times = self.times(key, at, per);
        if times.len() >= max as usize {
            return false;
        }
        times.push_back(at);
        true
    }

    /// Threshold: records an event for `key` at `at`; true when it makes `count` within
    /// `within`, and then starts counting afresh.
    pub fn reach(&mut self, key: &str, at: Timestamp, within: SignedDuration, count: u32) -> bool {
        let times = self.times(key, at, within);
        times.push_back(at);
        if times.len() >= count as usize {
            times.clear();
            return true;
        }
        false
    }

    /// How many recorded for `key` within `per` before `at` (for explanations).
    pub(crate) fn recent(&self, key: &str, at: Timestamp, per: SignedDuration) -> usize {
        self.hits
            .get(key)
            .map(|t| t.iter().filter(|&&hit| at.duration_since(hit) < per).count())
            .unwrap_or(0)
    }

    fn times(&mut self, key: &str, at: Timestamp, per: SignedDuration) -> &mut VecDeque<Timestamp> {
        if !self.hits.contains_key(key) && self.hits.len() >= MAX_KEYS {
            self.forget_oldest();
        }
        let times = self.hits.entry(key.to_owned()).or_default();
        while times.front().is_some_and(|&hit| at.duration_since(hit) >= per) {
            times.pop_front();
        }
        times
    }

    fn forget_oldest(&mut self) {
        let mut newest: Vec<(Timestamp, String)> = self
            .hits
            .iter()
            .map(|(k, t)| (t.back().copied().unwrap_or(Timestamp::MIN), k.clone()))
            .collect();
        newest.sort();
        for (_, key) in newest.into_iter().take(MAX_KEYS / 2) {
            self.hits.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn throttle_per_key() {
        let mut w = Window::default();
        let per = SignedDuration::from_secs(30);
        assert!(w.allow("a", t(0), per, 1));
        assert!(!w.allow("a", t(10), per, 1));
        assert!(w.allow("b", t(10), per, 1));
        assert!(!w.allow("a", t(29), per, 1));
        assert!(w.allow("a", t(30), per, 1));
        assert!(w.allow("x", t(0), per, 2) && w.allow("x", t(1), per, 2) && !w.allow("x", t(2), per, 2));
    }

    #[test]
    fn threshold_fires_once_per_count() {
        let mut w = Window::default();
        let within = SignedDuration::from_mins(10);
        assert!(!w.reach("k", t(0), within, 3));
        assert!(!w.reach("k", t(60), within, 3));
        assert!(w.reach("k", t(120), within, 3));
        assert!(!w.reach("k", t(130), within, 3));
        // old ones fall out of the window
        assert!(!w.reach("k", t(2000), within, 3));
        assert!(!w.reach("k", t(2001), within, 3));
        assert_eq!(w.recent("k", t(2002), within), 2);
    }

    #[test]
    fn memory_is_bounded() {
        let mut w = Window::default();
        for i in 0..(MAX_KEYS as i64 + 10) {
            w.allow(&i.to_string(), t(i), SignedDuration::from_secs(1), 1);
        }
        assert!(w.hits.len() <= MAX_KEYS);
    }
}
