//! A SIP trace replayed on two cores, in three stages on three threads: a reading
//! thread reads the file in chunks and finds their line feeds, a parsing thread splits
//! each chunk into lines and parses them ([`TraceParsing`]), and the calling thread
//! tracks what the parser made, building its SIP messages' structs (the parser hands
//! them on bound to their calls, as the values of the headers the tracker reads). The parser's state
//! runs through the whole file in order (dates roll over, object bindings live long),
//! so the file is not cut in parts: the stages of the one sequential reader run side by
//! side instead, a few chunks apart, and the system spreads the three over the cores
//! (with two stages, the one that also read the file was the bottleneck once messages
//! were read on it). Chunk buffers and item lists go round and are reused, so memory
//! stays at a few chunks whatever the file's size.
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

use super::input::CHUNK;

/// Chunks on their way round: one being read, one being parsed, one being tracked, and
/// one waiting between two stages so that no stage waits for the next to take its
/// chunk.
const IN_FLIGHT: usize = 4;

/// A chunk and its line feeds for the parser, with the item list and message bytes it
/// made of an earlier one: the parser empties them (the thread that allocated the items
/// frees them) and fills them again.
struct Work {
    chunk: Vec<u8>,
    /// Where `chunk`'s line feeds are, in order (a chunk is at most [`CHUNK`] long).
    feeds: Vec<u32>,
    items: Vec<TraceItem>,
    /// The header values of the SIP messages among `items`, for the tracker to build
    /// the messages from.
    messages: Vec<u8>,
}

/// What the parser made of a chunk; `chunk` is `None` once the input ended and the
/// parser finished (its last items, with no chunk to hand back).
struct Parsed {
    work: Work,
    chunk: Option<usize>,
    /// Lines parsed so far.
    lines: u64,
}

/// One SIP trace read by three threads; see the module docs.
pub(super) struct TraceThread {
    tracking: Box<SipTraceReader>,
    from_parser: Receiver<io::Result<Parsed>>,
    /// Chunks tracked, back to the reading thread.
    to_reader: SyncSender<Work>,
    lines: u64,
}

impl TraceThread {
    /// Starts the reading and parsing threads for `input`; `tracking` tracks what the
    /// parser makes.
    pub(super) fn start(
        input: Box<dyn Read + Send>,
        parsing: TraceParsing,
        tracking: SipTraceReader,
    ) -> io::Result<TraceThread> {
        let (to_parser, work) = sync_channel(IN_FLIGHT);
        let (done, from_parser) = sync_channel(IN_FLIGHT);
        let (to_reader, tracked) = sync_channel(IN_FLIGHT);
        thread::Builder::new()
            .name("trace reader".to_owned())
            .spawn(move || read(input, tracked, to_parser))?;
        thread::Builder::new()
            .name("trace parser".to_owned())
            .spawn(move || parse(parsing, work, done))?;
        Ok(TraceThread {
            tracking: Box::new(tracking),
            from_parser,
            to_reader,
            lines: 0,
        })
    }

    /// Lines parsed so far.
    pub(super) fn lines(&self) -> u64 {
        self.lines
    }

    /// Tracks the next chunk's items (counting its bytes in `bytes`). `true` once the
    /// input is read and tracked to its end.
    pub(super) fn read_more(
        &mut self,
        bytes: &mut u64,
        on_event: &mut impl FnMut(Event),
        on_error: &mut impl FnMut(TraceError),
    ) -> io::Result<bool> {
        let Parsed { work, chunk, lines } = self.from_parser.recv().map_err(|_| stopped())??;
        self.lines = lines;
        self.tracking.track(&work.items, &work.messages, on_event, on_error);
        match chunk {
            Some(length) => {
                *bytes += length as u64;
                // The reading thread is gone only once the input ended.
                let _ = self.to_reader.send(work);
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

/// The reading thread: fills chunks (new ones, then those the tracker is done with) and
/// finds their line feeds, the bytes still in its cache, until the input ends. A read
/// error goes down the line to the tracker. Stops when the parser is gone.
fn read(mut input: Box<dyn Read + Send>, tracked: Receiver<Work>, to_parser: SyncSender<io::Result<Work>>) {
    let mut fresh = IN_FLIGHT;
    loop {
        let mut work = if fresh > 0 {
            fresh -= 1;
            Work {
                chunk: Vec::new(),
                feeds: Vec::new(),
                items: Vec::new(),
                messages: Vec::new(),
            }
        } else {
            match tracked.recv() {
                Ok(work) => work,
                Err(_) => return,
            }
        };
        let read = read_chunk(input.as_mut(), &mut work.chunk).map(|()| {
            work.feeds.clear();
            // At most CHUNK (1 MiB) bytes: every index fits.
            find_line_feeds(&work.chunk, &mut work.feeds);
            work
        });
        // The end: dropping the sender tells the parser to finish.
        let end = matches!(&read, Ok(work) if work.chunk.is_empty());
        if end || to_parser.send(read).is_err() {
            return;
        }
    }
}

/// Fills `chunk` with up to [`CHUNK`] bytes of `input`; empty at its end.
fn read_chunk(input: &mut dyn Read, chunk: &mut Vec<u8>) -> io::Result<()> {
    // Reused buffers are full already: no bytes to zero.
    chunk.resize(CHUNK, 0);
    let mut filled = 0;
    while filled < CHUNK {
        match input.read(&mut chunk[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                chunk.truncate(filled);
                return Err(e);
            }
        }
    }
    chunk.truncate(filled);
    Ok(())
}

/// The parser thread: parses each chunk it is given, in order, and finishes when the
/// input ends. Stops when the tracking side is gone or a read failed.
fn parse(mut parsing: TraceParsing, work: Receiver<io::Result<Work>>, done: SyncSender<io::Result<Parsed>>) {
    for work in work.iter() {
        let mut work = match work {
            Ok(work) => work,
            Err(e) => {
                let _ = done.send(Err(e));
                return;
            }
        };
        work.items.clear();
        let at = work.feeds.iter().map(|&at| at as usize);
        let items = &mut work.items;
        parsing.push_split(&work.chunk, at, &mut |item| items.push(item));
        work.messages = parsing.take_message_bytes(std::mem::take(&mut work.messages));
        let parsed = Parsed {
            chunk: Some(work.chunk.len()),
            work,
            lines: parsing.stats().lines,
        };
        if done.send(Ok(parsed)).is_err() {
            return;
        }
    }
    let mut work = Work {
        chunk: Vec::new(),
        feeds: Vec::new(),
        items: Vec::new(),
        messages: Vec::new(),
    };
    let items = &mut work.items;
    parsing.finish(&mut |item| items.push(item));
    work.messages = parsing.take_message_bytes(Vec::new());
    let lines = parsing.stats().lines;
    let _ = done.send(Ok(Parsed {
        work,
        chunk: None,
        lines,
    }));
}
