//! `callhook replay`: read whole files (or stdin) and write their events as NDJSON.
//!
//! Each input is read in fixed-size chunks through its own [`SipTraceReader`], so memory
//! stays flat however large the file. Events go to the writer as they complete;
//! unreadable parts are reported with file and line and skipped. The summary counts
//! lines, calls, events, errors and throughput.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use thiserror::Error;

use crate::event::{Event, SourceKind};
use crate::parse::log_time::file_day;
use crate::parse::pjsip::TraceError;
use crate::parse::{Format, detect_format};
use crate::source::sip_trace::SipTraceReader;
use crate::track::sip::TrackerConfig;

/// Size of each read.
const CHUNK: usize = 1 << 20;

/// What `--format` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatChoice {
    /// Tell from the first bytes.
    #[default]
    Auto,
    Fixed(Format),
}

/// One input of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Path(PathBuf),
    Stdin,
}

impl Input {
    /// `-` means stdin.
    pub fn from_arg(arg: &str) -> Input {
        if arg == "-" {
            Input::Stdin
        } else {
            Input::Path(PathBuf::from(arg))
        }
    }

    /// The name used in `source_path` and messages.
    pub fn name(&self) -> String {
        match self {
            Input::Path(path) => path.display().to_string(),
            Input::Stdin => "-".to_owned(),
        }
    }
}

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub format: FormatChoice,
    /// Date of the first undated line; default: the file's modification day (today for
    /// stdin).
    pub date: Option<Date>,
    pub time_zone: TimeZone,
    pub prefer_asserted_identity: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            format: FormatChoice::Auto,
            date: None,
            time_zone: TimeZone::system(),
            prefer_asserted_identity: false,
        }
    }
}

/// Totals of a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReplaySummary {
    pub inputs: u64,
    pub bytes: u64,
    pub lines: u64,
    pub calls: u64,
    pub events: u64,
    /// Unreadable parts of inputs (each also reported on its own).
    pub errors: u64,
    /// Inputs that could not be read at all.
    pub failed_inputs: u64,
    pub elapsed: Duration,
}

impl ReplaySummary {
    /// Megabytes (10^6 bytes) read per second.
    pub fn mb_per_s(&self) -> f64 {
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
    #[error("{path}: not a PJSIP log (no timestamped lines at its start); use --format sip_trace to read it anyway")]
    UnknownFormat { path: String },
}

/// Something to report while replaying: a bad part of an input, or a whole input.
#[derive(Debug)]
pub enum Problem<'a> {
    Trace { path: &'a str, error: TraceError },
    Input(InputError),
}

impl std::fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Trace { path, error } => write!(f, "{path}:{}: {}", error.line, error.kind),
            Problem::Input(error) => error.fmt(f),
        }
    }
}

/// Replays `inputs` in order, writing each event as one JSON line to `out` and handing
/// problems to `report`. Fails only when `out` cannot be written.
pub fn replay(
    inputs: &[Input],
    options: &ReplayOptions,
    out: &mut dyn Write,
    report: &mut dyn FnMut(Problem<'_>),
) -> io::Result<ReplaySummary> {
    let started = Instant::now();
    let mut summary = ReplaySummary::default();
    for input in inputs {
        summary.inputs += 1;
        match replay_one(input, options, out, report, &mut summary) {
            Ok(()) => {}
            Err(ReplayError::Output(error)) => return Err(error),
            Err(ReplayError::Input(error)) => {
                summary.failed_inputs += 1;
                report(Problem::Input(error));
            }
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

enum ReplayError {
    Input(InputError),
    Output(io::Error),
}

fn replay_one(
    input: &Input,
    options: &ReplayOptions,
    out: &mut dyn Write,
    report: &mut dyn FnMut(Problem<'_>),
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    let name = input.name();
    let io_error = |source| {
        ReplayError::Input(InputError::Io {
            path: name.clone(),
            source,
        })
    };
    let (mut reader, modified): (Box<dyn Read>, Option<Date>) = match input {
        Input::Stdin => (Box::new(io::stdin().lock()), None),
        Input::Path(path) => {
            let file = File::open(path).map_err(io_error)?;
            let modified = modification_day(path, &options.time_zone);
            (Box::new(file), modified)
        }
    };
    let date = options.date.or(modified).unwrap_or_else(|| {
        jiff::ZonedDateTime::now()
            .with_time_zone(options.time_zone.clone())
            .date()
    });
    let mut config = TrackerConfig::new(SourceKind::SipTrace, name.clone());
    config.time_zone = options.time_zone.clone();
    config.prefer_asserted_identity = options.prefer_asserted_identity;
    let mut trace = SipTraceReader::new(date, config);

    let mut buffer = vec![0u8; CHUNK];
    let mut first = true;
    let mut write_error = None;
    let mut events = 0u64;
    let mut errors = 0u64;
    let mut on_event = |event: Event| {
        if write_error.is_some() {
            return;
        }
        events += 1;
        let line = event.to_json();
        if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n")) {
            write_error = Some(e);
        }
    };
    let mut on_error = |error: TraceError| {
        errors += 1;
        report(Problem::Trace { path: &name, error });
    };
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(io_error(e));
            }
        };
        let chunk = &buffer[..read];
        if first {
            first = false;
            if options.format == FormatChoice::Auto && detect_format(chunk).is_none() {
                return Err(ReplayError::Input(InputError::UnknownFormat { path: name.clone() }));
            }
        }
        summary.bytes += read as u64;
        trace.push(chunk, &mut on_event, &mut on_error);
    }
    trace.finish(&mut on_event, &mut on_error);
    if let Some(error) = write_error {
        return Err(ReplayError::Output(error));
    }
    let stats = trace.stats();
    summary.lines += stats.lines;
    summary.calls += trace.calls();
    summary.events += events;
    summary.errors += errors;
    Ok(())
}

/// The local day a file was last modified, the default date of its undated lines.
fn modification_day(path: &Path, time_zone: &TimeZone) -> Option<Date> {
    file_day(std::fs::metadata(path).ok()?.modified().ok()?, time_zone)
}
