//! MicroSIP's command hooks: one message per start of `callhook hook`, turned into call
//! events.
//!
//! MicroSIP starts a program on `cmdIncomingCall`, `cmdCallRing`, `cmdOutgoingCall`,
//! `cmdCallAnswer`, `cmdCallStart`, `cmdCallBusy` and `cmdCallEnd`, with the number as
//! its only argument. A hook knows no Call-ID, no status code and not who hung up, so
//! [`HookCalls`] keeps the calls open per number and direction: `ring`/`incoming` open an
//! inbound call (the second of the two for one call changes nothing), `outgoing` an
//! outbound one, `answer`/`start` answer it, `busy`/`end` end it. The call id is made
//! from number and start time like the history's, so both sources name one call alike.
//!
//! Each message carries a unique id: `callhook hook` may hand one message over loopback
//! and, when no answer came in time, spool it too; the second copy is dropped here.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use jiff::{SignedDuration, ZonedDateTime};
use serde::{Deserialize, Serialize};

use super::record::{seconds, synthetic_call_id};
use crate::event::{
    CONTRACT_VERSION, Direction, Event, EventType, MAX_NAME_CHARS, MAX_NUMBER_CHARS, Outcome, SourceKind, clean_text,
    event_id,
};

/// What `source_path` says for events from hooks (they come from no file).
pub const HOOK_SOURCE_PATH: &str = "hook";

/// The MicroSIP setting a hook program was started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookEvent {
    /// `cmdIncomingCall`: an inbound call arrived.
    Incoming,
    /// `cmdCallRing`: an inbound call rings.
    Ring,
    /// `cmdOutgoingCall`: the phone places a call.
    Outgoing,
    /// `cmdCallAnswer`: an inbound call was answered.
    Answer,
    /// `cmdCallStart`: a call (either direction) was connected.
    Start,
    /// `cmdCallBusy`: a call ended busy.
    Busy,
    /// `cmdCallEnd`: a call ended.
    End,
}

/// Every hook event, with the MicroSIP setting it belongs to (for help texts and docs).
pub const HOOK_EVENTS: &[(HookEvent, &str)] = &[
    (HookEvent::Incoming, "cmdIncomingCall"),
    (HookEvent::Ring, "cmdCallRing"),
    (HookEvent::Outgoing, "cmdOutgoingCall"),
    (HookEvent::Answer, "cmdCallAnswer"),
    (HookEvent::Start, "cmdCallStart"),
    (HookEvent::Busy, "cmdCallBusy"),
    (HookEvent::End, "cmdCallEnd"),
];

impl HookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::Incoming => "incoming",
            HookEvent::Ring => "ring",
            HookEvent::Outgoing => "outgoing",
            HookEvent::Answer => "answer",
            HookEvent::Start => "start",
            HookEvent::Busy => "busy",
            HookEvent::End => "end",
        }
    }
}

impl fmt::Display for HookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hook event name that is none of the known ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownHookEvent(pub String);

impl fmt::Display for UnknownHookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = HOOK_EVENTS.iter().map(|(e, _)| e.as_str()).collect();
        write!(
            f,
            "unknown hook event {:?}; use one of {} (or the MicroSIP setting's name, e.g. cmdCallRing)",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownHookEvent {}

impl FromStr for HookEvent {
    type Err = UnknownHookEvent;

    /// Reads `ring`, `cmdCallRing`, `CallRing`, `incoming`, `IncomingCall`, ... in any
    /// letter case.
    fn from_str(text: &str) -> Result<HookEvent, UnknownHookEvent> {
        let lower = text.trim().to_ascii_lowercase();
        let name = lower.strip_prefix("cmd").unwrap_or(&lower);
        let name = name.strip_prefix("call").unwrap_or(name);
        let name = name.strip_suffix("call").unwrap_or(name);
        Ok(match name {
            "incoming" => HookEvent::Incoming,
            "ring" | "ringing" => HookEvent::Ring,
            "outgoing" => HookEvent::Outgoing,
            "answer" | "answered" => HookEvent::Answer,
            "start" => HookEvent::Start,
            "busy" => HookEvent::Busy,
            "end" | "ended" => HookEvent::End,
            _ => return Err(UnknownHookEvent(text.to_owned())),
        })
    }
}

/// One hook program start, as `callhook hook` hands it to the daemon (one JSON line
/// over loopback, or one file in the spool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookMessage {
    /// Unique per program start: a copy that arrives twice is dropped.
    pub id: String,
    pub event: HookEvent,
    /// The number as MicroSIP passed it (a `sip:` URI is reduced to its user part).
    pub number: String,
    #[serde(default)]
    pub name: Option<String>,
    /// When the hook program started, with the local offset.
    #[serde(
        serialize_with = "crate::event::serialize_rfc3339",
        deserialize_with = "crate::event::deserialize_rfc3339"
    )]
    pub at: ZonedDateTime,
}

/// The user part of what MicroSIP passes: `sip:100@pbx` → `100`, `"Name" <sip:100@pbx>`
/// → `100`, a bare number stays. Cleaned like every number from outside.
pub fn number_of(argument: &str) -> String {
    let mut text = argument.trim();
    if let (Some(open), Some(close)) = (text.find('<'), text.rfind('>'))
        && open < close
    {
        text = &text[open + 1..close];
    }
    for scheme in ["sip:", "sips:", "tel:", "SIP:", "SIPS:", "TEL:"] {
        if let Some(rest) = text.strip_prefix(scheme) {
            text = rest;
            break;
        }
    }
    if let Some(at) = text.find('@') {
        text = &text[..at];
    }
    let text = text.split(';').next().unwrap_or(text);
    clean_text(text, MAX_NUMBER_CHARS)
}

/// A call opened by a hook and not yet ended.
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HookState {
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
pub enum Ignored {
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
pub struct HookCalls {
    state: HookState,
}

impl HookCalls {
    pub fn new() -> HookCalls {
        HookCalls::default()
    }

    pub fn resume(state: HookState) -> HookCalls {
        HookCalls { state }
    }

    pub fn state(&self) -> &HookState {
        &self.state
    }

    /// Turns one message into the events it means (none, or one).
    pub fn apply(&mut self, message: &HookMessage) -> Result<Event, Ignored> {
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
            HookEvent::Incoming | HookEvent::Ring | HookEvent::Outgoing => {
                let direction = if message.event == HookEvent::Outgoing {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                };
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
            HookEvent::Answer | HookEvent::Start => {
                let direction = (message.event == HookEvent::Answer).then_some(Direction::Inbound);
                let index = self.find(&number, direction).ok_or(Ignored::NoCall)?;
                let call = &mut self.state.open[index];
                if call.answered.is_some() {
                    return Err(Ignored::Repeat);
                }
                call.answered = Some(at.clone());
                Ok(event(call, EventType::Answered, at, None))
            }
            HookEvent::Busy | HookEvent::End => {
                let Some(index) = self.find(&number, None) else {
                    let echo =
                        self.state.ended.iter().any(|(n, ended)| {
                            *n == number && at.timestamp().duration_since(ended.timestamp()) < END_ECHO
                        });
                    return Err(if echo { Ignored::Repeat } else { Ignored::NoCall });
                };
                let call = self.state.open.remove(index);
                if self.state.ended.len() >= ENDED {
                    self.state.ended.pop_front();
                }
                self.state.ended.push_back((call.number.clone(), at.clone()));
                let ending = ending(&call, message.event == HookEvent::Busy, at);
                Ok(event(&call, EventType::Ended, at, Some(ending)))
            }
        }
    }

    /// The open call of `number` (the latest one), in `direction` when given.
    fn find(&self, number: &str, direction: Option<Direction>) -> Option<usize> {
        self.state
            .open
            .iter()
            .rposition(|c| c.number == number && direction.is_none_or(|d| c.direction == d))
    }
}

/// How an ended call ended, as far as hooks can tell.
struct Ending {
    outcome: Outcome,
    status_code: Option<u16>,
    ring_s: f64,
    talk_s: f64,
}

fn ending(call: &OpenCall, busy: bool, at: &ZonedDateTime) -> Ending {
    let start = call.started.timestamp();
    match &call.answered {
        Some(answered) if !busy => Ending {
            outcome: Outcome::Completed,
            status_code: Some(200),
            ring_s: seconds(start, answered.timestamp()),
            talk_s: seconds(answered.timestamp(), at.timestamp()),
        },
        _ => {
            let (outcome, status_code) = match (busy, call.direction) {
                (true, direction) => (Outcome::unanswered(direction, 486), Some(486)),
                (false, Direction::Inbound) => (Outcome::Missed, None),
                // An unanswered outbound call's end says nothing about why.
                (false, Direction::Outbound) => (Outcome::Unknown, None),
            };
            Ending {
                outcome,
                status_code,
                ring_s: seconds(start, at.timestamp()),
                talk_s: 0.0,
            }
        }
    }
}

fn event(call: &OpenCall, kind: EventType, at: &ZonedDateTime, ending: Option<Ending>) -> Event {
    let source = SourceKind::Hook;
    Event {
        v: CONTRACT_VERSION,
        id: event_id(source, call.direction, &call.call_id, kind),
        kind,
        at: at.clone(),
        call_id: call.call_id.clone(),
        direction: call.direction,
        local_number: String::new(),
        remote_number: call.number.clone(),
        remote_name: call.name.clone(),
        outcome: ending.as_ref().map(|e| e.outcome),
        status_code: ending.as_ref().and_then(|e| e.status_code),
        ended_by: None,
        ring_s: ending.as_ref().map(|e| e.ring_s),
        talk_s: ending.as_ref().map(|e| e.talk_s),
        source,
        source_path: HOOK_SOURCE_PATH.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: u32, event: &str, number: &str, second: i64) -> HookMessage {
        HookMessage {
            id: format!("m{n}"),
            event: event.parse().unwrap(),
            number: number.to_owned(),
            name: None,
            at: jiff::Timestamp::from_second(1_795_000_000 + second)
                .unwrap()
                .to_zoned_datetime(jiff::tz::TimeZone::UTC),
        }
    }

    fn run(messages: &[HookMessage]) -> Vec<String> {
        let mut calls = HookCalls::new();
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
    fn event_names() {
        for (event, setting) in HOOK_EVENTS {
            assert_eq!(setting.parse::<HookEvent>().unwrap(), *event);
            assert_eq!(event.as_str().parse::<HookEvent>().unwrap(), *event);
        }
        assert_eq!("IncomingCall".parse::<HookEvent>().unwrap(), HookEvent::Incoming);
        assert_eq!("CALLEND".parse::<HookEvent>().unwrap(), HookEvent::End);
        let error = "hangup".parse::<HookEvent>().unwrap_err().to_string();
        assert!(
            error.contains("\"hangup\"") && error.contains("ring, outgoing"),
            "{error}"
        );
    }

    #[test]
    fn numbers_from_uris() {
        assert_eq!(number_of("+4930123"), "+4930123");
        assert_eq!(number_of("sip:100@pbx.example.com"), "100");
        assert_eq!(number_of("\"Bob\" <sip:bob@pbx;transport=tcp>"), "bob");
        assert_eq!(number_of("100;user=phone"), "100");
        assert_eq!(number_of("1\u{202E}00\r\n"), "100");
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
        let mut calls = HookCalls::new();
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

    #[test]
    fn message_json_round_trip() {
        let m = message(1, "ring", "100", 0);
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"event\":\"ring\""), "{json}");
        assert_eq!(serde_json::from_str::<HookMessage>(&json).unwrap(), m);
    }
}
