//! The call-log CSV source (`kind: call_log`): bytes of the CSV in, call events out.
//!
//! Feed chunks in file order with [`CallLogReader::push`]; a record is handled once its
//! closing line ending arrived, an unfinished one (also a quoted field still open across
//! lines) waits for more bytes, and [`CallLogReader::finish`] takes the last record of an
//! input known to be complete. [`CallLogReader::position`] is the end of the last record
//! handled: the checkpoint offset, in bytes of the file whatever its encoding.
//!
//! The format is the one in `DESIGN.md`: a header row first, its columns matched by name
//! in any letter case and order with aliases (unknown columns ignored, a `columns:`
//! mapping overrides the names); delimiter `,` `;` or tab, sniffed from the header;
//! UTF-8 with or without BOM, UTF-16 with BOM; CRLF or LF; RFC 4180 quoting. A header
//! with an event column makes every row a *state row* (that event); without one every row
//! is a *record row* (MicroSIP's history export, one finished call, one `ended` event).
//!
//! A row that cannot be read is reported with its line and the column at fault, and
//! skipped; the rest flows. Caller data is hostile: it only ever becomes text fields,
//! cleaned by [`clean_text`], and nothing here panics on any input.

use std::collections::HashMap;

use csv_core::{ReadRecordResult, ReaderBuilder, Terminator};
use encoding_rs::{Decoder, UTF_16BE, UTF_16LE};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ZonedDateTime};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::{
    CONTRACT_VERSION, Direction, Event, EventType, MAX_NAME_CHARS, MAX_NUMBER_CHARS, Outcome, SourceKind, clean_text,
    event_id, seconds,
};
use crate::parse::record::{status_from_text, synthetic_call_id};

/// Longest record kept, in bytes of UTF-8; a longer one (typically an unbalanced quote)
/// is reported and skipped up to the next line ending.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Most fields a record may have.
pub const MAX_FIELDS: usize = 1024;
/// Longest Call-ID kept, in characters.
pub const MAX_CALL_ID_CHARS: usize = 256;
/// Most calls kept open (seen `ringing` or `answered`, not yet `ended`); beyond it the
/// one that started first is forgotten.
pub const MAX_OPEN_CALLS: usize = 10_000;
/// Bytes of text looked at to find the header line before giving up on sniffing.
const MAX_SNIFF_BYTES: usize = 64 * 1024;

/// The `columns:` mapping of a `call_log` source: which header name holds each field,
/// overriding the built-in aliases. Names match in any letter case; a field left out is
/// found by its aliases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMapping {
    /// When the row's event happened (record rows: when the call started). Aliases
    /// `time`, `timestamp`, `date`, `datetime`.
    pub time: Option<String>,
    /// The event of a state row. Aliases `event`, `state`, `status`. A header with this
    /// column makes every row a state row.
    pub event: Option<String>,
    /// SIP Call-ID. Aliases `call_id`, `callid`.
    pub call_id: Option<String>,
    /// Direction, or MicroSIP's call type (`0|1|2`, `outgoing|incoming|missed`).
    /// Aliases `direction`, `type`, `dir`.
    pub direction: Option<String>,
    /// Remote number. Aliases `number`, `phone`, `caller`, `remote_number`.
    pub number: Option<String>,
    /// Remote display name. Aliases `name`, `display`, `display_name`, `remote_name`,
    /// `caller_name`.
    pub name: Option<String>,
    /// Final SIP status of the call. Aliases `status_code`, `code`, `sip_code`.
    pub status_code: Option<String>,
    /// Outcome in the contract's words. Aliases `outcome`, `result`.
    pub outcome: Option<String>,
    /// Talk time: seconds or `[HH:]MM:SS`. Alias `duration`.
    pub duration: Option<String>,
    /// Status text, possibly starting with a SIP status (`486 Busy Here`). Aliases
    /// `info`, `reason`.
    pub info: Option<String>,
    /// The watched phone's own number. Aliases `local_number`, `local`, `account`.
    pub local_number: Option<String>,
}

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

/// Which kind of rows a file holds, decided by its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// One event a row (the header has an event column).
    State,
    /// One finished call a row (MicroSIP's history export).
    Record,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallLogState {
    /// Where to go on reading: [`CallLogReader::position`].
    pub position: Position,
    /// The file's encoding, once known.
    pub encoding: Option<TextEncoding>,
    /// The header in force, once read.
    pub header: Option<HeaderState>,
    /// Calls that saw `ringing` or `answered` and no `ended` yet.
    open: Vec<OpenCall>,
}

/// The text encoding of a call-log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoding {
    Utf8,
    Utf16Le,
    Utf16Be,
}

/// A header as read: its delimiter and column names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderState {
    pub delimiter: u8,
    pub names: Vec<String>,
}

/// The fields a column can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Time,
    Event,
    CallId,
    Direction,
    Number,
    Name,
    StatusCode,
    Outcome,
    Duration,
    Info,
    LocalNumber,
}

const FIELD_COUNT: usize = 11;

/// Each field, its config name and its aliases (normalized: lowercase, `_` for spaces
/// and dashes), the first alias preferred when a header has several.
const FIELDS: [(Field, &str, &[&str]); FIELD_COUNT] = [
    (Field::Time, "time", &["time", "timestamp", "date", "datetime"]),
    (Field::Event, "event", &["event", "state", "status"]),
    (Field::CallId, "call_id", &["call_id", "callid"]),
    (Field::Direction, "direction", &["direction", "type", "dir"]),
    (Field::Number, "number", &["number", "phone", "caller", "remote_number"]),
    (
        Field::Name,
        "name",
        &["name", "display", "display_name", "remote_name", "caller_name"],
    ),
    (Field::StatusCode, "status_code", &["status_code", "code", "sip_code"]),
    (Field::Outcome, "outcome", &["outcome", "result"]),
    (Field::Duration, "duration", &["duration"]),
    (Field::Info, "info", &["info", "reason"]),
    (
        Field::LocalNumber,
        "local_number",
        &["local_number", "local", "account"],
    ),
];

impl Field {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        FIELDS[self.index()].1
    }

    fn aliases(self) -> &'static [&'static str] {
        FIELDS[self.index()].2
    }
}

impl ColumnMapping {
    fn get(&self, field: Field) -> Option<&str> {
        match field {
            Field::Time => self.time.as_deref(),
            Field::Event => self.event.as_deref(),
            Field::CallId => self.call_id.as_deref(),
            Field::Direction => self.direction.as_deref(),
            Field::Number => self.number.as_deref(),
            Field::Name => self.name.as_deref(),
            Field::StatusCode => self.status_code.as_deref(),
            Field::Outcome => self.outcome.as_deref(),
            Field::Duration => self.duration.as_deref(),
            Field::Info => self.info.as_deref(),
            Field::LocalNumber => self.local_number.as_deref(),
        }
    }
}

/// Header names compare lowercase, trimmed, with spaces and dashes as `_`.
fn normalize_name(name: &str) -> String {
    name.trim()
        .trim_start_matches('\u{feff}')
        .chars()
        .map(|c| match c {
            ' ' | '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Which column holds each field, for one header.
#[derive(Debug, Clone)]
struct Layout {
    columns: [Option<usize>; FIELD_COUNT],
    kind: RowKind,
}

impl Layout {
    /// Resolves a header; the errors say why no row can be read with it.
    fn resolve(names: &[String], mapping: &ColumnMapping) -> Result<Layout, Vec<CallLogErrorKind>> {
        let normalized: Vec<String> = names.iter().map(|n| normalize_name(n)).collect();
        let mut columns = [None; FIELD_COUNT];
        let mut claimed = vec![false; names.len()];
        let mut problems = Vec::new();
        // Mapped names first, so an alias cannot take a column the mapping gave away.
        for (field, config_name, _) in FIELDS {
            if let Some(wanted) = mapping.get(field) {
                let wanted = normalize_name(wanted);
                match normalized.iter().position(|n| *n == wanted) {
                    Some(i) => {
                        columns[field.index()] = Some(i);
                        claimed[i] = true;
                    }
                    None => problems.push(CallLogErrorKind::MappedColumnMissing {
                        field: config_name,
                        name: wanted,
                    }),
                }
            }
        }
        for (field, _, aliases) in FIELDS {
            if mapping.get(field).is_some() {
                continue;
            }
            let found = aliases
                .iter()
                .find_map(|alias| (0..names.len()).find(|&i| !claimed[i] && normalized[i] == *alias));
            if let Some(i) = found {
                columns[field.index()] = Some(i);
                claimed[i] = true;
            }
        }
        let kind = if columns[Field::Event.index()].is_some() {
            RowKind::State
        } else {
            RowKind::Record
        };
        let mut required = vec![Field::Time, Field::Number];
        if kind == RowKind::Record {
            required.push(Field::Direction);
        }
        for field in required {
            if columns[field.index()].is_none() && mapping.get(field).is_none() {
                problems.push(CallLogErrorKind::MissingColumn {
                    field: field.name(),
                    looked: field.aliases().join(", "),
                });
            }
        }
        if problems.is_empty() {
            Ok(Layout { columns, kind })
        } else {
            Err(problems)
        }
    }
}

/// Whether a row is a header: it names a time and a number column (data never does).
fn looks_like_header(fields: &Fields<'_>) -> bool {
    let names: Vec<String> = fields.iter().map(normalize_name).collect();
    let has = |field: Field| names.iter().any(|n| field.aliases().contains(&n.as_str()));
    has(Field::Time) && has(Field::Number)
}

/// The header in force.
#[derive(Debug, Clone)]
struct Header {
    names: Vec<String>,
    /// `None`: unusable (already reported); rows are dropped until a new header.
    layout: Option<Layout>,
}

#[derive(Debug)]
enum Encoding {
    /// Not known yet: the first bytes, kept until there are enough to tell.
    Sniffing(Vec<u8>),
    Utf8,
    Utf16 {
        decoder: Decoder,
        big_endian: bool,
    },
}

/// A call seen `ringing` or `answered` and not yet `ended`.
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

/// Reads one call-log CSV; see the module docs.
#[derive(Debug)]
pub struct CallLogReader {
    options: CallLogOptions,
    encoding: Encoding,
    /// Text decoded from UTF-16, reused between chunks.
    decoded: Vec<u8>,
    /// Text before the header line is complete (the delimiter is not known yet).
    probe: Vec<u8>,
    csv: Option<csv_core::Reader>,
    delimiter: u8,
    header: Option<Header>,
    /// Field bytes of the record being read, and where each field ends.
    record: Vec<u8>,
    ends: Vec<usize>,
    record_len: usize,
    field_count: usize,
    /// Bytes of a record have been consumed since the last record ended.
    in_record: bool,
    /// Dropping bytes up to the next line ending after an overlong record.
    skipping: bool,
    /// End of the last record handled.
    committed: Position,
    /// Bytes (as stored) and line endings consumed since `committed`.
    pending_bytes: u64,
    pending_lines: u64,
    /// Where the record being read starts.
    record_start: Position,
    open: HashMap<String, OpenCall>,
    /// Number → Call-ID of the newest open call from or to it.
    by_number: HashMap<String, String>,
    stats: CallLogStats,
}

/// Where events and errors go while reading.
struct Sink<'a> {
    event: &'a mut dyn FnMut(Event),
    error: &'a mut dyn FnMut(CallLogError),
}

impl CallLogReader {
    /// A reader for a file read from its first byte.
    pub fn new(options: CallLogOptions) -> CallLogReader {
        CallLogReader {
            options,
            encoding: Encoding::Sniffing(Vec::new()),
            decoded: Vec::new(),
            probe: Vec::new(),
            csv: None,
            delimiter: b',',
            header: None,
            record: vec![0; 4096],
            ends: vec![0; 32],
            record_len: 0,
            field_count: 0,
            in_record: false,
            skipping: false,
            committed: Position { byte: 0, line: 1 },
            pending_bytes: 0,
            pending_lines: 0,
            record_start: Position { byte: 0, line: 1 },
            open: HashMap::new(),
            by_number: HashMap::new(),
            stats: CallLogStats::default(),
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
        reader.encoding = match encoding {
            TextEncoding::Utf8 => Encoding::Utf8,
            TextEncoding::Utf16Le => Encoding::Utf16 {
                decoder: UTF_16LE.new_decoder_without_bom_handling(),
                big_endian: false,
            },
            TextEncoding::Utf16Be => Encoding::Utf16 {
                decoder: UTF_16BE.new_decoder_without_bom_handling(),
                big_endian: true,
            },
        };
        reader.start_csv(header.delimiter);
        let layout = Layout::resolve(&header.names, &reader.options.columns).ok();
        reader.header = Some(Header {
            names: header.names.clone(),
            layout,
        });
        reader.committed = state.position;
        reader.record_start = state.position;
        for call in &state.open {
            reader.by_number.insert(call.number.clone(), call.call_id.clone());
            reader.open.insert(call.call_id.clone(), call.clone());
        }
        reader
    }

    /// End of the last record handled (and of blank lines after it): where a restart
    /// goes on reading. Stays at 0 until the header has been read.
    pub fn position(&self) -> Position {
        self.committed
    }

    /// The kind of rows, once a usable header has been read.
    pub fn row_kind(&self) -> Option<RowKind> {
        self.header.as_ref()?.layout.as_ref().map(|l| l.kind)
    }

    /// Number of calls open (state rows only).
    pub fn open_calls(&self) -> usize {
        self.open.len()
    }

    pub fn stats(&self) -> CallLogStats {
        self.stats
    }

    /// What a restart needs; store it with [`CallLogReader::position`].
    pub fn state(&self) -> CallLogState {
        let encoding = match &self.encoding {
            Encoding::Sniffing(_) => None,
            Encoding::Utf8 => Some(TextEncoding::Utf8),
            Encoding::Utf16 { big_endian: false, .. } => Some(TextEncoding::Utf16Le),
            Encoding::Utf16 { big_endian: true, .. } => Some(TextEncoding::Utf16Be),
        };
        let mut open: Vec<OpenCall> = self.open.values().cloned().collect();
        open.sort_by(|a, b| (a.ringing_at, &a.call_id).cmp(&(b.ringing_at, &b.call_id)));
        CallLogState {
            position: self.committed,
            encoding,
            header: self.header.as_ref().map(|h| HeaderState {
                delimiter: self.delimiter,
                names: h.names.clone(),
            }),
            open,
        }
    }

    /// Starts over from byte 0 of a new file (after truncation or replacement): the
    /// next bytes must begin with a header. Open calls are forgotten; end them first
    /// with [`CallLogReader::end_open_calls`] when that is wanted.
    pub fn reset(&mut self) {
        let options = self.options.clone();
        *self = CallLogReader::new(options);
    }

    /// Ends every open call with outcome `unknown` at `at` (its file was truncated or
    /// replaced mid-call).
    pub fn end_open_calls(&mut self, at: Timestamp, mut on_event: impl FnMut(Event)) {
        let mut calls: Vec<OpenCall> = self.open.drain().map(|(_, c)| c).collect();
        self.by_number.clear();
        calls.sort_by(|a, b| (a.ringing_at, &a.call_id).cmp(&(b.ringing_at, &b.call_id)));
        for call in calls {
            let ring_s = call.ringing_at.map(|r| seconds(r, call.answered_at.unwrap_or(at)));
            let talk_s = call.answered_at.map(|a| seconds(a, at));
            let event = self.event(
                &call,
                EventType::Ended,
                at,
                Ending {
                    outcome: Outcome::Unknown,
                    status_code: None,
                    ring_s,
                    talk_s,
                },
            );
            self.stats.events += 1;
            on_event(event);
        }
    }

    /// Feeds the next bytes of the file; each complete row's event goes to `on_event`,
    /// each unreadable row or header to `on_error`.
    pub fn push(&mut self, chunk: &[u8], mut on_event: impl FnMut(Event), mut on_error: impl FnMut(CallLogError)) {
        let mut sink = Sink {
            event: &mut on_event,
            error: &mut on_error,
        };
        self.push_bytes(chunk, false, &mut sink);
    }

    /// The input is complete: reads its last record even without a line ending. The
    /// reader can go on afterwards (`push` more), as if the record had ended there.
    pub fn finish(&mut self, mut on_event: impl FnMut(Event), mut on_error: impl FnMut(CallLogError)) {
        let mut sink = Sink {
            event: &mut on_event,
            error: &mut on_error,
        };
        self.push_bytes(&[], true, &mut sink);
        if self.csv.is_none() && !self.probe.is_empty() {
            let probe = std::mem::take(&mut self.probe);
            self.start_csv(sniff_delimiter(&probe));
            self.parse(&probe, &mut sink);
        }
        if self.in_record
            && let Some(mut csv) = self.csv.take()
        {
            // An empty input tells csv_core the data ended: the open record is complete.
            loop {
                let (result, _, nout, nend) = csv.read_record(
                    &[],
                    &mut self.record[self.record_len..],
                    &mut self.ends[self.field_count..],
                );
                self.record_len += nout;
                self.field_count += nend;
                match result {
                    ReadRecordResult::OutputEndsFull if self.ends.len() < MAX_FIELDS => {
                        let len = self.ends.len() * 2;
                        self.ends.resize(len, 0);
                    }
                    ReadRecordResult::Record => {
                        self.record_done(&mut sink);
                        break;
                    }
                    _ => {
                        self.abandon_record(CallLogErrorKind::TooManyFields, &mut sink);
                        break;
                    }
                }
            }
            // csv_core has seen its end of data; a fresh one goes on after it.
            self.start_csv(self.delimiter);
        }
    }

    fn push_bytes(&mut self, chunk: &[u8], last: bool, sink: &mut Sink<'_>) {
        if let Encoding::Sniffing(head) = &mut self.encoding {
            head.extend_from_slice(chunk);
            let head = std::mem::take(head);
            match sniff_encoding(&head, last) {
                None => {
                    self.encoding = Encoding::Sniffing(head);
                    return;
                }
                Some((encoding, bom)) => {
                    self.encoding = encoding;
                    self.pending_bytes += bom as u64;
                    let rest = head.get(bom..).unwrap_or_default();
                    self.push_known(rest, sink);
                }
            }
            return;
        }
        self.push_known(chunk, sink);
    }

    fn push_known(&mut self, chunk: &[u8], sink: &mut Sink<'_>) {
        match &mut self.encoding {
            Encoding::Sniffing(_) => {}
            Encoding::Utf8 => self.text(chunk, sink),
            // Never `last`: a decoder is not usable after it, and a lone trailing byte
            // is no character anyway.
            Encoding::Utf16 { decoder, .. } => {
                let mut decoded = std::mem::take(&mut self.decoded);
                decoded.clear();
                let room = decoder
                    .max_utf8_buffer_length(chunk.len())
                    .unwrap_or(chunk.len().saturating_mul(3).saturating_add(16));
                decoded.resize(room, 0);
                let (_, _, written, _) = decoder.decode_to_utf8(chunk, &mut decoded, false);
                decoded.truncate(written);
                self.text(&decoded, sink);
                self.decoded = decoded;
            }
        }
    }

    /// Takes decoded text (UTF-8, or raw bytes of a file claiming to be UTF-8).
    fn text(&mut self, text: &[u8], sink: &mut Sink<'_>) {
        if self.csv.is_some() {
            self.parse(text, sink);
            return;
        }
        self.probe.extend_from_slice(text);
        if let Some(delimiter) = header_line(&self.probe).map(sniff_delimiter) {
            let probe = std::mem::take(&mut self.probe);
            self.start_csv(delimiter);
            self.parse(&probe, sink);
        } else if self.probe.len() > MAX_SNIFF_BYTES {
            let probe = std::mem::take(&mut self.probe);
            self.start_csv(sniff_delimiter(&probe));
            self.parse(&probe, sink);
        }
    }

    fn start_csv(&mut self, delimiter: u8) {
        self.delimiter = delimiter;
        self.csv = Some(
            ReaderBuilder::new()
                .delimiter(delimiter)
                .terminator(Terminator::CRLF)
                .build(),
        );
    }

    /// The stored length of `text` read from the file: the same in UTF-8, two bytes
    /// per UTF-16 code unit otherwise. Decoded text is valid UTF-8 and every unit
    /// (an unpaired surrogate too) decodes to one character, so this is exact.
    fn stored_len(&self, text: &[u8]) -> u64 {
        match self.encoding {
            Encoding::Utf16 { .. } => {
                let units: usize = text
                    .iter()
                    .map(|&b| usize::from(b & 0xC0 != 0x80) + usize::from(b >= 0xF0))
                    .sum();
                units as u64 * 2
            }
            _ => text.len() as u64,
        }
    }

    fn consumed(&mut self, text: &[u8]) {
        self.pending_bytes += self.stored_len(text);
        self.pending_lines += memchr::memchr_iter(b'\n', text).count() as u64;
    }

    fn here(&self) -> Position {
        Position {
            byte: self.committed.byte + self.pending_bytes,
            line: self.committed.line + self.pending_lines,
        }
    }

    fn commit(&mut self) {
        // Before a header, a restart must read from 0 anyway: the header is needed.
        if self.header.is_some() {
            self.committed = self.here();
            self.pending_bytes = 0;
            self.pending_lines = 0;
        }
    }

    fn parse(&mut self, mut input: &[u8], sink: &mut Sink<'_>) {
        loop {
            if self.skipping {
                match memchr::memchr(b'\n', input) {
                    Some(nl) => {
                        self.consumed(&input[..=nl]);
                        input = &input[nl + 1..];
                        self.skipping = false;
                        self.commit();
                    }
                    None => {
                        self.consumed(input);
                        return;
                    }
                }
            }
            if !self.in_record {
                let blank = input.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                if blank > 0 {
                    self.consumed(&input[..blank]);
                    input = &input[blank..];
                    self.commit();
                }
                if input.is_empty() {
                    return;
                }
                self.in_record = true;
                self.record_start = self.here();
            }
            // An empty input means "end of data" to csv_core: only `finish` says that.
            if input.is_empty() {
                return;
            }
            let Some(csv) = self.csv.as_mut() else {
                return;
            };
            let (result, nin, nout, nend) = csv.read_record(
                input,
                &mut self.record[self.record_len..],
                &mut self.ends[self.field_count..],
            );
            let (used, rest) = input.split_at(nin.min(input.len()));
            input = rest;
            self.consumed(used);
            self.record_len += nout;
            self.field_count += nend;
            match result {
                ReadRecordResult::InputEmpty | ReadRecordResult::End => return,
                ReadRecordResult::OutputFull => {
                    if self.record.len() >= MAX_RECORD_BYTES {
                        self.abandon_record(CallLogErrorKind::RecordTooLong, sink);
                        self.start_csv(self.delimiter);
                        self.skipping = true;
                    } else {
                        let len = (self.record.len() * 2).min(MAX_RECORD_BYTES);
                        self.record.resize(len, 0);
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    if self.ends.len() >= MAX_FIELDS {
                        self.abandon_record(CallLogErrorKind::TooManyFields, sink);
                        self.start_csv(self.delimiter);
                        self.skipping = true;
                    } else {
                        let len = (self.ends.len() * 2).min(MAX_FIELDS);
                        self.ends.resize(len, 0);
                    }
                }
                ReadRecordResult::Record => self.record_done(sink),
            }
        }
    }

    fn abandon_record(&mut self, kind: CallLogErrorKind, sink: &mut Sink<'_>) {
        self.report(self.record_start, kind, sink);
        self.record_len = 0;
        self.field_count = 0;
        self.in_record = false;
    }

    fn report(&mut self, at: Position, kind: CallLogErrorKind, sink: &mut Sink<'_>) {
        self.stats.errors += 1;
        (sink.error)(CallLogError {
            line: at.line,
            byte: at.byte,
            kind,
        });
    }

    /// A complete record is in `record`/`ends`: handle it and move the checkpoint.
    fn record_done(&mut self, sink: &mut Sink<'_>) {
        let record = std::mem::take(&mut self.record);
        let ends = std::mem::take(&mut self.ends);
        {
            let ends_used = ends.get(..self.field_count).unwrap_or_default();
            let bytes = record.get(..ends_used.last().copied().unwrap_or(0)).unwrap_or_default();
            match std::str::from_utf8(bytes) {
                Ok(text) if ends_used.iter().all(|&e| text.is_char_boundary(e)) => {
                    self.row(&Fields { text, ends: ends_used }, sink);
                }
                _ => {
                    // Not UTF-8 (a legacy code page): each field with U+FFFD for what
                    // cannot be read.
                    let mut text = String::new();
                    let mut lossy_ends = Vec::with_capacity(ends_used.len());
                    let mut start = 0;
                    for &end in ends_used {
                        text.push_str(&String::from_utf8_lossy(bytes.get(start..end).unwrap_or_default()));
                        lossy_ends.push(text.len());
                        start = end;
                    }
                    self.row(
                        &Fields {
                            text: &text,
                            ends: &lossy_ends,
                        },
                        sink,
                    );
                }
            }
        }
        self.record = record;
        self.ends = ends;
        self.record_len = 0;
        self.field_count = 0;
        self.in_record = false;
        self.commit();
    }

    fn row(&mut self, fields: &Fields<'_>, sink: &mut Sink<'_>) {
        if fields.iter().all(|f| f.trim().is_empty()) {
            return; // a line of blanks or delimiters only
        }
        let Some(header) = self.header.take() else {
            self.adopt_header(fields, sink);
            return;
        };
        let result = match &header.layout {
            None => Err(None),
            Some(layout) => {
                let row = Row {
                    layout,
                    names: &header.names,
                    fields,
                };
                match layout.kind {
                    RowKind::State => self.state_row(&row, sink),
                    RowKind::Record => self.record_row(&row, sink),
                }
                .map_err(Some)
            }
        };
        self.header = Some(header);
        let Err(problem) = result else {
            self.stats.rows += 1;
            return;
        };
        if looks_like_header(fields) {
            // A header repeated, or a new one (another export appended): take it.
            self.adopt_header(fields, sink);
            return;
        }
        self.stats.rows += 1;
        match problem {
            Some(kind) => self.report(self.record_start, kind, sink),
            None => self.stats.unread_rows += 1,
        }
    }

    fn adopt_header(&mut self, fields: &Fields<'_>, sink: &mut Sink<'_>) {
        let names: Vec<String> = fields.iter().map(|f| f.trim().to_owned()).collect();
        let layout = match Layout::resolve(&names, &self.options.columns) {
            Ok(layout) => Some(layout),
            Err(problems) => {
                for kind in problems {
                    self.report(self.record_start, kind, sink);
                }
                None
            }
        };
        self.header = Some(Header { names, layout });
    }

    fn state_row(&mut self, row: &Row<'_, '_>, sink: &mut Sink<'_>) -> Result<(), CallLogErrorKind> {
        let (kind, implied) = parse_event(row.required(Field::Event)?).ok_or_else(|| {
            row.bad(
                Field::Event,
                "is not an event (ringing, answered or ended, or an alias of them)",
            )
        })?;
        let at = parse_time(row.required(Field::Time)?, &self.options.time_zone).ok_or_else(|| {
            row.bad(
                Field::Time,
                "is not a time (RFC 3339, YYYY-MM-DD HH:MM:SS, Unix seconds)",
            )
        })?;
        let typed = match row.get(Field::Direction) {
            Some(text) => Some(
                parse_direction(text)
                    .ok_or_else(|| row.bad(Field::Direction, "is not a direction (inbound, outbound, 0, 1, 2)"))?,
            ),
            None => None,
        };
        let status_code = match row.get(Field::StatusCode) {
            Some(text) => Some(parse_status(text).ok_or_else(|| row.bad(Field::StatusCode, "is not a SIP status"))?),
            None => None,
        };
        let outcome = match row.get(Field::Outcome) {
            Some(text) => Some(parse_outcome(text).ok_or_else(|| row.bad(Field::Outcome, "is not an outcome"))?),
            None => None,
        };
        let duration = match row.get(Field::Duration) {
            Some(text) => Some(parse_duration(text).ok_or_else(|| row.bad(Field::Duration, "is not a duration"))?),
            None => None,
        };
        let number = row.get(Field::Number).map(|n| clean_text(n, MAX_NUMBER_CHARS));
        let call_id = match row.get(Field::CallId).map(|c| clean_text(c, MAX_CALL_ID_CHARS)) {
            Some(id) if !id.is_empty() => id,
            _ => {
                let number = number.clone().unwrap_or_default();
                let open = self.by_number.get(&number).filter(|_| kind != EventType::Ringing);
                match open {
                    Some(id) => id.clone(),
                    None => synthetic_call_id(&number, at.as_second()),
                }
            }
        };
        let known = self.open.get(&call_id);
        let direction = typed
            .map(|t| t.direction)
            .or(known.map(|c| c.direction))
            .or(implied)
            .unwrap_or(Direction::Inbound);
        let mut call = OpenCall {
            number: number.or_else(|| known.map(|c| c.number.clone())).unwrap_or_default(),
            name: row
                .get(Field::Name)
                .map(|n| clean_text(n, MAX_NAME_CHARS))
                .filter(|n| !n.is_empty())
                .or_else(|| known.and_then(|c| c.name.clone())),
            local_number: row
                .get(Field::LocalNumber)
                .map(|n| clean_text(n, MAX_NUMBER_CHARS))
                .or_else(|| known.map(|c| c.local_number.clone()))
                .unwrap_or_default(),
            direction,
            ringing_at: known.and_then(|c| c.ringing_at),
            answered_at: known.and_then(|c| c.answered_at),
            call_id,
        };
        let event = match kind {
            EventType::Ringing => {
                call.ringing_at = Some(at);
                call.answered_at = None;
                let event = self.event(&call, kind, at, Ending::none());
                self.open_call(call);
                event
            }
            EventType::Answered => {
                call.answered_at = Some(at);
                let event = self.event(&call, kind, at, Ending::none());
                self.open_call(call);
                event
            }
            EventType::Ended => {
                if let Some(old) = self.open.remove(&call.call_id)
                    && self.by_number.get(&old.number) == Some(&old.call_id)
                {
                    self.by_number.remove(&old.number);
                }
                let answered = call.answered_at.is_some() || duration.is_some_and(|d| d > 0.0);
                let outcome = outcome
                    .or(answered.then_some(Outcome::Completed))
                    .or(typed.filter(|t| t.missed).map(|_| Outcome::Missed))
                    .or(status_code.map(|code| outcome_of_status(direction, code)))
                    .unwrap_or(Outcome::Unknown);
                let status_code = status_code.or((outcome == Outcome::Completed).then_some(200));
                let ring_s = call.ringing_at.map(|r| seconds(r, call.answered_at.unwrap_or(at)));
                let talk_s = duration
                    .or(call.answered_at.map(|a| seconds(a, at)))
                    .or((outcome != Outcome::Completed).then_some(0.0));
                self.event_of(
                    call,
                    kind,
                    at,
                    Ending {
                        outcome,
                        status_code,
                        ring_s,
                        talk_s,
                    },
                )
            }
        };
        self.stats.events += 1;
        (sink.event)(event);
        Ok(())
    }

    fn open_call(&mut self, call: OpenCall) {
        if self.open.len() >= MAX_OPEN_CALLS && !self.open.contains_key(&call.call_id) {
            let oldest = self
                .open
                .values()
                .min_by(|a, b| (a.ringing_at, &a.call_id).cmp(&(b.ringing_at, &b.call_id)))
                .map(|c| (c.call_id.clone(), c.number.clone()));
            if let Some((id, number)) = oldest {
                self.open.remove(&id);
                if self.by_number.get(&number) == Some(&id) {
                    self.by_number.remove(&number);
                }
            }
        }
        self.by_number.insert(call.number.clone(), call.call_id.clone());
        self.open.insert(call.call_id.clone(), call);
    }

    fn record_row(&mut self, row: &Row<'_, '_>, sink: &mut Sink<'_>) -> Result<(), CallLogErrorKind> {
        let start = parse_time(row.required(Field::Time)?, &self.options.time_zone).ok_or_else(|| {
            row.bad(
                Field::Time,
                "is not a time (RFC 3339, YYYY-MM-DD HH:MM:SS, Unix seconds)",
            )
        })?;
        let typed = parse_direction(row.required(Field::Direction)?).ok_or_else(|| {
            row.bad(
                Field::Direction,
                "is not a call type (0, 1, 2, outgoing, incoming, missed, inbound, outbound)",
            )
        })?;
        let duration = match row.get(Field::Duration) {
            Some(text) => parse_duration(text).ok_or_else(|| row.bad(Field::Duration, "is not a duration"))?,
            None => 0.0,
        };
        let status_code = match row.get(Field::StatusCode) {
            Some(text) => Some(parse_status(text).ok_or_else(|| row.bad(Field::StatusCode, "is not a SIP status"))?),
            None => row.get(Field::Info).and_then(status_from_text),
        };
        let given_outcome = match row.get(Field::Outcome) {
            Some(text) => Some(parse_outcome(text).ok_or_else(|| row.bad(Field::Outcome, "is not an outcome"))?),
            None => None,
        };
        let number = clean_text(row.get(Field::Number).unwrap_or_default(), MAX_NUMBER_CHARS);
        let direction = typed.direction;
        let outcome = given_outcome.unwrap_or(if typed.missed {
            Outcome::Missed
        } else if duration > 0.0 {
            Outcome::Completed
        } else {
            status_code.map_or(Outcome::Unknown, |code| outcome_of_status(direction, code))
        });
        let status_code = status_code.or((outcome == Outcome::Completed).then_some(200));
        let call_id = match row.get(Field::CallId).map(|c| clean_text(c, MAX_CALL_ID_CHARS)) {
            Some(id) if !id.is_empty() => id,
            _ => synthetic_call_id(&number, start.as_second()),
        };
        let call = OpenCall {
            call_id,
            direction,
            local_number: clean_text(row.get(Field::LocalNumber).unwrap_or_default(), MAX_NUMBER_CHARS),
            name: row
                .get(Field::Name)
                .map(|n| clean_text(n, MAX_NAME_CHARS))
                .filter(|n| !n.is_empty()),
            number,
            ringing_at: Some(start),
            answered_at: None,
        };
        // The row tells when the call started and how long it was talked; the end is
        // at least that much later (the ringing time is not recorded).
        let end = start
            .checked_add(SignedDuration::from_secs_f64(duration))
            .unwrap_or(start);
        let event = self.event_of(
            call,
            EventType::Ended,
            end,
            Ending {
                outcome,
                status_code,
                ring_s: None,
                talk_s: Some(duration),
            },
        );
        self.stats.events += 1;
        (sink.event)(event);
        Ok(())
    }

    fn event(&self, call: &OpenCall, kind: EventType, at: Timestamp, ending: Ending) -> Event {
        self.event_of(call.clone(), kind, at, ending)
    }

    /// Like [`CallLogReader::event`], taking the call's strings instead of copying them.
    fn event_of(&self, call: OpenCall, kind: EventType, at: Timestamp, ending: Ending) -> Event {
        let source = SourceKind::CallLog;
        let ended = kind == EventType::Ended;
        Event {
            v: CONTRACT_VERSION,
            id: event_id(source, call.direction, &call.call_id, kind),
            kind,
            at: zoned(at, &self.options.time_zone),
            call_id: call.call_id,
            direction: call.direction,
            local_number: call.local_number,
            remote_number: call.number,
            remote_name: call.name,
            outcome: ended.then_some(ending.outcome),
            status_code: ending.status_code.filter(|_| ended),
            ended_by: None,
            ring_s: ending.ring_s.filter(|_| ended),
            talk_s: ending.talk_s.filter(|_| ended),
            source,
            source_path: self.options.source_path.clone(),
        }
    }
}

/// How a call ended, for its `ended` event.
#[derive(Debug, Clone, Copy)]
struct Ending {
    outcome: Outcome,
    status_code: Option<u16>,
    ring_s: Option<f64>,
    talk_s: Option<f64>,
}

impl Ending {
    fn none() -> Ending {
        Ending {
            outcome: Outcome::Unknown,
            status_code: None,
            ring_s: None,
            talk_s: None,
        }
    }
}

/// One data row under a resolved header.
struct Row<'a, 'b> {
    layout: &'a Layout,
    names: &'a [String],
    fields: &'a Fields<'b>,
}

/// The fields of one record: its text and where each field ends in it.
struct Fields<'a> {
    text: &'a str,
    ends: &'a [usize],
}

impl<'a> Fields<'a> {
    fn get(&self, index: usize) -> Option<&'a str> {
        let end = *self.ends.get(index)?;
        let start = match index {
            0 => 0,
            _ => *self.ends.get(index - 1)?,
        };
        self.text.get(start..end)
    }

    fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        (0..self.ends.len()).filter_map(|i| self.get(i))
    }
}

impl Row<'_, '_> {
    /// The field's value, trimmed; `None` when the column is absent, the row too short,
    /// or the value empty.
    fn get(&self, field: Field) -> Option<&str> {
        let column = self.layout.columns[field.index()]?;
        let value = self.fields.get(column)?.trim();
        (!value.is_empty()).then_some(value)
    }

    fn required(&self, field: Field) -> Result<&str, CallLogErrorKind> {
        self.get(field).ok_or_else(|| CallLogErrorKind::BadValue {
            column: self.column_name(field),
            reason: "is empty".to_owned(),
        })
    }

    fn bad(&self, field: Field, reason: &str) -> CallLogErrorKind {
        let value = self.get(field).unwrap_or_default();
        // The value is shown in the message: cleaned and short, it is caller data.
        let shown = clean_text(value, 40);
        CallLogErrorKind::BadValue {
            column: self.column_name(field),
            reason: format!("{shown:?} {reason}"),
        }
    }

    /// The column as the header names it, and the field when that differs.
    fn column_name(&self, field: Field) -> String {
        let header = self.layout.columns[field.index()]
            .and_then(|i| self.names.get(i))
            .map(|n| clean_text(n, 40))
            .unwrap_or_default();
        if normalize_name(&header) == field.name() {
            header
        } else {
            format!("{header:?} ({})", field.name())
        }
    }
}

/// The delimiter of a header line: the most frequent of `,` `;` tab outside quotes
/// (`,` when none occurs).
fn sniff_delimiter(line: &[u8]) -> u8 {
    let line = match memchr::memchr(b'\n', line) {
        Some(nl) => &line[..nl],
        None => line,
    };
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in line {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let candidates = [b',', b';', b'\t'];
    let mut best = 0;
    for i in 1..3 {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    candidates[best]
}

/// The first non-blank line of `text` once it is complete (its line ending arrived).
fn header_line(text: &[u8]) -> Option<&[u8]> {
    let mut rest = text;
    loop {
        let nl = memchr::memchr(b'\n', rest)?;
        let line = &rest[..nl];
        if line.iter().any(|b| !b.is_ascii_whitespace()) {
            return Some(line);
        }
        rest = &rest[nl + 1..];
    }
}

/// The encoding from the first bytes and the BOM's length, or `None` when more bytes
/// are needed to tell.
fn sniff_encoding(head: &[u8], last: bool) -> Option<(Encoding, usize)> {
    let utf16 = |big_endian: bool| Encoding::Utf16 {
        decoder: if big_endian {
            UTF_16BE.new_decoder_without_bom_handling()
        } else {
            UTF_16LE.new_decoder_without_bom_handling()
        },
        big_endian,
    };
    match head {
        [0xEF, 0xBB, 0xBF, ..] => Some((Encoding::Utf8, 3)),
        [0xFF, 0xFE, ..] => Some((utf16(false), 2)),
        [0xFE, 0xFF, ..] => Some((utf16(true), 2)),
        // UTF-16LE without a BOM: an ASCII letter then a zero byte.
        [a, 0, ..] if *a != 0 => Some((utf16(false), 0)),
        [0xEF] | [0xEF, 0xBB] | [0xFF] | [0xFE] | [] if !last => None,
        [_] if !last => None,
        _ => Some((Encoding::Utf8, 0)),
    }
}

/// What a direction or MicroSIP call-type value says.
#[derive(Debug, Clone, Copy)]
struct Typed {
    direction: Direction,
    /// The call was missed (type 2 `missed`, or 3 answered elsewhere).
    missed: bool,
}

fn parse_direction(text: &str) -> Option<Typed> {
    let typed = |direction, missed| Some(Typed { direction, missed });
    match text.to_ascii_lowercase().as_str() {
        "inbound" | "in" | "incoming" | "1" => typed(Direction::Inbound, false),
        "outbound" | "out" | "outgoing" | "0" => typed(Direction::Outbound, false),
        "missed" | "2" | "3" => typed(Direction::Inbound, true),
        _ => None,
    }
}

/// The event of a state row, and the direction its word implies (`incoming`,
/// `calling`).
fn parse_event(text: &str) -> Option<(EventType, Option<Direction>)> {
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

fn parse_outcome(text: &str) -> Option<Outcome> {
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
fn parse_status(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|c| (100..700).contains(c))
}

/// The outcome of a call that ended with `code` and was not seen answered.
fn outcome_of_status(direction: Direction, code: u16) -> Outcome {
    if (200..300).contains(&code) {
        Outcome::Completed
    } else {
        Outcome::unanswered(direction, code)
    }
}

/// Seconds (`12`, `12.5`) or `[HH:]MM:SS`. At most ten years.
fn parse_duration(text: &str) -> Option<f64> {
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
fn parse_time(text: &str, time_zone: &TimeZone) -> Option<Timestamp> {
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

/// [`clean_text`], without building the text char by char when it has nothing to drop
/// (nearly always). The check mirrors `clean_text`'s; a test holds them equal.
fn zoned(at: Timestamp, time_zone: &TimeZone) -> ZonedDateTime {
    at.to_zoned_datetime(time_zone.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
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
        fn cleaned_text_holds_no_controls(text in "(\\PC|[\u{0}-\u{1f}\u{7f}-\u{9f}\u{200e}\u{202a}-\u{202e}\u{2066}-\u{2069}\u{61c}])*", max in 0usize..20) {
            let cleaned = clean_text(&text, max);
            prop_assert!(cleaned.chars().count() <= max);
            let forbidden = |c: char| c.is_control() || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
            prop_assert!(!cleaned.chars().any(forbidden), "{:?}", cleaned);
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
