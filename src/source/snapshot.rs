//! The live task of a `history` source: MicroSIP's `microsip.ini`, rewritten whole, in
//! place, on every change of its call list.
//!
//! Nothing is appended, so there is no offset to follow: on each wake-up whose file
//! size or modification time changed, the file is read whole and compared with what was
//! seen before ([`HistoryDiffer`]: new entry → `ringing`, missed → incoming → `answered`,
//! duration or info set → `ended`). What was seen is stored with the events of each
//! change in one transaction, so a restart repeats nothing; entries are known by their
//! content (number, start time), so MicroSIP's wrapping keys do not matter. A file seen
//! for the first time with `start_at: end` is only remembered, not reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::checkpoint::Checkpoint;
use super::config::{Source, StartAt};
use super::watch::Wakeup;
use super::{Batch, Sink, SourceError};
use crate::event::Event;
use crate::metrics::SourceMetrics;
use crate::parse::history::HistoryError;
use crate::track::history::{HistoryDiffer, HistoryOptions, HistoryState};

/// `microsip.ini` is small; a file larger than this is not MicroSIP's and is not read.
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// Runs one history source until `shutdown` is set; `stored` is the checkpoint an
/// earlier run committed.
pub(crate) fn follow_snapshots(
    source: &Source,
    stored: Option<Checkpoint>,
    mut wakeup: Wakeup,
    shutdown: Arc<AtomicBool>,
    sink: &mut dyn Sink,
    counts: &SourceMetrics,
) -> Result<(), SourceError> {
    let key = source.key();
    let options = HistoryOptions {
        time_zone: source.time_zone.clone(),
        source_path: source.path.display().to_string(),
    };
    let state = stored.and_then(|c| serde_json::from_str::<HistoryState>(&c.state).ok());
    let mut first_look = state.is_none() && source.start_at == StartAt::End;
    let mut differ = match &state {
        Some(state) => HistoryDiffer::resume(options, state),
        None => HistoryDiffer::new(options),
    };
    let mut last_stamp: Option<(u64, Option<SystemTime>)> = None;
    let mut last_hash: Option<[u8; 32]> = None;
    let mut errors = 0u64;
    let mut problem = None;
    let path = source.path.display().to_string();
    loop {
        let stamp = std::fs::metadata(&source.path)
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
        if stamp.is_some() && stamp != last_stamp {
            last_stamp = stamp;
            match read_whole(&source.path) {
                Ok(bytes) => {
                    counts.read(bytes.len() as u64, memchr::memchr_iter(b'\n', &bytes).count() as u64);
                    let hash: [u8; 32] = Sha256::digest(&bytes).into();
                    if last_hash != Some(hash) {
                        last_hash = Some(hash);
                        let mut events: Vec<Event> = Vec::new();
                        let mut on_error = |e: HistoryError| {
                            counts.parse_error();
                            errors += 1;
                            if errors <= 100 {
                                tracing::warn!("{path}:{}: {}", e.line, e.reason);
                            }
                        };
                        if std::mem::take(&mut first_look) {
                            tracing::info!(path = %path, "new call history; its calls so far are not reported");
                            differ.mark_seen(&bytes, &mut on_error);
                        } else {
                            differ.update(&bytes, jiff::Timestamp::now(), |e| events.push(e), &mut on_error);
                        }
                        let checkpoint = Checkpoint::state_only(
                            serde_json::to_string(&differ.state()).expect("history state serializes"),
                        );
                        sink.commit(Batch {
                            key: &key,
                            checkpoint: &checkpoint,
                            events: &events,
                            appended: last_stamp.and_then(|(_, modified)| modified),
                        })
                        .map_err(SourceError::Downstream)?;
                    }
                }
                Err(error) => tracing::warn!(path = %path, %error, "cannot read; will retry"),
            }
        }
        super::follow::report_health(&source.path, Ok(()), false, counts, &mut problem);
        if shutdown.load(Ordering::SeqCst) {
            return Ok(());
        }
        wakeup.wait();
    }
}

fn read_whole(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let size = std::fs::metadata(path)?.len();
    if size > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "{size} bytes is too large for a microsip.ini"
        )));
    }
    std::fs::read(path)
}
