//! The call-history tracker (`kind: history`): successive snapshots of MicroSIP's
//! `microsip.ini` in (read by [`crate::parse::history`]), `ringing`, `answered` and
//! `ended` events out, with a [`HistoryState`] to store alongside them.
//!
//! MicroSIP writes an entry when a call starts (inbound as type 2, outbound as 0),
//! rewrites it 2 → 1 when an inbound call is answered, and sets duration and info when
//! the call ends, each time rewriting the whole file in place. So the events come from
//! comparing snapshots: [`HistoryDiffer::update`] turns what changed since the previous
//! one into events (an outbound call's `answered` only shows at its end, from its
//! duration). The file records no status code; `outcome_of` reads the outcome from
//! the entry's type, duration and info text, per DESIGN.md.
//!
//! An entry is known by its content, number and start time, not by its key: keys wrap
//! around and get reused. What was seen of each entry is kept in a [`HistoryState`]
//! (serializable, stored with the events), so a restart or a rewrite repeats nothing;
//! it stays bounded by forgetting entries that left the file after they ended.
//!
//! The caller reads the file whole (one read; again if it changed meanwhile): a
//! snapshot spliced from two versions can look like a valid entry.

use std::collections::{HashMap, HashSet};

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::event::{
    CallFacts, Direction, Ending, Event, EventType, MAX_NAME_CHARS, MAX_NUMBER_CHARS, Outcome, SourceKind, clean_text,
    seconds,
};
use crate::parse::history::{CallType, HistoryEntry, HistoryError, parse_calls};
use crate::parse::record::{status_from_text, synthetic_call_id};

/// Most entries remembered; beyond it the oldest (ended first) are forgotten, and an
/// entry no newer than every forgotten one is never taken as new.
pub const MAX_TRACKED: usize = 4096;
/// An ended entry missing from this many snapshots in a row is forgotten (a single
/// snapshot may miss entries: a read during a rewrite).
const DROP_ENDED_AFTER: u32 = 3;
/// An entry that never ended and left the file is forgotten after this many snapshots.
const DROP_OPEN_AFTER: u32 = 100;

/// How far a call has been reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Ringing,
    Answered,
    Ended,
}

/// What was seen of one entry. Persisted inside [`HistoryState`]: the field names are
/// the stored JSON's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Seen {
    number: String,
    time: i64,
    direction: Direction,
    phase: Phase,
    /// When `answered` was reported as happening.
    answered_at: Option<Timestamp>,
    /// Snapshots in a row without this entry.
    absent: u32,
}

impl Seen {
    fn new(entry: &HistoryEntry, direction: Direction, phase: Phase) -> Seen {
        Seen {
            number: entry.number.clone(),
            time: entry.time,
            direction,
            phase,
            answered_at: None,
            absent: 0,
        }
    }
}

/// What the history source remembers between snapshots and across restarts: the
/// entries seen and how far each was reported. Bounded by [`MAX_TRACKED`].
///
/// Stored as JSON in users' state databases: renaming or nesting a field (here or in
/// `Seen`) breaks their resume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryState {
    entries: Vec<Seen>,
    /// Entries up to this start time (Unix seconds) were forgotten: one seen again is
    /// old. (A forgotten entry ended snapshots ago; a new call's entry is written when
    /// it starts, so none can start at or before it.)
    horizon: Option<i64>,
}

impl HistoryState {
    /// Number of entries remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How a history differ makes events (built from the source's config).
#[derive(Debug, Clone)]
pub struct HistoryOptions {
    /// Events are stamped in this time zone.
    pub time_zone: TimeZone,
    /// Written into each event's `source_path`.
    pub source_path: String,
}

impl HistoryOptions {
    pub fn new(source_path: impl Into<String>) -> HistoryOptions {
        HistoryOptions {
            time_zone: TimeZone::system(),
            source_path: source_path.into(),
        }
    }
}

/// An entry's identity: number and start time (its key is reused, its content not).
type Identity = (String, i64);

/// Turns successive snapshots of `microsip.ini` into events; see the module docs.
#[derive(Debug)]
pub struct HistoryDiffer {
    options: HistoryOptions,
    seen: HashMap<Identity, Seen>,
    horizon: Option<i64>,
}

impl HistoryDiffer {
    /// A differ that has seen nothing: the first snapshot's entries are all new.
    pub fn new(options: HistoryOptions) -> HistoryDiffer {
        HistoryDiffer {
            options,
            seen: HashMap::new(),
            horizon: None,
        }
    }

    /// A differ that goes on from a saved state.
    pub fn resume(options: HistoryOptions, state: &HistoryState) -> HistoryDiffer {
        let seen = state
            .entries
            .iter()
            .map(|s| ((s.number.clone(), s.time), s.clone()))
            .collect();
        HistoryDiffer {
            options,
            seen,
            horizon: state.horizon,
        }
    }

    /// What a restart needs; store it with the events of the same update.
    pub fn state(&self) -> HistoryState {
        let mut entries: Vec<Seen> = self.seen.values().cloned().collect();
        // Sorted, so the same state always stores as the same JSON.
        entries.sort_by(|a, b| (a.time, &a.number).cmp(&(b.time, &b.number)));
        HistoryState {
            entries,
            horizon: self.horizon,
        }
    }

    /// Number of entries remembered.
    pub fn tracked(&self) -> usize {
        self.seen.len()
    }

    /// Takes a snapshot as already reported, without events (a source read from its
    /// end: the calls already in the list are old news). Calls still going on get their
    /// later events from the next snapshots.
    pub(crate) fn mark_seen(&mut self, file: &[u8], mut on_error: impl FnMut(HistoryError)) {
        let snapshot = parse_calls(file);
        snapshot.errors.into_iter().for_each(&mut on_error);
        for entry in latest(&snapshot.entries) {
            let phase = if entry.finished() {
                Phase::Ended
            } else if entry.call_type == CallType::Incoming {
                Phase::Answered
            } else {
                Phase::Ringing
            };
            let seen = Seen::new(entry, entry.call_type.direction(), phase);
            self.seen.insert(identity(entry), seen);
        }
        self.forget(&snapshot.entries);
    }

    /// Compares a new snapshot of the file with what was seen and hands on the events
    /// of every change, oldest call first, each call's in contract order. `now` is when
    /// the snapshot was read: the time of changes seen happening (an answer, an end)
    /// that the file does not record. Entries that cannot be read go to `on_error` and
    /// change nothing.
    pub fn update(
        &mut self,
        file: &[u8],
        now: Timestamp,
        on_event: impl FnMut(Event),
        mut on_error: impl FnMut(HistoryError),
    ) {
        let snapshot = parse_calls(file);
        snapshot.errors.iter().cloned().for_each(&mut on_error);
        self.update_entries(&snapshot.entries, now, on_event);
    }

    /// [`HistoryDiffer::update`] on entries already parsed.
    pub(crate) fn update_entries(&mut self, entries: &[HistoryEntry], now: Timestamp, mut on_event: impl FnMut(Event)) {
        for entry in latest(entries) {
            let identity = identity(entry);
            let live = match self.seen.get(&identity) {
                Some(_) => true,
                None if self.horizon.is_some_and(|h| entry.time <= h) => continue,
                None => false,
            };
            // A call keeps the direction it was first seen with.
            let mut seen = self
                .seen
                .remove(&identity)
                .unwrap_or_else(|| Seen::new(entry, entry.call_type.direction(), Phase::Ringing));
            seen.absent = 0;
            self.report(entry, &mut seen, live, now, &mut on_event);
            self.seen.insert(identity, seen);
        }
        self.forget(entries);
    }

    /// Hands on the events of `entry` not yet reported per `seen`, and moves `seen` on.
    /// `live`: the entry was seen before, so its changes are seen happening now.
    fn report(
        &self,
        entry: &HistoryEntry,
        seen: &mut Seen,
        live: bool,
        now: Timestamp,
        on_event: &mut impl FnMut(Event),
    ) {
        let call = Call::of(entry, seen.direction);
        let start = call.start;
        if !live {
            on_event(self.event(&call, EventType::Ringing, start, None));
        }
        let ending = entry.finished().then(|| outcome_of(entry, call.direction));
        let completed = ending.is_some_and(|e| e.outcome == Outcome::Completed);
        let answered = completed || (call.direction == Direction::Inbound && entry.call_type == CallType::Incoming);
        let talk = SignedDuration::from_secs(entry.duration as i64);
        if answered && seen.phase < Phase::Answered {
            let at = match (live, ending.is_some()) {
                // Seen being answered (inbound 2 → 1) or the end of a call whose
                // answer the file only shows now: it was answered `talk` ago.
                (true, false) => now.max(start),
                (true, true) => now.checked_sub(talk).unwrap_or(now).max(start),
                // First seen already answered: when is not known; the start is the
                // closest time the file gives.
                (false, _) => start,
            };
            seen.answered_at = Some(at);
            seen.phase = Phase::Answered;
            on_event(self.event(&call, EventType::Answered, at, None));
        }
        if let Some(mut ending) = ending
            && seen.phase < Phase::Ended
        {
            let answered_at = seen.answered_at.filter(|_| completed);
            let end = match (live, answered_at) {
                (true, Some(answered)) => answered.checked_add(talk).unwrap_or(answered),
                (true, None) => now.max(start),
                (false, _) => start.checked_add(talk).unwrap_or(start),
            };
            let end = end.max(start);
            // The file records the talk time, not the answer: an answer seen before
            // (or a state resumed without it) must not change the talk time reported.
            let talk_s = if completed { entry.duration as f64 } else { 0.0 };
            if live {
                ending = ending.timed(seconds(start, answered_at.unwrap_or(end)), talk_s);
            } else {
                // First seen already over: how long it rang is not known.
                ending.talk_s = Some(talk_s);
            }
            seen.phase = Phase::Ended;
            on_event(self.event(&call, EventType::Ended, end, Some(ending)));
        }
    }

    /// Ages entries missing from the snapshot and forgets those gone for good, then
    /// keeps the number remembered within [`MAX_TRACKED`].
    fn forget(&mut self, entries: &[HistoryEntry]) {
        let present: HashSet<(&str, i64)> = entries.iter().map(|e| (e.number.as_str(), e.time)).collect();
        let mut gone = Vec::new();
        for (identity, seen) in self.seen.iter_mut() {
            if present.contains(&(identity.0.as_str(), identity.1)) {
                continue;
            }
            seen.absent += 1;
            let limit = if seen.phase == Phase::Ended {
                DROP_ENDED_AFTER
            } else {
                DROP_OPEN_AFTER
            };
            if seen.absent >= limit {
                gone.push(identity.clone());
            }
        }
        for identity in gone {
            self.drop_entry(&identity);
        }
        if self.seen.len() > MAX_TRACKED {
            let mut order: Vec<(bool, i64, Identity)> = self
                .seen
                .iter()
                .map(|(identity, seen)| (seen.phase != Phase::Ended, seen.time, identity.clone()))
                .collect();
            order.sort();
            let excess = self.seen.len() - MAX_TRACKED;
            for (_, _, identity) in order.into_iter().take(excess) {
                self.drop_entry(&identity);
            }
        }
    }

    fn drop_entry(&mut self, identity: &Identity) {
        if self.seen.remove(identity).is_some() {
            self.horizon = Some(self.horizon.map_or(identity.1, |h| h.max(identity.1)));
        }
    }

    fn event(&self, call: &Call, kind: EventType, at: Timestamp, ending: Option<Ending>) -> Event {
        let facts = CallFacts {
            source: SourceKind::History,
            source_path: &self.options.source_path,
            call_id: &call.call_id,
            direction: call.direction,
            // The history does not say which account took the call.
            local_number: "",
            remote_number: &call.number,
            remote_name: call.name.as_deref(),
        };
        facts.event(kind, at.to_zoned_datetime(self.options.time_zone.clone()), ending)
    }
}

/// The call an entry describes, as events show it.
struct Call {
    call_id: String,
    direction: Direction,
    number: String,
    name: Option<String>,
    start: Timestamp,
}

impl Call {
    fn of(entry: &HistoryEntry, direction: Direction) -> Call {
        let number = clean_text(&entry.number, MAX_NUMBER_CHARS);
        Call {
            call_id: synthetic_call_id(&number, entry.time),
            direction,
            name: Some(clean_text(&entry.name, MAX_NAME_CHARS)).filter(|n| !n.is_empty()),
            number,
            start: Timestamp::from_second(entry.time).unwrap_or(Timestamp::UNIX_EPOCH),
        }
    }
}

fn identity(entry: &HistoryEntry) -> Identity {
    (entry.number.clone(), entry.time)
}

/// How far an entry has got, to pick one of two entries with the same identity.
fn progress(entry: &HistoryEntry) -> u8 {
    if entry.finished() {
        2
    } else if entry.call_type == CallType::Incoming {
        1
    } else {
        0
    }
}

/// One entry per identity (the furthest along when a snapshot has two), oldest first.
fn latest(entries: &[HistoryEntry]) -> Vec<&HistoryEntry> {
    let mut by_identity: HashMap<(&str, i64), &HistoryEntry> = HashMap::new();
    for entry in entries {
        let slot = by_identity.entry((entry.number.as_str(), entry.time)).or_insert(entry);
        if progress(entry) > progress(slot) {
            *slot = entry;
        }
    }
    let mut list: Vec<&HistoryEntry> = by_identity.into_values().collect();
    list.sort_by_key(|a| (a.time, a.line));
    list
}

/// How a finished entry ended, per DESIGN.md, without times: the file records no
/// status code; one is given when the info text names a SIP status.
fn outcome_of(entry: &HistoryEntry, direction: Direction) -> Ending {
    let status = status_from_text(&entry.info);
    let info = entry.info.trim().trim_end_matches('.').to_ascii_lowercase();
    let info = info.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
    match (direction, entry.call_type) {
        (Direction::Inbound, CallType::Missed) => {
            if matches!(info, "declined" | "decline" | "busy here") {
                Ending::of(Outcome::Declined, status)
            } else {
                // A missed call's info may read as a 2xx ("OK"): no status then.
                Ending::of(Outcome::Missed, status.filter(|&code| code >= 300))
            }
        }
        (Direction::Inbound, CallType::AnsweredElsewhere) => Ending::of(Outcome::Missed, None),
        (_, CallType::Incoming) => Ending::completed(None),
        _ if entry.duration > 0 => Ending::completed(None),
        (Direction::Inbound, _) => Ending::of(Outcome::Unknown, status),
        (Direction::Outbound, _) => match status {
            // Includes a softphone that writes the final text of an answered call that
            // lasted under a second ("OK"): answered.
            Some(code) => Ending::from_status(Direction::Outbound, code),
            None if info.is_empty() => Ending::unknown(),
            None => Ending::of(Outcome::Failed, None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn options() -> HistoryOptions {
        HistoryOptions {
            time_zone: TimeZone::UTC,
            source_path: "microsip.ini".to_owned(),
        }
    }

    fn utf16le(text: &str) -> Vec<u8> {
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        bytes
    }

    /// A `microsip.ini` as MicroSIP writes it, with these `[Calls]` lines.
    fn ini(calls: &[&str]) -> Vec<u8> {
        let mut text = String::from("[Settings]\r\nenableLog=0\r\naccountId=1\r\n[Calls]\r\n");
        for line in calls {
            text.push_str(line);
            text.push_str("\r\n");
        }
        text.push_str("[Dialed]\r\n0=5551000\r\n");
        utf16le(&text)
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn summary(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                let mut line = format!("{} {} {}", e.kind.as_str(), e.direction.as_str(), e.remote_number);
                if let Some(outcome) = e.outcome {
                    line.push_str(&format!(" {outcome:?} {:?} talk {:?}", e.status_code, e.talk_s));
                }
                line
            })
            .collect()
    }

    fn update(differ: &mut HistoryDiffer, file: &[u8], now: i64) -> Vec<Event> {
        let mut events = Vec::new();
        differ.update(file, at(now), |e| events.push(e), |e| panic!("{e}"));
        events
    }

    #[test]
    fn inbound_call_rings_is_answered_and_ends() {
        let mut differ = HistoryDiffer::new(options());
        assert!(update(&mut differ, &ini(&[]), 100).is_empty());
        let ringing = update(
            &mut differ,
            &ini(&["0=5552001;Alice Example;2;1795422838;0;"]),
            1_795_422_838,
        );
        assert_eq!(summary(&ringing), ["ringing inbound 5552001"]);
        assert_eq!(ringing[0].remote_name.as_deref(), Some("Alice Example"));
        assert_eq!(ringing[0].call_id, synthetic_call_id("5552001", 1_795_422_838));
        assert_eq!(ringing[0].source, SourceKind::History);
        // The same snapshot again: nothing.
        assert!(
            update(
                &mut differ,
                &ini(&["0=5552001;Alice Example;2;1795422838;0;"]),
                1_795_422_839
            )
            .is_empty()
        );
        let answered = update(
            &mut differ,
            &ini(&["0=5552001;Alice Example;1;1795422838;0;"]),
            1_795_422_841,
        );
        assert_eq!(summary(&answered), ["answered inbound 5552001"]);
        assert_eq!(answered[0].at.timestamp(), at(1_795_422_841));
        let ended = update(
            &mut differ,
            &ini(&["0=5552001;Alice Example;1;1795422838;20;"]),
            1_795_422_862,
        );
        assert_eq!(
            summary(&ended),
            ["ended inbound 5552001 Completed Some(200) talk Some(20.0)"]
        );
        assert_eq!(ended[0].at.timestamp(), at(1_795_422_861), "answered + talk");
        assert_eq!(ended[0].ring_s, Some(3.0));
        assert!(
            update(
                &mut differ,
                &ini(&["0=5552001;Alice Example;1;1795422838;20;"]),
                1_795_422_900
            )
            .is_empty()
        );
        let ids: std::collections::HashSet<_> = ringing
            .iter()
            .chain(&answered)
            .chain(&ended)
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn outbound_answer_shows_at_the_end() {
        let mut differ = HistoryDiffer::new(options());
        let ringing = update(&mut differ, &ini(&["7=5551003;;0;1795422838;0;"]), 1_795_422_838);
        assert_eq!(summary(&ringing), ["ringing outbound 5551003"]);
        let end = update(&mut differ, &ini(&["7=5551003;;0;1795422838;5;"]), 1_795_422_850);
        assert_eq!(
            summary(&end),
            [
                "answered outbound 5551003",
                "ended outbound 5551003 Completed Some(200) talk Some(5.0)"
            ]
        );
        assert_eq!(end[0].at.timestamp(), at(1_795_422_845), "answered 5 s before the end");
        assert_eq!(end[1].at.timestamp(), at(1_795_422_850));
        assert_eq!(end[1].ring_s, Some(7.0));
    }

    #[test]
    fn outcomes() {
        let cases = [
            ("2;1795422838;0;Missed Call", "Missed None"),
            ("2;1795422838;0;Request Terminated", "Missed Some(487)"),
            ("2;1795422838;0;Declined", "Declined Some(603)"),
            ("2;1795422838;0;Decline", "Declined Some(603)"),
            ("2;1795422838;0;Busy Here", "Declined Some(486)"),
            ("3;1795422838;0;Answered elsewhere", "Missed None"),
            ("1;1795422838;0;Normal call clearing", "Completed Some(200)"),
            ("0;1795422838;3;", "Completed Some(200)"),
            ("0;1795422838;0;Busy Here", "Busy Some(486)"),
            ("0;1795422838;0;Busy Everywhere", "Busy Some(600)"),
            ("0;1795422838;0;Declined", "Declined Some(603)"),
            ("0;1795422838;0;Request Terminated", "Cancelled Some(487)"),
            ("0;1795422838;0;Request Timeout", "NoAnswer Some(408)"),
            ("0;1795422838;0;Temporarily Unavailable", "NoAnswer Some(480)"),
            ("0;1795422838;0;Not Found", "Failed Some(404)"),
            ("0;1795422838;0;Besetzt", "Failed None"),
        ];
        for (fields, want) in cases {
            let line = format!("0=5550000;;{fields}");
            let mut differ = HistoryDiffer::new(options());
            let events = update(&mut differ, &ini(&[&line]), 1_795_422_900);
            let ended = events.last().unwrap();
            let got = format!("{:?} {:?}", ended.outcome.unwrap(), ended.status_code);
            assert_eq!(got, want, "{line}");
            // First seen finished: ringing, answered when completed, ended.
            let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
            if ended.outcome == Some(Outcome::Completed) {
                assert_eq!(
                    kinds,
                    [EventType::Ringing, EventType::Answered, EventType::Ended],
                    "{line}"
                );
            } else {
                assert_eq!(kinds, [EventType::Ringing, EventType::Ended], "{line}");
            }
        }
        // A call with duration 0 and no info has not ended (MicroSIP sets the info of
        // a missed call, `Missed Call` or its translation, when it is over).
        for open in ["0=5;;0;1795422838;0;", "0=5;;2;1795422838;0;"] {
            let mut differ = HistoryDiffer::new(options());
            assert_eq!(summary(&update(&mut differ, &ini(&[open]), 1_795_422_900)).len(), 1);
        }
    }

    #[test]
    fn a_restart_repeats_nothing() {
        let steps: [&[&str]; 4] = [
            &["0=5552001;A;2;1795422838;0;"],
            &["0=5552001;A;1;1795422838;0;", "1=5551003;;0;1795422839;0;"],
            &["0=5552001;A;1;1795422838;20;", "1=5551003;;0;1795422839;0;"],
            &["0=5552001;A;1;1795422838;20;", "1=5551003;;0;1795422839;0;Busy Here"],
        ];
        let mut straight = HistoryDiffer::new(options());
        let mut whole = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            whole.extend(update(&mut straight, &ini(step), 1_795_422_840 + i as i64));
        }
        for restart_after in 0..steps.len() {
            let mut differ = HistoryDiffer::new(options());
            let mut events = Vec::new();
            for (i, step) in steps.iter().enumerate() {
                events.extend(update(&mut differ, &ini(step), 1_795_422_840 + i as i64));
                if i == restart_after {
                    let json = serde_json::to_string(&differ.state()).unwrap();
                    differ = HistoryDiffer::resume(options(), &serde_json::from_str(&json).unwrap());
                }
            }
            assert_eq!(events, whole, "restart after step {restart_after}");
        }
        assert_eq!(summary(&whole).len(), 5);
    }

    #[test]
    fn keys_wrap_and_deleted_entries_are_skipped() {
        let mut differ = HistoryDiffer::new(options());
        let first = update(
            &mut differ,
            &ini(&["0=100;;0;1000;5;", "1=101;;2;1001;0;Missed Call"]),
            2000,
        );
        assert_eq!(first.len(), 5);
        // Key 0 reused for a new call, key 1 deleted: one new call, nothing repeated.
        let next = update(&mut differ, &ini(&["0=102;;2;1002;0;", "1=null"]), 2001);
        assert_eq!(summary(&next), ["ringing inbound 102"]);
        // The old entries come back under other keys (a torn read hid them): nothing.
        let again = update(
            &mut differ,
            &ini(&["5=102;;2;1002;0;", "6=100;;0;1000;5;", "7=101;;2;1001;0;Missed Call"]),
            2002,
        );
        assert!(again.is_empty(), "{:?}", summary(&again));
        // Gone for good: forgotten after a few snapshots, and not new if seen again.
        for now in 2003..2010 {
            assert!(update(&mut differ, &ini(&["5=102;;2;1002;0;"]), now).is_empty());
        }
        assert_eq!(differ.tracked(), 1);
        let back = update(&mut differ, &ini(&["5=102;;2;1002;0;", "6=100;;0;1000;5;"]), 2010);
        assert!(back.is_empty(), "{:?}", summary(&back));
    }

    #[test]
    fn a_snapshot_cut_short_adds_nothing() {
        let full = ini(&[
            "0=5552001;A;2;1795422838;0;",
            "1=5551003;;0;1795422839;12;Normal call clearing",
        ]);
        let mut reference = HistoryDiffer::new(options());
        let want = update(&mut reference, &full, 1_795_422_900);
        for cut in 0..full.len() {
            let mut differ = HistoryDiffer::new(options());
            let mut events = update(&mut differ, &full[..cut], 1_795_422_900);
            events.extend(update(&mut differ, &full, 1_795_422_900));
            let mut got = summary(&events);
            got.sort();
            let mut expected = summary(&want);
            expected.sort();
            assert_eq!(got, expected, "cut at {cut}");
        }
    }

    #[test]
    fn mark_seen_reports_only_later_changes() {
        let mut differ = HistoryDiffer::new(options());
        differ.mark_seen(&ini(&["0=100;;1;1000;5;", "1=101;;2;1001;0;"]), |e| panic!("{e}"));
        assert!(update(&mut differ, &ini(&["0=100;;1;1000;5;", "1=101;;2;1001;0;"]), 2000).is_empty());
        let later = update(
            &mut differ,
            &ini(&["0=100;;1;1000;5;", "1=101;;2;1001;0;Request Terminated"]),
            2001,
        );
        assert_eq!(summary(&later), ["ended inbound 101 Missed Some(487) talk Some(0.0)"]);
    }

    #[test]
    fn state_stays_bounded() {
        let mut differ = HistoryDiffer::new(options());
        let lines: Vec<String> = (0..MAX_TRACKED + 50)
            .map(|i| format!("{i}=5{i};;0;{};1;", 10_000 + i))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let first = update(&mut differ, &ini(&refs), 20_000);
        assert_eq!(first.len(), 3 * (MAX_TRACKED + 50));
        assert_eq!(differ.tracked(), MAX_TRACKED);
        assert!(
            update(&mut differ, &ini(&refs), 20_001).is_empty(),
            "forgotten entries are old"
        );
    }

    #[test]
    fn hostile_entries_are_inert() {
        let mut differ = HistoryDiffer::new(options());
        let events = update(
            &mut differ,
            &ini(&["0=$(reboot)\u{202E};\"; DROP TABLE x;--;2;1795422838;0;"]),
            1_795_422_900,
        );
        assert_eq!(events[0].remote_number, "$(reboot)");
        assert_eq!(events[0].remote_name.as_deref(), Some("\"; DROP TABLE x;--"));
    }

    /// A state stored by callhook before the tracker left `parse/` (captured then, with
    /// the events that followed): it must still resume and give the same next events.
    #[test]
    fn a_stored_state_resumes() {
        const STORED: &str = r#"{"entries":[{"number":"5552001","time":1795422838,"direction":"inbound","phase":"answered","answered_at":"2026-11-23T08:34:02Z","absent":1},{"number":"5551003","time":1795422840,"direction":"outbound","phase":"ringing","answered_at":null,"absent":0},{"number":"5552002","time":1795422845,"direction":"inbound","phase":"ringing","answered_at":null,"absent":0}],"horizon":1000}"#;
        const AFTER: &str = r#"{"entries":[{"number":"5552001","time":1795422838,"direction":"inbound","phase":"ended","answered_at":"2026-11-23T08:34:02Z","absent":0},{"number":"5551003","time":1795422840,"direction":"outbound","phase":"ended","answered_at":null,"absent":0},{"number":"5552002","time":1795422845,"direction":"inbound","phase":"ended","answered_at":null,"absent":0},{"number":"5553000","time":1795422850,"direction":"outbound","phase":"ringing","answered_at":null,"absent":0},{"number":"5554000","time":1795422860,"direction":"inbound","phase":"ended","answered_at":"2026-11-23T08:34:20Z","absent":0}],"horizon":1000}"#;
        const NEXT: &[&str] = &[
            r#"{"v":1,"id":"0fea81e5a3f18cf8368163dde3543a66","type":"ended","at":"2026-11-23T10:34:32.000+02:00","call_id":"syn-9929d1b1913822961471e408","direction":"inbound","local_number":"","remote_number":"5552001","remote_name":"Alice","outcome":"completed","status_code":200,"ring_s":4.0,"talk_s":30.0,"source":"history","source_path":"microsip.ini"}"#,
            r#"{"v":1,"id":"737c3b7a4e907dd4c1e1bed178f15f53","type":"ended","at":"2026-11-23T10:34:40.000+02:00","call_id":"syn-aadcc058025d6a9f912b9f61","direction":"outbound","local_number":"","remote_number":"5551003","remote_name":null,"outcome":"busy","status_code":486,"ring_s":40.0,"talk_s":0.0,"source":"history","source_path":"microsip.ini"}"#,
            r#"{"v":1,"id":"cd1269dc7ab2be196b0ad589ad790bcf","type":"ended","at":"2026-11-23T10:34:40.000+02:00","call_id":"syn-d1f2a799305a5ab722e9e033","direction":"inbound","local_number":"","remote_number":"5552002","remote_name":"Bob","outcome":"missed","ring_s":35.0,"talk_s":0.0,"source":"history","source_path":"microsip.ini"}"#,
            r#"{"v":1,"id":"896d5bf1a7c2a1e8502cc682e3088d8d","type":"ringing","at":"2026-11-23T10:34:10.000+02:00","call_id":"syn-cfa498160cbb361e3ba3dd1b","direction":"outbound","local_number":"","remote_number":"5553000","remote_name":null,"source":"history","source_path":"microsip.ini"}"#,
            r#"{"v":1,"id":"998b20e9883cb2ab596b624adb5e7aca","type":"ringing","at":"2026-11-23T10:34:20.000+02:00","call_id":"syn-754b37944df83dad3887dcc6","direction":"inbound","local_number":"","remote_number":"5554000","remote_name":"Eve","source":"history","source_path":"microsip.ini"}"#,
            r#"{"v":1,"id":"fd3b0b56e356c07f858c93ad323b13d9","type":"answered","at":"2026-11-23T10:34:20.000+02:00","call_id":"syn-754b37944df83dad3887dcc6","direction":"inbound","local_number":"","remote_number":"5554000","remote_name":"Eve","source":"history","source_path":"microsip.ini"}"#,
            r#"{"v":1,"id":"d5395c7b44f172a99d9040736c2d3e0e","type":"ended","at":"2026-11-23T10:34:27.000+02:00","call_id":"syn-754b37944df83dad3887dcc6","direction":"inbound","local_number":"","remote_number":"5554000","remote_name":"Eve","outcome":"completed","status_code":200,"talk_s":7.0,"source":"history","source_path":"microsip.ini"}"#,
        ];
        let options = HistoryOptions {
            time_zone: TimeZone::fixed(jiff::tz::offset(2)),
            source_path: "microsip.ini".to_owned(),
        };
        let state: HistoryState = serde_json::from_str(STORED).unwrap();
        assert_eq!(serde_json::to_string(&state).unwrap(), STORED);
        let mut differ = HistoryDiffer::resume(options, &state);
        assert_eq!(serde_json::to_string(&differ.state()).unwrap(), STORED);
        let next = ini(&[
            "0=100;;0;1000;5;",
            "1=5552001;Alice;1;1795422838;30;",
            "2=5551003;;0;1795422840;0;Busy Here",
            "3=5552002;Bob;2;1795422845;0;Missed Call",
            "4=5553000;;0;1795422850;0;",
            "5=5554000;Eve;1;1795422860;7;",
        ]);
        let events: Vec<String> = update(&mut differ, &next, 1_795_422_880)
            .iter()
            .map(Event::to_json)
            .collect();
        assert_eq!(events, NEXT);
        assert_eq!(serde_json::to_string(&differ.state()).unwrap(), AFTER);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), lines in proptest::collection::vec("[0-9;=a-z\\[\\] \r\n-]{0,40}", 0..8)) {
            let mut differ = HistoryDiffer::new(options());
            differ.update(&data, at(0), |_| {}, |_| {});
            let text = format!("[Calls]\n{}\n", lines.join("\n"));
            differ.update(text.as_bytes(), at(i64::from(u32::MAX)), |_| {}, |_| {});
            differ.update(&utf16le(&text), Timestamp::MAX, |_| {}, |_| {});
            differ.mark_seen(&data, |_| {});
        }
    }
}
