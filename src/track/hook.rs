//! The hook tracker: messages from MicroSIP's command hooks in ([`HookMessage`], one per
//! start of `callhook hook`), call events out, with a `HookState` to store alongside.
//!
//! A hook knows no Call-ID, no status code and not who hung up, so `HookCalls` keeps
//! the calls open per number and direction: `ring`/`incoming` open an inbound call (the
//! second of the two for one call changes nothing), `outgoing` an outbound one,
//! `answer`/`start` answer it, `busy`/`end` end it. The call id is made from number and
//! start time like the history's, so both sources name one call alike.
//!
//! `callhook hook` may hand one message over loopback and, when no answer came in time,
//! spool it too; the second copy has the same id and is dropped here.

use std::collections::VecDeque;

use jiff::{SignedDuration, ZonedDateTime};
use serde::{Deserialize, Serialize};

use crate::event::{
    CallFacts, Direction, Ending, Event, EventType, MAX_NAME_CHARS, MAX_NUMBER_CHARS, Outcome, SourceKind, clean_text,
};
use crate::parse::hook::{HookEvent, HookMessage};
use crate::parse::record::synthetic_call_id;

/// What `source_path` says for events from hooks (they come from no file).
pub(crate) const HOOK_SOURCE_PATH: &str = "hook";

/// A call opened by a hook and not yet ended. Persisted inside [`HookState`]: the field
/// names are the stored JSON's.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpenCall {
    call_id: String,
    direction: Direction,
    number: String,
    name: Option<String>,
    started: ZonedDateTime,
    answered: Option<ZonedDateTime>,
}

/// What [`HookCalls`] keeps between messages (stored with each commit).
///
/// Stored as JSON in users' state databases: renaming or nesting a field (here or in
/// `OpenCall`) breaks their resume.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HookState {
    open: Vec<OpenCall>,
    /// Ids of the latest messages, to drop a copy.
    seen: VecDeque<String>,
    /// Numbers and times of the latest calls ended, so `end` after `busy` is quiet.
    ended: VecDeque<(String, ZonedDateTime)>,
}

/// How many message ids are remembered to drop copies.
const SEEN: usize = 1024;
/// How many ended calls are remembered.
const ENDED: usize = 256;
/// A call still open after this long lost its `end` (MicroSIP quit mid-call): a new
/// call from the same number replaces it.
const STALE: SignedDuration = SignedDuration::from_hours(12);
/// A second `end` within this time after a call ended belongs to that call.
const END_ECHO: SignedDuration = SignedDuration::from_secs(60);

/// A message that makes no event, and why (logged by the caller; most are expected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ignored {
    /// The same message arrived before.
    Copy,
    /// The call is already at that stage (`incoming` then `ring`, `answer` then `start`,
    /// `busy` then `end`).
    Repeat,
    /// No open call for this number: the daemon was not told of its start.
    NoCall,
}

/// The calls hooks told of; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct HookCalls {
    state: HookState,
}

impl HookCalls {
    /// Goes on from a stored state.
    pub(crate) fn resume(state: HookState) -> HookCalls {
        HookCalls { state }
    }

    /// What to store with the events of the messages applied so far.
    pub(crate) fn state(&self) -> &HookState {
        &self.state
    }

    /// Turns one message into the events it means (none, or one).
    pub(crate) fn apply(&mut self, message: &HookMessage) -> Result<Event, Ignored> {
        if self.state.seen.contains(&message.id) {
            return Err(Ignored::Copy);
        }
        if self.state.seen.len() >= SEEN {
            self.state.seen.pop_front();
        }
        self.state.seen.push_back(message.id.clone());
        let number = clean_text(&message.number, MAX_NUMBER_CHARS);
        let name = message
            .name
            .as_deref()
            .map(|n| clean_text(n, MAX_NAME_CHARS))
            .filter(|n| !n.is_empty());
        let at = &message.at;
        match message.event {
            HookEvent::Incoming | HookEvent::Ring => self.open(Direction::Inbound, number, name, at),
            HookEvent::Outgoing => self.open(Direction::Outbound, number, name, at),
            HookEvent::Answer | HookEvent::Start => {
                // `cmdCallAnswer` fires for inbound calls only; `cmdCallStart` for both.
                let direction = (message.event == HookEvent::Answer).then_some(Direction::Inbound);
                let index = self.find(&number, direction).ok_or(Ignored::NoCall)?;
                let call = &mut self.state.open[index];
                if call.answered.is_some() {
                    return Err(Ignored::Repeat);
                }
                call.answered = Some(at.clone());
                Ok(event(call, EventType::Answered, at, None))
            }
            HookEvent::Busy | HookEvent::End => self.end(&number, message.event == HookEvent::Busy, at),
        }
    }

    /// A call starts, unless the same one is already open (its second start hook).
    fn open(
        &mut self,
        direction: Direction,
        number: String,
        name: Option<String>,
        at: &ZonedDateTime,
    ) -> Result<Event, Ignored> {
        if let Some(index) = self.find(&number, Some(direction)) {
            let open = &mut self.state.open[index];
            if at.timestamp().duration_since(open.started.timestamp()) < STALE {
                if open.name.is_none() {
                    open.name = name;
                }
                return Err(Ignored::Repeat);
            }
            let stale = self.state.open.remove(index);
            tracing::debug!(number = %stale.number, "hook call never ended; replaced by a new one");
        }
        let call = OpenCall {
            call_id: synthetic_call_id(&number, at.timestamp().as_second()),
            direction,
            number,
            name,
            started: at.clone(),
            answered: None,
        };
        let event = event(&call, EventType::Ringing, at, None);
        self.state.open.push(call);
        Ok(event)
    }

    /// The open call of `number` ends (`busy`: the busy hook).
    fn end(&mut self, number: &str, busy: bool, at: &ZonedDateTime) -> Result<Event, Ignored> {
        let Some(index) = self.find(number, None) else {
            let echo = self
                .state
                .ended
                .iter()
                .any(|(n, ended)| n == number && at.timestamp().duration_since(ended.timestamp()) < END_ECHO);
            return Err(if echo { Ignored::Repeat } else { Ignored::NoCall });
        };
        let call = self.state.open.remove(index);
        if self.state.ended.len() >= ENDED {
            self.state.ended.pop_front();
        }
        self.state.ended.push_back((call.number.clone(), at.clone()));
        let ending = ending(&call, busy, at);
        Ok(event(&call, EventType::Ended, at, Some(ending)))
    }

    /// The open call of `number` (the latest one), in `direction` when given.
    fn find(&self, number: &str, direction: Option<Direction>) -> Option<usize> {
        self.state
            .open
            .iter()
            .rposition(|c| c.number == number && direction.is_none_or(|d| c.direction == d))
    }
}

/// How an ended call ended, as far as hooks can tell: answered and not busy is
/// completed; busy is a 486 (the contract's table gives the outcome); else nothing says
/// why.
fn ending(call: &OpenCall, busy: bool, at: &ZonedDateTime) -> Ending {
    let (start, end) = (call.started.timestamp(), at.timestamp());
    match &call.answered {
        Some(answered) if !busy => Ending::completed(None).timed_between(start, Some(answered.timestamp()), end),
        _ => {
            let ending = match (busy, call.direction) {
                (true, direction) => Ending::from_status(direction, 486),
                (false, Direction::Inbound) => Ending::of(Outcome::Missed, None),
                // An unanswered outbound call's end says nothing about why.
                (false, Direction::Outbound) => Ending::unknown(),
            };
            // A busy call that was answered counts as not answered: all of it rang.
            ending.timed_between(start, None, end)
        }
    }
}

fn event(call: &OpenCall, kind: EventType, at: &ZonedDateTime, ending: Option<Ending>) -> Event {
    let facts = CallFacts {
        source: SourceKind::Hook,
        source_path: HOOK_SOURCE_PATH,
        call_id: &call.call_id,
        direction: call.direction,
        // A hook is given the remote number only.
        local_number: "",
        remote_number: &call.number,
        remote_name: call.name.as_deref(),
    };
    facts.event(kind, at.clone(), ending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::hook::tests::message;

    fn run(messages: &[HookMessage]) -> Vec<String> {
        let mut calls = HookCalls::default();
        messages
            .iter()
            .map(|m| match calls.apply(m) {
                Ok(e) => format!(
                    "{} {} {} {}",
                    e.kind.as_str(),
                    e.direction.as_str(),
                    e.remote_number,
                    e.outcome.map_or("-", |o| o.as_str())
                ),
                Err(i) => format!("{i:?}"),
            })
            .collect()
    }

    #[test]
    fn inbound_answered() {
        let got = run(&[
            message(1, "incoming", "100", 0),
            message(2, "cmdCallRing", "100", 0),
            message(3, "answer", "100", 4),
            message(4, "start", "100", 4),
            message(5, "end", "100", 64),
        ]);
        assert_eq!(
            got,
            [
                "ringing inbound 100 -",
                "Repeat",
                "answered inbound 100 -",
                "Repeat",
                "ended inbound 100 completed"
            ]
        );
    }

    #[test]
    fn unanswered_and_busy() {
        let got = run(&[
            message(1, "ring", "100", 0),
            message(2, "end", "100", 20),
            message(3, "outgoing", "200", 30),
            message(4, "busy", "200", 31),
            message(5, "end", "200", 31),
            message(6, "outgoing", "300", 40),
            message(7, "end", "300", 50),
            message(8, "end", "400", 50),
        ]);
        assert_eq!(
            got,
            [
                "ringing inbound 100 -",
                "ended inbound 100 missed",
                "ringing outbound 200 -",
                "ended outbound 200 busy",
                "Repeat",
                "ringing outbound 300 -",
                "ended outbound 300 unknown",
                "NoCall"
            ]
        );
    }

    #[test]
    fn copies_are_dropped_and_state_resumes() {
        let mut calls = HookCalls::default();
        let ring = message(1, "ring", "100", 0);
        let first = calls.apply(&ring).unwrap();
        assert_eq!(calls.apply(&ring), Err(Ignored::Copy));
        let state: HookState = serde_json::from_str(&serde_json::to_string(calls.state()).unwrap()).unwrap();
        let mut resumed = HookCalls::resume(state);
        assert_eq!(resumed.apply(&ring), Err(Ignored::Copy));
        let end = resumed.apply(&message(2, "end", "100", 9)).unwrap();
        assert_eq!(end.call_id, first.call_id);
        assert_eq!(end.ring_s, Some(9.0));
    }

    /// A state stored by callhook before the tracker left `parse/` (captured then, with
    /// what the next messages gave): it must still resume and give the same.
    #[test]
    fn a_stored_state_resumes() {
        const STORED: &str = r#"{"open":[{"call_id":"syn-5434f2bb7a72d5dad3a7c3ec","direction":"inbound","number":"100","name":"Alice","started":"2026-11-18T12:06:40+01:00[+01:00]","answered":"2026-11-18T12:06:44+01:00[+01:00]"},{"call_id":"syn-26854d54b341fa51bc020235","direction":"outbound","number":"200","name":null,"started":"2026-11-18T12:06:50+01:00[+01:00]","answered":null}],"seen":["m1","m2","m3","m4","m5","m6"],"ended":[["300","2026-11-18T12:06:55+01:00[+01:00]"]]}"#;
        const AFTER: &str = r#"{"open":[],"seen":["m1","m2","m3","m4","m5","m6","m7","m8","m9","m10","m11","m12","m13"],"ended":[["300","2026-11-18T12:06:55+01:00[+01:00]"],["100","2026-11-18T12:07:44+01:00[+01:00]"],["200","2026-11-18T12:07:55+01:00[+01:00]"],["400","2026-11-18T12:08:03+01:00[+01:00]"]]}"#;
        const NEXT: &[&str] = &[
            r#"Copy"#,
            r#"Repeat"#,
            r#"{"v":1,"id":"d929bec035c43ae9fb147f270477f91f","type":"ended","at":"2026-11-18T12:07:44.000+01:00","call_id":"syn-5434f2bb7a72d5dad3a7c3ec","direction":"inbound","local_number":"","remote_number":"100","remote_name":"Alice","outcome":"completed","status_code":200,"ring_s":4.0,"talk_s":60.0,"source":"hook","source_path":"hook"}"#,
            r#"{"v":1,"id":"a3f6ac2fc60986a84dbb1ee589cb9b4b","type":"answered","at":"2026-11-18T12:07:50.000+01:00","call_id":"syn-26854d54b341fa51bc020235","direction":"outbound","local_number":"","remote_number":"200","remote_name":null,"source":"hook","source_path":"hook"}"#,
            r#"{"v":1,"id":"bf72460d2b127ec51fb22bc9494389f0","type":"ended","at":"2026-11-18T12:07:55.000+01:00","call_id":"syn-26854d54b341fa51bc020235","direction":"outbound","local_number":"","remote_number":"200","remote_name":null,"outcome":"completed","status_code":200,"ring_s":60.0,"talk_s":5.0,"source":"hook","source_path":"hook"}"#,
            r#"{"v":1,"id":"fcda9a7f2dfb1a95ef2971606204d83d","type":"ringing","at":"2026-11-18T12:08:00.000+01:00","call_id":"syn-aca4920b9b6d57f8ebc6c881","direction":"outbound","local_number":"","remote_number":"400","remote_name":"Dan","source":"hook","source_path":"hook"}"#,
            r#"{"v":1,"id":"636f483cedfffb7d94cc9793cabfebcc","type":"ended","at":"2026-11-18T12:08:03.000+01:00","call_id":"syn-aca4920b9b6d57f8ebc6c881","direction":"outbound","local_number":"","remote_number":"400","remote_name":"Dan","outcome":"busy","status_code":486,"ring_s":3.0,"talk_s":0.0,"source":"hook","source_path":"hook"}"#,
            r#"NoCall"#,
        ];
        let message = |n: u32, event: &str, number: &str, second: i64, name: Option<&str>| HookMessage {
            id: format!("m{n}"),
            event: event.parse().unwrap(),
            number: number.to_owned(),
            name: name.map(str::to_owned),
            at: jiff::Timestamp::from_second(1_795_000_000 + second)
                .unwrap()
                .to_zoned_datetime(jiff::tz::TimeZone::fixed(jiff::tz::offset(1))),
        };
        let state: HookState = serde_json::from_str(STORED).unwrap();
        assert_eq!(serde_json::to_string(&state).unwrap(), STORED);
        let mut calls = HookCalls::resume(state);
        let next = [
            message(3, "answer", "100", 4, None),
            message(7, "end", "300", 20, None),
            message(8, "end", "100", 64, None),
            message(9, "start", "200", 70, None),
            message(10, "end", "200", 75, None),
            message(11, "outgoing", "400", 80, Some("Dan")),
            message(12, "busy", "400", 83, None),
            message(13, "end", "500", 90, None),
        ];
        let got: Vec<String> = next
            .iter()
            .map(|m| match calls.apply(m) {
                Ok(event) => event.to_json(),
                Err(ignored) => format!("{ignored:?}"),
            })
            .collect();
        assert_eq!(got, NEXT);
        assert_eq!(serde_json::to_string(calls.state()).unwrap(), AFTER);
    }
}
