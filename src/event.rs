//! The call event, contract v1: what every source produces and every rule consumes.
//!
//! One JSON object a line (NDJSON). Field names and values are the contract's words
//! (`ringing`, `call_id`, `outcome`, ...); `docs` in the README lists them. Text that
//! came from the wire (numbers, display names) is hostile: [`clean_text`] strips control
//! and bidi characters and caps its length before it enters an event.

use jiff::ZonedDateTime;
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Contract version written in every event's `v` field.
pub const CONTRACT_VERSION: u8 = 1;

/// Longest display name kept, in characters; the rest is cut.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest number (URI user part) kept, in characters; the rest is cut.
pub const MAX_NUMBER_CHARS: usize = 64;

/// What happened to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// The call started: INVITE received (inbound) or sent (outbound).
    Ringing,
    /// The call was answered (2xx to the initial INVITE).
    Answered,
    /// The call is over; `outcome` says how.
    Ended,
}

impl EventType {
    /// The contract's name for this type.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Ringing => "ringing",
            EventType::Answered => "answered",
            EventType::Ended => "ended",
        }
    }
}

/// Which side placed the call, seen from the watched phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    Missed,
    Declined,
    Busy,
    Cancelled,
    NoAnswer,
    Failed,
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Missed => "missed",
            Outcome::Declined => "declined",
            Outcome::Busy => "busy",
            Outcome::Cancelled => "cancelled",
            Outcome::NoAnswer => "no_answer",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }

    /// The outcome of an unanswered call from the final status code of its INVITE,
    /// per the contract table.
    pub fn unanswered(direction: Direction, status_code: u16) -> Outcome {
        match direction {
            Direction::Inbound => match status_code {
                487 | 408 => Outcome::Missed,
                _ => Outcome::Declined,
            },
            Direction::Outbound => match status_code {
                486 | 600 => Outcome::Busy,
                603 => Outcome::Declined,
                487 => Outcome::Cancelled,
                408 | 480 => Outcome::NoAnswer,
                _ => Outcome::Failed,
            },
        }
    }
}

/// Which side's action ended an answered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    Local,
    Remote,
}

impl EndedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Local => "local",
            EndedBy::Remote => "remote",
        }
    }
}

/// Which kind of input an event was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    SipTrace,
    CallLog,
    History,
    Hook,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::SipTrace => "sip_trace",
            SourceKind::CallLog => "call_log",
            SourceKind::History => "history",
            SourceKind::Hook => "hook",
        }
    }
}

/// One call event (contract v1). Serializes to the NDJSON form, fields in contract order;
/// fields that only `ended` carries are left out of the other types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Contract version, always [`CONTRACT_VERSION`].
    pub v: u8,
    /// Deterministic id, see [`event_id`].
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When it happened, from the log, with the local offset.
    #[serde(serialize_with = "serialize_rfc3339", deserialize_with = "deserialize_rfc3339")]
    pub at: ZonedDateTime,
    pub call_id: String,
    pub direction: Direction,
    pub local_number: String,
    pub remote_number: String,
    #[serde(default)]
    pub remote_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<EndedBy>,
    /// Seconds from `ringing` to answer (or to the end, when never answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_s: Option<f64>,
    /// Seconds from answer to the end; 0 when never answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talk_s: Option<f64>,
    pub source: SourceKind,
    pub source_path: String,
}

impl Event {
    /// The event as one NDJSON line (without the newline).
    pub fn to_json(&self) -> String {
        // Serializing a struct of plain fields into a String cannot fail.
        serde_json::to_string(self).expect("event serializes")
    }

    /// Appends [`Event::to_json`]'s line and a newline to `line`, without a string
    /// between (replay writes tens of thousands of them). A `Vec` rather than any
    /// writer: serde_json writes each field in several small pieces, and through a
    /// `dyn Write` every piece was a call of its own.
    pub fn write_json_line(&self, line: &mut Vec<u8>) {
        serde_json::to_writer(&mut *line, self).expect("an event serializes");
        line.push(b'\n');
    }
}

/// What every event of one call says of the call, borrowed from a tracker's own call
/// state: trackers keep their calls in their own (persisted) shapes and build events
/// only here, so every source fills the contract's fields alike.
#[derive(Debug, Clone, Copy)]
pub struct CallFacts<'a> {
    pub source: SourceKind,
    pub source_path: &'a str,
    pub call_id: &'a str,
    pub direction: Direction,
    pub local_number: &'a str,
    pub remote_number: &'a str,
    pub remote_name: Option<&'a str>,
}

impl CallFacts<'_> {
    /// The call's event of type `kind` at `at`; `ending` fills the fields only `ended`
    /// carries (none for the other types).
    pub fn event(&self, kind: EventType, at: ZonedDateTime, ending: Option<Ending>) -> Event {
        Event {
            v: CONTRACT_VERSION,
            id: event_id(self.source, self.direction, self.call_id, kind),
            kind,
            at,
            call_id: self.call_id.to_owned(),
            direction: self.direction,
            local_number: self.local_number.to_owned(),
            remote_number: self.remote_number.to_owned(),
            remote_name: self.remote_name.map(str::to_owned),
            outcome: ending.map(|e| e.outcome),
            status_code: ending.and_then(|e| e.status_code),
            ended_by: ending.and_then(|e| e.ended_by),
            ring_s: ending.and_then(|e| e.ring_s),
            talk_s: ending.and_then(|e| e.talk_s),
            source: self.source,
            source_path: self.source_path.to_owned(),
        }
    }
}

/// How a call ended: what its `ended` event carries beyond the call itself. The one
/// place the contract's outcome rules are applied from a status code.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ending {
    pub outcome: Outcome,
    pub status_code: Option<u16>,
    pub ended_by: Option<EndedBy>,
    /// Seconds from `ringing` to the answer (or to the end, when never answered).
    pub ring_s: Option<f64>,
    /// Seconds from the answer to the end; 0 when never answered.
    pub talk_s: Option<f64>,
}

impl Ending {
    /// An answered call, ended by `ended_by` when known (status 200).
    pub fn completed(ended_by: Option<EndedBy>) -> Ending {
        Ending::of(Outcome::Completed, Some(200)).ended_by(ended_by)
    }

    /// Nothing is known of how it ended (its log was cut short).
    pub fn unknown() -> Ending {
        Ending::of(Outcome::Unknown, None)
    }

    /// A call whose INVITE got the final status `code`: answered for a 2xx, else the
    /// contract's table ([`Outcome::unanswered`]).
    pub(crate) fn from_status(direction: Direction, code: u16) -> Ending {
        if (200..300).contains(&code) {
            Ending::of(Outcome::Completed, Some(code))
        } else {
            Ending::of(Outcome::unanswered(direction, code), Some(code))
        }
    }

    /// `outcome` with `status_code`, nobody named as ending it, no times yet.
    pub fn of(outcome: Outcome, status_code: Option<u16>) -> Ending {
        Ending {
            outcome,
            status_code,
            ended_by: None,
            ring_s: None,
            talk_s: None,
        }
    }

    pub fn ended_by(mut self, ended_by: Option<EndedBy>) -> Ending {
        self.ended_by = ended_by;
        self
    }

    /// With ring and talk time in seconds.
    pub fn timed(mut self, ring_s: f64, talk_s: f64) -> Ending {
        self.ring_s = Some(ring_s);
        self.talk_s = Some(talk_s);
        self
    }

    /// With ring and talk time from when the call rang, was answered (if it was) and
    /// ended.
    pub(crate) fn timed_between(
        self,
        rang: jiff::Timestamp,
        answered: Option<jiff::Timestamp>,
        ended: jiff::Timestamp,
    ) -> Ending {
        let ring = seconds(rang, answered.unwrap_or(ended));
        let talk = answered.map_or(0.0, |answered| seconds(answered, ended));
        self.timed(ring, talk)
    }
}

/// Seconds from `from` to `to`, to the millisecond, never negative.
pub fn seconds(from: jiff::Timestamp, to: jiff::Timestamp) -> f64 {
    let millis = to.duration_since(from).as_millis().max(0);
    millis as f64 / 1000.0
}

pub(crate) fn serialize_rfc3339<S: Serializer>(at: &ZonedDateTime, s: S) -> Result<S::Ok, S::Error> {
    // Written straight into the serializer's output, without a `String` for it (one
    // allocation an event replayed).
    s.collect_str(&Rfc3339(at))
}

/// A time as the contract writes it: RFC 3339 with offset and milliseconds always, so
/// the field has one shape: `2026-11-23T08:33:58.940+01:00`.
pub fn rfc3339(at: &ZonedDateTime) -> String {
    Rfc3339(at).to_string()
}

/// [`rfc3339`]'s text as a `Display`: the one place its format is written, for the
/// string and for the serializer alike.
struct Rfc3339<'a>(&'a ZonedDateTime);

impl std::fmt::Display for Rfc3339<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3}", self.0.timestamp().display_with_offset(self.0.offset()))
    }
}

/// Reads `at` back: an RFC 3339 time with offset, kept at that offset.
pub(crate) fn deserialize_rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ZonedDateTime, D::Error> {
    use serde::de::Error;
    let text = String::deserialize(d)?;
    let timestamp: jiff::Timestamp = text.parse().map_err(D::Error::custom)?;
    // Keep the writer's offset: parse it from the text's end (Z or ±HH:MM).
    let offset = parse_offset(&text).unwrap_or(jiff::tz::Offset::UTC);
    Ok(timestamp.to_zoned_datetime(jiff::tz::TimeZone::fixed(offset)))
}

fn parse_offset(text: &str) -> Option<jiff::tz::Offset> {
    if text.ends_with('Z') || text.ends_with('z') {
        return Some(jiff::tz::Offset::UTC);
    }
    let sign_at = text.len().checked_sub(6)?;
    let tail = text.get(sign_at..)?;
    let sign = match tail.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hours: i32 = tail.get(1..3)?.parse().ok()?;
    let minutes: i32 = tail.get(4..6)?.parse().ok()?;
    jiff::tz::Offset::from_seconds(sign * (hours * 3600 + minutes * 60)).ok()
}

/// The deterministic id of an event: the same call seen by the same kind of source from
/// the same side always gets the same id, on every run and every machine, so receivers
/// can deduplicate. The direction is part of it because two watched phones in one call
/// centre can see one Call-ID from both ends.
pub fn event_id(source: SourceKind, direction: Direction, call_id: &str, kind: EventType) -> String {
    let mut hash = Sha256::new();
    for part in [source.as_str(), direction.as_str(), call_id, kind.as_str()] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    hex::encode(&digest[..16])
}

/// Makes untrusted text safe to hand on: drops control characters (C0, C1, DEL) and
/// bidirectional formatting characters (which can make a number read differently from
/// what it is), and keeps at most `max_chars` characters.
pub(crate) fn clean_text(text: &str, max_chars: usize) -> String {
    // Most names and numbers are short printable ASCII: nothing to do.
    if text.len() <= max_chars && text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return text.to_owned();
    }
    text.chars()
        // Tabs and line breaks keep words apart as a space; other controls go.
        .map(|c| if matches!(c, '\t' | '\n' | '\r') { ' ' } else { c })
        .filter(|&c| !c.is_control() && !is_bidi_control(c))
        .take(max_chars)
        .collect()
}

/// Text from outside (a command's output, a crafted NDJSON file) made safe to print on
/// one log line or a terminal: control and bidi characters, line breaks included,
/// become visible escapes (`\r`, `\u{1b}`), so they can neither forge a log line nor
/// drive the terminal.
pub(crate) fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() || is_bidi_control(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = event_id(SourceKind::SipTrace, Direction::Inbound, "abc", EventType::Ringing);
        let b = event_id(SourceKind::SipTrace, Direction::Inbound, "abc", EventType::Ringing);
        let c = event_id(SourceKind::SipTrace, Direction::Inbound, "abc", EventType::Ended);
        let d = event_id(SourceKind::SipTrace, Direction::Outbound, "abc", EventType::Ringing);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn id_parts_cannot_run_together() {
        let a = event_id(SourceKind::SipTrace, Direction::Inbound, "ab", EventType::Ended);
        let b = event_id(SourceKind::SipTrace, Direction::Inbound, "abended", EventType::Ended);
        assert_ne!(a, b);
    }

    #[test]
    fn clean_text_strips_controls_and_bidi() {
        let hostile = "Evil\u{202E}gnp.exe\r\nX\u{0007}\u{2066}Y\u{009b}";
        assert_eq!(clean_text(hostile, 100), "Evilgnp.exe  XY");
        assert_eq!(clean_text("Tab\tName", 100), "Tab Name");
        assert_eq!(clean_text("Müller, Jörg", 100), "Müller, Jörg");
        assert_eq!(clean_text("$(rm -rf /) \"q\" \\", 100), "$(rm -rf /) \"q\" \\");
        assert_eq!(clean_text("ééééé", 3), "ééé");
    }

    #[test]
    fn controls_are_escaped_for_printing() {
        assert_eq!(escape_controls("plain Müller"), "plain Müller");
        assert_eq!(
            escape_controls("ok\r\nINFO forged\u{1b}[31m\u{202E}"),
            "ok\\r\\nINFO forged\\u{1b}[31m\\u{202e}"
        );
    }

    #[test]
    fn outcome_table() {
        use Direction::*;
        assert_eq!(Outcome::unanswered(Inbound, 487), Outcome::Missed);
        assert_eq!(Outcome::unanswered(Inbound, 408), Outcome::Missed);
        assert_eq!(Outcome::unanswered(Inbound, 486), Outcome::Declined);
        assert_eq!(Outcome::unanswered(Outbound, 486), Outcome::Busy);
        assert_eq!(Outcome::unanswered(Outbound, 600), Outcome::Busy);
        assert_eq!(Outcome::unanswered(Outbound, 603), Outcome::Declined);
        assert_eq!(Outcome::unanswered(Outbound, 487), Outcome::Cancelled);
        assert_eq!(Outcome::unanswered(Outbound, 480), Outcome::NoAnswer);
        assert_eq!(Outcome::unanswered(Outbound, 404), Outcome::Failed);
        assert_eq!(Outcome::unanswered(Outbound, 302), Outcome::Failed);
    }

    // Caller data reaches every source's events through `clean_text`.
    proptest! {
        #[test]
        fn cleaned_text_holds_no_controls(text in "(\\PC|[\u{0}-\u{1f}\u{7f}-\u{9f}\u{200e}\u{202a}-\u{202e}\u{2066}-\u{2069}\u{61c}])*", max in 0usize..20) {
            let cleaned = clean_text(&text, max);
            prop_assert!(cleaned.chars().count() <= max);
            let forbidden = |c: char| c.is_control() || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
            prop_assert!(!cleaned.chars().any(forbidden), "{:?}", cleaned);
        }
    }
}
