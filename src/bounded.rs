//! Tables that keep only their newest entries.
//!
//! A daemon runs for months, and some of its maps grow with input nobody controls: the
//! Call-IDs of ended calls, the append times of jobs a dead receiver never takes. Each
//! is capped, and two things keep a capped map cheap: over its cap it is cut down to
//! less than the cap in one pass (so the cut happens once per thousands of inserts,
//! not at every one), and after a burst its table is shrunk (a `HashMap` keeps its
//! peak capacity for good).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// Drops the oldest entries of `table`, by `time`, until at most `keep` remain.
/// Entries as old as the newest one dropped go too: at least `len - keep` go, so a
/// full table is not cut again at the next insert.
pub fn keep_newest<K, V, S, T>(table: &mut HashMap<K, V, S>, keep: usize, time: impl Fn(&V) -> T)
where
    K: Eq + Hash,
    S: BuildHasher,
    T: Ord + Copy,
{
    if table.len() <= keep {
        return;
    }
    let mut times: Vec<T> = table.values().map(&time).collect();
    let cut = times.len() - keep;
    let (_, &mut newest_dropped, _) = times.select_nth_unstable(cut - 1);
    table.retain(|_, value| time(value) > newest_dropped);
}

/// Gives a table's memory back once it holds under a quarter of what it has room for
/// (and more than a few hundred slots): after a burst, not after every removal.
pub fn shrink_after_burst<K, V, S>(table: &mut HashMap<K, V, S>)
where
    K: Eq + Hash,
    S: BuildHasher,
{
    if table.capacity() > 4 * table.len().max(256) {
        table.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_drops_ties_with_the_oldest() {
        let mut table: HashMap<u32, u32> = (0..100).map(|k| (k, k / 2)).collect();
        keep_newest(&mut table, 10, |t| *t);
        // Times 45..=49 are the newest ten entries (two per time).
        assert_eq!(table.len(), 10);
        assert!(table.values().all(|t| *t >= 45));
        // One more over the cap, tied with the oldest kept: the tie goes with it.
        table.insert(1000, 45);
        keep_newest(&mut table, 10, |t| *t);
        assert_eq!(table.len(), 8);
        assert!(table.values().all(|t| *t >= 46));
    }

    #[test]
    fn leaves_a_table_under_its_cap_alone() {
        let mut table: HashMap<u32, u32> = (0..10).map(|k| (k, k)).collect();
        keep_newest(&mut table, 10, |t| *t);
        assert_eq!(table.len(), 10);
    }

    #[test]
    fn shrinks_only_after_a_burst() {
        let mut table: HashMap<u32, u32> = (0..10_000).map(|k| (k, k)).collect();
        table.retain(|k, _| *k < 5_000);
        let room = table.capacity();
        shrink_after_burst(&mut table);
        assert_eq!(table.capacity(), room, "half full is not a burst's leftover");
        table.retain(|k, _| *k < 100);
        shrink_after_burst(&mut table);
        assert!(table.capacity() < room / 4);
    }
}
