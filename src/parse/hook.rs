//! MicroSIP's command hooks, the message side: what `callhook hook EVENT NUMBER [NAME]`
//! was started for ([`HookEvent`]) and the message it hands the daemon ([`HookMessage`]),
//! one per program start. The hook tracker (`track/hook.rs`) turns messages into events.
//!
//! MicroSIP starts a program on `cmdIncomingCall`, `cmdCallRing`, `cmdOutgoingCall`,
//! `cmdCallAnswer`, `cmdCallStart`, `cmdCallBusy` and `cmdCallEnd`, with the number as
//! its only argument: `number_of` reduces what it passes to the number. Each message
//! carries a unique id, so a copy that arrives twice can be told apart.

use std::fmt;
use std::str::FromStr;

use jiff::ZonedDateTime;
use serde::{Deserialize, Serialize};

use crate::event::{MAX_NUMBER_CHARS, clean_text};

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
pub(crate) const HOOK_EVENTS: &[(HookEvent, &str)] = &[
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
pub(crate) fn number_of(argument: &str) -> String {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn message(n: u32, event: &str, number: &str, second: i64) -> HookMessage {
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
    fn message_json_round_trip() {
        let m = message(1, "ring", "100", 0);
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"event\":\"ring\""), "{json}");
        assert_eq!(serde_json::from_str::<HookMessage>(&json).unwrap(), m);
    }
}
