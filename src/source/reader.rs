//! The reader behind a source that is appended to (SIP trace, call-log CSV), by format:
//! bytes in, events out, and what a restart needs. `follow` (live) and `replay` (whole
//! files) drive both formats the same way through this enum.

use std::fs::File;
use std::io::Read;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::call_log::{CallLogOptions, CallLogReader, CallLogState};
use super::checkpoint::Checkpoint;
use super::config::{Source, StartAt};
use super::sip_trace::{SipTraceReader, TraceCheckpoint};
use super::tail::end_of_last_line;
use crate::event::{Event, SourceKind};
use crate::parse::pjsip::ResumePoint;
use crate::track::open_calls::CallRows;
use crate::track::sip::TrackerConfig;

/// The formats of files that grow by appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    SipTrace,
    CallLog,
}

/// An appended-to source's reader.
#[derive(Debug)]
pub enum LiveReader {
    Trace(Box<SipTraceReader>),
    CallLog(Box<CallLogReader>),
}

/// What a checkpoint stores of a reader, by kind.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum LiveState {
    SipTrace(TraceCheckpoint),
    CallLog(CallLogState),
}

fn tracker_config(source: &Source) -> TrackerConfig {
    let mut tracker = TrackerConfig::new(SourceKind::SipTrace, source.path.display().to_string());
    tracker.time_zone = source.time_zone.clone();
    tracker.prefer_asserted_identity = source.prefer_asserted_identity;
    tracker
}

fn call_log_options(source: &Source) -> CallLogOptions {
    CallLogOptions {
        columns: source.columns.clone(),
        time_zone: source.time_zone.clone(),
        source_path: source.path.display().to_string(),
    }
}

/// The SIP trace reader [`LiveReader::new`] makes for `source`, unwrapped: replay
/// feeds its tracker from a parser of its own.
pub(crate) fn trace_reader(source: &Source, date: Date) -> SipTraceReader {
    SipTraceReader::new(date, tracker_config(source))
}

impl LiveReader {
    /// A reader for `source` from the file's first byte; undated trace lines start on
    /// `date`.
    pub fn new(format: Appended, source: &Source, date: Date) -> LiveReader {
        match format {
            Appended::SipTrace => LiveReader::Trace(Box::new(trace_reader(source, date))),
            Appended::CallLog => LiveReader::CallLog(Box::new(CallLogReader::new(call_log_options(source)))),
        }
    }

    /// A reader going on from a stored state, and the offset to read from; `None` when
    /// the state is unreadable or of another kind.
    pub fn resume(format: Appended, source: &Source, state: &str) -> Option<(LiveReader, u64)> {
        match (format, serde_json::from_str::<LiveState>(state).ok()?) {
            (Appended::SipTrace, LiveState::SipTrace(state)) => {
                let reader = SipTraceReader::resume(state.resume, tracker_config(source), Some(&state.tracker));
                Some((LiveReader::Trace(Box::new(reader)), state.resume.offset))
            }
            (Appended::CallLog, LiveState::CallLog(state)) => {
                let reader = CallLogReader::resume(call_log_options(source), &state);
                Some((LiveReader::CallLog(Box::new(reader)), state.position.byte))
            }
            _ => None,
        }
    }

    /// A reader for a file seen for the first time, and the offset to read from: its
    /// start, or with `start_at: end` past what it holds already (a call log's header
    /// is read first, its rows skipped).
    pub(crate) fn first_time(format: Appended, source: &Source, file: &mut File, date: Date) -> (LiveReader, u64) {
        if source.start_at == StartAt::Beginning {
            return (LiveReader::new(format, source, date), 0);
        }
        match format {
            Appended::SipTrace => {
                let (offset, line) = end_of_last_line(file).unwrap_or((0, 1));
                let start = ResumePoint { offset, line, date };
                (
                    LiveReader::Trace(Box::new(SipTraceReader::resume(start, tracker_config(source), None))),
                    offset,
                )
            }
            Appended::CallLog => {
                let mut reader = CallLogReader::new(call_log_options(source));
                let mut buffer = vec![0u8; 256 * 1024];
                loop {
                    match file.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        // Old rows: read for the header and the position, not reported.
                        Ok(n) => reader.push(&buffer[..n], |_| {}, |_| {}),
                    }
                }
                let offset = reader.position().byte;
                (LiveReader::CallLog(Box::new(reader)), offset)
            }
        }
    }

    /// Reads `chunk`; errors go to `on_error` as (line, message).
    pub fn push(&mut self, chunk: &[u8], on_event: &mut impl FnMut(Event), on_error: &mut impl FnMut(u64, String)) {
        match self {
            LiveReader::Trace(reader) => reader.push(chunk, on_event, &mut |e| on_error(e.line, e.kind.to_string())),
            LiveReader::CallLog(reader) => reader.push(chunk, &mut *on_event, |e| on_error(e.line, e.kind.to_string())),
        }
    }

    /// The input is complete (a replayed file): reads an unfinished last line or
    /// record and settles what waited for more input.
    pub fn finish(&mut self, on_event: &mut impl FnMut(Event), on_error: &mut impl FnMut(u64, String)) {
        match self {
            LiveReader::Trace(reader) => reader.finish(on_event, &mut |e| on_error(e.line, e.kind.to_string())),
            LiveReader::CallLog(reader) => reader.finish(&mut *on_event, |e| on_error(e.line, e.kind.to_string())),
        }
    }

    /// Whether the input so far is readable as this format: a call log's header was
    /// accepted (a trace has no header).
    pub(crate) fn has_header(&self) -> bool {
        match self {
            LiveReader::Trace(_) => true,
            LiveReader::CallLog(reader) => reader.row_kind().is_some(),
        }
    }

    /// Lines (trace) or rows (call log) read so far.
    pub fn lines(&self) -> u64 {
        match self {
            LiveReader::Trace(reader) => reader.stats().lines,
            LiveReader::CallLog(reader) => reader.stats().rows,
        }
    }

    /// The file was truncated or replaced: open calls end as `unknown`; reading starts
    /// again at its first byte.
    pub fn truncated(&mut self, format: Appended, source: &Source, date: Date, on_event: &mut impl FnMut(Event)) {
        match self {
            LiveReader::Trace(reader) => reader.truncated(on_event),
            LiveReader::CallLog(reader) => reader.end_open_calls(jiff::Timestamp::now(), &mut *on_event),
        }
        *self = LiveReader::new(format, source, date);
    }

    /// The source goes on in a new file (rotation): from its first byte, calls go on.
    pub(crate) fn next_file(&mut self, date: Date) {
        match self {
            LiveReader::Trace(reader) => reader.next_file(date),
            LiveReader::CallLog(reader) => reader.reset(),
        }
    }

    /// Ends the open calls of an earlier run's checkpoint (its file is gone).
    pub(crate) fn end_lost_calls(source: &Source, checkpoint: &Checkpoint, on_event: &mut impl FnMut(Event)) {
        match serde_json::from_str::<LiveState>(&checkpoint.state) {
            Ok(LiveState::SipTrace(mut lost)) => {
                let rows = checkpoint.rows.rows.iter().filter_map(|(_, row)| row.as_deref());
                lost.tracker = lost.tracker.with_open_calls(rows);
                let mut reader = SipTraceReader::new(lost.resume.date, tracker_config(source));
                reader.end_lost_calls(&lost, on_event);
            }
            Ok(LiveState::CallLog(lost)) => {
                let mut reader = CallLogReader::resume(call_log_options(source), &lost);
                reader.end_open_calls(jiff::Timestamp::now(), &mut *on_event);
            }
            Err(_) => {}
        }
    }

    /// Where a restart begins reading, and the state to store with it (its open calls
    /// as rows: [`LiveReader::committed`] once they are stored).
    pub(crate) fn checkpoint(&self) -> (u64, String, CallRows) {
        let state = match self {
            LiveReader::Trace(reader) => LiveState::SipTrace(reader.checkpoint()),
            LiveReader::CallLog(reader) => LiveState::CallLog(reader.state()),
        };
        let offset = match &state {
            LiveState::SipTrace(checkpoint) => checkpoint.resume.offset,
            LiveState::CallLog(state) => state.position.byte,
        };
        let rows = match self {
            LiveReader::Trace(reader) => reader.call_rows(),
            LiveReader::CallLog(_) => CallRows::default(),
        };
        (
            offset,
            serde_json::to_string(&state).expect("reader state serializes"),
            rows,
        )
    }

    /// The checkpoint last taken was stored.
    pub(crate) fn committed(&mut self) {
        if let LiveReader::Trace(reader) = self {
            reader.committed();
        }
    }

    pub(crate) fn open_calls(&self) -> usize {
        match self {
            LiveReader::Trace(reader) => reader.open_calls(),
            LiveReader::CallLog(reader) => reader.open_calls(),
        }
    }
}
