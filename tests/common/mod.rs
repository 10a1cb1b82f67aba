//! Helpers shared by the integration tests: replaying bytes, fixtures, synthetic traces.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use callhook::event::{Event, SourceKind};
use callhook::parse::pjsip::TraceError;
use callhook::source::sip_trace::SipTraceReader;
use callhook::track::TrackerConfig;
use jiff::civil::date;
use jiff::tz::TimeZone;

/// Replays `bytes` as one SIP trace (dated 2026-11-23, UTC), fed in chunks of `chunk`.
pub fn replay_chunked(
    bytes: &[u8],
    chunk: usize,
    configure: impl FnOnce(&mut TrackerConfig),
) -> (Vec<Event>, Vec<TraceError>) {
    let mut config = TrackerConfig::new(SourceKind::SipTrace, "test.log");
    config.time_zone = TimeZone::UTC;
    configure(&mut config);
    let mut reader = SipTraceReader::new(date(2026, 11, 23), config);
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        reader.push(piece, &mut |e| events.push(e), &mut |e| errors.push(e));
    }
    reader.finish(&mut |e| events.push(e), &mut |e| errors.push(e));
    (events, errors)
}

pub fn replay(bytes: &[u8]) -> (Vec<Event>, Vec<TraceError>) {
    replay_chunked(bytes, 1 << 20, |_| {})
}

/// Every `tests/fixtures/pjsip/<case>/` directory that has a trace and expected events.
pub fn pjsip_fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pjsip");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fixtures/pjsip exists")
        .map(|e| e.unwrap().path())
        .filter(|d| d.join("phone.log").is_file() && d.join("expected.ndjson").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Builds PJSIP log text line by line, for flows no fixture has.
pub struct Trace {
    pub text: String,
    millis: u64,
    crlf: bool,
}

impl Trace {
    pub fn new() -> Trace {
        Trace {
            text: String::new(),
            millis: 8 * 3_600_000,
            crlf: false,
        }
    }

    pub fn crlf() -> Trace {
        Trace {
            crlf: true,
            ..Trace::new()
        }
    }

    /// Moves the clock on.
    pub fn wait(&mut self, millis: u64) -> &mut Self {
        self.millis += millis;
        self
    }

    pub fn at(&mut self, hh_mm_ss: &str) -> &mut Self {
        let parts: Vec<u64> = hh_mm_ss.split(':').map(|p| p.parse().unwrap()).collect();
        self.millis = ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1000;
        self
    }

    fn stamp(&self) -> String {
        let m = self.millis % 86_400_000;
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            m / 3_600_000,
            m / 60_000 % 60,
            m / 1000 % 60,
            m % 1000
        )
    }

    fn eol(&self) -> &'static str {
        if self.crlf { "\r\n" } else { "\n" }
    }

    /// A plain log line from `sender`.
    pub fn line(&mut self, sender: &str, message: &str) -> &mut Self {
        let eol = self.eol();
        let stamp = self.stamp();
        let _ = write!(self.text, "{stamp} {sender:>22}  .{message}{eol}");
        self
    }

    /// An RX (`received`) or TX block holding `sip` (header lines joined by `\n`).
    pub fn sip(&mut self, received: bool, sip: &str) -> &mut Self {
        let message: String = sip.lines().map(|l| format!("{l}\r\n")).collect::<String>() + "\r\n";
        let first = sip.lines().next().unwrap_or_default();
        let cseq = sip.lines().find_map(|l| l.strip_prefix("CSeq: ")).unwrap_or("1 INVITE");
        let (number, method) = cseq.split_once(' ').unwrap();
        let description = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
            let code = &rest[..3];
            format!("Response msg {code}/{method}/cseq={number}")
        } else {
            format!("Request msg {}/cseq={number}", first.split(' ').next().unwrap())
        };
        let (dir, buffer, word) = if received {
            ("RX", "rdata0x1", "from")
        } else {
            ("TX", "tdta0x2", "to")
        };
        let header = format!(
            "{dir} {} bytes {description} ({buffer}) {word} UDP 127.0.0.1:5070:",
            message.len()
        );
        self.line("pjsua_core.c", &header);
        let eol = self.eol();
        // PJSIP writes the message as is (CRLF inside), then its end marker.
        self.text.push_str(&message);
        let _ = write!(self.text, "{eol}--end msg--{eol}");
        self
    }
}

/// SIP message text for tests: an INVITE from `from` to `to` with `call_id`.
pub fn invite(call_id: &str, from: &str, to: &str, cseq: u32) -> String {
    format!(
        "INVITE sip:x@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{cseq}\nFrom: {from};tag=ft\nTo: {to}\nCall-ID: {call_id}\nCSeq: {cseq} INVITE\nContent-Length: 0"
    )
}

/// A response to `method` (with `cseq`) on `call_id`; `to_tag` adds a tag to To.
pub fn response(code: u16, call_id: &str, from: &str, to: &str, cseq: u32, method: &str) -> String {
    format!(
        "SIP/2.0 {code} Reason\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{cseq}\nFrom: {from};tag=ft\nTo: {to};tag=tt\nCall-ID: {call_id}\nCSeq: {cseq} {method}\nContent-Length: 0"
    )
}

/// An in-dialog request (BYE, CANCEL, REFER, ...).
pub fn request(method: &str, call_id: &str, from: &str, to: &str, cseq: u32, extra: &str) -> String {
    let mut text = format!(
        "{method} sip:x@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr{cseq}\nFrom: {from};tag=ft\nTo: {to};tag=tt\nCall-ID: {call_id}\nCSeq: {cseq} {method}\n"
    );
    if !extra.is_empty() {
        text.push_str(extra);
        text.push('\n');
    }
    text.push_str("Content-Length: 0");
    text
}
