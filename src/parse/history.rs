//! MicroSIP's call history: one snapshot of `microsip.ini` in, its `[Calls]` entries out
//! ([`CallsSnapshot`]), for the history tracker (`track/history.rs`), which compares
//! snapshots and makes the events.
//!
//! MicroSIP keeps its call list in the `[Calls]` section, one entry a call:
//! `N=number;name;type;time;duration;info` (type 0 outgoing, 1 incoming, 2 missed, 3
//! answered elsewhere; time in Unix seconds at call start; `null` for a deleted entry).
//! The file is UTF-16LE INI as MicroSIP writes it; UTF-16BE and UTF-8 are read too.
//!
//! This reads one snapshot and nothing else: no entry is compared with an earlier one
//! here. A line cut short by a write in progress is never taken: only lines whose line
//! ending arrived count, and [`CallsSnapshot::cut_short`] says that one was left out.

use encoding_rs::{UTF_8, UTF_16BE, UTF_16LE};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::{Direction, clean_text};

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

    /// The side that placed the call: only type 0 was placed by the phone.
    pub(crate) fn direction(self) -> Direction {
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
    pub(crate) fn finished(&self) -> bool {
        self.duration > 0 || !self.info.trim().is_empty()
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
pub(crate) fn parse_calls(bytes: &[u8]) -> CallsSnapshot {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16le(text: &str) -> Vec<u8> {
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        bytes
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
}
