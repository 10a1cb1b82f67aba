//! Values of a call-log row: one field's trimmed text in, a typed value out, or `None`
//! when the text is not such a value (the caller reports it with its column).

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::columns::normalize_name;
use crate::event::{Direction, EventType, Outcome};

/// What a direction or MicroSIP call-type value says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallType {
    pub direction: Direction,
    /// The call was missed (type 2 `missed`, or 3 answered elsewhere).
    pub missed: bool,
}

/// A direction (`inbound|in|incoming`, `outbound|out|outgoing`) or MicroSIP call type
/// (`0` outgoing, `1` incoming, `2` missed, `3` answered elsewhere, `missed`).
pub(crate) fn parse_direction(text: &str) -> Option<CallType> {
    let typed = |direction, missed| Some(CallType { direction, missed });
    match text.to_ascii_lowercase().as_str() {
        "inbound" | "in" | "incoming" | "1" => typed(Direction::Inbound, false),
        "outbound" | "out" | "outgoing" | "0" => typed(Direction::Outbound, false),
        "missed" | "2" | "3" => typed(Direction::Inbound, true),
        _ => None,
    }
}

/// The event of a state row, and the direction its word implies (`incoming`,
/// `calling`).
pub(crate) fn parse_event(text: &str) -> Option<(EventType, Option<Direction>)> {
    let kind = match normalize_name(text).as_str() {
        "ringing" | "ring" => (EventType::Ringing, None),
        "incoming" => (EventType::Ringing, Some(Direction::Inbound)),
        "calling" => (EventType::Ringing, Some(Direction::Outbound)),
        "answered" | "connected" | "answer" | "start" => (EventType::Answered, None),
        "ended" | "hangup" | "hang_up" | "disconnected" | "end" => (EventType::Ended, None),
        _ => return None,
    };
    Some(kind)
}

/// An outcome in the contract's words (`canceled` and `noanswer` too).
pub(crate) fn parse_outcome(text: &str) -> Option<Outcome> {
    let outcome = match normalize_name(text).as_str() {
        "completed" => Outcome::Completed,
        "missed" => Outcome::Missed,
        "declined" => Outcome::Declined,
        "busy" => Outcome::Busy,
        "cancelled" | "canceled" => Outcome::Cancelled,
        "no_answer" | "noanswer" => Outcome::NoAnswer,
        "failed" => Outcome::Failed,
        "unknown" => Outcome::Unknown,
        _ => return None,
    };
    Some(outcome)
}

/// A SIP status code, 100 to 699.
pub(crate) fn parse_status(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|c| (100..700).contains(c))
}

/// Seconds (`12`, `12.5`) or `[HH:]MM:SS`. At most ten years.
pub(crate) fn parse_duration(text: &str) -> Option<f64> {
    let seconds = if text.contains(':') {
        let mut total = 0u64;
        let parts: Vec<&str> = text.split(':').collect();
        if parts.len() > 3 {
            return None;
        }
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() || part.len() > 9 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let value: u64 = part.parse().ok()?;
            if i > 0 && value > 59 {
                return None;
            }
            total = total * 60 + value;
        }
        total as f64
    } else {
        if !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
        text.parse::<f64>().ok()?
    };
    (seconds.is_finite() && (0.0..=315_360_000.0).contains(&seconds)).then_some(seconds)
}

/// RFC 3339 (with an offset), `YYYY-MM-DD HH:MM:SS[.fff]` in `time_zone`, or Unix
/// seconds (a fraction allowed).
pub(crate) fn parse_time(text: &str, time_zone: &TimeZone) -> Option<Timestamp> {
    let bytes = text.as_bytes();
    if bytes.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() || whole.len() > 12 || fraction.len() > 9 || fraction.contains('.') {
            return None;
        }
        let seconds: i64 = whole.parse().ok()?;
        let nanos: i32 = if fraction.is_empty() {
            0
        } else {
            format!("{fraction:0<9}").parse().ok()?
        };
        return Timestamp::new(seconds, nanos).ok();
    }
    if text.len() > 64 {
        return None;
    }
    if let Ok(timestamp) = text.parse::<Timestamp>() {
        return Some(timestamp);
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    Some(civil.to_zoned_datetime(time_zone.clone()).ok()?.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let utc = TimeZone::UTC;
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let ts = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            parse_time("2026-11-23T08:33:58.554+00:00", &berlin),
            Some(ts("2026-11-23T08:33:58.554Z"))
        );
        assert_eq!(
            parse_time("2026-11-23T08:33:58Z", &berlin),
            Some(ts("2026-11-23T08:33:58Z"))
        );
        assert_eq!(
            parse_time("2026-11-23 09:33:58", &berlin),
            Some(ts("2026-11-23T08:33:58Z"))
        );
        assert_eq!(
            parse_time("2026-11-23 09:33:58", &utc),
            Some(ts("2026-11-23T09:33:58Z"))
        );
        assert_eq!(
            parse_time("2026-11-23T09:33:58.5", &utc),
            Some(ts("2026-11-23T09:33:58.5Z"))
        );
        assert_eq!(
            parse_time("1795422856", &utc),
            Some(Timestamp::from_second(1_795_422_856).unwrap())
        );
        assert_eq!(
            parse_time("1795422856.25", &utc),
            Some(Timestamp::new(1_795_422_856, 250_000_000).unwrap())
        );
        for bad in [
            "",
            "x",
            "1.2.3",
            ".5",
            "99999999999999999",
            "2026-13-01 00:00:00",
            "08:33:58",
            "1e9",
        ] {
            assert_eq!(parse_time(bad, &utc), None, "{bad:?}");
        }
        assert_eq!(parse_duration("75"), Some(75.0));
        assert_eq!(parse_duration("1.5"), Some(1.5));
        assert_eq!(parse_duration("01:15"), Some(75.0));
        assert_eq!(parse_duration("1:00:01"), Some(3601.0));
        for bad in ["-1", "1:60", "a", "1::2", "NaN", "inf", "1:2:3:4", "1e3"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn directions_events_outcomes_and_statuses() {
        let inbound = CallType {
            direction: Direction::Inbound,
            missed: false,
        };
        assert_eq!(parse_direction("Incoming"), Some(inbound));
        assert_eq!(parse_direction("1"), Some(inbound));
        assert_eq!(parse_direction("0").map(|t| t.direction), Some(Direction::Outbound));
        assert_eq!(parse_direction("3").map(|t| t.missed), Some(true));
        assert_eq!(parse_direction("sideways"), None);
        assert_eq!(parse_event("Hang-Up"), Some((EventType::Ended, None)));
        assert_eq!(
            parse_event("calling"),
            Some((EventType::Ringing, Some(Direction::Outbound)))
        );
        assert_eq!(parse_event("exploded"), None);
        assert_eq!(parse_outcome("No Answer"), Some(Outcome::NoAnswer));
        assert_eq!(parse_outcome("canceled"), Some(Outcome::Cancelled));
        assert_eq!(parse_outcome("great"), None);
        assert_eq!(parse_status("486"), Some(486));
        for bad in ["99", "700", "abc", "486 Busy"] {
            assert_eq!(parse_status(bad), None, "{bad:?}");
        }
    }
}
