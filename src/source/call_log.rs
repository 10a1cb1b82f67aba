//! One call-log CSV (`kind: call_log`), bytes in, call events out: parser → tracker.
//!
//! Feed chunks in file order with [`CallLogReader::push`]; a record is handled once its
//! closing line ending arrived, an unfinished one (also a quoted field still open across
//! lines) waits for more bytes, and [`CallLogReader::finish`] takes the last record of an
//! input known to be complete. [`CallLogReader::position`] is the end of the last record
//! handled: the checkpoint offset, in bytes of the file whatever its encoding.
//!
//! Reading the format is `parse::call_log`'s work ([`CallLogParser`]), making events of
//! its rows `track::call_log`'s ([`CallLogTracker`]). A row that cannot be read is
//! reported with its line and the column at fault, and skipped; the rest flows.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::event::Event;
pub use crate::parse::call_log::{
    CallLogError, CallLogErrorKind, ColumnMapping, HeaderState, Position, RowKind, TextEncoding,
};
use crate::parse::call_log::{CallLogItem, CallLogParser};
use crate::track::call_log::{CallLogTracker, CallLogTrackerState};

/// How a call-log reader turns rows into events (built from the source's config).
#[derive(Debug, Clone)]
pub struct CallLogOptions {
    /// Header names overriding the aliases.
    pub columns: ColumnMapping,
    /// Time zone of times written without an offset (`2026-11-23 08:33:58`); events are
    /// stamped in it too.
    pub time_zone: TimeZone,
    /// Written into each event's `source_path`.
    pub source_path: String,
}

impl CallLogOptions {
    /// Options with the aliases only and the system time zone.
    pub fn new(source_path: impl Into<String>) -> CallLogOptions {
        CallLogOptions {
            columns: ColumnMapping::default(),
            time_zone: TimeZone::system(),
            source_path: source_path.into(),
        }
    }
}

/// Counters of one reader since it was made or reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallLogStats {
    /// Data rows read (the header not included).
    pub rows: u64,
    pub events: u64,
    /// Rows and headers reported as errors.
    pub errors: u64,
    /// Rows dropped unreported because the header was unusable.
    pub unread_rows: u64,
}

/// What a restart needs to go on reading where a reader stopped; see
/// [`CallLogReader::state`]. Serializable, so it can be stored with the checkpoint.
///
/// Users' state databases hold it as JSON: its shape (`position`, `encoding`, `header`,
/// `open`) must not change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallLogState {
    /// Where to go on reading: [`CallLogReader::position`].
    pub position: Position,
    /// The file's encoding, once known.
    pub encoding: Option<TextEncoding>,
    /// The header in force, once read.
    pub header: Option<HeaderState>,
    /// Calls that saw `ringing` or `answered` and no `ended` yet (the `open` field).
    #[serde(flatten)]
    calls: CallLogTrackerState,
}

/// Reads one call-log CSV; see the module docs.
#[derive(Debug)]
pub struct CallLogReader {
    options: CallLogOptions,
    parser: CallLogParser,
    tracker: CallLogTracker,
    /// Events handed on since made or reset.
    events: u64,
}

impl CallLogReader {
    /// A reader for a file read from its first byte.
    pub fn new(options: CallLogOptions) -> CallLogReader {
        CallLogReader {
            parser: CallLogParser::new(options.columns.clone(), options.time_zone.clone()),
            tracker: CallLogTracker::new(options.source_path.clone(), options.time_zone.clone()),
            options,
            events: 0,
        }
    }

    /// A reader that goes on from a saved [`CallLogState`]: feed it the file from
    /// `state.position.byte`. A state from before the header was read starts over (its
    /// position is 0).
    pub fn resume(options: CallLogOptions, state: &CallLogState) -> CallLogReader {
        let mut reader = CallLogReader::new(options);
        let (Some(encoding), Some(header)) = (state.encoding, &state.header) else {
            return reader;
        };
        reader.parser = CallLogParser::resume(
            reader.options.columns.clone(),
            reader.options.time_zone.clone(),
            state.position,
            encoding,
            header,
        );
        reader.tracker.restore(&state.calls);
        reader
    }

    /// End of the last record handled (and of blank lines after it): where a restart
    /// goes on reading. Stays at 0 until the header has been read.
    pub fn position(&self) -> Position {
        self.parser.position()
    }

    /// The kind of rows, once a usable header has been read.
    pub(crate) fn row_kind(&self) -> Option<RowKind> {
        self.parser.row_kind()
    }

    /// Number of calls open (state rows only).
    pub(crate) fn open_calls(&self) -> usize {
        self.tracker.open_calls()
    }

    pub fn stats(&self) -> CallLogStats {
        let parsed = self.parser.stats();
        CallLogStats {
            rows: parsed.rows,
            events: self.events,
            errors: parsed.errors,
            unread_rows: parsed.unread_rows,
        }
    }

    /// What a restart needs; store it with [`CallLogReader::position`].
    pub fn state(&self) -> CallLogState {
        CallLogState {
            position: self.parser.position(),
            encoding: self.parser.encoding(),
            header: self.parser.header(),
            calls: self.tracker.state(),
        }
    }

    /// Starts over from byte 0 of a new file (after truncation or replacement): the
    /// next bytes must begin with a header. Open calls are forgotten; end them first
    /// with [`CallLogReader::end_open_calls`] when that is wanted.
    pub(crate) fn reset(&mut self) {
        let options = self.options.clone();
        *self = CallLogReader::new(options);
    }

    /// Ends every open call with outcome `unknown` at `at` (its file was truncated or
    /// replaced mid-call).
    pub(crate) fn end_open_calls(&mut self, at: Timestamp, mut on_event: impl FnMut(Event)) {
        let events = &mut self.events;
        self.tracker.end_open_calls(at, |event| {
            *events += 1;
            on_event(event);
        });
    }

    /// Feeds the next bytes of the file; each complete row's event goes to `on_event`,
    /// each unreadable row or header to `on_error`.
    pub fn push(&mut self, chunk: &[u8], mut on_event: impl FnMut(Event), mut on_error: impl FnMut(CallLogError)) {
        let Self {
            parser,
            tracker,
            events,
            ..
        } = self;
        parser.push(chunk, &mut |item| {
            hand_on(item, tracker, events, &mut on_event, &mut on_error)
        });
    }

    /// The input is complete: reads its last record even without a line ending. The
    /// reader can go on afterwards (`push` more), as if the record had ended there.
    pub fn finish(&mut self, mut on_event: impl FnMut(Event), mut on_error: impl FnMut(CallLogError)) {
        let Self {
            parser,
            tracker,
            events,
            ..
        } = self;
        parser.finish(&mut |item| hand_on(item, tracker, events, &mut on_event, &mut on_error));
    }
}

/// One parsed item on: a row through the tracker to `on_event`, an error to `on_error`.
fn hand_on(
    item: CallLogItem,
    tracker: &mut CallLogTracker,
    events: &mut u64,
    on_event: &mut impl FnMut(Event),
    on_error: &mut impl FnMut(CallLogError),
) {
    match item {
        CallLogItem::Row(row) => {
            *events += 1;
            on_event(tracker.row(row));
        }
        CallLogItem::Error(error) => on_error(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Direction, EventType, MAX_NUMBER_CHARS, Outcome, SourceKind, event_id};
    use crate::parse::call_log::MAX_RECORD_BYTES;
    use crate::parse::call_log::parse_time;
    use crate::parse::record::synthetic_call_id;
    use proptest::prelude::*;

    fn options() -> CallLogOptions {
        CallLogOptions {
            columns: ColumnMapping::default(),
            time_zone: TimeZone::UTC,
            source_path: "calls.csv".to_owned(),
        }
    }

    /// Reads `bytes` fed in chunks of `chunk` bytes, then finishes.
    fn read_with(options: CallLogOptions, bytes: &[u8], chunk: usize) -> (Vec<Event>, Vec<CallLogError>) {
        let mut reader = CallLogReader::new(options);
        let mut events = Vec::new();
        let mut errors = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            reader.push(piece, |e| events.push(e), |e| errors.push(e));
        }
        reader.finish(|e| events.push(e), |e| errors.push(e));
        (events, errors)
    }

    fn read(bytes: &[u8]) -> (Vec<Event>, Vec<CallLogError>) {
        read_with(options(), bytes, usize::MAX)
    }

    fn utf16le(text: &str) -> Vec<u8> {
        let mut bytes = vec![0xFF, 0xFE];
        for unit in text.encode_utf16() {
            bytes.extend_from_slice(&unit.to_le_bytes());
        }
        bytes
    }

    /// The fields compared in most tests, as one line each.
    fn summary(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {} {:?} {:?} {:?}",
                    e.kind.as_str(),
                    e.direction.as_str(),
                    e.remote_number,
                    e.remote_name.as_deref().unwrap_or("-"),
                    e.outcome,
                    e.status_code,
                    e.talk_s
                )
            })
            .collect()
    }

    const EXPORT: &str = "Type,Name,Number,Time,Duration,Info\n\
        0,,5551000,1795422856,12,200 OK\n\
        1,Bob,5551001,1795422857,00:01:05,\n\
        2,Eve,5551002,1795422858,0,\n\
        outgoing,,5551003,1795422859,0,486 Busy Here\n\
        outgoing,,5551004,1795422860,0,Request Terminated\n\
        incoming,,5551005,1795422861,0,603 Decline\n\
        outgoing,,5551006,1795422862,0,\n";

    #[test]
    fn record_rows_are_finished_calls() {
        let (events, errors) = read(EXPORT.as_bytes());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            summary(&events),
            [
                "ended outbound 5551000 - Some(Completed) Some(200) Some(12.0)",
                "ended inbound 5551001 Bob Some(Completed) Some(200) Some(65.0)",
                "ended inbound 5551002 Eve Some(Missed) None Some(0.0)",
                "ended outbound 5551003 - Some(Busy) Some(486) Some(0.0)",
                "ended outbound 5551004 - Some(Cancelled) Some(487) Some(0.0)",
                "ended inbound 5551005 - Some(Declined) Some(603) Some(0.0)",
                "ended outbound 5551006 - Some(Unknown) None Some(0.0)",
            ]
        );
        let first = &events[0];
        assert_eq!(first.call_id, synthetic_call_id("5551000", 1_795_422_856));
        assert_eq!(
            first.id,
            event_id(
                SourceKind::CallLog,
                Direction::Outbound,
                &first.call_id,
                EventType::Ended
            )
        );
        assert_eq!(first.source, SourceKind::CallLog);
        assert_eq!(first.source_path, "calls.csv");
        // Ended when the talk time was over.
        assert_eq!(first.at.timestamp().as_second(), 1_795_422_856 + 12);
        assert_eq!(first.ring_s, None);
    }

    const STATE: &str = "time,event,number,name\n\
        2026-11-23 08:00:00,ringing,5552001,Alice\n\
        2026-11-23 08:00:03,incoming,5552002,\n\
        2026-11-23 08:00:05,answered,5552001,\n\
        2026-11-23 08:00:09,calling,5553000,\n\
        2026-11-23 08:00:10,ended,5552001,\n\
        2026-11-23 08:00:11,hangup,5552002,\n";

    #[test]
    fn state_rows_without_call_id_join_the_open_call_of_their_number() {
        let (events, errors) = read(STATE.as_bytes());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            summary(&events),
            [
                "ringing inbound 5552001 Alice None None None",
                "ringing inbound 5552002 - None None None",
                "answered inbound 5552001 Alice None None None",
                "ringing outbound 5553000 - None None None",
                "ended inbound 5552001 Alice Some(Completed) Some(200) Some(5.0)",
                "ended inbound 5552002 - Some(Unknown) None Some(0.0)",
            ]
        );
        let start = parse_time("2026-11-23 08:00:00", &TimeZone::UTC).unwrap();
        let alice = synthetic_call_id("5552001", start.as_second());
        assert_eq!(events[0].call_id, alice);
        assert_eq!(events[2].call_id, alice);
        assert_eq!(events[4].call_id, alice);
        assert_eq!(events[4].ring_s, Some(5.0));
        assert_eq!(events[5].ring_s, Some(8.0));
        assert_ne!(events[1].call_id, alice);
        assert_eq!(events[1].call_id, events[5].call_id);
        let mut reader = CallLogReader::new(options());
        reader.push(STATE.as_bytes(), |_| {}, |_| {});
        assert_eq!(reader.open_calls(), 1, "the outbound call is still open");
        assert_eq!(reader.row_kind(), Some(RowKind::State));
        let mut ended = Vec::new();
        reader.end_open_calls(start, |e| ended.push(e));
        assert_eq!(summary(&ended), ["ended outbound 5553000 - Some(Unknown) None None"]);
        assert_eq!(reader.open_calls(), 0);
    }

    #[test]
    fn state_rows_with_call_ids_and_outcomes() {
        let csv = "Call-ID;Status;Direction;Phone;Time;Status Code;Outcome;Duration\n\
            a1;ringing;out;100;1795422856;;;\n\
            a1;ended;;100;1795422858;404;;\n\
            b2;start;in;200;1795422856;;;\n\
            b2;end;in;200;1795422900;;;40\n\
            c3;ended;in;300;1795422900;487;;\n";
        let (events, errors) = read(csv.as_bytes());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            summary(&events),
            [
                "ringing outbound 100 - None None None",
                "ended outbound 100 - Some(Failed) Some(404) Some(0.0)",
                "answered inbound 200 - None None None",
                "ended inbound 200 - Some(Completed) Some(200) Some(40.0)",
                "ended inbound 300 - Some(Missed) Some(487) Some(0.0)",
            ]
        );
        assert_eq!(events[0].call_id, "a1");
        assert_eq!(events[1].ring_s, Some(2.0));
        assert_eq!(events[3].ring_s, None, "ringing not seen");
    }

    #[test]
    fn delimiters_are_sniffed() {
        let comma = read(EXPORT.as_bytes()).0;
        for delimiter in [";", "\t"] {
            let text = EXPORT.replace(',', delimiter);
            let (events, errors) = read(text.as_bytes());
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(summary(&events), summary(&comma), "{delimiter:?}");
        }
        // A comma inside a quoted header name does not win over the semicolons.
        let text = "\"Time, local\";Number;Type\n1795422856;5;0\n";
        let mapping = ColumnMapping {
            time: Some("time, local".into()),
            ..ColumnMapping::default()
        };
        let (events, errors) = read_with(
            CallLogOptions {
                columns: mapping,
                ..options()
            },
            text.as_bytes(),
            3,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn encodings_and_line_endings() {
        let plain = summary(&read(EXPORT.as_bytes()).0);
        let crlf = EXPORT.replace('\n', "\r\n");
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(crlf.as_bytes());
        let inputs = [
            crlf.as_bytes().to_vec(),
            bom,
            utf16le(EXPORT),
            utf16le(&crlf),
            // no trailing line ending: the last record comes with finish()
            EXPORT.trim_end().as_bytes().to_vec(),
        ];
        for (i, input) in inputs.iter().enumerate() {
            for chunk in [1, 2, 3, 7, 4096] {
                let (events, errors) = read_with(options(), input, chunk);
                assert!(errors.is_empty(), "input {i} chunk {chunk}: {errors:?}");
                assert_eq!(summary(&events), plain, "input {i} chunk {chunk}");
            }
        }
    }

    #[test]
    fn utf16_names_and_positions_are_in_file_bytes() {
        let text = "Type,Name,Number,Time\r\n1,\"Müller, Jörg 😀\",5,1795422856\r\n";
        let bytes = utf16le(text);
        let mut reader = CallLogReader::new(options());
        let mut events = Vec::new();
        reader.push(&bytes[..bytes.len() - 3], |e| events.push(e), |e| panic!("{e}"));
        assert!(events.is_empty(), "no line ending yet");
        let header_end = 2 + 2 * "Type,Name,Number,Time\r\n".encode_utf16().count() as u64;
        assert_eq!(
            reader.position(),
            Position {
                byte: header_end,
                line: 2
            }
        );
        reader.push(&bytes[bytes.len() - 3..], |e| events.push(e), |e| panic!("{e}"));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].remote_name.as_deref(), Some("Müller, Jörg 😀"));
        assert_eq!(
            reader.position(),
            Position {
                byte: bytes.len() as u64,
                line: 3
            }
        );
        assert_eq!(reader.state().encoding, Some(TextEncoding::Utf16Le));
    }

    #[test]
    fn partial_records_wait_for_their_line_ending() {
        let mut reader = CallLogReader::new(options());
        let mut events = Vec::new();
        reader.push(
            b"Type,Number,Time\n0,5,179542285",
            |e| events.push(e),
            |e| panic!("{e}"),
        );
        assert!(events.is_empty());
        assert_eq!(reader.position(), Position { byte: 17, line: 2 });
        reader.push(b"6\r", |e| events.push(e), |e| panic!("{e}"));
        assert_eq!(events.len(), 1, "CR ends the record");
        reader.push(b"\n0,6,\"17954", |e| events.push(e), |e| panic!("{e}"));
        assert_eq!(reader.position(), Position { byte: 33, line: 3 });
        reader.push(b"22857\"\n", |e| events.push(e), |e| panic!("{e}"));
        assert_eq!(events.len(), 2);
        assert_eq!(reader.position(), Position { byte: 50, line: 4 });
    }

    #[test]
    fn quoted_fields_with_delimiters_quotes_and_newlines() {
        let csv = "Type,Name,Number,Time,Duration,Info\r\n\
            1,\"Doe, \"\"J\"\"\r\nsecond line\",5554000,1795422856,3,\"200 OK, fine\"\r\n\
            0,,bad,notatime,0,\r\n\
            0,,5554001,1795422857,0,\"486 Busy Here\"\r\n";
        let (events, errors) = read(csv.as_bytes());
        assert_eq!(events.len(), 2);
        // clean_text turns the CR LF inside the name into spaces.
        assert_eq!(events[0].remote_name.as_deref(), Some("Doe, \"J\"  second line"));
        assert_eq!(events[1].outcome, Some(Outcome::Busy));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 4, "the quoted newline took a line");
        assert_eq!(
            errors[0].to_string(),
            format!(
                "line 4 (byte {}): column Time: \"notatime\" is not a time (RFC 3339, YYYY-MM-DD HH:MM:SS, Unix seconds)",
                csv.find("0,,bad").unwrap()
            )
        );
    }

    #[test]
    fn bad_rows_are_reported_and_skipped() {
        let csv = "time,event,number,status_code,direction,duration,outcome\n\
            1795422856,ringing,1,,,,\n\
            1795422856,exploded,1,,,,\n\
            ,ringing,1,,,,\n\
            1795422856,ended,1,abc,,,\n\
            1795422856,ended,1,,sideways,,\n\
            1795422856,ended,1,,,-3,\n\
            1795422856,ended,1,,,,great\n\
            1795422856,ended,1,,,,\n";
        let (events, errors) = read(csv.as_bytes());
        assert_eq!(events.len(), 2);
        let got: Vec<(u64, String)> = errors.iter().map(|e| (e.line, e.kind.to_string())).collect();
        assert_eq!(
            got,
            [
                (
                    3,
                    "column event: \"exploded\" is not an event (ringing, answered or ended, or an alias of them)"
                        .to_owned()
                ),
                (4, "column time: is empty".to_owned()),
                (5, "column status_code: \"abc\" is not a SIP status".to_owned()),
                (
                    6,
                    "column direction: \"sideways\" is not a direction (inbound, outbound, 0, 1, 2)".to_owned()
                ),
                (7, "column duration: \"-3\" is not a duration".to_owned()),
                (8, "column outcome: \"great\" is not an outcome".to_owned()),
            ]
        );
        let mut reader = CallLogReader::new(options());
        reader.push(csv.as_bytes(), |_| {}, |_| {});
        assert_eq!(
            reader.stats(),
            CallLogStats {
                rows: 8,
                events: 2,
                errors: 6,
                unread_rows: 0
            }
        );
    }

    #[test]
    fn hostile_names_stay_inert_text() {
        let csv = "Type,Name,Number,Time\n\
            1,\"\"\"; rm -rf / #\",\"$(curl evil)\",1795422856\n\
            1,\"Evil\u{202E}gnp.exe\u{2066}\",\"+49\u{200F}30\",1795422857\n\
            1,\"=HYPERLINK(\"\"x\"\")\",`id`,1795422858\n";
        let (events, errors) = read(csv.as_bytes());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(events[0].remote_name.as_deref(), Some("\"; rm -rf / #"));
        assert_eq!(events[0].remote_number, "$(curl evil)");
        assert_eq!(events[1].remote_name.as_deref(), Some("Evilgnp.exe"));
        assert_eq!(events[1].remote_number, "+4930");
        assert_eq!(events[2].remote_name.as_deref(), Some("=HYPERLINK(\"x\")"));
        assert_eq!(events[2].remote_number, "`id`");
        let long = "9".repeat(500);
        let (events, _) = read(format!("Type,Number,Time\n1,{long},1\n").as_bytes());
        assert_eq!(events[0].remote_number.len(), MAX_NUMBER_CHARS);
    }

    #[test]
    fn columns_mapping_overrides_aliases() {
        let csv = "When,Kind,Who,Phone\n1795422856,out,5555000,ignored\n";
        let (events, errors) = read(csv.as_bytes());
        assert_eq!(events.len(), 0);
        let got: Vec<String> = errors.iter().map(|e| e.kind.to_string()).collect();
        assert_eq!(
            got,
            [
                "header has no time column (looked for time, timestamp, date, datetime; name it in columns.time)",
                "header has no direction column (looked for direction, type, dir; name it in columns.direction)",
            ]
        );
        let columns = ColumnMapping {
            time: Some("WHEN".into()),
            direction: Some("kind".into()),
            number: Some("Who".into()),
            ..ColumnMapping::default()
        };
        let (events, errors) = read_with(
            CallLogOptions {
                columns: columns.clone(),
                ..options()
            },
            csv.as_bytes(),
            5,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(events[0].remote_number, "5555000");
        let bad = ColumnMapping {
            number: Some("Nope".into()),
            ..columns
        };
        let (_, errors) = read_with(
            CallLogOptions {
                columns: bad,
                ..options()
            },
            csv.as_bytes(),
            5,
        );
        assert_eq!(
            errors[0].to_string(),
            "line 1 (byte 0): columns.number is \"nope\", which is not in the header"
        );
    }

    #[test]
    fn a_new_header_is_taken_and_repeated_headers_are_skipped() {
        let csv = "Who,When\n1,2\n3,4\n\
            Type,Number,Time\n0,5,1795422856\n\
            Type,Number,Time\n\
            time;event;number\n1795422856;ringing;7\n";
        let (events, errors) = read(csv.as_bytes());
        // time, number, direction missing; then two rows under the new header whose
        // delimiter is ';', not ',': one field each, no time.
        let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 1, 1, 7, 8], "{errors:?}");
        assert_eq!(summary(&events)[0], "ended outbound 5 - Some(Unknown) None Some(0.0)");
        assert_eq!(events.len(), 1);
        let mut reader = CallLogReader::new(options());
        reader.push(csv.as_bytes(), |_| {}, |_| {});
        assert_eq!(reader.stats().unread_rows, 2);
        // After truncation the caller resets; a new header with a new delimiter works.
        reader.reset();
        let mut events = Vec::new();
        reader.push(
            b"time;event;number\n1795422856;ringing;7\n",
            |e| events.push(e),
            |e| panic!("{e}"),
        );
        assert_eq!(summary(&events), ["ringing inbound 7 - None None None"]);
    }

    #[test]
    fn events_are_stamped_in_the_time_zone() {
        let berlin = CallLogOptions {
            time_zone: TimeZone::get("Europe/Berlin").unwrap(),
            ..options()
        };
        let (events, _) = read_with(berlin, b"Type,Number,Time\n0,1,2026-11-23 09:00:00\n", 100);
        let json = events[0].to_json();
        assert!(json.contains("\"at\":\"2026-11-23T09:00:00.000+01:00\""), "{json}");
    }

    #[test]
    fn unclosed_quote_is_bounded_and_recovers() {
        let mut csv = b"Type,Name,Number,Time\n1,\"never closed".to_vec();
        csv.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 10));
        csv.extend_from_slice(b"\n1,ok,5,1795422856\n");
        let (events, errors) = read_with(options(), &csv, 65536);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].kind, CallLogErrorKind::RecordTooLong);
        assert_eq!(errors[0].line, 2);
        assert_eq!(summary(&events), ["ended inbound 5 ok Some(Unknown) None Some(0.0)"]);
    }

    #[test]
    fn resuming_from_a_state_gives_the_rest_of_the_events() {
        for bytes in [STATE.as_bytes().to_vec(), utf16le(&STATE.replace('\n', "\r\n"))] {
            let whole = read_with(options(), &bytes, usize::MAX).0;
            for cut in 0..bytes.len() {
                let mut first = CallLogReader::new(options());
                let mut events = Vec::new();
                first.push(&bytes[..cut], |e| events.push(e), |e| panic!("{e}"));
                let state: CallLogState =
                    serde_json::from_str(&serde_json::to_string(&first.state()).unwrap()).unwrap();
                let from = state.position.byte as usize;
                let mut second = CallLogReader::resume(options(), &state);
                second.push(&bytes[from..], |e| events.push(e), |e| panic!("{e}"));
                second.finish(|e| events.push(e), |e| panic!("{e}"));
                assert_eq!(events, whole, "cut at {cut}");
            }
        }
    }

    fn chunked(bytes: &[u8], cuts: &[usize]) -> (Vec<Event>, Vec<CallLogError>, Position) {
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
        cuts.sort();
        let mut reader = CallLogReader::new(options());
        let mut events = Vec::new();
        let mut errors = Vec::new();
        let mut last = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            reader.push(&bytes[last..cut], |e| events.push(e), |e| errors.push(e));
            last = cut;
        }
        reader.finish(|e| events.push(e), |e| errors.push(e));
        (events, errors, reader.position())
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let text = "\u{feff}Type;Name;Number;Time;Duration;Info\r\n\
            1;\"Jörg; \"\"the\"\"\r\nboss\";5556000;1795422856;3;200 OK\r\n\
            0;;bad;x;0;\r\n\
            2;Eve;5556001;1795422857;0;\r\n";
        for bytes in [text.as_bytes().to_vec(), utf16le(text.trim_start_matches('\u{feff}'))] {
            let whole = chunked(&bytes, &[]);
            assert_eq!(whole.0.len(), 2);
            assert_eq!(whole.1.len(), 1);
            for a in 0..=bytes.len() {
                assert_eq!(chunked(&bytes, &[a]), whole, "split at {a}");
            }
        }
    }

    /// A state stored by the reader before the call-log code was split in parse, track
    /// and source (captured from `parse/csv_log.rs` at e5a6eb7): a UTF-16LE file with a
    /// `;` header, read up to three open calls, one with a Call-ID. Users' state
    /// databases hold such JSON.
    const STORED_STATE: &str = r#"{"position":{"byte":584,"line":7},"encoding":"utf16_le","header":{"delimiter":59,"names":["time","event","call_id","number","name","local_number","direction"]},"open":[{"call_id":"abc@host","direction":"inbound","number":"5552001","local_number":"100","name":"Alice","ringing_at":"2026-11-23T08:00:00Z","answered_at":"2026-11-23T08:00:05Z"},{"call_id":"syn-40eecaff1afddac7fbc1b745","direction":"inbound","number":"5552002","local_number":"100","name":null,"ringing_at":"2026-11-23T08:00:03Z","answered_at":null},{"call_id":"syn-8d14787ec65e1e414742dc74","direction":"outbound","number":"5553000","local_number":"","name":null,"ringing_at":"2026-11-23T08:00:09Z","answered_at":"2026-11-23T08:00:10Z"}]}"#;

    /// What that code handed on when resumed from it, then fed the rows below and told
    /// to end the open calls at 1795422900.
    const STORED_STATE_EVENTS: [&str; 3] = [
        r#"{"v":1,"id":"08138a6d4fa18db5cd8bdf3d721206be","type":"ended","at":"2026-11-23T08:00:20.000+00:00","call_id":"syn-8d14787ec65e1e414742dc74","direction":"outbound","local_number":"","remote_number":"5553000","remote_name":null,"outcome":"completed","status_code":200,"ring_s":1.0,"talk_s":10.0,"source":"call_log","source_path":"calls.csv"}"#,
        r#"{"v":1,"id":"2a0db7780f711e53f2fcbae3e6070187","type":"ended","at":"2026-11-23T08:00:30.000+00:00","call_id":"abc@host","direction":"inbound","local_number":"100","remote_number":"5552001","remote_name":"Alice","outcome":"completed","status_code":200,"ring_s":5.0,"talk_s":25.0,"source":"call_log","source_path":"calls.csv"}"#,
        r#"{"v":1,"id":"e9062c0fb8acf154199cae37d27393e5","type":"ended","at":"2026-11-23T08:35:00.000+00:00","call_id":"syn-40eecaff1afddac7fbc1b745","direction":"inbound","local_number":"100","remote_number":"5552002","remote_name":null,"outcome":"unknown","ring_s":2097.0,"source":"call_log","source_path":"calls.csv"}"#,
    ];

    #[test]
    fn a_state_stored_before_the_split_still_resumes() {
        let state: CallLogState = serde_json::from_str(STORED_STATE).unwrap();
        // Nothing renamed, nested elsewhere or lost: it writes back byte for byte.
        assert_eq!(serde_json::to_string(&state).unwrap(), STORED_STATE);
        let mut reader = CallLogReader::resume(options(), &state);
        assert_eq!(serde_json::to_string(&reader.state()).unwrap(), STORED_STATE);
        assert_eq!(reader.open_calls(), 3);
        assert_eq!(reader.row_kind(), Some(RowKind::State));
        let more = "2026-11-23 08:00:20;ended;;5553000;;;\r\n2026-11-23 08:00:30;hangup;abc@host;;;;\r\n";
        let bytes: Vec<u8> = more.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut events = Vec::new();
        reader.push(&bytes, |e| events.push(e), |e| panic!("{e}"));
        assert_eq!(reader.position(), Position { byte: 744, line: 9 });
        reader.end_open_calls(Timestamp::from_second(1_795_422_900).unwrap(), |e| events.push(e));
        let json: Vec<String> = events.iter().map(Event::to_json).collect();
        assert_eq!(json, STORED_STATE_EVENTS);
        // As `source::reader` stores it: tagged with the source kind.
        #[derive(Serialize, Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        enum Stored {
            CallLog(CallLogState),
        }
        let tagged = format!("{{\"kind\":\"call_log\",{}", &STORED_STATE[1..]);
        let Stored::CallLog(state) = serde_json::from_str(&tagged).unwrap();
        assert_eq!(serde_json::to_string(&Stored::CallLog(state)).unwrap(), tagged);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(
            rows in proptest::collection::vec((0u8..4, "[a-zA-Z ,;\"\r\n]{0,12}", 0u32..100), 0..12),
            crlf in any::<bool>(),
            utf16 in any::<bool>(),
            cuts in proptest::collection::vec(0usize..2000, 0..8),
        ) {
            let mut text = String::from("Type,Name,Number,Time,Duration,Info\n");
            for (kind, name, duration) in &rows {
                let name = name.replace('"', "\"\"");
                text.push_str(&format!("{kind},\"{name}\",55{kind}{duration},17954228{duration:02},{duration},\n"));
            }
            if crlf {
                text = text.replace('\n', "\r\n");
            }
            let bytes = if utf16 { utf16le(&text) } else { text.into_bytes() };
            let whole = chunked(&bytes, &[]);
            prop_assert_eq!(whole.0.len(), rows.len());
            prop_assert_eq!(whole.2.byte, bytes.len() as u64);
            prop_assert_eq!(chunked(&bytes, &cuts), whole);
        }

        #[test]
        fn never_panics_on_any_bytes(
            data in proptest::collection::vec(prop_oneof![
                Just(b'\n'), Just(b'\r'), Just(b','), Just(b'"'), Just(b';'), Just(0u8), Just(0xFFu8), any::<u8>()], 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let (_, _, position) = chunked(&data, &cuts);
            prop_assert!(position.byte <= data.len() as u64);
            let mut header = b"time,event,number,call_id,direction,status_code,outcome,duration\n".to_vec();
            header.extend_from_slice(&data);
            chunked(&header, &cuts);
            let mut header = b"Type,Name,Number,Time,Duration,Info\n".to_vec();
            header.extend_from_slice(&data);
            chunked(&header, &cuts);
        }
    }
}
