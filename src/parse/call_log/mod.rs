//! The call-log CSV (`kind: call_log`): bytes of the file in, typed rows out.
//!
//! Feed chunks in file order with [`CallLogParser::push`]; a record is handled once its
//! closing line ending arrived, an unfinished one (also a quoted field still open across
//! lines) waits for more bytes, and [`CallLogParser::finish`] takes the last record of an
//! input known to be complete. Each data row is handed on as a [`CallRow`] of parsed
//! values with the position of its record, for a tracker to make events of; no event is
//! made here. [`CallLogParser::position`] is the end of the last record handled: the
//! checkpoint offset, in bytes of the file whatever its encoding.
//!
//! The format is the one in `DESIGN.md`: a header row first, its columns matched by name
//! in any letter case and order with aliases (unknown columns ignored, a `columns:`
//! mapping overrides the names); delimiter `,` `;` or tab, sniffed from the header;
//! UTF-8 with or without BOM, UTF-16 with BOM; CRLF or LF; RFC 4180 quoting. A header
//! with an event column makes every row a *state row* (one event); without one every row
//! is a *record row* (MicroSIP's history export, one finished call).
//!
//! The work is split by idea: `decode` (encodings), `records` (framing with csv-core and
//! its size limits), `columns` (header → layout, delimiter sniffing) and `values` (one
//! field → a typed value); this file puts them together and reads a row's values.
//!
//! A row that cannot be read is reported with its line and the column at fault, and
//! skipped; the rest flows. Caller data is hostile: it only ever becomes text fields,
//! cleaned by [`clean_text`], and nothing here panics on any input.

mod columns;
mod decode;
mod records;
mod values;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use columns::{ColumnMapping, HeaderState, RowKind};
pub use decode::TextEncoding;
pub use records::{MAX_FIELDS, MAX_RECORD_BYTES};
pub use values::CallType;
// Also for the reader's tests, which state expected times in the file's words.
pub(crate) use values::parse_time;

use self::columns::{Field, Header, Layout, Row, header_line, looks_like_header, sniff_delimiter};
use self::decode::Decoder;
use self::records::{Fields, Framed, Records};
use self::values::{parse_direction, parse_duration, parse_event, parse_outcome, parse_status};
use crate::event::{Direction, EventType, MAX_NAME_CHARS, MAX_NUMBER_CHARS, Outcome, clean_text};
use crate::parse::record::status_from_text;

/// Longest Call-ID kept, in characters.
pub const MAX_CALL_ID_CHARS: usize = 256;
/// Bytes of text looked at to find the header line before giving up on sniffing.
const MAX_SNIFF_BYTES: usize = 64 * 1024;

/// A place in the input file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Byte offset in the file as stored (BOM and UTF-16 included), from 0.
    pub byte: u64,
    /// Line number, from 1.
    pub line: u64,
}

/// A row or header that could not be used, and where it is. The row is skipped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line} (byte {byte}): {kind}")]
pub struct CallLogError {
    /// Line of the record's first line, from 1.
    pub line: u64,
    /// Byte offset of the record's first byte, from 0.
    pub byte: u64,
    pub kind: CallLogErrorKind,
}

/// What was wrong with a row or the header.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallLogErrorKind {
    /// The header lacks a column every row needs; no row can be read until a new header.
    #[error("header has no {field} column (looked for {looked}; name it in columns.{field})")]
    MissingColumn { field: &'static str, looked: String },
    /// The `columns:` mapping names a column the header does not have.
    #[error("columns.{field} is {name:?}, which is not in the header")]
    MappedColumnMissing { field: &'static str, name: String },
    /// A value that cannot be read, in the named column.
    #[error("column {column}: {reason}")]
    BadValue { column: String, reason: String },
    #[error("record longer than {MAX_RECORD_BYTES} bytes (an unclosed quote?), skipped to the next line")]
    RecordTooLong,
    #[error("record has more than {MAX_FIELDS} fields")]
    TooManyFields,
}

/// What the parser hands on, in file order.
#[derive(Debug, Clone, PartialEq)]
pub enum CallLogItem {
    Row(CallRow),
    Error(CallLogError),
}

/// One data row read, and where its record starts.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    /// The record's first byte (from 0, in file bytes) and line (from 1).
    pub position: Position,
    pub values: RowValues,
}

/// The parsed values of a row, by the kind of rows its header makes.
#[derive(Debug, Clone, PartialEq)]
pub enum RowValues {
    State(StateRow),
    Record(RecordRow),
}

/// A state row: one event of a call. Text is cleaned ([`clean_text`]) and capped;
/// `None` where the column is absent or the value empty.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRow {
    pub event: EventType,
    /// The direction the event's word implies (`incoming`, `calling`).
    pub implied_direction: Option<Direction>,
    /// When the event happened.
    pub at: Timestamp,
    pub call_id: Option<String>,
    /// The direction or call-type column.
    pub call_type: Option<CallType>,
    pub number: Option<String>,
    pub name: Option<String>,
    pub local_number: Option<String>,
    pub status_code: Option<u16>,
    pub outcome: Option<Outcome>,
    /// Talk time in seconds.
    pub duration: Option<f64>,
}

/// A record row: one finished call (MicroSIP's history export). Text is cleaned
/// ([`clean_text`]) and capped.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRow {
    pub call_type: CallType,
    /// When the call started.
    pub started: Timestamp,
    pub call_id: Option<String>,
    /// The remote number; empty when the column is absent or the value empty.
    pub number: String,
    pub name: Option<String>,
    /// Empty when the column is absent or the value empty.
    pub local_number: String,
    /// From the status column, else the SIP status the info text stands for
    /// (`486 Busy Here`, `Request Terminated`).
    pub status_code: Option<u16>,
    pub outcome: Option<Outcome>,
    /// Talk time in seconds; 0 without a duration column or value.
    pub duration: f64,
}

/// Counters of one parser since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Data rows read (the header not included), read or reported.
    pub rows: u64,
    /// Rows and headers reported as errors.
    pub errors: u64,
    /// Rows dropped unreported because the header was unusable.
    pub unread_rows: u64,
}

/// Reads one call-log CSV into rows; see the module docs.
#[derive(Debug)]
pub struct CallLogParser {
    decoder: Decoder,
    records: Records,
    /// Text before the header line is complete (the delimiter is not known yet).
    probe: Vec<u8>,
    rows: RowReader,
}

/// What turns records into rows: the header in force and what reading values needs.
#[derive(Debug)]
struct RowReader {
    columns: ColumnMapping,
    /// Time zone of times written without an offset.
    time_zone: TimeZone,
    header: Option<Header>,
    stats: ParseStats,
}

impl CallLogParser {
    /// A parser for a file read from its first byte: `columns` overrides the header
    /// names, `time_zone` is that of times written without an offset.
    pub fn new(columns: ColumnMapping, time_zone: TimeZone) -> CallLogParser {
        CallLogParser {
            decoder: Decoder::new(),
            records: Records::new(),
            probe: Vec::new(),
            rows: RowReader {
                columns,
                time_zone,
                header: None,
                stats: ParseStats::default(),
            },
        }
    }

    /// A parser going on at `position` (a [`CallLogParser::position`] of an earlier one)
    /// in a file of `encoding` whose header was `header`: feed it the file from
    /// `position.byte`.
    pub fn resume(
        columns: ColumnMapping,
        time_zone: TimeZone,
        position: Position,
        encoding: TextEncoding,
        header: &HeaderState,
    ) -> CallLogParser {
        let decoder = Decoder::resume(encoding);
        let mut records = Records::resume(position, decoder.units());
        records.start(header.delimiter);
        // Its problems were reported when it was first read.
        let layout = Layout::resolve(&header.names, &columns).ok();
        CallLogParser {
            decoder,
            records,
            probe: Vec::new(),
            rows: RowReader {
                columns,
                time_zone,
                header: Some(Header {
                    names: header.names.clone(),
                    layout,
                }),
                stats: ParseStats::default(),
            },
        }
    }

    /// End of the last record handled (and of blank lines after it): where a restart
    /// goes on reading. Stays at 0 until the header has been read.
    pub fn position(&self) -> Position {
        self.records.position()
    }

    /// The file's encoding, once known.
    pub fn encoding(&self) -> Option<TextEncoding> {
        self.decoder.encoding()
    }

    /// The header in force, once read.
    pub fn header(&self) -> Option<HeaderState> {
        self.rows.header.as_ref().map(|h| HeaderState {
            delimiter: self.records.delimiter(),
            names: h.names.clone(),
        })
    }

    /// The kind of rows, once a usable header has been read.
    pub(crate) fn row_kind(&self) -> Option<RowKind> {
        self.rows.header.as_ref()?.layout.as_ref().map(|l| l.kind)
    }

    pub fn stats(&self) -> ParseStats {
        self.rows.stats
    }

    /// Feeds the next bytes of the file; each complete row and each unreadable row or
    /// header goes to `on_item`, in file order.
    pub fn push(&mut self, chunk: &[u8], on_item: &mut impl FnMut(CallLogItem)) {
        self.push_bytes(chunk, false, on_item);
    }

    /// The input is complete: reads its last record even without a line ending. The
    /// parser can go on afterwards (`push` more), as if the record had ended there.
    pub fn finish(&mut self, on_item: &mut impl FnMut(CallLogItem)) {
        self.push_bytes(&[], true, on_item);
        let Self {
            records, probe, rows, ..
        } = self;
        if !records.started() && !probe.is_empty() {
            let probe = std::mem::take(probe);
            records.start(sniff_delimiter(&probe));
            frame(records, rows, &probe, on_item);
        }
        let handled = match records.finish() {
            Some(framed) => rows.handle(framed, on_item),
            None => false,
        };
        if handled {
            records.handled(rows.header.is_some());
        }
    }

    fn push_bytes(&mut self, chunk: &[u8], last: bool, on_item: &mut dyn FnMut(CallLogItem)) {
        let Self {
            decoder,
            records,
            probe,
            rows,
        } = self;
        let Some(decoded) = decoder.decode(chunk, last) else {
            return;
        };
        records.set_units(decoded.units);
        records.skip_stored(decoded.bom as u64);
        let text = decoded.text;
        if records.started() {
            frame(records, rows, text, on_item);
            return;
        }
        probe.extend_from_slice(text);
        // The delimiter comes from the header line: wait for all of it, but not forever.
        let delimiter = match header_line(probe) {
            Some(line) => sniff_delimiter(line),
            None if probe.len() > MAX_SNIFF_BYTES => sniff_delimiter(probe),
            None => return,
        };
        let probe = std::mem::take(probe);
        records.start(delimiter);
        frame(records, rows, &probe, on_item);
    }
}

/// Frames `input` into records and reads each.
fn frame(records: &mut Records, rows: &mut RowReader, mut input: &[u8], on_item: &mut dyn FnMut(CallLogItem)) {
    // Until a header is read the checkpoint stays at 0: a restart needs the header.
    while let Some(framed) = records.next(&mut input, rows.header.is_some()) {
        if rows.handle(framed, on_item) {
            records.handled(rows.header.is_some());
        }
    }
}

impl RowReader {
    /// Reads one framed record; `true` when it was a record to mark handled.
    fn handle(&mut self, framed: Framed<'_>, on_item: &mut dyn FnMut(CallLogItem)) -> bool {
        match framed {
            Framed::Record(fields, at) => {
                self.record(&fields, at, on_item);
                true
            }
            Framed::Skipped(kind, at) => {
                self.report(at, kind, on_item);
                false
            }
        }
    }

    fn report(&mut self, at: Position, kind: CallLogErrorKind, on_item: &mut dyn FnMut(CallLogItem)) {
        self.stats.errors += 1;
        on_item(CallLogItem::Error(CallLogError {
            line: at.line,
            byte: at.byte,
            kind,
        }));
    }

    /// A complete record: the header, a data row, or a new header.
    fn record(&mut self, fields: &Fields<'_>, at: Position, on_item: &mut dyn FnMut(CallLogItem)) {
        if fields.iter().all(|f| f.trim().is_empty()) {
            return; // a line of blanks or delimiters only
        }
        let Some(header) = &self.header else {
            self.adopt_header(fields, at, on_item);
            return;
        };
        let values = match &header.layout {
            None => Err(None),
            Some(layout) => {
                let row = Row {
                    layout,
                    names: &header.names,
                    fields,
                };
                match layout.kind {
                    RowKind::State => read_state_row(&row, &self.time_zone).map(RowValues::State),
                    RowKind::Record => read_record_row(&row, &self.time_zone).map(RowValues::Record),
                }
                .map_err(Some)
            }
        };
        match values {
            Ok(values) => {
                self.stats.rows += 1;
                on_item(CallLogItem::Row(CallRow { position: at, values }));
            }
            // A header repeated, or a new one (another export appended): take it.
            Err(_) if looks_like_header(fields) => self.adopt_header(fields, at, on_item),
            Err(problem) => {
                self.stats.rows += 1;
                match problem {
                    Some(kind) => self.report(at, kind, on_item),
                    None => self.stats.unread_rows += 1,
                }
            }
        }
    }

    fn adopt_header(&mut self, fields: &Fields<'_>, at: Position, on_item: &mut dyn FnMut(CallLogItem)) {
        let names: Vec<String> = fields.iter().map(|f| f.trim().to_owned()).collect();
        let layout = match Layout::resolve(&names, &self.columns) {
            Ok(layout) => Some(layout),
            Err(problems) => {
                for kind in problems {
                    self.report(at, kind, on_item);
                }
                None
            }
        };
        self.header = Some(Header { names, layout });
    }
}

const NOT_A_TIME: &str = "is not a time (RFC 3339, YYYY-MM-DD HH:MM:SS, Unix seconds)";

/// The values of a state row, or the first that cannot be read.
fn read_state_row(row: &Row<'_, '_>, time_zone: &TimeZone) -> Result<StateRow, CallLogErrorKind> {
    let (event, implied_direction) = parse_event(row.required(Field::Event)?).ok_or_else(|| {
        row.bad(
            Field::Event,
            "is not an event (ringing, answered or ended, or an alias of them)",
        )
    })?;
    let at = parse_time(row.required(Field::Time)?, time_zone).ok_or_else(|| row.bad(Field::Time, NOT_A_TIME))?;
    let call_type = optional(
        row,
        Field::Direction,
        parse_direction,
        "is not a direction (inbound, outbound, 0, 1, 2)",
    )?;
    let status_code = optional(row, Field::StatusCode, parse_status, "is not a SIP status")?;
    let outcome = optional(row, Field::Outcome, parse_outcome, "is not an outcome")?;
    let duration = optional(row, Field::Duration, parse_duration, "is not a duration")?;
    Ok(StateRow {
        event,
        implied_direction,
        at,
        call_id: call_id(row),
        call_type,
        number: row.get(Field::Number).map(|n| clean_text(n, MAX_NUMBER_CHARS)),
        name: name(row),
        local_number: row.get(Field::LocalNumber).map(|n| clean_text(n, MAX_NUMBER_CHARS)),
        status_code,
        outcome,
        duration,
    })
}

/// The values of a record row, or the first that cannot be read.
fn read_record_row(row: &Row<'_, '_>, time_zone: &TimeZone) -> Result<RecordRow, CallLogErrorKind> {
    let started = parse_time(row.required(Field::Time)?, time_zone).ok_or_else(|| row.bad(Field::Time, NOT_A_TIME))?;
    let call_type = parse_direction(row.required(Field::Direction)?).ok_or_else(|| {
        row.bad(
            Field::Direction,
            "is not a call type (0, 1, 2, outgoing, incoming, missed, inbound, outbound)",
        )
    })?;
    let duration = optional(row, Field::Duration, parse_duration, "is not a duration")?.unwrap_or(0.0);
    let status_code = match optional(row, Field::StatusCode, parse_status, "is not a SIP status")? {
        Some(code) => Some(code),
        None => row.get(Field::Info).and_then(status_from_text),
    };
    let outcome = optional(row, Field::Outcome, parse_outcome, "is not an outcome")?;
    Ok(RecordRow {
        call_type,
        started,
        call_id: call_id(row),
        number: clean_text(row.get(Field::Number).unwrap_or_default(), MAX_NUMBER_CHARS),
        name: name(row),
        local_number: clean_text(row.get(Field::LocalNumber).unwrap_or_default(), MAX_NUMBER_CHARS),
        status_code,
        outcome,
        duration,
    })
}

/// A field that may be absent: `None` then, else its value or why it is not one.
fn optional<T>(
    row: &Row<'_, '_>,
    field: Field,
    parse: impl FnOnce(&str) -> Option<T>,
    reason: &str,
) -> Result<Option<T>, CallLogErrorKind> {
    match row.get(field) {
        Some(text) => parse(text).map(Some).ok_or_else(|| row.bad(field, reason)),
        None => Ok(None),
    }
}

/// The Call-ID, cleaned; `None` when absent or empty once cleaned.
fn call_id(row: &Row<'_, '_>) -> Option<String> {
    row.get(Field::CallId)
        .map(|c| clean_text(c, MAX_CALL_ID_CHARS))
        .filter(|id| !id.is_empty())
}

/// The display name, cleaned; `None` when absent or empty once cleaned.
fn name(row: &Row<'_, '_>) -> Option<String> {
    row.get(Field::Name)
        .map(|n| clean_text(n, MAX_NAME_CHARS))
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> (CallLogParser, Vec<CallLogItem>) {
        let mut parser = CallLogParser::new(ColumnMapping::default(), TimeZone::UTC);
        let mut items = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut |item| items.push(item));
        }
        (parser, items)
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn state_rows_are_typed_values_with_their_position() {
        let csv = "time;event;call_id;number;name;status_code;outcome;duration\n\
            1795422856;calling;;\u{202E}555;Bob\u{7};;;\n\
            1795422860;ended;x1;555;;486;busy;0:05\n";
        let (parser, items) = parse(&[csv.as_bytes()]);
        let first_row = csv.find("1795422856").unwrap() as u64;
        let second_row = csv.find("1795422860").unwrap() as u64;
        assert_eq!(
            items,
            [
                CallLogItem::Row(CallRow {
                    position: Position {
                        byte: first_row,
                        line: 2
                    },
                    values: RowValues::State(StateRow {
                        event: EventType::Ringing,
                        implied_direction: Some(Direction::Outbound),
                        at: at(1_795_422_856),
                        call_id: None,
                        call_type: None,
                        number: Some("555".into()),
                        name: Some("Bob".into()),
                        local_number: None,
                        status_code: None,
                        outcome: None,
                        duration: None,
                    }),
                }),
                CallLogItem::Row(CallRow {
                    position: Position {
                        byte: second_row,
                        line: 3
                    },
                    values: RowValues::State(StateRow {
                        event: EventType::Ended,
                        implied_direction: None,
                        at: at(1_795_422_860),
                        call_id: Some("x1".into()),
                        call_type: None,
                        number: Some("555".into()),
                        name: None,
                        local_number: None,
                        status_code: Some(486),
                        outcome: Some(Outcome::Busy),
                        duration: Some(5.0),
                    }),
                }),
            ]
        );
        assert_eq!(parser.row_kind(), Some(RowKind::State));
        assert_eq!(parser.position().byte, csv.len() as u64);
        assert_eq!(parser.header().map(|h| h.delimiter), Some(b';'));
        assert_eq!(parser.encoding(), Some(TextEncoding::Utf8));
    }

    #[test]
    fn record_rows_take_their_status_from_the_info_text() {
        let (parser, items) = parse(&[b"Type,Number,Time,Info\n0,5,17954", b"22856,Busy Here\n2,6,x,\n"]);
        assert_eq!(
            items[0],
            CallLogItem::Row(CallRow {
                position: Position { byte: 22, line: 2 },
                values: RowValues::Record(RecordRow {
                    call_type: CallType {
                        direction: Direction::Outbound,
                        missed: false
                    },
                    started: at(1_795_422_856),
                    call_id: None,
                    number: "5".into(),
                    name: None,
                    local_number: String::new(),
                    status_code: Some(486),
                    outcome: None,
                    duration: 0.0,
                }),
            })
        );
        let CallLogItem::Error(error) = &items[1] else {
            panic!("{items:?}");
        };
        assert_eq!(
            error.to_string(),
            "line 3 (byte 47): column Time: \"x\" is not a time (RFC 3339, YYYY-MM-DD HH:MM:SS, Unix seconds)"
        );
        assert_eq!(
            parser.stats(),
            ParseStats {
                rows: 2,
                errors: 1,
                unread_rows: 0
            }
        );
    }

    #[test]
    fn a_resumed_parser_goes_on_after_the_header() {
        let (first, _) = parse(&[b"\xEF\xBB\xBFType;Number;Time\r\n"]);
        let header = first.header().unwrap();
        let mut parser = CallLogParser::resume(
            ColumnMapping::default(),
            TimeZone::UTC,
            first.position(),
            first.encoding().unwrap(),
            &header,
        );
        let mut items = Vec::new();
        parser.push(b"1;7;1795422856\r\n", &mut |item| items.push(item));
        let [CallLogItem::Row(row)] = &items[..] else {
            panic!("{items:?}");
        };
        assert_eq!(row.position, Position { byte: 21, line: 2 });
        assert_eq!(parser.position(), Position { byte: 37, line: 3 });
    }
}
