//! Record framing of a call-log file: decoded text in, complete CSV records out, each
//! with the position of its first byte in the file.
//!
//! csv-core does the RFC 4180 work (quotes, delimiters and line endings inside quoted
//! fields, CRLF or LF). A record is handed on once its closing line ending arrived; an
//! unfinished one waits in csv-core's state for more text. Blank lines between records
//! are skipped. A record longer than [`MAX_RECORD_BYTES`] or with more than
//! [`MAX_FIELDS`] fields is reported and skipped up to the next line ending, so an
//! unbalanced quote cannot make the reader keep the rest of the file.
//!
//! Positions are counted here: bytes as stored in the file (see [`StoredUnits`]) and
//! line endings, from the end of the last record the caller said it handled (the
//! checkpoint).

use std::borrow::Cow;

use csv_core::{ReadRecordResult, ReaderBuilder, Terminator};

use super::decode::StoredUnits;
use super::{CallLogErrorKind, Position};

/// Longest record kept, in bytes of UTF-8; a longer one (typically an unbalanced quote)
/// is reported and skipped up to the next line ending.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Most fields a record may have.
pub const MAX_FIELDS: usize = 1024;

/// The fields of one record: its text and where each field ends in it.
pub(crate) struct Fields<'a> {
    text: Cow<'a, str>,
    ends: Cow<'a, [usize]>,
}

impl Fields<'_> {
    /// Field `index`, untrimmed; `None` past the last field.
    pub(crate) fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)?;
        let start = match index {
            0 => 0,
            _ => *self.ends.get(index - 1)?,
        };
        self.text.get(start..end)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.ends.len()).filter_map(|i| self.get(i))
    }
}

/// What framing hands on.
pub(crate) enum Framed<'a> {
    /// A complete record and where it starts; tell [`Records::handled`] once it is.
    Record(Fields<'a>, Position),
    /// A record that was skipped, why, and where it starts.
    Skipped(CallLogErrorKind, Position),
}

/// Frames decoded text into records; see the module docs.
#[derive(Debug)]
pub(crate) struct Records {
    /// `None` until the delimiter is known.
    csv: Option<csv_core::Reader>,
    delimiter: u8,
    units: StoredUnits,
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
}

impl Records {
    /// Framing from the file's first byte; it starts once [`Records::start`] gives the
    /// delimiter.
    pub(crate) fn new() -> Records {
        Records::resume(Position { byte: 0, line: 1 }, StoredUnits::Bytes)
    }

    /// Framing going on at `position` (the end of a record) in text stored as `units`.
    pub(crate) fn resume(position: Position, units: StoredUnits) -> Records {
        Records {
            csv: None,
            delimiter: b',',
            units,
            record: vec![0; 4096],
            ends: vec![0; 32],
            record_len: 0,
            field_count: 0,
            in_record: false,
            skipping: false,
            committed: position,
            pending_bytes: 0,
            pending_lines: 0,
            record_start: position,
        }
    }

    /// Starts (or restarts) csv-core with `delimiter`.
    pub(crate) fn start(&mut self, delimiter: u8) {
        self.delimiter = delimiter;
        self.csv = Some(
            ReaderBuilder::new()
                .delimiter(delimiter)
                .terminator(Terminator::CRLF)
                .build(),
        );
    }

    pub(crate) fn started(&self) -> bool {
        self.csv.is_some()
    }

    pub(crate) fn delimiter(&self) -> u8 {
        self.delimiter
    }

    /// How text handed in from now on is stored in the file.
    pub(crate) fn set_units(&mut self, units: StoredUnits) {
        self.units = units;
    }

    /// Counts `bytes` of the file that are no text (a byte order mark).
    pub(crate) fn skip_stored(&mut self, bytes: u64) {
        self.pending_bytes += bytes;
    }

    /// End of the last record handled and of blank lines after it (while `commit` was
    /// allowed): the checkpoint.
    pub(crate) fn position(&self) -> Position {
        self.committed
    }

    fn consumed(&mut self, text: &[u8]) {
        self.pending_bytes += self.units.stored_len(text);
        self.pending_lines += memchr::memchr_iter(b'\n', text).count() as u64;
    }

    fn here(&self) -> Position {
        Position {
            byte: self.committed.byte + self.pending_bytes,
            line: self.committed.line + self.pending_lines,
        }
    }

    /// Moves the checkpoint here when `allowed` (the caller holds it back before a
    /// header: a restart must read the header anyway).
    fn commit(&mut self, allowed: bool) {
        if allowed {
            self.committed = self.here();
            self.pending_bytes = 0;
            self.pending_lines = 0;
        }
    }

    /// The record handed on last was handled: the checkpoint moves past it if `commit`.
    pub(crate) fn handled(&mut self, commit: bool) {
        self.record_len = 0;
        self.field_count = 0;
        self.in_record = false;
        self.commit(commit);
    }

    /// Frames `input`, advancing it past what was consumed: the next complete record or
    /// skipped one, or `None` once `input` is used up (an unfinished record waits).
    /// `commit` allows blank lines and skipped bytes to move the checkpoint.
    pub(crate) fn next(&mut self, input: &mut &[u8], commit: bool) -> Option<Framed<'_>> {
        loop {
            if self.skipping {
                let Some(nl) = memchr::memchr(b'\n', input) else {
                    self.consumed(input);
                    *input = &[];
                    return None;
                };
                self.consumed(&input[..=nl]);
                *input = &input[nl + 1..];
                self.skipping = false;
                self.commit(commit);
            }
            if !self.in_record {
                let blank = input.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                if blank > 0 {
                    self.consumed(&input[..blank]);
                    *input = &input[blank..];
                    self.commit(commit);
                }
                if input.is_empty() {
                    return None;
                }
                self.in_record = true;
                self.record_start = self.here();
            }
            // An empty input means "end of data" to csv_core: only `finish` says that.
            if input.is_empty() {
                return None;
            }
            let csv = self.csv.as_mut()?;
            let (result, nin, nout, nend) = csv.read_record(
                input,
                &mut self.record[self.record_len..],
                &mut self.ends[self.field_count..],
            );
            let (used, rest) = input.split_at(nin.min(input.len()));
            *input = rest;
            self.consumed(used);
            self.record_len += nout;
            self.field_count += nend;
            match result {
                ReadRecordResult::InputEmpty | ReadRecordResult::End => return None,
                ReadRecordResult::OutputFull if self.record.len() >= MAX_RECORD_BYTES => {
                    return Some(self.skip(CallLogErrorKind::RecordTooLong));
                }
                ReadRecordResult::OutputFull => {
                    let len = (self.record.len() * 2).min(MAX_RECORD_BYTES);
                    self.record.resize(len, 0);
                }
                ReadRecordResult::OutputEndsFull if self.ends.len() >= MAX_FIELDS => {
                    return Some(self.skip(CallLogErrorKind::TooManyFields));
                }
                ReadRecordResult::OutputEndsFull => {
                    let len = (self.ends.len() * 2).min(MAX_FIELDS);
                    self.ends.resize(len, 0);
                }
                ReadRecordResult::Record => return Some(Framed::Record(self.fields(), self.record_start)),
            }
        }
    }

    /// The input is complete: the record still open, ended where the input ends. The
    /// framing goes on afterwards as if the record had ended there.
    pub(crate) fn finish(&mut self) -> Option<Framed<'_>> {
        if !self.in_record {
            return None;
        }
        let mut csv = self.csv.take()?;
        // An empty input tells csv_core the data ended: the open record is complete.
        let complete = loop {
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
                ReadRecordResult::Record => break true,
                _ => break false,
            }
        };
        // csv_core has seen its end of data; a fresh one goes on after it.
        self.start(self.delimiter);
        if complete {
            return Some(Framed::Record(self.fields(), self.record_start));
        }
        let at = self.record_start;
        self.drop_record();
        Some(Framed::Skipped(CallLogErrorKind::TooManyFields, at))
    }

    /// Gives up the record being read and skips to the next line ending.
    fn skip(&mut self, kind: CallLogErrorKind) -> Framed<'static> {
        let at = self.record_start;
        self.drop_record();
        // csv-core may be inside a quoted field: a fresh one starts after the skip.
        self.start(self.delimiter);
        self.skipping = true;
        Framed::Skipped(kind, at)
    }

    fn drop_record(&mut self) {
        self.record_len = 0;
        self.field_count = 0;
        self.in_record = false;
    }

    /// The complete record in `record`/`ends`.
    fn fields(&self) -> Fields<'_> {
        let ends = self.ends.get(..self.field_count).unwrap_or_default();
        let bytes = self.record.get(..ends.last().copied().unwrap_or(0)).unwrap_or_default();
        match std::str::from_utf8(bytes) {
            Ok(text) if ends.iter().all(|&e| text.is_char_boundary(e)) => Fields {
                text: Cow::Borrowed(text),
                ends: Cow::Borrowed(ends),
            },
            _ => {
                // Not UTF-8 (a legacy code page): each field with U+FFFD for what
                // cannot be read.
                let mut text = String::new();
                let mut lossy_ends = Vec::with_capacity(ends.len());
                let mut start = 0;
                for &end in ends {
                    text.push_str(&String::from_utf8_lossy(bytes.get(start..end).unwrap_or_default()));
                    lossy_ends.push(text.len());
                    start = end;
                }
                Fields {
                    text: Cow::Owned(text),
                    ends: Cow::Owned(lossy_ends),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record framed from `chunks` (then the end of input): its fields, or the
    /// error, with where it starts; and the checkpoint at the end.
    fn frame(chunks: &[&str]) -> (Vec<(String, Position)>, Position) {
        let mut records = Records::new();
        records.start(b',');
        let mut out = Vec::new();
        let mut note = |framed: Framed<'_>| match framed {
            Framed::Record(fields, at) => {
                out.push((fields.iter().collect::<Vec<_>>().join("|"), at));
                true
            }
            Framed::Skipped(kind, at) => {
                out.push((format!("{kind:?}"), at));
                false
            }
        };
        for chunk in chunks {
            let mut input = chunk.as_bytes();
            while let Some(framed) = records.next(&mut input, true) {
                if note(framed) {
                    records.handled(true);
                }
            }
        }
        if let Some(framed) = records.finish()
            && note(framed)
        {
            records.handled(true);
        }
        (out, records.position())
    }

    #[test]
    fn records_wait_for_their_line_ending_and_carry_their_start() {
        let (records, end) = frame(&["a,b\r\n\r\n\"x\n", "y\",z\nlast"]);
        assert_eq!(
            records,
            [
                ("a|b".to_owned(), Position { byte: 0, line: 1 }),
                ("x\ny|z".to_owned(), Position { byte: 7, line: 3 }),
                ("last".to_owned(), Position { byte: 15, line: 5 }),
            ]
        );
        assert_eq!(end, Position { byte: 19, line: 5 });
    }

    #[test]
    fn an_overlong_record_is_skipped_to_the_next_line() {
        let long = format!("\"{}\n", "x".repeat(MAX_RECORD_BYTES));
        let (records, _) = frame(&["a\n", &long, "b\n"]);
        let got: Vec<&str> = records.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(got, ["a", "RecordTooLong", "b"]);
        assert_eq!(records[1].1, Position { byte: 2, line: 2 });
        let wide = format!("{}\nc\n", ",".repeat(MAX_FIELDS));
        let (records, _) = frame(&[&wide]);
        let got: Vec<&str> = records.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(got, ["TooManyFields", "c"]);
    }

    #[test]
    fn fields_not_in_utf8_are_read_lossily() {
        let mut records = Records::new();
        records.start(b',');
        let mut input: &[u8] = b"M\xFCller,5\n";
        let Some(Framed::Record(fields, _)) = records.next(&mut input, true) else {
            panic!("a record");
        };
        assert_eq!(fields.get(0), Some("M\u{FFFD}ller"));
        assert_eq!(fields.get(1), Some("5"));
        assert_eq!(fields.get(2), None);
    }
}
