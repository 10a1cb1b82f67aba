//! One SIP trace, bytes in, call events out: line splitter → PJSIP parser → tracker.
//!
//! Feed it chunks in file order with [`SipTraceReader::push`]; complete lines are parsed
//! at once and an unfinished last line waits for the next chunk. Errors (unreadable
//! messages, overlong lines) are handed on with their line number and do not stop the
//! reading.

use jiff::civil::Date;

use crate::event::Event;
use crate::parse::lines::{DEFAULT_MAX_LINE, LineSplitter};
use crate::parse::pjsip::{TraceError, TraceItem, TraceParser, TraceStats};
use crate::track::{Tracker, TrackerConfig};

/// Reads one SIP trace; see the module docs.
#[derive(Debug)]
pub struct SipTraceReader {
    splitter: LineSplitter,
    parser: TraceParser,
    tracker: Tracker,
    events: Vec<Event>,
    calls: u64,
}

impl SipTraceReader {
    /// A reader for a trace whose undated lines start on `date`.
    pub fn new(date: Date, tracker: TrackerConfig) -> SipTraceReader {
        SipTraceReader {
            splitter: LineSplitter::new(0, 1, DEFAULT_MAX_LINE),
            parser: TraceParser::new(date, DEFAULT_MAX_LINE),
            tracker: Tracker::new(tracker),
            events: Vec::new(),
            calls: 0,
        }
    }

    /// Reads `chunk`, handing each event and each error it completes on.
    pub fn push(&mut self, chunk: &[u8], on_event: &mut impl FnMut(Event), on_error: &mut impl FnMut(TraceError)) {
        let Self {
            splitter,
            parser,
            tracker,
            events,
            ..
        } = self;
        let mut handle = |item: TraceItem| match item {
            TraceItem::Signal(signal) => tracker.signal(&signal, events),
            TraceItem::Error(error) => on_error(error),
        };
        splitter.push(chunk, |line| parser.line(line, &mut handle));
        self.drain(on_event);
    }

    /// The input is complete: reads the unfinished last line and settles what waited
    /// for more input.
    pub fn finish(&mut self, on_event: &mut impl FnMut(Event), on_error: &mut impl FnMut(TraceError)) {
        let Self {
            splitter,
            parser,
            tracker,
            events,
            ..
        } = self;
        let mut handle = |item: TraceItem| match item {
            TraceItem::Signal(signal) => tracker.signal(&signal, events),
            TraceItem::Error(error) => on_error(error),
        };
        splitter.finish(|line| parser.line(line, &mut handle));
        parser.finish(&mut handle);
        tracker.finish(events);
        self.drain(on_event);
    }

    fn drain(&mut self, on_event: &mut impl FnMut(Event)) {
        for event in self.events.drain(..) {
            if event.kind == crate::event::EventType::Ringing {
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
    pub fn open_calls(&self) -> usize {
        self.tracker.open_calls()
    }
}
