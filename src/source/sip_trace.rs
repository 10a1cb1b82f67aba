//! One SIP trace, bytes in, call events out: line splitter → PJSIP parser → tracker.
//!
//! Feed it chunks in file order with [`SipTraceReader::push`]; complete lines are parsed
//! at once and an unfinished last line waits for the next chunk. Errors (unreadable
//! messages, overlong lines) are handed on with their line number and do not stop the
//! reading.
//!
//! For live reading, [`SipTraceReader::checkpoint`] tells where a fresh reader must start
//! after a restart to rebuild the same state (before the oldest open call and the lines
//! that give recent lines meaning), and [`SipTraceReader::resume`] starts one there.
//! Events read a second time that way carry the same deterministic ids, so the store
//! drops them.

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::event::{Event, EventType};
use crate::parse::lines::{DEFAULT_MAX_LINE, LineSplitter};
use crate::parse::pjsip::{ResumePoint, TraceError, TraceItem, TraceParser, TraceStats};
use crate::track::open_calls::CallRows;
use crate::track::sip::{Tracker, TrackerConfig, TrackerSnapshot};

/// Reads one SIP trace; see the module docs.
#[derive(Debug)]
pub struct SipTraceReader {
    splitter: LineSplitter,
    parser: TraceParser,
    tracker: Tracker,
    events: Vec<Event>,
    calls: u64,
}

/// What a restart needs to go on reading a trace where it was left.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceCheckpoint {
    /// Where to start reading again.
    pub resume: ResumePoint,
    /// Local time of the last line read.
    pub last_time: jiff::civil::DateTime,
    pub tracker: TrackerSnapshot,
}

impl SipTraceReader {
    /// A reader for a trace whose undated lines start on `date`, from its first byte.
    pub fn new(date: Date, tracker: TrackerConfig) -> SipTraceReader {
        SipTraceReader::resume(
            ResumePoint {
                offset: 0,
                line: 1,
                date,
            },
            tracker,
            None,
        )
    }

    /// A reader starting at `start`, with the recently ended calls of `snapshot`.
    pub fn resume(start: ResumePoint, tracker: TrackerConfig, snapshot: Option<&TrackerSnapshot>) -> SipTraceReader {
        let mut tracker = Tracker::new(tracker);
        if let Some(snapshot) = snapshot {
            tracker.restore_ended(snapshot);
        }
        SipTraceReader {
            splitter: LineSplitter::new(start.offset, start.line, DEFAULT_MAX_LINE),
            parser: TraceParser::resume(start, DEFAULT_MAX_LINE),
            tracker,
            events: Vec::new(),
            calls: 0,
        }
    }

    /// Reads `chunk`, handing each event and each error it completes on.
    pub fn push(&mut self, chunk: &[u8], on_event: &mut impl FnMut(Event), on_error: &mut impl FnMut(TraceError)) {
        self.feed(
            on_event,
            on_error,
            |splitter, handle_line| splitter.push(chunk, handle_line),
            false,
        );
    }

    /// The input is complete: reads the unfinished last line and settles what waited
    /// for more input.
    pub fn finish(&mut self, on_event: &mut impl FnMut(Event), on_error: &mut impl FnMut(TraceError)) {
        self.feed(
            on_event,
            on_error,
            |splitter, handle_line| splitter.finish(handle_line),
            true,
        );
    }

    /// Runs `split` (push or finish) through parser and tracker; `last` also ends the
    /// parser's open message and settles the tracker.
    fn feed(
        &mut self,
        on_event: &mut impl FnMut(Event),
        on_error: &mut impl FnMut(TraceError),
        split: impl FnOnce(&mut LineSplitter, &mut dyn FnMut(crate::parse::lines::Line<'_>)),
        last: bool,
    ) {
        let Self {
            splitter,
            parser,
            tracker,
            events,
            ..
        } = self;
        let mut handle_item = |item| handle(item, tracker, events, on_error);
        split(splitter, &mut |line| parser.line(line, &mut handle_item));
        if last {
            parser.finish(&mut handle_item);
            tracker.finish(events);
        }
        self.drain(on_event);
    }

    /// The trace was truncated or replaced: every open call ends as `unknown`, at the
    /// time of the last line read.
    pub fn truncated(&mut self, on_event: &mut impl FnMut(Event)) {
        let now = self.parser.now();
        self.tracker.truncated(now, &mut self.events);
        self.drain(on_event);
    }

    /// The trace goes on in a new file (the old one was renamed away and read to its
    /// end): reading restarts at the new file's first byte, the calls go on.
    pub(crate) fn next_file(&mut self, date: Date) {
        let start = ResumePoint {
            offset: 0,
            line: 1,
            date,
        };
        self.splitter = LineSplitter::new(0, 1, DEFAULT_MAX_LINE);
        self.parser = TraceParser::resume(start, DEFAULT_MAX_LINE);
        // Their beginnings are in the old file: a restart can no longer read them.
        self.tracker.rebase(start);
    }

    /// Ends the open calls of an earlier run's checkpoint as `unknown`: their trace is
    /// gone (truncated or replaced while callhook was not running).
    pub(crate) fn end_lost_calls(&mut self, lost: &TraceCheckpoint, on_event: &mut impl FnMut(Event)) {
        self.tracker
            .end_lost_calls(&lost.tracker, lost.last_time, &mut self.events);
        self.drain(on_event);
    }

    /// Where a restart must begin to rebuild this reader's state, and what it keeps.
    pub(crate) fn checkpoint(&self) -> TraceCheckpoint {
        let parser = self.parser.resume_point();
        let resume = match self.tracker.resume_point() {
            Some(call) => call.min(parser),
            None => parser,
        };
        TraceCheckpoint {
            resume,
            last_time: self.parser.now(),
            tracker: self.tracker.snapshot(),
        }
    }

    /// The open calls a checkpoint taken now writes (those changed since the last one
    /// committed); [`SipTraceReader::committed`] once it is.
    pub(crate) fn call_rows(&self) -> CallRows {
        self.tracker.call_rows()
    }

    pub(crate) fn committed(&mut self) {
        self.tracker.committed();
    }

    /// Byte offset up to which input was handed to [`SipTraceReader::push`].
    pub fn read_offset(&self) -> u64 {
        self.splitter.offset() + self.splitter.pending_len()
    }

    fn drain(&mut self, on_event: &mut impl FnMut(Event)) {
        for event in self.events.drain(..) {
            if event.kind == EventType::Ringing {
                self.calls += 1;
            }
            on_event(event);
        }
    }

    /// Parser counters (lines, SIP messages, errors).
    pub fn stats(&self) -> TraceStats {
        self.parser.stats()
    }

    /// Calls started so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Calls started and not ended yet.
    pub(crate) fn open_calls(&self) -> usize {
        self.tracker.open_calls()
    }
}

fn handle(item: TraceItem, tracker: &mut Tracker, events: &mut Vec<Event>, on_error: &mut impl FnMut(TraceError)) {
    match item {
        TraceItem::Signal(signal) => tracker.signal(&signal, events),
        TraceItem::Error(error) => on_error(error),
    }
}
