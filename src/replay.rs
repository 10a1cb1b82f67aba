//! `callhook replay` (and the reading half of `callhook test`): whole files in, the
//! events `callhook run` would emit out, as NDJSON.
//!
//! Any number of inputs of any kind ([`input::Format`]: SIP trace, call-log CSV,
//! `microsip.ini`, recognised from their first bytes or named per file) are read from
//! their start, each through the reader its live source uses, and merged in event-time
//! order. The merged stream goes through the pipeline's [`Router`], as in `run`: events
//! of several sources about one call are one call, each type emitted once with the
//! richest source's data. The clock of the correlator is the events' own time, and a
//! poorer source's event waits up to the correlation window for a richer one (offline,
//! waiting costs nothing), so the result does not depend on how fast the files are read.
//! Unreadable parts are reported with file and line and skipped. The summary counts
//! lines, calls, events, errors and throughput.

mod chunk;
pub mod input;
mod trace_thread;

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use thiserror::Error;

use self::input::{Format, InputPath, LineProblem, ReadOptions, Stream, detect};
use crate::correlate::Correlator;
use crate::event::{Event, EventType, SourceKind};
use crate::pipeline::{Decided, Router};

/// What `--format` asked for, per input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatChoice {
    /// Tell from the first bytes.
    #[default]
    Auto,
    Fixed(Format),
}

/// One input of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub path: InputPath,
    pub format: FormatChoice,
}

impl Input {
    /// `arg` (`-` for stdin), its format told from its first bytes.
    pub fn from_arg(arg: &str) -> Input {
        Input {
            path: InputPath::from_arg(arg),
            format: FormatChoice::Auto,
        }
    }
}

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub read: ReadOptions,
    /// Events of one number within this are one call when a source knows no Call-ID
    /// (`correlate.window`).
    pub window: Duration,
    /// A progress bar to move as the inputs are read (its length is set to their
    /// size); `None` shows nothing. The command line gives one only when stderr is a
    /// terminal.
    pub progress: Option<indicatif::ProgressBar>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            read: ReadOptions {
                date: None,
                time_zone: TimeZone::system(),
                prefer_asserted_identity: false,
            },
            window: crate::correlate::DEFAULT_WINDOW,
            progress: None,
        }
    }
}

/// Totals of a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReplaySummary {
    pub inputs: u64,
    pub bytes: u64,
    pub lines: u64,
    /// Calls emitted (their `ringing`).
    pub calls: u64,
    /// Events emitted.
    pub events: u64,
    /// Unreadable parts of inputs (each also reported on its own).
    pub errors: u64,
    /// Inputs that could not be read at all.
    pub failed_inputs: u64,
    pub elapsed: Duration,
}

impl ReplaySummary {
    /// Megabytes (10^6 bytes) read per second.
    pub(crate) fn mb_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        self.bytes as f64 / 1e6 / secs
    }
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} lines, {} calls, {} events, {} errors, {:.1} MB in {:.3} s ({:.1} MB/s)",
            self.lines,
            self.calls,
            self.events,
            self.errors + self.failed_inputs,
            self.bytes as f64 / 1e6,
            self.elapsed.as_secs_f64(),
            self.mb_per_s()
        )
    }
}

/// An input that could not be replayed at all.
#[derive(Debug, Error)]
pub enum InputError {
    #[error("{path}: cannot read: {source}")]
    Io { path: String, source: io::Error },
    #[error(
        "{path}: not a PJSIP log (no PJSIP line among its first lines, at the line start or behind a prefix), a call-log CSV (no header naming a time and a number) or a microsip.ini (no [Calls] section); its first lines: {first_lines}; name its format with --format sip_trace|call_log|history"
    )]
    UnknownFormat {
        path: String,
        /// The first lines tried, quoted and cut short.
        first_lines: String,
    },
}

/// Something to report while replaying: a bad part of an input, or a whole input.
#[derive(Debug)]
pub enum Problem<'a> {
    Line { path: &'a str, problem: LineProblem },
    Input(InputError),
}

impl std::fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Line { path, problem } => write!(f, "{path}:{}: {}", problem.line, problem.message),
            Problem::Input(error) => error.fmt(f),
        }
    }
}

/// Replays `inputs`, writing each event emitted as one JSON line to `out` and handing
/// problems to `report`. Fails only when `out` cannot be written.
pub fn replay(
    inputs: &[Input],
    options: &ReplayOptions,
    out: &mut dyn Write,
    report: &mut dyn FnMut(Problem<'_>),
) -> io::Result<ReplaySummary> {
    let mut written = Ok(());
    let mut line = Vec::new();
    let summary = events(inputs, options, report, &mut |event| {
        if written.is_ok() {
            line.clear();
            event.write_json_line(&mut line);
            written = out.write_all(&line);
        }
        written.is_ok()
    });
    written.map(|()| summary)
}

/// Reads `inputs` and hands each event the pipeline emits to `on_event`, in order,
/// until it returns `false`; see the module docs.
pub fn events(
    inputs: &[Input],
    options: &ReplayOptions,
    report: &mut dyn FnMut(Problem<'_>),
    on_event: &mut dyn FnMut(&Event) -> bool,
) -> ReplaySummary {
    let started = Instant::now();
    let mut summary = ReplaySummary::default();
    let mut streams = Vec::new();
    for input in inputs {
        summary.inputs += 1;
        match open(input, &options.read) {
            Ok(stream) => streams.push(stream),
            Err(error) => {
                summary.failed_inputs += 1;
                report(Problem::Input(error));
            }
        }
    }
    let kinds: Vec<SourceKind> = streams.iter().filter_map(|s| s.1.source_kind()).collect();
    // Offline, waiting costs nothing: a poorer source's event waits as long as events
    // can be one call, so the richest source's event always wins.
    let correlator = Correlator::new(options.window).hold(options.window, kinds);
    if let Some(bar) = &options.progress {
        let size: u64 = inputs
            .iter()
            .filter_map(|input| match &input.path {
                InputPath::Path(path) => std::fs::metadata(path).ok().map(|m| m.len()),
                InputPath::Stdin => None,
            })
            .sum();
        bar.set_length(size);
    }
    let mut merge = Merge {
        router: Router::new(correlator),
        decided: Vec::new(),
        summary,
        on_event,
        stopped: false,
        progress: options.progress.clone(),
    };
    merge.run(streams.into_iter().map(|(stream, _)| stream).collect(), report);
    if let Some(bar) = &options.progress {
        bar.finish_and_clear();
    }
    let mut summary = merge.summary;
    summary.elapsed = started.elapsed();
    summary
}

/// Opens an input: its first bytes tell its format unless it was named.
fn open(input: &Input, options: &ReadOptions) -> Result<(Stream, Format), InputError> {
    let name = input.path.name();
    let io_error = |source| InputError::Io {
        path: name.clone(),
        source,
    };
    let mut head = Vec::new();
    let mut first: Box<dyn Read> = match &input.path {
        InputPath::Stdin => Box::new(io::stdin()),
        InputPath::Path(path) => Box::new(std::fs::File::open(path).map_err(io_error)?),
    };
    (&mut first).take(64 * 1024).read_to_end(&mut head).map_err(io_error)?;
    let format = match input.format {
        FormatChoice::Fixed(format) => format,
        FormatChoice::Auto => detect(&head).ok_or_else(|| InputError::UnknownFormat {
            path: name.clone(),
            first_lines: first_lines(&head),
        })?,
    };
    // The stream goes on after the head (stdin cannot be read again).
    let stream = Stream::open(&input.path, format, head, options).map_err(io_error)?;
    Ok((stream, format))
}

/// Lines shown of an input whose format is unknown.
const SHOWN_LINES: usize = 3;
/// Characters shown of each.
const SHOWN_CHARS: usize = 120;

/// The first non-empty lines of `head`, quoted (control characters escaped) and cut
/// short, for the message refusing it: the user sees what was tried.
fn first_lines(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    let shown: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(SHOWN_LINES)
        .map(|line| {
            let cut: String = line.chars().take(SHOWN_CHARS).collect();
            let more = if cut.len() < line.len() { "..." } else { "" };
            format!("{cut:?}{more}")
        })
        .collect();
    if shown.is_empty() {
        "(none, the input is empty)".to_owned()
    } else {
        shown.join(" | ")
    }
}

/// The inputs merged in event-time order, through the router.
struct Merge<'a> {
    router: Router,
    decided: Vec<Decided>,
    summary: ReplaySummary,
    on_event: &'a mut dyn FnMut(&Event) -> bool,
    stopped: bool,
    progress: Option<indicatif::ProgressBar>,
}

impl Merge<'_> {
    fn run(&mut self, mut streams: Vec<Stream>, report: &mut dyn FnMut(Problem<'_>)) {
        let mut no_jobs = |_: &Event| Vec::new();
        while !self.stopped {
            let Some(next) = self.earliest(&mut streams, report) else {
                break;
            };
            let Some(event) = streams[next].pop() else {
                continue;
            };
            let now_ms = event.at.timestamp().as_millisecond();
            self.router.release_due(now_ms, &mut no_jobs, &mut self.decided);
            self.router.route(event, now_ms, &mut no_jobs, &mut self.decided);
            self.hand_on();
            if let Some(bar) = &self.progress {
                bar.set_position(streams.iter().map(|s| s.bytes).sum());
            }
        }
        self.router.release_due(i64::MAX, &mut no_jobs, &mut self.decided);
        self.hand_on();
        for stream in &streams {
            self.summary.bytes += stream.bytes;
            self.summary.lines += stream.lines();
        }
    }

    /// The stream whose next event is earliest (the first input on a tie); `None`
    /// when all are read. A stream that fails to read is reported and dropped.
    fn earliest(&mut self, streams: &mut Vec<Stream>, report: &mut dyn FnMut(Problem<'_>)) -> Option<usize> {
        let mut best: Option<(usize, jiff::Timestamp)> = None;
        let mut index = 0;
        while index < streams.len() {
            let stream = &mut streams[index];
            let head = stream.peek().map(|e| e.map(|e| e.at.timestamp()));
            for problem in stream.take_problems() {
                self.summary.errors += 1;
                report(Problem::Line {
                    path: stream.name(),
                    problem,
                });
            }
            match head {
                Ok(Some(at)) => {
                    if best.is_none_or(|(_, t)| at < t) {
                        best = Some((index, at));
                    }
                    index += 1;
                }
                Ok(None) => index += 1,
                Err(source) => {
                    self.summary.failed_inputs += 1;
                    let stream = streams.remove(index);
                    self.summary.bytes += stream.bytes;
                    report(Problem::Input(InputError::Io {
                        path: stream.name().to_owned(),
                        source,
                    }));
                    // Indices after it moved down; the best found so far may have too.
                    return self.earliest(streams, report);
                }
            }
        }
        best.map(|(index, _)| index)
    }

    /// Hands on what the router emitted; it keeps no memory of it to store.
    fn hand_on(&mut self) {
        self.router.discard_changes();
        for decided in self.decided.drain(..) {
            if let Decided::Emit { event, .. } = decided {
                if self.stopped {
                    continue;
                }
                self.summary.events += 1;
                if event.kind == EventType::Ringing {
                    self.summary.calls += 1;
                }
                self.stopped = !(self.on_event)(&event);
            }
        }
    }
}
