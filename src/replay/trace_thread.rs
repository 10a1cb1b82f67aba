//! A SIP trace replayed on two cores. The calling thread reads the file in chunks (2 MiB,
//! on a huge page where Linux gives one: [`super::chunk`]) and tracks calls; a second
//! thread splits each chunk into lines and parses them ([`TraceParsing`]), handing the
//! items back. The parser's state runs through the
//! whole file in order (dates roll over, object bindings live long), so the file is not
//! cut in parts: the two halves of the one sequential reader run side by side instead,
//! a few chunks apart. Chunk buffers and item lists go back and forth and are reused,
//! so memory stays at a few chunks whatever the file's size. The reading side also
//! finds each chunk's line feeds (the bytes are in its cache, just copied) and builds
//! the SIP messages' structs from the header values the parser scanned and bound to
//! their calls ([`crate::parse::pjsip::ScannedMessage`]), which leaves the parser less
//! to do: the two threads are about equally busy.
//!
//! The result is the one reader's, item for item: the tracker sees the parser's items
//! in file order, chunk after chunk. Only replay reads this way; a live source parses
//! and tracks each append at once on its own thread (no batch to wait for).

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

use crate::event::Event;
use crate::parse::pjsip::{TraceError, TraceItem};
use crate::source::sip_trace::{SipTraceReader, TraceParsing};

use crate::parse::lines::find_line_feeds;

use super::chunk::Chunk;

/// Chunks handed to the parser and not yet back: one being read, one being parsed, one
/// being tracked.
const IN_FLIGHT: usize = 3;

/// A chunk for the parser, with the item list it made of an earlier one: the parser
/// empties it (the thread that allocated the items frees them) and fills it again.
struct Work {
    chunk: Chunk,
    /// Where `chunk`'s line feeds are, in order (a chunk is at most 2 MiB long).
    feeds: Vec<u32>,
    items: Vec<TraceItem>,
    /// The scanned messages' header values of an earlier chunk's items, for reuse.
    messages: Vec<u8>,
}

/// What the parser made of a chunk.
struct Parsed {
    items: Vec<TraceItem>,
    /// The header values of the scanned SIP messages among `items`.
    messages: Vec<u8>,
    /// The chunk, back for reuse; `None` once the input ended and the parser finished.
    chunk: Option<Chunk>,
    feeds: Vec<u32>,
    /// Lines parsed so far.
    lines: u64,
}

/// One SIP trace read by two threads; see the module docs.
pub(super) struct TraceThread {
    /// The input after the first bytes, read straight into the chunks (no buffer
    /// between).
    input: Box<dyn Read>,
    tracking: Box<SipTraceReader>,
    /// `None` once the input ended (dropping it tells the parser to finish).
    to_parser: Option<SyncSender<Work>>,
    from_parser: Receiver<Parsed>,
    spare: Vec<Work>,
    in_flight: usize,
    lines: u64,
}

impl TraceThread {
    /// Starts the parser thread for `input`; `tracking` tracks what it parses.
    pub(super) fn start(
        input: Box<dyn Read>,
        parsing: TraceParsing,
        tracking: SipTraceReader,
    ) -> io::Result<TraceThread> {
        let (to_parser, work) = sync_channel(IN_FLIGHT);
        let (done, from_parser) = sync_channel(IN_FLIGHT + 1);
        thread::Builder::new()
            .name("trace parser".to_owned())
            .spawn(move || parse(parsing, work, done))?;
        Ok(TraceThread {
            input,
            tracking: Box::new(tracking),
            to_parser: Some(to_parser),
            from_parser,
            spare: Vec::new(),
            in_flight: 0,
            lines: 0,
        })
    }

    /// Lines parsed so far.
    pub(super) fn lines(&self) -> u64 {
        self.lines
    }

    /// Reads on (counting the bytes in `bytes`) until the parser has enough chunks,
    /// then tracks the oldest chunk's items. `true` once the input is read and tracked
    /// to its end.
    pub(super) fn read_more(
        &mut self,
        bytes: &mut u64,
        on_event: &mut impl FnMut(Event),
        on_error: &mut impl FnMut(TraceError),
    ) -> io::Result<bool> {
        while self.in_flight < IN_FLIGHT
            && let Some(to_parser) = &self.to_parser
        {
            let mut work = self.spare.pop().unwrap_or_else(|| Work {
                chunk: Chunk::new(),
                feeds: Vec::new(),
                items: Vec::new(),
                messages: Vec::new(),
            });
            work.chunk.read_from(self.input.as_mut())?;
            work.feeds.clear();
            // At most 2 MiB: every index fits.
            find_line_feeds(work.chunk.bytes(), &mut work.feeds);
            *bytes += work.chunk.bytes().len() as u64;
            if work.chunk.bytes().is_empty() {
                // The parser finishes and sends its last items.
                self.to_parser = None;
            } else if to_parser.send(work).is_err() {
                return Err(stopped());
            }
            self.in_flight += 1;
        }
        let Parsed {
            items,
            messages,
            chunk,
            feeds,
            lines,
        } = self.from_parser.recv().map_err(|_| stopped())?;
        self.in_flight -= 1;
        self.lines = lines;
        self.tracking.track(&items, &messages, on_event, on_error);
        match chunk {
            Some(chunk) => {
                self.spare.push(Work {
                    chunk,
                    feeds,
                    items,
                    messages,
                });
                Ok(false)
            }
            None => {
                self.tracking.finish_tracking(on_event);
                Ok(true)
            }
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("the trace parser thread stopped")
}

/// The parser thread: parses each chunk it is given, in order, and finishes when the
/// input ends. Stops when the reading side is gone.
fn parse(mut parsing: TraceParsing, work: Receiver<Work>, done: SyncSender<Parsed>) {
    for Work {
        chunk,
        feeds,
        mut items,
        messages,
    } in work.iter()
    {
        items.clear();
        let at = feeds.iter().map(|&at| at as usize);
        parsing.push_split(chunk.bytes(), at, &mut |item| items.push(item));
        let parsed = Parsed {
            items,
            messages: parsing.take_message_bytes(messages),
            chunk: Some(chunk),
            feeds,
            lines: parsing.stats().lines,
        };
        if done.send(parsed).is_err() {
            return;
        }
    }
    let mut items = Vec::new();
    parsing.finish(&mut |item| items.push(item));
    let lines = parsing.stats().lines;
    let _ = done.send(Parsed {
        items,
        messages: parsing.take_message_bytes(Vec::new()),
        chunk: None,
        feeds: Vec::new(),
        lines,
    });
}
