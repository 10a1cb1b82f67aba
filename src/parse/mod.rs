//! Parsers: bytes of a watched file in, items for the tracker out.
//!
//! `lines` frames any input into lines with positions; `pjsip` reads the PJSIP log
//! format (MicroSIP's SIP trace) on top of it, with `sip` for the SIP messages inside
//! and `log_time` for its timestamps. `call_log` reads the call-log CSV into typed rows,
//! split by idea: decoding, record framing, columns and values. `history` reads one
//! snapshot of MicroSIP's call history (`microsip.ini` `[Calls]`) into its entries;
//! `record` holds what the record-style sources share. `hook` holds the messages of
//! MicroSIP's command hooks (`callhook hook`). Nothing here builds an event: turning
//! typed items into events is the trackers' work (`track/`).

pub mod call_log;
mod decor;
pub mod history;
pub mod hook;
pub mod lines;
pub mod log_time;
pub mod pjsip;
mod pjsip_links;
pub mod record;
pub mod sip;

/// The input formats callhook reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A PJSIP log (MicroSIP's `MicroSIP_log.txt`).
    SipTrace,
}

/// Lines of an input's head looked at for a PJSIP line.
const DETECT_LINES: usize = 1000;

/// Guesses the format from the first bytes of an input; `None` when nothing fits.
/// A PJSIP log is recognised by a PJSIP line (time column, sender, marker) among its
/// first lines, at the line start or behind a prefix an app's logger writes.
pub(crate) fn detect_format(head: &[u8]) -> Option<Format> {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let mut decoration = decor::Decoration::default();
    for line in head.split(|&b| b == b'\n').take(DETECT_LINES) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        decoration.strip(line, false);
        if decoration.known() {
            return Some(Format::SipTrace);
        }
    }
    None
}
