//! One SIP trace, bytes in, call events out: line splitter → PJSIP parser → tracker.
//!
//! Feed it chunks in file order with [`SipTraceReader::push`]; complete lines are parsed
//! at once and an unfinished last line waits for the next chunk. Errors (unreadable
//! messages, overlong lines) are handed on with their line number and do not stop the
//! reading.
//!
//! Replay parses on a thread of its own: [`TraceParsing`] is the first half (lines to
//! items) alone, and [`SipTraceReader::track`] takes the items it made.
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
use crate::parse::pjsip::{
    ResumePoint, ScannedMessage, TraceError, TraceErrorKind, TraceItem, TraceParser, TraceStats,
};
use crate::parse::sip::SipError;
use crate::track::open_calls::CallRows;
use crate::track::sip::{Tracker, TrackerConfig, TrackerSnapshot};

/// Reads one SIP trace; see the module docs.
#[derive(Debug)]
pub struct SipTraceReader {
    parsing: TraceParsing,
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
            parsing: TraceParsing::resume(start),
            tracker,
            events: Vec::new(),
            calls: 0,
        }
    }

    /// Reads `chunk`, handing each event and each error it completes on.
    pub fn push(&mut self, chunk: &[u8], on_event: &mut impl FnMut(Event), on_error: &mut impl FnMut(TraceError)) {
        let Self {
            parsing,
            tracker,
            events,
            ..
        } = self;
        parsing.push(chunk, &mut |item| handle(item, tracker, events, on_error));
        self.drain(on_event);
    }

    /// The input is complete: reads the unfinished last line and settles what waited
    /// for more input.
    pub fn finish(&mut self, on_event: &mut impl FnMut(Event), on_error: &mut impl FnMut(TraceError)) {
        let Self {
            parsing,
            tracker,
            events,
            ..
        } = self;
        parsing.finish(&mut |item| handle(item, tracker, events, on_error));
        self.finish_tracking(on_event);
    }

    /// Tracks `items` a [`TraceParsing`] of this trace made (elsewhere, in file order),
    /// handing each event and each error they complete on. This reader's own parser
    /// stays unused. The items are only borrowed: replay frees them on the thread that
    /// made them, where the allocator is quickest (freed on this thread, they made the
    /// two threads contend for the parser's malloc arena: 6 % of a profile in futex
    /// calls).
    ///
    /// `message_bytes` holds the header values of the items' scanned SIP messages
    /// ([`TraceParsing::take_message_bytes`]): the messages are built here, so their
    /// strings are made and freed on this thread.
    pub fn track(
        &mut self,
        items: &[TraceItem],
        message_bytes: &[u8],
        on_event: &mut impl FnMut(Event),
        on_error: &mut impl FnMut(TraceError),
    ) {
        for item in items {
            match item {
                TraceItem::Signal(signal) => self.tracker.signal(signal, &mut self.events),
                TraceItem::Scanned(scanned) => {
                    track_scanned(scanned, message_bytes, &mut self.tracker, &mut self.events, on_error)
                }
                TraceItem::Error(error) => on_error(error.clone()),
            }
        }
        self.drain(on_event);
    }

    /// The items handed to [`SipTraceReader::track`] are all there were: settles what
    /// waited for more input.
    pub fn finish_tracking(&mut self, on_event: &mut impl FnMut(Event)) {
        self.tracker.finish(&mut self.events);
        self.drain(on_event);
    }

    /// The trace was truncated or replaced: every open call ends as `unknown`, at the
    /// time of the last line read.
    pub fn truncated(&mut self, on_event: &mut impl FnMut(Event)) {
        let now = self.parsing.parser.now();
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
        self.parsing = TraceParsing::resume(start);
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
        let parser = self.parsing.parser.resume_point();
        let resume = match self.tracker.resume_point() {
            Some(call) => call.min(parser),
            None => parser,
        };
        TraceCheckpoint {
            resume,
            last_time: self.parsing.parser.now(),
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
        self.parsing.splitter.offset() + self.parsing.splitter.pending_len()
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
        self.parsing.stats()
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
        // This reader's parser builds messages at once: none comes scanned only (and
        // without its values one would be reported as unreadable).
        TraceItem::Scanned(scanned) => track_scanned(&scanned, &[], tracker, events, on_error),
        TraceItem::Error(error) => on_error(error),
    }
}

/// Builds a scanned SIP message from its values in `message_bytes` and tracks it.
fn track_scanned(
    scanned: &ScannedMessage,
    message_bytes: &[u8],
    tracker: &mut Tracker,
    events: &mut Vec<Event>,
    on_error: &mut impl FnMut(TraceError),
) {
    match scanned.message.values(message_bytes) {
        Some(message) => tracker.sip_message(scanned.flow, message, scanned.at, scanned.resume, events),
        None => on_error(TraceError {
            line: scanned.line,
            kind: TraceErrorKind::BadSipMessage(SipError::Empty),
        }),
    }
}

/// The first half of a trace reader: bytes in, [`TraceItem`]s out (line splitter and
/// PJSIP parser), no tracking. Replay runs it on a thread of its own.
#[derive(Debug)]
pub struct TraceParsing {
    splitter: LineSplitter,
    parser: TraceParser,
}

impl TraceParsing {
    /// Parsing of a trace whose undated lines start on `date`, from its first byte, for
    /// a tracker on another thread: SIP messages come as [`TraceItem::Scanned`], their
    /// header values in [`TraceParsing::take_message_bytes`].
    pub fn new(date: Date) -> TraceParsing {
        let mut parsing = TraceParsing::resume(ResumePoint {
            offset: 0,
            line: 1,
            date,
        });
        parsing.parser.defer_messages();
        parsing
    }

    /// The header values of the scanned messages among the items made since the last
    /// call; `spare`, emptied, collects the next ones.
    pub fn take_message_bytes(&mut self, spare: Vec<u8>) -> Vec<u8> {
        self.parser.take_message_bytes(spare)
    }

    fn resume(start: ResumePoint) -> TraceParsing {
        TraceParsing {
            splitter: LineSplitter::new(start.offset, start.line, DEFAULT_MAX_LINE),
            parser: TraceParser::resume(start, DEFAULT_MAX_LINE),
        }
    }

    /// Reads `chunk`, handing on each item its complete lines make.
    pub fn push(&mut self, chunk: &[u8], out: &mut impl FnMut(TraceItem)) {
        let Self { splitter, parser } = self;
        splitter.push(chunk, |line| parser.line(line, out));
    }

    /// [`TraceParsing::push`] with the positions of `chunk`'s line feeds found already
    /// (see [`LineSplitter::push_split`]).
    pub fn push_split(
        &mut self,
        chunk: &[u8],
        feeds: impl IntoIterator<Item = usize>,
        out: &mut impl FnMut(TraceItem),
    ) {
        let Self { splitter, parser } = self;
        splitter.push_split(chunk, feeds, |line| parser.line(line, out));
    }

    /// The input is complete: reads the unfinished last line and ends the open message.
    pub fn finish(&mut self, out: &mut impl FnMut(TraceItem)) {
        let Self { splitter, parser } = self;
        splitter.finish(|line| parser.line(line, out));
        parser.finish(out);
    }

    /// Parser counters (lines, SIP messages, errors).
    pub fn stats(&self) -> TraceStats {
        self.parser.stats()
    }
}
