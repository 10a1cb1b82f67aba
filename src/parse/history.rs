//! The call-history source (`kind: history`): snapshots of MicroSIP's `microsip.ini` in,
//! call events out.
//!
//! MicroSIP keeps its call list in the `[Calls]` section, one entry a call:
//! `N=number;name;type;time;duration;info` (type 0 outgoing, 1 incoming, 2 missed, 3
//! answered elsewhere; time in Unix seconds at call start; `null` for a deleted entry).
//! It writes an entry when a call starts (inbound as type 2, outbound as 0), rewrites it
//! 2 → 1 when an inbound call is answered, and sets duration and info when the call
//! ends, each time rewriting the whole file in place. So this source compares snapshots:
//! [`parse_calls`] reads one, and [`HistoryDiffer::update`] turns what changed since the
//! previous one into `ringing`, `answered` and `ended` events (an outbound call's
//! `answered` only shows at its end, from its duration).
//!
//! An entry is known by its content, number and start time, not by its key: keys wrap
//! around and get reused. What was seen of each entry is kept in a [`HistoryState`]
//! (serializable, stored with the events), so a restart or a rewrite repeats nothing;
//! it stays bounded by forgetting entries that left the file after they ended.
//!
//! Read the file whole (one read; again if it changed meanwhile): a snapshot spliced from
//! two versions can look like a valid entry. A line cut short by a write in progress is
//! never taken: only lines whose line ending arrived count.

use std::collections::HashMap;

use encoding_rs::{UTF_8, UTF_16BE, UTF_16LE};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::{
    CONTRACT_VERSION, Direction, Event, EventType, MAX_NAME_CHARS, MAX_NUMBER_CHARS, Outcome, SourceKind, clean_text,
    event_id,
};
use crate::parse::record::{seconds, status_from_text, synthetic_call_id};

/// Most entries remembered; beyond it the oldest (ended first) are forgotten, and an
/// entry no newer than every forgotten one is never taken as new.
pub const MAX_TRACKED: usize = 4096;
/// An ended entry missing from this many snapshots in a row is forgotten (a single
/// snapshot may miss entries: a read during a rewrite).
const DROP_ENDED_AFTER: u32 = 3;
/// An entry that never ended and left the file is forgotten after this many snapshots.
const DROP_OPEN_AFTER: u32 = 100;

/// MicroSIP's call type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallType {
    /// 0: placed by the phone.
    Outgoing,
    /// 1: inbound and answered.
    Incoming,
    /// 2: inbound, not (yet) answered.
    Missed,
    /// 3: inbound, answered on another device.
    AnsweredElsewhere,
}

impl CallType {
    fn parse(text: &str) -> Option<CallType> {
        match text.trim() {
            "0" => Some(CallType::Outgoing),
            "1" => Some(CallType::Incoming),
            "2" => Some(CallType::Missed),
            "3" => Some(CallType::AnsweredElsewhere),
            _ => None,
        }
    }

    fn direction(self) -> Direction {
        match self {
            CallType::Outgoing => Direction::Outbound,
            _ => Direction::Inbound,
        }
    }
}

/// One `[Calls]` entry as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The INI key (`N`), as written.
    pub key: String,
    /// Line in the decoded file, from 1.
    pub line: u64,
    /// Remote number, as written (untrusted).
    pub number: String,
    /// Display name, as written (untrusted); may be empty.
    pub name: String,
    pub call_type: CallType,
    /// Unix seconds at call start.
    pub time: i64,
    /// Seconds talked; 0 while the call lasts and when never answered.
    pub duration: u64,
    /// Status text set at the end (`Busy Here`, `Request Terminated`, ...); may be empty.
    pub info: String,
}

impl HistoryEntry {
    /// The call has ended: its duration or info were set.
    pub fn finished(&self) -> bool {
        self.duration > 0 || !self.info.trim().is_empty()
    }

    /// Identity: number and start time.
    fn identity(&self) -> (String, i64) {
        (self.number.clone(), self.time)
    }

    /// How far the entry has got, to pick one of two entries with the same identity.
    fn progress(&self) -> u8 {
        if self.finished() {
            2
        } else if self.call_type == CallType::Incoming {
            1
        } else {
            0
        }
    }
}

/// An entry that could not be read, and where. The entry is skipped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {reason}")]
pub struct HistoryError {
    /// Line in the decoded file, from 1.
    pub line: u64,
    pub reason: String,
}

/// The `[Calls]` section of one snapshot of `microsip.ini`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallsSnapshot {
    /// The entries in file order (`null` and empty entries left out).
    pub entries: Vec<HistoryEntry>,
    pub errors: Vec<HistoryError>,
    /// The file ended inside a line (read during a write); that line was not taken.
    pub cut_short: bool,
}

/// Reads the `[Calls]` section of `microsip.ini` bytes: UTF-16 (LE or BE) with BOM,
/// UTF-16LE without one, or UTF-8 with or without BOM; CRLF or LF.
pub fn parse_calls(bytes: &[u8]) -> CallsSnapshot {
    let text = decode(bytes);
    let mut snapshot = CallsSnapshot::default();
    let mut in_calls = false;
    let mut pieces = text.split('\n');
    let mut line_number = 0u64;
    let mut current = pieces.next();
    while let Some(raw) = current {
        line_number += 1;
        let next = pieces.next();
        if next.is_none() {
            // After the last line ending: a line still being written (or nothing).
            snapshot.cut_short = !raw.trim().is_empty();
            break;
        }
        current = next;
        let line = raw.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let name = section.split(']').next().unwrap_or_default();
            in_calls = name.trim().eq_ignore_ascii_case("calls");
            continue;
        }
        if !in_calls {
            continue;
        }
        match parse_entry(line, line_number) {
            Ok(Some(entry)) => snapshot.entries.push(entry),
            Ok(None) => {}
            Err(reason) => snapshot.errors.push(HistoryError {
                line: line_number,
                reason,
            }),
        }
    }
    snapshot
}

fn decode(bytes: &[u8]) -> String {
    let (encoding, bom) = match bytes {
        [0xFF, 0xFE, ..] => (UTF_16LE, 2),
        [0xFE, 0xFF, ..] => (UTF_16BE, 2),
        [0xEF, 0xBB, 0xBF, ..] => (UTF_8, 3),
        [a, 0, ..] if *a != 0 => (UTF_16LE, 0),
        _ => (UTF_8, 0),
    };
    let rest = bytes.get(bom..).unwrap_or_default();
    encoding.decode_without_bom_handling(rest).0.into_owned()
}

/// One `key=value` line of `[Calls]`; `Ok(None)` for a deleted (`null`) or empty entry.
fn parse_entry(line: &str, line_number: u64) -> Result<Option<HistoryEntry>, String> {
    let Some((key, value)) = line.split_once('=') else {
        return Err("not a key=value line".to_owned());
    };
    let key = key.trim();
    let value = value.trim();
    if value.is_empty() || value.eq_ignore_ascii_case("null") {
        return Ok(None);
    }
    let parts: Vec<&str> = value.split(';').collect();
    if parts.len() < 6 {
        return Err(format!(
            "entry {}: {} fields, expected number;name;type;time;duration;info",
            clean_text(key, 16),
            parts.len()
        ));
    }
    // A name (or info) holding ';' makes more fields: the type, time and duration are
    // the first three fields after the name that read as such.
    let fields = (2..=parts.len() - 4).find_map(|i| {
        let call_type = CallType::parse(parts.get(i)?)?;
        let time = parts.get(i + 1)?.trim().parse::<i64>().ok()?;
        let duration = parts.get(i + 2)?.trim().parse::<u64>().ok()?;
        Some((i, call_type, time, duration))
    });
    let Some((i, call_type, time, duration)) = fields else {
        return Err(format!(
            "entry {}: no type;time;duration fields (type 0-3, Unix seconds, seconds)",
            clean_text(key, 16)
        ));
    };
    if time <= 0 || Timestamp::from_second(time).is_err() {
        return Err(format!("entry {}: time {time} is out of range", clean_text(key, 16)));
    }
    if duration > 315_360_000 {
        return Err(format!(
            "entry {}: duration {duration} is out of range",
            clean_text(key, 16)
        ));
    }
    Ok(Some(HistoryEntry {
        key: key.to_owned(),
        line: line_number,
        number: parts[0].trim().to_owned(),
        name: parts[1..i].join(";").trim().to_owned(),
        call_type,
        time,
        duration,
        info: parts
            .get(i + 3..)
            .map(|rest| rest.join(";"))
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }))
}

/// How far a call has been reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Ringing,
    Answered,
    Ended,
}

/// What was seen of one entry.
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

/// What the history source remembers between snapshots and across restarts: the
/// entries seen and how far each was reported. Bounded by [`MAX_TRACKED`].
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

/// Turns successive snapshots of `microsip.ini` into events; see the module docs.
#[derive(Debug)]
pub struct HistoryDiffer {
    options: HistoryOptions,
    seen: HashMap<(String, i64), Seen>,
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
    pub fn mark_seen(&mut self, file: &[u8], mut on_error: impl FnMut(HistoryError)) {
        let snapshot = parse_calls(file);
        snapshot.errors.into_iter().for_each(&mut on_error);
        for entry in latest(&snapshot.entries) {
            let outcome = entry.finished().then(|| outcome_of(entry, entry.call_type.direction()));
            let phase = if outcome.is_some() {
                Phase::Ended
            } else if entry.call_type == CallType::Incoming {
                Phase::Answered
            } else {
                Phase::Ringing
            };
            self.seen.insert(
                entry.identity(),
                Seen {
                    number: entry.number.clone(),
                    time: entry.time,
                    direction: entry.call_type.direction(),
                    phase,
                    answered_at: None,
                    absent: 0,
                },
            );
        }
        self.forget(&snapshot.entries);
    }

    /// Compares a new snapshot of the file with what was seen and hands on the events
    /// of every change, oldest call first, each call's in contract order. `now` is when
    /// the snapshot was read: the time of changes seen happening (an answer, an end)
    /// that the file does not record.
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
    pub fn update_entries(&mut self, entries: &[HistoryEntry], now: Timestamp, mut on_event: impl FnMut(Event)) {
        for entry in latest(entries) {
            let identity = entry.identity();
            let live = match self.seen.get(&identity) {
                Some(_) => true,
                None if self.horizon.is_some_and(|h| entry.time <= h) => continue,
                None => false,
            };
            let direction = self
                .seen
                .get(&identity)
                .map_or(entry.call_type.direction(), |s| s.direction);
            let mut seen = self.seen.remove(&identity).unwrap_or_else(|| Seen {
                number: entry.number.clone(),
                time: entry.time,
                direction,
                phase: Phase::Ringing,
                answered_at: None,
                absent: 0,
            });
            seen.absent = 0;
            let call = self.call_of(entry, direction);
            let start = call.start;
            if !live {
                on_event(self.event(&call, EventType::Ringing, start, None));
            }
            let ending = entry.finished().then(|| outcome_of(entry, direction));
            let completed = matches!(ending, Some((Outcome::Completed, _)));
            let answered = completed || (direction == Direction::Inbound && entry.call_type == CallType::Incoming);
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
            if let Some((outcome, status_code)) = ending
                && seen.phase < Phase::Ended
            {
                let answered_at = seen.answered_at.filter(|_| completed);
                let end = match (live, answered_at) {
                    (true, Some(answered)) => answered.checked_add(talk).unwrap_or(answered),
                    (true, None) => now.max(start),
                    (false, _) => start.checked_add(talk).unwrap_or(start),
                };
                let end = end.max(start);
                let ring_s = if live {
                    Some(seconds(start, answered_at.unwrap_or(end)))
                } else {
                    None
                };
                let talk_s = if completed { entry.duration as f64 } else { 0.0 };
                seen.phase = Phase::Ended;
                let ending = Ending {
                    outcome,
                    status_code,
                    ring_s,
                    talk_s,
                };
                on_event(self.event(&call, EventType::Ended, end, Some(ending)));
            }
            self.seen.insert(identity, seen);
        }
        self.forget(entries);
    }

    /// Ages entries missing from the snapshot and forgets those gone for good, then
    /// keeps the number remembered within [`MAX_TRACKED`].
    fn forget(&mut self, entries: &[HistoryEntry]) {
        let present: std::collections::HashSet<(&str, i64)> =
            entries.iter().map(|e| (e.number.as_str(), e.time)).collect();
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
            let mut order: Vec<(bool, i64, (String, i64))> = self
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

    fn drop_entry(&mut self, identity: &(String, i64)) {
        if self.seen.remove(identity).is_some() {
            self.horizon = Some(self.horizon.map_or(identity.1, |h| h.max(identity.1)));
        }
    }

    fn call_of(&self, entry: &HistoryEntry, direction: Direction) -> Call {
        let number = clean_text(&entry.number, MAX_NUMBER_CHARS);
        Call {
            call_id: synthetic_call_id(&number, entry.time),
            direction,
            name: Some(clean_text(&entry.name, MAX_NAME_CHARS)).filter(|n| !n.is_empty()),
            number,
            start: Timestamp::from_second(entry.time).unwrap_or(Timestamp::UNIX_EPOCH),
        }
    }

    fn event(&self, call: &Call, kind: EventType, at: Timestamp, ending: Option<Ending>) -> Event {
        let source = SourceKind::History;
        Event {
            v: CONTRACT_VERSION,
            id: event_id(source, call.direction, &call.call_id, kind),
            kind,
            at: at.to_zoned_datetime(self.options.time_zone.clone()),
            call_id: call.call_id.clone(),
            direction: call.direction,
            local_number: String::new(),
            remote_number: call.number.clone(),
            remote_name: call.name.clone(),
            outcome: ending.map(|e| e.outcome),
            status_code: ending.and_then(|e| e.status_code),
            ended_by: None,
            ring_s: ending.and_then(|e| e.ring_s),
            talk_s: ending.map(|e| e.talk_s),
            source,
            source_path: self.options.source_path.clone(),
        }
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

#[derive(Debug, Clone, Copy)]
struct Ending {
    outcome: Outcome,
    status_code: Option<u16>,
    ring_s: Option<f64>,
    talk_s: f64,
}

/// One entry per identity (the furthest along when a snapshot has two), oldest first.
fn latest(entries: &[HistoryEntry]) -> Vec<&HistoryEntry> {
    let mut by_identity: HashMap<(&str, i64), &HistoryEntry> = HashMap::new();
    for entry in entries {
        let slot = by_identity.entry((entry.number.as_str(), entry.time)).or_insert(entry);
        if entry.progress() > slot.progress() {
            *slot = entry;
        }
    }
    let mut list: Vec<&HistoryEntry> = by_identity.into_values().collect();
    list.sort_by_key(|a| (a.time, a.line));
    list
}

/// Outcome and status code of a finished entry, per DESIGN.md (the file records no
/// status code; one is given when the info text names a SIP status).
fn outcome_of(entry: &HistoryEntry, direction: Direction) -> (Outcome, Option<u16>) {
    let status = status_from_text(&entry.info);
    let info = entry.info.trim().trim_end_matches('.').to_ascii_lowercase();
    let info = info.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
    match (direction, entry.call_type) {
        (Direction::Inbound, CallType::Missed) => {
            if matches!(info, "declined" | "decline" | "busy here") {
                (Outcome::Declined, status)
            } else {
                (Outcome::Missed, status.filter(|&code| code >= 300))
            }
        }
        (Direction::Inbound, CallType::AnsweredElsewhere) => (Outcome::Missed, None),
        (_, CallType::Incoming) => (Outcome::Completed, Some(200)),
        _ if entry.duration > 0 => (Outcome::Completed, Some(200)),
        (Direction::Inbound, _) => (Outcome::Unknown, status),
        (Direction::Outbound, _) => match status {
            // A softphone that writes the final text of an answered call that lasted
            // under a second ("OK"): answered.
            Some(code) if (200..300).contains(&code) => (Outcome::Completed, Some(code)),
            Some(code) => (Outcome::unanswered(Direction::Outbound, code), Some(code)),
            None if info.is_empty() => (Outcome::Unknown, None),
            None => (Outcome::Failed, None),
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
    fn reads_the_calls_section() {
        let mut text = String::from("\u{feff}[Settings]\r\n0=not;a;call\r\n[calls]\r\n");
        text.push_str("0=5551000;Alice;1;1795422838;12;\r\n");
        text.push_str("1=null\r\n");
        text.push_str("; comment\r\n\r\n");
        text.push_str("2=5551001;Doe; John;2;1795422840;0;Busy Here\r\n");
        text.push_str("3=garbage\r\n");
        text.push_str("4=5551002;;9;1795422841;0;\r\n");
        text.push_str("5=5551003;;0;1795422842;0;486 Busy; Here\r\n");
        text.push_str("6=5551004;;0;17954");
        for bytes in [
            utf16le(&text),
            text.clone().into_bytes(),
            text.replace("\r\n", "\n").into_bytes(),
        ] {
            let snapshot = parse_calls(&bytes);
            let got: Vec<(String, String, String, CallType, i64, u64, String)> = snapshot
                .entries
                .iter()
                .map(|e| {
                    (
                        e.key.clone(),
                        e.number.clone(),
                        e.name.clone(),
                        e.call_type,
                        e.time,
                        e.duration,
                        e.info.clone(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [
                    (
                        "0".into(),
                        "5551000".into(),
                        "Alice".into(),
                        CallType::Incoming,
                        1_795_422_838,
                        12,
                        "".into()
                    ),
                    (
                        "2".into(),
                        "5551001".into(),
                        "Doe; John".into(),
                        CallType::Missed,
                        1_795_422_840,
                        0,
                        "Busy Here".into()
                    ),
                    (
                        "5".into(),
                        "5551003".into(),
                        "".into(),
                        CallType::Outgoing,
                        1_795_422_842,
                        0,
                        "486 Busy; Here".into()
                    ),
                ]
            );
            let errors: Vec<String> = snapshot.errors.iter().map(|e| e.to_string()).collect();
            assert_eq!(
                errors,
                [
                    "line 9: entry 3: 1 fields, expected number;name;type;time;duration;info",
                    "line 10: entry 4: no type;time;duration fields (type 0-3, Unix seconds, seconds)",
                ]
            );
            assert!(snapshot.cut_short, "the last line has no line ending yet");
        }
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
