//! Calls of a call-log CSV: the parser's [`CallRow`]s in, contract events out.
//!
//! A state row is that row's event. Its call is the one with the row's Call-ID; without
//! one, the open call with the same number (a `ringing` row always opens a new one), and
//! a new call's id is made stable from the number and the ringing time
//! ([`synthetic_call_id`]), so re-reading a file gives the same ids. Calls stay open from
//! `ringing` or `answered` to `ended`, and are part of the state a checkpoint keeps. A
//! record row is one finished call: one `ended` event, nothing kept.
//!
//! Every event is built by [`CallFacts::event`], its ending by [`Ending`].

use std::collections::HashMap;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::event::{CallFacts, Direction, Ending, Event, EventType, Outcome, SourceKind, seconds};
use crate::parse::call_log::{CallRow, RecordRow, RowValues, StateRow};
use crate::parse::record::synthetic_call_id;

/// Most calls kept open (seen `ringing` or `answered`, not yet `ended`); beyond it the
/// one that started first is forgotten.
pub const MAX_OPEN_CALLS: usize = 10_000;

/// A call seen `ringing` or `answered` and not yet `ended`. Persisted in checkpoints:
/// the field names are part of the stored state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpenCall {
    call_id: String,
    direction: Direction,
    number: String,
    local_number: String,
    name: Option<String>,
    ringing_at: Option<Timestamp>,
    answered_at: Option<Timestamp>,
}

/// What a restart needs of a tracker: its open calls, oldest first. Serialized as
/// `{"open": [...]}`, inside the call-log source's checkpoint state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallLogTrackerState {
    open: Vec<OpenCall>,
}

/// Turns the rows of one call-log file into events; see the module docs.
#[derive(Debug)]
pub struct CallLogTracker {
    /// Written into each event's `source_path`.
    source_path: String,
    /// Events are stamped in it.
    time_zone: TimeZone,
    open: HashMap<String, OpenCall>,
    /// Number → Call-ID of the newest open call from or to it.
    by_number: HashMap<String, String>,
}

impl CallLogTracker {
    /// A tracker with no open calls; events carry `source_path` and are stamped in
    /// `time_zone`.
    pub fn new(source_path: impl Into<String>, time_zone: TimeZone) -> CallLogTracker {
        CallLogTracker {
            source_path: source_path.into(),
            time_zone,
            open: HashMap::new(),
            by_number: HashMap::new(),
        }
    }

    /// Takes up the open calls of a saved state.
    pub(crate) fn restore(&mut self, state: &CallLogTrackerState) {
        for call in &state.open {
            self.by_number.insert(call.number.clone(), call.call_id.clone());
            self.open.insert(call.call_id.clone(), call.clone());
        }
    }

    /// What a restart needs; see [`CallLogTracker::restore`].
    pub fn state(&self) -> CallLogTrackerState {
        let mut open: Vec<OpenCall> = self.open.values().cloned().collect();
        open.sort_by(|a, b| (a.ringing_at, &a.call_id).cmp(&(b.ringing_at, &b.call_id)));
        CallLogTrackerState { open }
    }

    /// Number of calls open (state rows only).
    pub(crate) fn open_calls(&self) -> usize {
        self.open.len()
    }

    /// The event a row stands for (every row is exactly one).
    pub fn row(&mut self, row: CallRow) -> Event {
        match row.values {
            RowValues::State(row) => self.state_row(row),
            RowValues::Record(row) => self.record_row(row),
        }
    }

    /// Ends every open call with outcome `unknown` at `at` (its file was truncated or
    /// replaced mid-call), oldest first.
    pub(crate) fn end_open_calls(&mut self, at: Timestamp, mut on_event: impl FnMut(Event)) {
        let mut calls: Vec<OpenCall> = self.open.drain().map(|(_, c)| c).collect();
        self.by_number.clear();
        calls.sort_by(|a, b| (a.ringing_at, &a.call_id).cmp(&(b.ringing_at, &b.call_id)));
        for call in calls {
            // Only what was seen: no ring time without `ringing`, no talk time unless
            // answered.
            let ending = Ending {
                ring_s: call.ringing_at.map(|r| seconds(r, call.answered_at.unwrap_or(at))),
                talk_s: call.answered_at.map(|a| seconds(a, at)),
                ..Ending::unknown()
            };
            on_event(self.event(&call, EventType::Ended, at, Some(ending)));
        }
    }

    fn state_row(&mut self, row: StateRow) -> Event {
        let at = row.at;
        let call_id = match row.call_id {
            Some(id) => id,
            None => {
                let number = row.number.as_deref().unwrap_or_default();
                // A `ringing` row is a new call even when one from that number is open.
                let open = self.by_number.get(number).filter(|_| row.event != EventType::Ringing);
                match open {
                    Some(id) => id.clone(),
                    None => synthetic_call_id(number, at.as_second()),
                }
            }
        };
        let known = self.open.get(&call_id);
        let direction = row
            .call_type
            .map(|t| t.direction)
            .or(known.map(|c| c.direction))
            .or(row.implied_direction)
            .unwrap_or(Direction::Inbound);
        let mut call = OpenCall {
            number: row
                .number
                .or_else(|| known.map(|c| c.number.clone()))
                .unwrap_or_default(),
            name: row.name.or_else(|| known.and_then(|c| c.name.clone())),
            local_number: row
                .local_number
                .or_else(|| known.map(|c| c.local_number.clone()))
                .unwrap_or_default(),
            direction,
            ringing_at: known.and_then(|c| c.ringing_at),
            answered_at: known.and_then(|c| c.answered_at),
            call_id,
        };
        match row.event {
            EventType::Ringing => {
                call.ringing_at = Some(at);
                call.answered_at = None;
            }
            EventType::Answered => call.answered_at = Some(at),
            EventType::Ended => {
                self.close(&call.call_id);
                let answered = call.answered_at.is_some() || row.duration.is_some_and(|d| d > 0.0);
                let missed = row.call_type.filter(|t| t.missed).map(|_| Outcome::Missed);
                let ending = ending(
                    direction,
                    row.status_code,
                    [row.outcome, answered.then_some(Outcome::Completed), missed],
                );
                let ending = Ending {
                    ring_s: call.ringing_at.map(|r| seconds(r, call.answered_at.unwrap_or(at))),
                    talk_s: row
                        .duration
                        .or(call.answered_at.map(|a| seconds(a, at)))
                        .or((ending.outcome != Outcome::Completed).then_some(0.0)),
                    ..ending
                };
                return self.event(&call, EventType::Ended, at, Some(ending));
            }
        }
        let event = self.event(&call, row.event, at, None);
        self.open_call(call);
        event
    }

    /// Forgets an open call that ended.
    fn close(&mut self, call_id: &str) {
        if let Some(old) = self.open.remove(call_id)
            && self.by_number.get(&old.number) == Some(&old.call_id)
        {
            self.by_number.remove(&old.number);
        }
    }

    fn open_call(&mut self, call: OpenCall) {
        if self.open.len() >= MAX_OPEN_CALLS && !self.open.contains_key(&call.call_id) {
            let oldest = self
                .open
                .values()
                .min_by(|a, b| (a.ringing_at, &a.call_id).cmp(&(b.ringing_at, &b.call_id)))
                .map(|c| c.call_id.clone());
            if let Some(id) = oldest {
                self.close(&id);
            }
        }
        self.by_number.insert(call.number.clone(), call.call_id.clone());
        self.open.insert(call.call_id.clone(), call);
    }

    fn record_row(&mut self, row: RecordRow) -> Event {
        let direction = row.call_type.direction;
        let missed = row.call_type.missed.then_some(Outcome::Missed);
        let answered = (row.duration > 0.0).then_some(Outcome::Completed);
        let ending = Ending {
            talk_s: Some(row.duration),
            ..ending(direction, row.status_code, [row.outcome, missed, answered])
        };
        let call = OpenCall {
            call_id: row
                .call_id
                .unwrap_or_else(|| synthetic_call_id(&row.number, row.started.as_second())),
            direction,
            local_number: row.local_number,
            name: row.name,
            number: row.number,
            ringing_at: Some(row.started),
            answered_at: None,
        };
        // The row tells when the call started and how long it was talked; the end is
        // at least that much later (the ringing time is not recorded).
        let end = row
            .started
            .checked_add(SignedDuration::from_secs_f64(row.duration))
            .unwrap_or(row.started);
        self.event(&call, EventType::Ended, end, Some(ending))
    }

    fn event(&self, call: &OpenCall, kind: EventType, at: Timestamp, ending: Option<Ending>) -> Event {
        let facts = CallFacts {
            source: SourceKind::CallLog,
            source_path: &self.source_path,
            call_id: &call.call_id,
            direction: call.direction,
            local_number: &call.local_number,
            remote_number: &call.number,
            remote_name: call.name.as_deref(),
        };
        facts.event(kind, at.to_zoned_datetime(self.time_zone.clone()), ending)
    }
}

/// How a call ended: the first outcome the row makes `known` (in the order given), else
/// the one its status gives, else `unknown`. A completed call without a status gets 200.
fn ending(direction: Direction, status_code: Option<u16>, known: [Option<Outcome>; 3]) -> Ending {
    let outcome = known
        .into_iter()
        .flatten()
        .next()
        .or(status_code.map(|code| Ending::from_status(direction, code).outcome))
        .unwrap_or(Outcome::Unknown);
    Ending::of(outcome, status_code.or((outcome == Outcome::Completed).then_some(200)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::call_log::{CallType, Position};

    fn tracker() -> CallLogTracker {
        CallLogTracker::new("calls.csv", TimeZone::UTC)
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn state(event: EventType, seconds: i64, number: &str) -> StateRow {
        StateRow {
            event,
            implied_direction: None,
            at: at(seconds),
            call_id: None,
            call_type: None,
            number: Some(number.to_owned()),
            name: None,
            local_number: None,
            status_code: None,
            outcome: None,
            duration: None,
        }
    }

    fn row(values: RowValues) -> CallRow {
        CallRow {
            position: Position::default(),
            values,
        }
    }

    #[test]
    fn rows_without_call_id_join_the_open_call_of_their_number() {
        let mut tracker = tracker();
        let ringing = tracker.row(row(RowValues::State(StateRow {
            name: Some("Alice".into()),
            ..state(EventType::Ringing, 100, "5")
        })));
        let answered = tracker.row(row(RowValues::State(state(EventType::Answered, 103, "5"))));
        assert_eq!(tracker.open_calls(), 1);
        let ended = tracker.row(row(RowValues::State(state(EventType::Ended, 110, "5"))));
        assert_eq!(tracker.open_calls(), 0);
        assert_eq!(ringing.call_id, synthetic_call_id("5", 100));
        assert_eq!(answered.call_id, ringing.call_id);
        assert_eq!(ended.call_id, ringing.call_id);
        assert_eq!(ended.remote_name.as_deref(), Some("Alice"), "kept from ringing");
        let ending = (ended.outcome, ended.status_code, ended.ring_s, ended.talk_s);
        assert_eq!(ending, (Some(Outcome::Completed), Some(200), Some(3.0), Some(7.0)));
        assert_eq!(ringing.outcome, None);
    }

    #[test]
    fn an_unanswered_end_takes_its_outcome_from_the_status() {
        let mut tracker = tracker();
        let calling = StateRow {
            call_id: Some("c1".into()),
            implied_direction: Some(Direction::Outbound),
            ..state(EventType::Ringing, 100, "7")
        };
        tracker.row(row(RowValues::State(calling)));
        let ended = tracker.row(row(RowValues::State(StateRow {
            call_id: Some("c1".into()),
            status_code: Some(486),
            ..state(EventType::Ended, 104, "7")
        })));
        assert_eq!(ended.direction, Direction::Outbound, "kept from ringing");
        let ending = (ended.outcome, ended.status_code, ended.ring_s, ended.talk_s);
        assert_eq!(ending, (Some(Outcome::Busy), Some(486), Some(4.0), Some(0.0)));
    }

    #[test]
    fn a_record_row_is_one_ended_event() {
        let record = RecordRow {
            call_type: CallType {
                direction: Direction::Inbound,
                missed: true,
            },
            started: at(100),
            call_id: None,
            number: "9".into(),
            name: None,
            local_number: String::new(),
            status_code: Some(487),
            outcome: None,
            duration: 0.0,
        };
        let ended = tracker().row(row(RowValues::Record(record)));
        assert_eq!(ended.kind, EventType::Ended);
        assert_eq!(ended.call_id, synthetic_call_id("9", 100));
        let ending = (ended.outcome, ended.status_code, ended.ring_s, ended.talk_s);
        assert_eq!(ending, (Some(Outcome::Missed), Some(487), None, Some(0.0)));
    }

    #[test]
    fn open_calls_survive_a_restart_and_end_unknown() {
        let mut first = tracker();
        first.row(row(RowValues::State(state(EventType::Ringing, 100, "1"))));
        first.row(row(RowValues::State(state(EventType::Answered, 50, "2"))));
        let saved: CallLogTrackerState = serde_json::from_str(&serde_json::to_string(&first.state()).unwrap()).unwrap();
        let mut second = tracker();
        second.restore(&saved);
        assert_eq!(second.state(), first.state());
        let mut ended = Vec::new();
        second.end_open_calls(at(110), |e| ended.push(e));
        assert_eq!(second.open_calls(), 0);
        let got: Vec<_> = ended
            .iter()
            .map(|e| (e.remote_number.as_str(), e.outcome, e.ring_s, e.talk_s))
            .collect();
        assert_eq!(
            got,
            [
                ("2", Some(Outcome::Unknown), None, Some(60.0)),
                ("1", Some(Outcome::Unknown), Some(10.0), None),
            ]
        );
    }

    #[test]
    fn the_oldest_open_call_is_forgotten_beyond_the_limit() {
        let mut tracker = tracker();
        for i in 0..=MAX_OPEN_CALLS as i64 {
            tracker.row(row(RowValues::State(state(
                EventType::Ringing,
                1000 + i,
                &i.to_string(),
            ))));
        }
        assert_eq!(tracker.open_calls(), MAX_OPEN_CALLS);
        // The first call's number no longer finds it: its end is a call of its own.
        let ended = tracker.row(row(RowValues::State(state(EventType::Ended, 5000, "0"))));
        assert_eq!(ended.call_id, synthetic_call_id("0", 5000));
        assert_eq!(tracker.open_calls(), MAX_OPEN_CALLS);
    }
}
