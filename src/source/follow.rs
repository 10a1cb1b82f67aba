//! The live task of one appended-to source (SIP trace or call-log CSV): wake, read,
//! hand the batch downstream.
//!
//! Takes a [`Source`], the checkpoint an earlier run committed, and a [`Sink`]; runs
//! until the shutdown flag is set. Each round reads what is new ([`Tail`]), turns it into
//! events ([`LiveReader`]) and hands them to the sink with the checkpoint after them;
//! the sink stores both in one transaction before it returns. After a crash the stored
//! checkpoint says where to read again; events read twice keep their ids and are
//! dropped downstream, so nothing is lost or repeated.
//!
//! Starting up, the stored checkpoint is trusted only if the file still holds the bytes
//! it was taken of (fingerprint, hash before the offset). Otherwise MicroSIP truncated or
//! replaced its log meanwhile: the calls open back then end as `unknown` and the file is
//! read from its start. A file seen for the first time is read from its end by default.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use jiff::civil::Date;

use super::checkpoint::{Checkpoint, Fingerprint, tail_hash};
use super::config::{Source, StartAt};
use super::reader::{Appended, LiveReader};
use super::tail::{Tail, TailEvent};
use super::watch::Wakeup;
use super::{Batch, Sink, SourceError};
use crate::event::Event;
use crate::metrics::SourceMetrics;
use crate::parse::log_time::file_day;

/// Without new events, a moved offset is checkpointed at most this often.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Runs one appended-to source (SIP trace or call-log CSV, as `format` says) until
/// `shutdown` is set; see the module docs. `stored` is the checkpoint an earlier run
/// committed; `wakeup` wakes it (file-system events, the poll timer, shutdown).
pub fn follow(
    source: &Source,
    format: Appended,
    stored: Option<Checkpoint>,
    mut wakeup: Wakeup,
    shutdown: Arc<AtomicBool>,
    sink: &mut dyn Sink,
    counts: SourceMetrics,
) -> Result<(), SourceError> {
    let mut follower = Follower::start(source, format, stored, counts);
    if !wakeup.is_watching() {
        tracing::info!(path = %source.path.display(), "no file-system events for this folder; polling every {:?}", source.poll_interval);
    }
    let mut backlog = false;
    loop {
        follower.poll(sink)?;
        if shutdown.load(Ordering::SeqCst) {
            break;
        }
        // A backlog is read in bounded batches, one after the other.
        if follower.tail.has_more() {
            backlog = true;
        } else {
            if std::mem::take(&mut backlog) {
                crate::memory::release_freed_memory();
            }
            wakeup.wait();
        }
    }
    follower.commit(sink)?;
    Ok(())
}

/// The state of one followed file between rounds.
struct Follower {
    key: String,
    source: Source,
    format: Appended,
    tail: Tail,
    reader: LiveReader,
    /// The stored state of an earlier run whose file is gone: its calls end when the
    /// file appears.
    lost: Option<Checkpoint>,
    /// Events read and not yet committed.
    pending: Vec<Event>,
    last_commit: Instant,
    committed_position: u64,
    errors: u64,
    counts: SourceMetrics,
    /// What keeps the source from being followed, as last reported.
    problem: Option<String>,
    /// When the first bytes behind `pending` were appended (see [`appended_at`]).
    appended: Option<SystemTime>,
    /// When the last round began: bytes read now were appended after it.
    last_round: SystemTime,
}

impl Follower {
    fn start(source: &Source, format: Appended, stored: Option<Checkpoint>, counts: SourceMetrics) -> Follower {
        let today = today(source);
        let mut follower = Follower {
            key: source.key(),
            source: source.clone(),
            format,
            tail: Tail::new(&source.path),
            reader: LiveReader::new(format, source, today),
            lost: None,
            pending: Vec::new(),
            last_commit: Instant::now(),
            committed_position: 0,
            errors: 0,
            counts,
            problem: None,
            appended: None,
            last_round: SystemTime::now(),
        };
        let file = match super::tail::open_shared(&source.path) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(error) => {
                tracing::warn!(path = %source.path.display(), %error, "cannot open yet; will retry");
                None
            }
        };
        let path = source.path.display();
        match (file, stored) {
            (Some(mut file), Some(checkpoint)) => {
                let resumed = still_valid(&mut file, &checkpoint)
                    .unwrap_or(false)
                    .then(|| LiveReader::resume(format, source, &checkpoint.state))
                    .flatten();
                match resumed {
                    Some((reader, offset)) => {
                        tracing::info!(path = %path, offset, "resuming from checkpoint");
                        follower.reader = reader;
                        follower.tail.start(file, offset, Some(checkpoint.fingerprint));
                        follower.committed_position = offset;
                    }
                    None => {
                        tracing::info!(path = %path, "file was truncated or replaced while callhook was not running; reading it from the start");
                        LiveReader::end_lost_calls(source, &checkpoint, &mut |e| follower.pending.push(e));
                        follower.tail.start(file, 0, None);
                    }
                }
            }
            (Some(mut file), None) => {
                let date = match source.start_at {
                    StartAt::End => today,
                    StartAt::Beginning => modification_day(&file, source).unwrap_or(today),
                };
                let (reader, offset) = LiveReader::first_time(format, source, &mut file, date);
                tracing::info!(path = %path, offset, "new file; reading from its {}", if offset == 0 { "start" } else { "end" });
                follower.reader = reader;
                follower.tail.start(file, offset, None);
            }
            (None, stored) => {
                tracing::info!(path = %path, "waiting for the file to appear");
                follower.lost = stored;
            }
        }
        follower
    }

    /// One round: read what is new, commit, hand on.
    fn poll(&mut self, sink: &mut dyn Sink) -> Result<(), SourceError> {
        let round = SystemTime::now();
        let Follower {
            tail,
            reader,
            pending,
            lost,
            source,
            format,
            errors,
            counts,
            ..
        } = self;
        let format = *format;
        let mut on_event = |event: Event| pending.push(event);
        let path = tail.path().display().to_string();
        let mut read = 0u64;
        let mut on_error = |line: u64, message: String| {
            counts.parse_error();
            *errors += 1;
            if *errors <= 100 {
                tracing::warn!("{path}:{line}: {message}");
            }
        };
        let result = tail.poll(|change| match change {
            TailEvent::Data(bytes) => {
                read += bytes.len() as u64;
                counts.read(bytes.len() as u64, memchr::memchr_iter(b'\n', bytes).count() as u64);
                reader.push(bytes, &mut on_event, &mut on_error);
            }
            TailEvent::Appeared => {
                tracing::info!(path = %path, "file appeared; reading it from the start");
                if let Some(lost) = lost.take() {
                    LiveReader::end_lost_calls(source, &lost, &mut on_event);
                }
                *reader = LiveReader::new(format, source, today(source));
            }
            TailEvent::Truncated => {
                tracing::info!(path = %path, open_calls = reader.open_calls(), "file truncated (MicroSIP restarted?); open calls end as unknown");
                reader.truncated(format, source, today(source), &mut on_event);
            }
            TailEvent::Rotated => {
                tracing::info!(path = %path, "file replaced by a new one; reading it from the start");
                reader.next_file(today(source));
            }
        });
        if let Err(error) = &result {
            tracing::warn!(path = %path, %error, "cannot read; will retry");
        }
        report_health(&self.source.path, result, read > 0, &self.counts, &mut self.problem);
        if read > 0 && self.appended.is_none() {
            self.appended = Some(appended_at(self.tail.modified(), self.last_round, round));
        }
        self.last_round = round;
        let moved = self.tail.position() != self.committed_position;
        if !self.pending.is_empty() || (moved && self.last_commit.elapsed() >= CHECKPOINT_EVERY) {
            self.commit(sink)?;
        }
        Ok(())
    }

    /// Stores pending events with the checkpoint, then hands the new ones on.
    fn commit(&mut self, sink: &mut dyn Sink) -> Result<(), SourceError> {
        let (resume_offset, state, rows) = self.reader.checkpoint();
        let known = self.tail.fingerprint();
        let Some(file) = self.tail.file_mut() else {
            return Ok(()); // nothing read yet: nothing to remember
        };
        let fingerprint = match known {
            Some(fingerprint) => fingerprint,
            None => match Fingerprint::of(file) {
                Ok(fingerprint) => fingerprint,
                Err(_) => return Ok(()),
            },
        };
        let Ok(Some(tail)) = tail_hash(file, resume_offset) else {
            // The file changed under us; the next round sees how and commits then.
            return Ok(());
        };
        let checkpoint = Checkpoint {
            fingerprint,
            resume_offset,
            tail_hash: tail,
            state,
            rows,
        };
        sink.commit(Batch {
            key: &self.key,
            checkpoint: &checkpoint,
            events: &self.pending,
            appended: self.appended.take(),
        })
        .map_err(SourceError::Downstream)?;
        self.reader.committed();
        self.pending.clear();
        self.last_commit = Instant::now();
        self.committed_position = self.tail.position();
        Ok(())
    }
}

/// When bytes read in a round that began at `round` were appended: the file's
/// modification time as the round found it, kept within what is possible (after the
/// previous round began, not after this one did; Windows may not update it while the
/// writer holds the file).
fn appended_at(modified: Option<SystemTime>, previous: SystemTime, round: SystemTime) -> SystemTime {
    modified.unwrap_or(round).clamp(previous.min(round), round)
}

/// Tells `counts` whether the source at `path` is followed: a read error, or its
/// folder gone, says why not (logged once when it changes). A file not there yet in
/// its folder is waited for, which is fine. A round that read bytes (`data`) was
/// followed: the folder is not looked at then, a `stat` saved on every append (a
/// folder removed under a file still written is told once the writes stop).
pub(super) fn report_health(
    path: &std::path::Path,
    read: io::Result<()>,
    data: bool,
    counts: &SourceMetrics,
    last: &mut Option<String>,
) {
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty() && !data);
    let problem = match read {
        Err(error) => Some(format!("cannot read {}: {error}", path.display())),
        Ok(()) => folder
            .filter(|folder| !folder.is_dir())
            .map(|folder| format!("folder {} is gone", folder.display())),
    };
    if problem != *last {
        match &problem {
            Some(problem) => tracing::warn!(path = %path.display(), "not followed: {problem}"),
            None if last.is_some() => tracing::info!(path = %path.display(), "followed again"),
            None => {}
        }
        counts.set_problem(problem.clone());
        *last = problem;
    }
}

/// Whether `file` still holds the bytes `checkpoint` was taken of.
fn still_valid(file: &mut File, checkpoint: &Checkpoint) -> io::Result<bool> {
    let size = file.metadata()?.len();
    Ok(size >= checkpoint.resume_offset
        && checkpoint.fingerprint.matches(file)?
        && tail_hash(file, checkpoint.resume_offset)? == Some(checkpoint.tail_hash))
}

fn today(source: &Source) -> Date {
    jiff::Timestamp::now()
        .to_zoned_datetime(source.time_zone.clone())
        .date()
}

fn modification_day(file: &File, source: &Source) -> Option<Date> {
    file_day(file.metadata().ok()?.modified().ok()?, &source.time_zone)
}
