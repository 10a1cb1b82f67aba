//! One input of a replay or dry run, read as a stream of events: a SIP trace or a
//! call-log CSV in chunks through the same reader a live source uses, a call history
//! (`microsip.ini`) as one snapshot, or NDJSON events as they are. Memory stays flat for
//! appended formats whatever the file's size: only the events of the chunk just read
//! wait in the queue.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::event::{Event, SourceKind};
use crate::parse::log_time::file_day;
use crate::parse::pjsip::TraceError;
use crate::source::config::{Source, StartAt};
use crate::source::reader::{Appended, LiveReader, trace_reader};
use crate::source::sip_trace::TraceParsing;
use crate::track::history::{HistoryDiffer, HistoryOptions};

use super::trace_thread::TraceThread;

/// Size of each read of an input read on this thread (a SIP trace goes to the parser
/// thread in chunks of its own: `super::chunk`).
pub(super) const CHUNK: usize = 1 << 20;
/// `microsip.ini` is small; a larger file is not MicroSIP's.
const MAX_HISTORY: u64 = 16 * 1024 * 1024;
/// Longest NDJSON line taken; a longer one is reported and skipped.
const MAX_EVENT_LINE: usize = 1 << 20;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A PJSIP log (MicroSIP's `MicroSIP_log.txt`).
    SipTrace,
    /// A call-log CSV (state rows or MicroSIP's history export).
    CallLog,
    /// MicroSIP's `microsip.ini` with its `[Calls]` section.
    History,
    /// Call events, one JSON object a line (contract v1), as `replay` or `run` wrote
    /// them (`callhook test` only).
    Events,
}

impl Format {
    /// The source kind a file of this format is read as; `None` for events.
    pub(crate) fn source_kind(self) -> Option<SourceKind> {
        match self {
            Format::SipTrace => Some(SourceKind::SipTrace),
            Format::CallLog => Some(SourceKind::CallLog),
            Format::History => Some(SourceKind::History),
            Format::Events => None,
        }
    }
}

/// Where an input's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputPath {
    Path(PathBuf),
    Stdin,
}

impl InputPath {
    /// `-` means stdin.
    pub fn from_arg(arg: &str) -> InputPath {
        if arg == "-" {
            InputPath::Stdin
        } else {
            InputPath::Path(PathBuf::from(arg))
        }
    }

    /// The name used in `source_path` and messages.
    pub fn name(&self) -> String {
        match self {
            InputPath::Path(path) => path.display().to_string(),
            InputPath::Stdin => "-".to_owned(),
        }
    }
}

/// How every input of one replay is read.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Date of a trace's first undated line; default: the file's modification day
    /// (today for stdin).
    pub date: Option<Date>,
    pub time_zone: TimeZone,
    pub prefer_asserted_identity: bool,
}

/// A problem with one line of an input: reported, the rest goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    pub line: u64,
    pub message: String,
}

/// How an input's bytes become events.
enum Reader {
    /// A SIP trace, parsed on a second thread.
    Trace(Box<TraceThread>),
    Appended(Box<LiveReader>),
    /// Read whole at the first look; `time` is when the snapshot was taken.
    History(Box<HistoryDiffer>, jiff::Timestamp),
    Events {
        line: u64,
    },
}

/// One input being read; see the module docs.
pub struct Stream {
    name: String,
    bytes_in: Box<dyn BufRead>,
    reader: Reader,
    queue: VecDeque<Event>,
    problems: Vec<LineProblem>,
    done: bool,
    /// Bytes read so far.
    pub bytes: u64,
}

impl Stream {
    /// Opens `path` as `format`; the first bytes, read already to detect it, come first.
    pub fn open(path: &InputPath, format: Format, head: Vec<u8>, options: &ReadOptions) -> io::Result<Stream> {
        let name = path.name();
        let (rest, modified): (Box<dyn Read>, Option<std::time::SystemTime>) = match path {
            InputPath::Stdin => (Box::new(io::stdin()), None),
            InputPath::Path(path) => {
                let mut file = File::open(path)?;
                io::Seek::seek(&mut file, io::SeekFrom::Start(head.len() as u64))?;
                (Box::new(file), modified_time(path))
            }
        };
        let mut input = Some(io::Cursor::new(head).chain(rest));
        let date = options
            .date
            .or_else(|| modified.and_then(|t| file_day(t, &options.time_zone)))
            .unwrap_or_else(|| {
                jiff::Timestamp::now()
                    .to_zoned_datetime(options.time_zone.clone())
                    .date()
            });
        let mut source = Source::new(format.source_kind().unwrap_or(SourceKind::SipTrace), &name);
        source.start_at = StartAt::Beginning;
        source.time_zone = options.time_zone.clone();
        source.prefer_asserted_identity = options.prefer_asserted_identity;
        let reader = match format {
            // Read straight into the parser's chunks, not through `bytes_in`.
            Format::SipTrace => Reader::Trace(Box::new(TraceThread::start(
                Box::new(input.take().expect("the input is taken once")),
                TraceParsing::new(date),
                trace_reader(&source, date),
            )?)),
            Format::CallLog => Reader::Appended(Box::new(LiveReader::new(Appended::CallLog, &source, date))),
            Format::History => {
                let mut options = HistoryOptions::new(name.clone());
                options.time_zone = source.time_zone.clone();
                let taken = modified
                    .and_then(|t| jiff::Timestamp::try_from(t).ok())
                    .unwrap_or_else(jiff::Timestamp::now);
                Reader::History(Box::new(HistoryDiffer::new(options)), taken)
            }
            Format::Events => Reader::Events { line: 0 },
        };
        let bytes_in: Box<dyn BufRead> = match input {
            Some(input) => Box::new(BufReader::with_capacity(CHUNK, input)),
            None => Box::new(io::empty()),
        };
        Ok(Stream {
            name,
            bytes_in,
            reader,
            queue: VecDeque::new(),
            problems: Vec::new(),
            done: false,
            bytes: 0,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next event, reading on until one is complete; `None` at the end.
    pub(crate) fn peek(&mut self) -> io::Result<Option<&Event>> {
        while self.queue.is_empty() && !self.done {
            self.read_more()?;
        }
        Ok(self.queue.front())
    }

    pub fn pop(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }

    /// Problems found since last asked.
    pub(crate) fn take_problems(&mut self) -> Vec<LineProblem> {
        std::mem::take(&mut self.problems)
    }

    /// Lines (or rows, or entries) read so far.
    pub fn lines(&self) -> u64 {
        match &self.reader {
            Reader::Trace(reader) => reader.lines(),
            Reader::Appended(reader) => reader.lines(),
            Reader::History(..) => 0,
            Reader::Events { line } => *line,
        }
    }

    fn read_more(&mut self) -> io::Result<()> {
        let Stream {
            bytes_in,
            reader,
            queue,
            problems,
            done,
            bytes,
            ..
        } = self;
        let mut on_event = |event: Event| queue.push_back(event);
        let mut on_error = |line: u64, message: String| problems.push(LineProblem { line, message });
        match reader {
            Reader::Trace(reader) => {
                let mut on_error = |e: TraceError| on_error(e.line, e.kind.to_string());
                *done = reader.read_more(bytes, &mut on_event, &mut on_error)?;
            }
            Reader::Appended(reader) => {
                let chunk = bytes_in.fill_buf()?;
                if chunk.is_empty() {
                    reader.finish(&mut on_event, &mut on_error);
                    *done = true;
                } else {
                    let n = chunk.len();
                    reader.push(chunk, &mut on_event, &mut on_error);
                    bytes_in.consume(n);
                    *bytes += n as u64;
                }
            }
            Reader::History(differ, taken) => {
                let mut whole = Vec::new();
                bytes_in.take(MAX_HISTORY + 1).read_to_end(&mut whole)?;
                *bytes += whole.len() as u64;
                if whole.len() as u64 > MAX_HISTORY {
                    return Err(io::Error::other(format!(
                        "more than {MAX_HISTORY} bytes is too large for a microsip.ini"
                    )));
                }
                differ.update(&whole, *taken, &mut on_event, |e| on_error(e.line, e.reason));
                *done = true;
            }
            Reader::Events { line } => {
                let mut text = Vec::new();
                let read = bytes_in.take(MAX_EVENT_LINE as u64 + 1).read_until(b'\n', &mut text)?;
                *bytes += read as u64;
                if read == 0 {
                    *done = true;
                    return Ok(());
                }
                *line += 1;
                if text.len() > MAX_EVENT_LINE {
                    on_error(*line, format!("line longer than {MAX_EVENT_LINE} bytes; skipped"));
                    skip_line(bytes_in.as_mut(), bytes)?;
                } else if !text.trim_ascii().is_empty() {
                    match serde_json::from_slice::<Event>(&text) {
                        Ok(event) => on_event(event),
                        Err(e) => on_error(*line, format!("not an event: {e}")),
                    }
                }
            }
        }
        Ok(())
    }
}

/// Reads past the rest of an overlong line.
fn skip_line(bytes_in: &mut dyn BufRead, bytes: &mut u64) -> io::Result<()> {
    loop {
        let chunk = bytes_in.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match memchr::memchr(b'\n', chunk) {
            Some(at) => {
                bytes_in.consume(at + 1);
                *bytes += at as u64 + 1;
                return Ok(());
            }
            None => {
                let n = chunk.len();
                bytes_in.consume(n);
                *bytes += n as u64;
            }
        }
    }
}

fn modified_time(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

/// What `head`, an input's first bytes, holds: a PJSIP log by its timestamped lines,
/// a `microsip.ini` by its `[Calls]` section, a call-log CSV by a header the call-log
/// reader accepts, NDJSON events by a first `{`. `None` when nothing fits.
pub(crate) fn detect(head: &[u8]) -> Option<Format> {
    if crate::parse::detect_format(head).is_some() {
        return Some(Format::SipTrace);
    }
    let text = decode_head(head);
    if text.trim_start().starts_with('{') {
        return Some(Format::Events);
    }
    if text.lines().any(|line| line.trim().eq_ignore_ascii_case("[calls]")) {
        return Some(Format::History);
    }
    let mut reader = LiveReader::new(Appended::CallLog, &Source::call_log("-"), Date::default());
    reader.push(head, &mut |_| {}, &mut |_, _| {});
    reader.finish(&mut |_| {}, &mut |_, _| {});
    reader.has_header().then_some(Format::CallLog)
}

/// The first bytes as text: UTF-16 (with its BOM, as MicroSIP writes its ini) or UTF-8.
fn decode_head(head: &[u8]) -> String {
    if let Some(rest) = head.strip_prefix(b"\xFF\xFE") {
        let units: Vec<u16> = rest.chunks_exact(2).map(|p| u16::from_le_bytes([p[0], p[1]])).collect();
        return String::from_utf16_lossy(&units);
    }
    if let Some(rest) = head.strip_prefix(b"\xFE\xFF") {
        let units: Vec<u16> = rest.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])).collect();
        return String::from_utf16_lossy(&units);
    }
    String::from_utf8_lossy(head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head)).into_owned()
}
