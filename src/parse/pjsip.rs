//! The PJSIP log format (MicroSIP's `MicroSIP_log.txt`): lines in, call signals out.
//!
//! A log line is `[date ]HH:MM:SS.mmm`, the sender right-aligned in a fixed width (14 or
//! 22, longer names overflow it), a space, a `!` or space, indent dots, the message.
//! `RX`/`TX` lines open a block holding one raw SIP message, closed by `--end msg--`, or
//! by the next log line when the logger cut the entry at 4000 bytes. Lines that follow
//! no pattern (call dumps, garbage) are skipped. A prefix an app's logger writes before
//! each line (logcat, NSLog, syslog, spdlog) is learned and taken off first (`decor`).
//!
//! Out come [`Signal`]s for the call tracker: SIP messages that matter to calls, and the
//! invite session's own `State changed ... to DISCONNECTED` lines, which are the only
//! end some calls get (timeouts, transport errors, rejected credentials). Those lines
//! name an object (`inv0x...`), not a Call-ID, so this module binds objects to Call-IDs
//! through the message references (`tdta0x...`, `rdata0x...`) both kinds of lines share.

use jiff::civil::{Date, DateTime};
use thiserror::Error;

use super::decor::Decoration;
use super::lines::Line;
use super::log_time::{LogClock, LogTime, TimestampCache};
use super::pjsip_links::{Bindings, CallSlots, CutMessages, SlotLine, parse_slot_line};
use super::sip::{Method, Scanned, ScannedCopy, SipError, SipMessage, StartLine, cseq_of_description};

/// Which way a SIP message went, seen from the phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Received (`RX`).
    Received,
    /// Sent (`TX`).
    Sent,
}

/// Something the call tracker must know, with where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Local time from the log.
    pub at: DateTime,
    /// Line where the entry starts, from 1.
    pub line: u64,
    /// Byte offset just after the entry's last line.
    pub end: u64,
    /// Where to start reading again to see this signal and the lines before it that
    /// give it meaning (object bindings): a few lines before its entry.
    pub resume: ResumePoint,
    pub kind: SignalKind,
}

/// A place in a trace to start reading from, with what a fresh parser needs there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ResumePoint {
    /// Byte offset of a line start, from 0.
    pub offset: u64,
    /// That line's number, from 1.
    pub line: u64,
    /// The date undated lines have there.
    pub date: Date,
}

/// How many lines before an entry a resume point lies: enough for the lines that bind
/// a message buffer to its invite session (`Sending Request msg INVITE ... (tdta...)`).
const CONTEXT_LINES: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub enum SignalKind {
    /// A SIP message that can start, answer, end or transfer a call.
    Message { flow: Flow, message: Box<SipMessage> },
    /// The invite session of this Call-ID reached DISCONNECTED.
    InviteDisconnected { call_id: String },
    /// The INVITE transaction of this Call-ID failed in the transport (connection
    /// refused, unreachable): no response will come.
    InviteTransportError { call_id: String },
    /// The phone hangs up this call (`Call N hanging up`), before any message says so.
    HangingUp { call_id: String },
    /// pjsua tears this call down (`Call N: deinitializing media`): at a hang-up, a
    /// final response, or a timeout. At log level 4 the only sign of a timeout.
    TornDown { call_id: String },
    /// Log time moved on (at most once a second); lets the tracker settle calls that
    /// wait for a follow-up that never came.
    Tick,
}

/// A part of the log that could not be read. The rest of the log is read on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {kind}")]
pub struct TraceError {
    /// Line number, from 1.
    pub line: u64,
    pub kind: TraceErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TraceErrorKind {
    #[error("line longer than {0} bytes, cut")]
    LineTooLong(usize),
    #[error("unreadable SIP message: {0}")]
    BadSipMessage(#[from] SipError),
    #[error(
        "SIP message {0} cut before its Call-ID (the logger cuts entries at 4000 bytes), and no later line ties it to a call"
    )]
    CutMessageUntied(String),
}

/// What the parser hands on.
#[derive(Debug, Clone, PartialEq)]
pub enum TraceItem {
    Signal(Signal),
    /// A SIP message signal whose message is still to be built from its scanned header
    /// values: only from a parser that defers messages ([`TraceParser::defer_messages`]).
    Scanned(ScannedMessage),
    Error(TraceError),
}

/// A SIP message the parser checked and bound to its call, handed on as the values of
/// the headers the tracker reads: replay builds the [`SipMessage`] on the tracking
/// thread, which leaves the parser's thread (the busier one) only the headers' scan.
/// The values are in the buffer [`TraceParser::take_message_bytes`] hands over with
/// the item.
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedMessage {
    /// The signal's fields, as [`Signal`]'s.
    pub at: DateTime,
    pub line: u64,
    pub end: u64,
    pub resume: ResumePoint,
    pub flow: Flow,
    pub message: ScannedCopy,
}

/// Counters for the replay summary and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceStats {
    pub lines: u64,
    pub sip_messages: u64,
    pub errors: u64,
}

/// PJSIP cuts a log entry at this many bytes (`PJ_LOG_MAX_SIZE`).
const LOG_ENTRY_LIMIT: usize = 4000;
/// Keep at most this much of a SIP message; real ones are cut at 4000 bytes anyway.
const MAX_BLOCK: usize = 16 * 1024;

/// Streaming parser for a PJSIP log; see the module docs.
#[derive(Debug)]
pub struct TraceParser {
    clock: LogClock,
    /// Local time of the last timestamped line.
    now: DateTime,
    last_tick_second: Option<u32>,
    block: Option<Block>,
    /// The prefix an app's logger writes before each line, learned from the lines.
    decoration: Decoration,
    timestamps: TimestampCache,
    bindings: Bindings,
    /// Messages cut before their Call-ID, waiting for a line that names their call.
    cut: CutMessages,
    slots: CallSlots,
    /// The last message's buffer, emptied, for the next: one large allocation a
    /// message would cost more than copying the message.
    spare_bytes: Vec<u8>,
    /// The last block's description buffer, emptied, for the next (as `spare_bytes`).
    spare_description: Vec<u8>,
    /// Header values of the messages handed on as [`TraceItem::Scanned`] since the last
    /// [`TraceParser::take_message_bytes`]; `None` when messages are read at once.
    deferred: Option<Vec<u8>>,
    max_line: usize,
    stats: TraceStats,
    /// Start positions of the last [`CONTEXT_LINES`] lines, oldest at `recent_next`.
    recent: [ResumePoint; CONTEXT_LINES],
    recent_next: usize,
}

/// The SIP message block being read.
#[derive(Debug)]
struct Block {
    flow: Flow,
    at: DateTime,
    resume: ResumePoint,
    line: u64,
    end: u64,
    /// Where the message is cut short unless `--end msg--` comes first.
    expected: usize,
    seen: usize,
    /// Message reference and description from the RX/TX line, e.g. `INVITE/cseq=5`.
    reference: Option<u64>,
    description: Vec<u8>,
    /// `None` when the message cannot matter to a call: its bytes are not kept.
    bytes: Option<Vec<u8>>,
    /// `--end msg--` closed it: the message is whole, not cut by the logger.
    complete: bool,
}

impl TraceParser {
    /// A parser for a log whose undated lines start on `date`; `max_line` is the line
    /// limit of the splitter feeding it (for error messages).
    pub fn new(date: Date, max_line: usize) -> TraceParser {
        TraceParser::resume(
            ResumePoint {
                offset: 0,
                line: 1,
                date,
            },
            max_line,
        )
    }

    /// A parser starting at `start` (feed it lines from there).
    pub fn resume(start: ResumePoint, max_line: usize) -> TraceParser {
        let date = start.date;
        TraceParser {
            recent: [start; CONTEXT_LINES],
            recent_next: 0,
            clock: LogClock::new(date),
            now: date.to_datetime(jiff::civil::Time::midnight()),
            last_tick_second: None,
            block: None,
            decoration: Decoration::default(),
            timestamps: TimestampCache::default(),
            bindings: Bindings::default(),
            cut: CutMessages::default(),
            slots: CallSlots::default(),
            spare_bytes: Vec::new(),
            spare_description: Vec::new(),
            deferred: None,
            max_line,
            stats: TraceStats::default(),
        }
    }

    pub fn stats(&self) -> TraceStats {
        self.stats
    }

    /// From now on hands on SIP messages bound to a call as [`TraceItem::Scanned`], for
    /// a tracker on another thread to build.
    pub fn defer_messages(&mut self) {
        self.deferred.get_or_insert_with(Vec::new);
    }

    /// The header values of the [`TraceItem::Scanned`] items handed on since the last
    /// call; `spare`, emptied, collects the next ones.
    pub fn take_message_bytes(&mut self, mut spare: Vec<u8>) -> Vec<u8> {
        spare.clear();
        match &mut self.deferred {
            Some(bytes) => std::mem::replace(bytes, spare),
            None => spare,
        }
    }

    /// Where a fresh parser must start to rebuild this one's state: before the open
    /// message block and the lines that bound objects recently.
    pub(crate) fn resume_point(&self) -> ResumePoint {
        let mut oldest = self.recent[self.recent_next];
        if let Some(cut) = self.cut.oldest() {
            oldest = oldest.min(cut);
        }
        match &self.block {
            Some(block) => block.resume.min(oldest),
            None => oldest,
        }
    }

    /// Local time of the last timestamped line.
    pub fn now(&self) -> DateTime {
        self.now
    }

    /// Reads one line, handing what it completes to `out`.
    pub fn line(&mut self, line: Line<'_>, out: &mut impl FnMut(TraceItem)) {
        self.stats.lines += 1;
        let context = self.recent[self.recent_next];
        self.recent[self.recent_next] = ResumePoint {
            offset: line.start,
            line: line.number,
            date: self.now.date(),
        };
        self.recent_next = (self.recent_next + 1) % CONTEXT_LINES;
        if line.too_long {
            self.error(line.number, TraceErrorKind::LineTooLong(self.max_line), out);
        }
        if !self.cut.is_empty() {
            let mut untied = Vec::new();
            self.cut.line(&mut |s| untied.push(s));
            self.untied(untied, out);
        }
        let undecorated = self.decoration.strip(line.bytes, self.block.is_some());
        let line = Line {
            bytes: undecorated.bytes,
            ..line
        };
        let bytes = line.bytes;
        let stamp = |timestamps: &mut TimestampCache| match undecorated.prefix_time {
            Some(time) => Some((time, 0)),
            None => timestamps.parse(bytes),
        };
        if let Some(block) = &mut self.block {
            if bytes == b"--end msg--" {
                block.end = line.end;
                block.complete = true;
                self.close_block(out);
                return;
            }
            // A log line ends a cut message, but only once the message has had room to
            // be cut: before that, a line that merely looks like one (a MESSAGE body
            // written by a caller) is part of the message (and its time is not read).
            let cut_here = block.seen + 64 >= block.expected && stamp(&mut self.timestamps).is_some();
            if !cut_here {
                block.seen += bytes.len() + 1;
                block.end = line.end;
                if let Some(kept) = &mut block.bytes
                    && kept.len() < MAX_BLOCK
                {
                    kept.extend_from_slice(bytes);
                    kept.extend_from_slice(b"\r\n");
                }
                return;
            }
            self.close_block(out);
        }
        let Some((time, used)) = stamp(&mut self.timestamps) else {
            return; // call dumps, continuation text, garbage: nothing a call needs
        };
        self.advance(time, out);
        let Some((sender, message)) = split_entry(&bytes[used..]) else {
            return;
        };
        self.entry(sender, message, &line, context, out);
    }

    /// Ends the input: a message still open is handed on as it is.
    pub fn finish(&mut self, out: &mut impl FnMut(TraceItem)) {
        if self.block.is_some() {
            self.close_block(out);
        }
        let mut untied = Vec::new();
        self.cut.give_up(&mut |s| untied.push(s));
        self.untied(untied, out);
    }

    /// Reports cut messages no line tied to a call, each with its line.
    fn untied(&mut self, signals: Vec<Signal>, out: &mut impl FnMut(TraceItem)) {
        for signal in signals {
            let description = match &signal.kind {
                SignalKind::Message { message, .. } => match &message.start {
                    StartLine::Request { method } => format!("{method:?} request"),
                    StartLine::Response { code } => format!("{code} response"),
                },
                _ => String::new(),
            };
            self.error(signal.line, TraceErrorKind::CutMessageUntied(description), out);
        }
    }

    /// Hands on the cut messages that lines now tie to their calls.
    fn resolve_cut(&mut self, out: &mut impl FnMut(TraceItem)) {
        if self.cut.is_empty() {
            return;
        }
        let mut tied = Vec::new();
        self.cut.resolve(&self.bindings, &mut |s| tied.push(s));
        for signal in tied {
            if let SignalKind::Message { flow, message } = &signal.kind
                && message.method() == Some(&Method::Invite)
                && !message.to_tagged
            {
                self.slots.initial_invite(*flow, &message.call_id);
            }
            out(TraceItem::Signal(signal));
        }
    }

    fn advance(&mut self, time: LogTime, out: &mut impl FnMut(TraceItem)) {
        self.now = self.clock.place(time);
        let second = time.millis / 1000;
        if self.last_tick_second != Some(second) {
            self.last_tick_second = Some(second);
            let tick = Signal {
                at: self.now,
                line: 0,
                end: 0,
                resume: self.recent[self.recent_next],
                kind: SignalKind::Tick,
            };
            out(TraceItem::Signal(tick));
        }
    }

    fn entry(
        &mut self,
        sender: &[u8],
        message: &[u8],
        line: &Line<'_>,
        context: ResumePoint,
        out: &mut impl FnMut(TraceItem),
    ) {
        if let Some(header) = parse_block_header(message) {
            let head_len = line.bytes.len() + 1;
            self.block = Some(Block {
                flow: header.flow,
                at: self.now,
                resume: context,
                line: line.number,
                end: line.end,
                expected: header.size.min(LOG_ENTRY_LIMIT.saturating_sub(head_len)),
                seen: 0,
                reference: header.reference,
                description: {
                    let mut description = std::mem::take(&mut self.spare_description);
                    description.clear();
                    description.extend_from_slice(header.description);
                    description
                },
                bytes: header.may_matter().then(|| {
                    let mut bytes = std::mem::take(&mut self.spare_bytes);
                    bytes.clear();
                    bytes
                }),
                complete: false,
            });
            return;
        }
        let Some(object) = ObjectName::parse(sender) else {
            if let Some(slot_line) = parse_slot_line(message) {
                self.slot_line(slot_line, line, context, out);
            }
            return;
        };
        if let Some(change) = parse_state_change(message) {
            self.state_change(object, change, line, context, out);
        } else if let Some((description, reference)) = find_message_reference(message) {
            self.bindings.mention(object.address, reference, description);
            if !self.cut.is_empty() {
                self.cut.mentioned(object.address, reference, description);
                self.resolve_cut(out);
            }
        }
    }

    fn slot_line(
        &mut self,
        slot_line: SlotLine,
        line: &Line<'_>,
        resume: ResumePoint,
        out: &mut impl FnMut(TraceItem),
    ) {
        let (slot, make): (u32, fn(String) -> SignalKind) = match slot_line {
            SlotLine::MakingCall => return self.slots.making_call(),
            SlotLine::MediaInitializing(slot) => return self.slots.media_initializing(slot),
            SlotLine::HangingUp(slot) => (slot, |call_id| SignalKind::HangingUp { call_id }),
            SlotLine::MediaDeinitializing(slot) => (slot, |call_id| SignalKind::TornDown { call_id }),
        };
        if let Some(call_id) = self.slots.call_id(slot) {
            out(TraceItem::Signal(Signal {
                at: self.now,
                line: line.number,
                end: line.end,
                resume,
                kind: make(call_id.to_owned()),
            }));
        }
    }

    fn state_change(
        &mut self,
        object: ObjectName,
        change: StateChange<'_>,
        line: &Line<'_>,
        resume: ResumePoint,
        out: &mut impl FnMut(TraceItem),
    ) {
        let signal = |kind| {
            TraceItem::Signal(Signal {
                at: self.now,
                line: line.number,
                end: line.end,
                resume,
                kind,
            })
        };
        match object.kind {
            ObjectKind::Invite if change.to == b"DISCONNECTED" => {
                if let Some(bound) = self.bindings.forget(object.address) {
                    out(signal(SignalKind::InviteDisconnected {
                        call_id: bound.call_id.to_string(),
                    }));
                }
            }
            ObjectKind::Transaction if change.to == b"Terminated" || change.to == b"Destroyed" => {
                let bound = self.bindings.forget(object.address);
                if let Some(bound) = bound
                    && bound.invite_request
                    && change.event == b"TRANSPORT_ERROR"
                {
                    out(signal(SignalKind::InviteTransportError {
                        call_id: bound.call_id.to_string(),
                    }));
                }
            }
            _ => {}
        }
    }

    fn close_block(&mut self, out: &mut impl FnMut(TraceItem)) {
        let Some(mut block) = self.block.take() else {
            return;
        };
        self.stats.sip_messages += 1;
        let description = std::mem::take(&mut block.description);
        if let Some(bytes) = block.bytes.take() {
            self.close_message(&block, bytes, &description, out);
        }
        self.spare_description = description;
    }

    /// Parses the kept bytes of a message block and hands on what it holds.
    fn close_message(&mut self, block: &Block, bytes: Vec<u8>, description: &[u8], out: &mut impl FnMut(TraceItem)) {
        let scanned = match Scanned::scan(&bytes, None) {
            // Cut short by the logger: what arrived, the CSeq from the log line.
            Err(SipError::MissingHeader(_)) if !block.complete => match cseq_of_description(description) {
                Some(cseq) => Scanned::scan(&bytes, Some(cseq)),
                None => Scanned::scan(&bytes, None),
            },
            scanned => scanned,
        };
        match scanned {
            Ok(scanned) if scanned.call_id().is_empty() => {
                let signal = message_signal(block, scanned);
                self.spare_bytes = bytes;
                let reference = block.reference.unwrap_or(u64::MAX);
                if let Some(given_up) = self.cut.hold(reference, description, signal) {
                    self.untied(vec![given_up], out);
                }
            }
            Ok(scanned) => {
                let invite_request = scanned.start == StartLine::Request { method: Method::Invite };
                if invite_request && !scanned.to_tagged() {
                    self.slots.initial_invite(block.flow, scanned.call_id());
                }
                if let Some(reference) = block.reference {
                    self.bindings
                        .message(reference, description, scanned.call_id(), invite_request);
                }
                let item = match &mut self.deferred {
                    Some(deferred) => TraceItem::Scanned(ScannedMessage {
                        at: block.at,
                        line: block.line,
                        end: block.end,
                        resume: block.resume,
                        flow: block.flow,
                        message: scanned.copy_into(deferred),
                    }),
                    None => TraceItem::Signal(message_signal(block, scanned)),
                };
                self.spare_bytes = bytes;
                self.resolve_cut(out);
                out(item);
            }
            Err(error) => {
                self.spare_bytes = bytes;
                self.error(block.line, TraceErrorKind::BadSipMessage(error), out);
            }
        }
    }

    fn error(&mut self, line: u64, kind: TraceErrorKind, out: &mut impl FnMut(TraceItem)) {
        self.stats.errors += 1;
        out(TraceItem::Error(TraceError { line, kind }));
    }
}

/// The signal of a message read whole on the parser's thread (a live source's, or one
/// with no Call-ID to bind).
fn message_signal(block: &Block, scanned: Scanned<'_>) -> Signal {
    Signal {
        at: block.at,
        line: block.line,
        end: block.end,
        resume: block.resume,
        kind: SignalKind::Message {
            flow: block.flow,
            message: Box::new(scanned.build()),
        },
    }
}

/// Splits what follows the timestamp into sender and message: ` sender M...message`,
/// where `M` is the thread-switch marker (`!` or space) and the dots are indentation.
fn split_entry(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = first_space_or_not(rest, false)?;
    let rest = &rest[start..];
    let end = first_space_or_not(rest, true).unwrap_or(rest.len());
    let sender = &rest[..end];
    let mut message = rest.get(end + 1..).unwrap_or_default();
    if let [b'!' | b' ', tail @ ..] = message {
        message = tail;
    }
    let dots = message.iter().take_while(|&&b| b == b'.').count();
    Some((sender, &message[dots..]))
}

/// Index of the first space in `bytes` (`space`), or of the first byte that is not one.
/// Eight bytes a step: the sender's padding and name are some 10 to 20 bytes each, and
/// a byte-at-a-time loop or a `memchr` call for each was a tenth of a line's parsing.
fn first_space_or_not(bytes: &[u8], space: bool) -> Option<usize> {
    const SPACES: u64 = u64::from_ne_bytes([b' '; 8]);
    const LOW: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut at = 0;
    while let Some(word) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        // Bytes equal to a space are zero here.
        let diff = u64::from_le_bytes(*word) ^ SPACES;
        // Space: the classic "has a zero byte" test, exact up to the first zero byte,
        // which is all that is read. Not a space: any bit set.
        let found = if space {
            diff.wrapping_sub(LOW) & !diff & HIGH
        } else {
            diff
        };
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let tail = bytes.get(at..).unwrap_or_default();
    tail.iter().position(|&b| (b == b' ') == space).map(|i| at + i)
}

/// The RX/TX line that opens a SIP message block:
/// `RX 1229 bytes Request msg INVITE/cseq=31760 (rdata0x55c1) from UDP 127.0.0.1:5170:`.
struct BlockHeader<'a> {
    flow: Flow,
    size: usize,
    /// `INVITE/cseq=31760` or `200/INVITE/cseq=27647`.
    description: &'a [u8],
    reference: Option<u64>,
}

impl BlockHeader<'_> {
    /// Whether the message can matter to a call, judged from its description alone so
    /// that REGISTER, OPTIONS, SUBSCRIBE traffic is never parsed. When the description
    /// is not understood, the message is parsed to be safe.
    fn may_matter(&self) -> bool {
        let method = match memchr::memchr(b'/', self.description) {
            Some(slash) if self.description[0].is_ascii_digit() => {
                // response: "200/INVITE/cseq=5"
                let rest = &self.description[slash + 1..];
                let end = memchr::memchr(b'/', rest).unwrap_or(rest.len());
                let method = &rest[..end];
                return method.eq_ignore_ascii_case(b"INVITE") || method.eq_ignore_ascii_case(b"REFER");
            }
            Some(slash) => &self.description[..slash],
            None => return true,
        };
        [
            &b"INVITE"[..],
            b"ACK",
            b"BYE",
            b"CANCEL",
            b"UPDATE",
            b"REFER",
            b"NOTIFY",
        ]
        .iter()
        .any(|m| method.eq_ignore_ascii_case(m))
    }
}

fn parse_block_header(message: &[u8]) -> Option<BlockHeader<'_>> {
    let flow = match message.get(..3)? {
        b"RX " => Flow::Received,
        b"TX " => Flow::Sent,
        _ => return None,
    };
    let rest = &message[3..];
    let space = memchr::memchr(b' ', rest)?;
    let size: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
    let rest = rest[space + 1..].strip_prefix(b"bytes ")?;
    let (description, reference) = match find_message_reference(rest) {
        Some((description, reference)) => (description, Some(reference)),
        None => (&rest[..0], None),
    };
    Some(BlockHeader {
        flow,
        size,
        description,
        reference,
    })
}

/// Finds `msg DESCRIPTION (tdta0x1234)` or `(rdata...)` in a message: the description
/// and the address of the message buffer. A `tdta` reference wins over an `rdata` one.
fn find_message_reference(message: &[u8]) -> Option<(&[u8], u64)> {
    // One pass over the line's `(`s, each looked at in place: most object lines have
    // none, the rest one or two. (Two `memmem` searches for the names over the whole
    // line and a reverse one for `msg ` took some 3.5 % of a replay's samples, this
    // pass about 2.5 %.)
    let mut open = None;
    for paren in memchr::memchr_iter(b'(', message) {
        if paren == 0 || message[paren - 1] != b' ' {
            continue;
        }
        let name = &message[paren + 1..];
        if name.starts_with(b"tdta") {
            open = Some(paren - 1);
            break;
        }
        if open.is_none() && name.starts_with(b"rdata") {
            open = Some(paren - 1);
        }
    }
    let open = open?;
    let after = &message[open + 2..];
    let close = memchr::memchr(b')', after)?;
    let name = &after[..close];
    let address = parse_address(name.strip_prefix(b"tdta").or_else(|| name.strip_prefix(b"rdata"))?)?;
    let before = &message[..open];
    let start = memchr::memrchr_iter(b'm', before)
        .find(|&at| before[at..].starts_with(b"msg "))
        .map(|at| at + 4)
        .unwrap_or(0);
    Some((&before[start..], address))
}

/// A hexadecimal object address, `0x55c17f91f598` (Linux) or `00A3F5C8` (Windows).
fn parse_address(text: &[u8]) -> Option<u64> {
    let digits = text.strip_prefix(b"0x").unwrap_or(text);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    // As `u64::from_str_radix` reads it: a `+` may lead.
    let digits = digits.strip_prefix(b"+").unwrap_or(digits);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(value << 4 | u64::from(digit))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    /// `inv0x...`: an invite session (its address is its dialog's, `dlg0x...`).
    Invite,
    /// `tsx0x...`: a transaction.
    Transaction,
}

/// A log sender naming a PJSIP object: `inv0x55c17f91f598`, `dlg...`, `tsx...`.
#[derive(Debug, Clone, Copy)]
struct ObjectName {
    kind: ObjectKind,
    address: u64,
}

impl ObjectName {
    fn parse(sender: &[u8]) -> Option<ObjectName> {
        let (kind, rest) = match sender.get(..3)? {
            // An invite session and its dialog share one address.
            b"inv" | b"dlg" => (ObjectKind::Invite, &sender[3..]),
            b"tsx" => (ObjectKind::Transaction, &sender[3..]),
            _ => return None,
        };
        Some(ObjectName {
            kind,
            address: parse_address(rest)?,
        })
    }
}

/// `State changed from X to Y, event=E`.
struct StateChange<'a> {
    to: &'a [u8],
    event: &'a [u8],
}

fn parse_state_change(message: &[u8]) -> Option<StateChange<'_>> {
    let rest = message.strip_prefix(b"State changed from ")?;
    let to_at = memchr::memmem::find(rest, b" to ")?;
    let rest = &rest[to_at + 4..];
    let comma = memchr::memchr(b',', rest).unwrap_or(rest.len());
    let to = rest[..comma].trim_ascii();
    let event = memchr::memmem::find(rest, b"event=")
        .map(|i| rest[i + 6..].trim_ascii())
        .unwrap_or_default();
    Some(StateChange { to, event })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::lines::LineSplitter;
    use jiff::civil::date;

    fn parse(text: &str) -> Vec<TraceItem> {
        run(TraceParser::new(date(2026, 11, 23), 65536), text).0
    }

    /// Runs `parser` over `text`: its items but ticks, and its parser (for what it kept).
    fn run(mut parser: TraceParser, text: &str) -> (Vec<TraceItem>, TraceParser) {
        let mut splitter = LineSplitter::new(0, 1, 65536);
        let mut items = Vec::new();
        let mut out = |i| items.push(i);
        splitter.push(text.as_bytes(), |l| parser.line(l, &mut out));
        splitter.finish(|l| parser.line(l, &mut out));
        parser.finish(&mut out);
        items.retain(|i| {
            !matches!(
                i,
                TraceItem::Signal(Signal {
                    kind: SignalKind::Tick,
                    ..
                })
            )
        });
        (items, parser)
    }

    /// What `text` parses to with messages deferred, each scanned one built into the
    /// signal an immediate parser makes.
    fn parse_deferred(text: &str) -> Vec<TraceItem> {
        let mut parser = TraceParser::new(date(2026, 11, 23), 65536);
        parser.defer_messages();
        let (items, mut parser) = run(parser, text);
        let bytes = parser.take_message_bytes(Vec::new());
        items
            .into_iter()
            .map(|i| match i {
                TraceItem::Scanned(m) => TraceItem::Signal(Signal {
                    at: m.at,
                    line: m.line,
                    end: m.end,
                    resume: m.resume,
                    kind: SignalKind::Message {
                        flow: m.flow,
                        message: Box::new(m.message.values(&bytes).unwrap().build()),
                    },
                }),
                other => other,
            })
            .collect()
    }

    #[test]
    fn deferred_messages_read_as_at_once() {
        let filler = "X-Filler: ".to_owned() + &"y".repeat(200) + "\r\n";
        let cut = INVITE.replace("Content-Length: 0\r\n", &filler.repeat(30));
        let log = format!(
            "08:00:00.000 inv0x55aa  ..Sending Request msg INVITE/cseq=5 (tdta0x77)\n\
             08:00:00.000 pjsua_core.c  .TX 150 bytes Request msg INVITE/cseq=5 (tdta0x77) to UDP 1.2.3.4:5:\n{INVITE}--end msg--\n\
             08:00:00.001 pjsua_core.c  .RX 6400 bytes Response msg 180/INVITE/cseq=5 (rdata0x1) from UDP 1.2.3.4:5:\n{}\n\
             08:00:00.002 pjsua_core.c  .RX 6400 bytes Request msg INVITE/cseq=5 (rdata0x2) from UDP 1.2.3.4:5:\n{}\n\
             08:00:00.003 pjsua_core.c  .RX 5 bytes Request msg BYE/cseq=6 (rdata0x3) from UDP 1.2.3.4:5:\ngarbage\n--end msg--\n\
             08:00:32.000 inv0x55aa  .State changed from CALLING to DISCONNECTED, event=TSX_STATE\n",
            &cut[..3800],
            &cut.replace("Call-ID: c1\r\n", "")[..3700],
        );
        let at_once = parse(&log);
        assert_eq!(messages(&at_once).len(), 2);
        assert_eq!(parse_deferred(&log), at_once);
    }

    fn messages(items: &[TraceItem]) -> Vec<(Flow, SipMessage)> {
        items
            .iter()
            .filter_map(|i| match i {
                TraceItem::Signal(Signal {
                    kind: SignalKind::Message { flow, message },
                    ..
                }) => Some((*flow, (**message).clone())),
                _ => None,
            })
            .collect()
    }

    const INVITE: &str = "INVITE sip:101@h SIP/2.0\r\nFrom: \"A\" <sip:555@h>;tag=1\r\nTo: <sip:101@h>\r\nCall-ID: c1\r\nCSeq: 5 INVITE\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn sender_widths_and_markers() {
        for prefix in [
            "08:00:00.000         pjsua_core.c  .",
            "08:00:00.000   pjsua_core.c  ..",
            "08:00:00.000   pjsua_core.c !.",
            "2026-11-23 08:00:00.000 pjsua_core.c  ",
            "08:00:00.000 a_very_long_sender_name_beyond_22.c  .",
        ] {
            let log = format!(
                "{prefix}RX 150 bytes Request msg INVITE/cseq=5 (rdata0x1) from UDP 1.2.3.4:5:\n{INVITE}--end msg--\n"
            );
            let got = messages(&parse(&log));
            assert_eq!(got.len(), 1, "{prefix}");
            assert_eq!(got[0].0, Flow::Received);
            assert_eq!(got[0].1.call_id, "c1");
        }
    }

    proptest::proptest! {
        #[test]
        fn spaces_found_as_one_at_a_time(bytes in proptest::collection::vec(proptest::prop_oneof![
            proptest::strategy::Just(b' '), proptest::strategy::Just(b'a'),
            proptest::strategy::Just(0u8), proptest::strategy::Just(b' ' + 1),
            proptest::strategy::Just(b' ' - 1), proptest::arbitrary::any::<u8>()], 0..40)) {
            for space in [false, true] {
                let expected = bytes.iter().position(|&b| (b == b' ') == space);
                proptest::prop_assert_eq!(first_space_or_not(&bytes, space), expected);
            }
        }
    }

    #[test]
    fn crlf_log() {
        let log = format!(
            "08:00:00.000 pjsua_core.c  .TX 150 bytes Request msg INVITE/cseq=5 (tdta0x1) to TCP 1.2.3.4:5:\r\n{}--end msg--\r\n",
            INVITE.replace("\r\n", "\r\r\n")
        );
        let got = messages(&parse(&log));
        assert_eq!(got[0].0, Flow::Sent);
        assert_eq!(got[0].1.from.user.as_deref(), Some("555"));
    }

    #[test]
    fn block_cut_at_4000_bytes_ends_at_next_log_line() {
        let filler = "X-Filler: ".to_owned() + &"y".repeat(200) + "\r\n";
        let mut body = INVITE.trim_end().to_owned() + "\r\n";
        body = body.replace("Content-Length: 0\r\n", &filler.repeat(30));
        let cut = &body[..3800];
        let log = format!(
            "08:00:00.000 pjsua_core.c  .RX 6400 bytes Request msg INVITE/cseq=5 (rdata0x1) from UDP 1.2.3.4:5:\n{cut}\n08:00:00.001 pjsua_core.c  .next line\n"
        );
        let got = messages(&parse(&log));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.call_id, "c1");
    }

    #[test]
    fn log_lookalike_inside_a_message_is_content() {
        let message = "MESSAGE sip:101@h SIP/2.0\r\nFrom: <sip:555@h>;tag=1\r\nTo: <sip:101@h>\r\nCall-ID: m1\r\nCSeq: 1 MESSAGE\r\n\r\n08:00:00.000 pjsua_core.c  .RX 10 bytes Request msg INVITE/cseq=1 (rdata0x9) from UDP 1.2.3.4:5:\r\n";
        let log = format!(
            "08:00:00.000 pjsua_core.c  .RX {} bytes Request msg INVITE/cseq=1 (rdata0x1) from UDP 1.2.3.4:5:\n{message}--end msg--\n",
            message.len()
        );
        let got = messages(&parse(&log));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.call_id, "m1");
    }

    #[test]
    fn noise_is_not_parsed() {
        let log = "08:00:00.000 pjsua_core.c  .RX 100 bytes Request msg OPTIONS/cseq=1 (rdata0x1) from UDP 1.2.3.4:5:\nnot even SIP\n--end msg--\n\
                   08:00:00.000 pjsua_core.c  .TX 100 bytes Response msg 401/REGISTER/cseq=1 (tdta0x1) to UDP 1.2.3.4:5:\nnot even SIP\n--end msg--\n";
        assert!(parse(log).is_empty());
    }

    #[test]
    fn disconnect_line_is_bound_to_call_id() {
        let log = format!(
            "08:00:00.000 inv0x55aa  ..Sending Request msg INVITE/cseq=5 (tdta0x77)\n\
             08:00:00.000 pjsua_core.c  .TX 150 bytes Request msg INVITE/cseq=5 (tdta0x77) to UDP 1.2.3.4:5:\n{INVITE}--end msg--\n\
             08:00:00.000 tsx0x99  .Transaction created for Request msg INVITE/cseq=5 (tdta0x77)\n\
             08:00:32.000 tsx0x99  .State changed from Calling to Terminated, event=TRANSPORT_ERROR\n\
             08:00:32.000 inv0x55aa  .State changed from CALLING to DISCONNECTED, event=TSX_STATE\n\
             08:00:33.000 inv0x55aa  .State changed from CALLING to DISCONNECTED, event=TSX_STATE\n"
        );
        let items = parse(&log);
        let kinds: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                TraceItem::Signal(s) => Some(s.kind.clone()),
                _ => None,
            })
            .filter(|k| !matches!(k, SignalKind::Message { .. }))
            .collect();
        assert_eq!(
            kinds,
            vec![
                SignalKind::InviteTransportError { call_id: "c1".into() },
                SignalKind::InviteDisconnected { call_id: "c1".into() },
            ]
        );
    }

    #[test]
    fn windows_style_addresses() {
        assert_eq!(parse_address(b"0x55c17f91f598"), Some(0x55c17f91f598));
        assert_eq!(parse_address(b"00A3F5C8"), Some(0xA3F5C8));
        assert_eq!(parse_address(b"zz"), None);
        assert_eq!(parse_address(b""), None);
        assert_eq!(parse_address(b"0x"), None);
        assert_eq!(parse_address(b"+"), None);
        assert_eq!(parse_address(b"+1f"), Some(0x1f));
        assert_eq!(parse_address(b"0x12345678901234567"), None);
        assert_eq!(parse_address(b"ffffffffffffffff"), Some(u64::MAX));
        let obj = ObjectName::parse(b"inv00A3F5C8").unwrap();
        assert_eq!((obj.kind, obj.address), (ObjectKind::Invite, 0xA3F5C8));
    }

    #[test]
    fn unreadable_message_is_an_error_with_its_line() {
        let log = "08:00:00.000 x  .RX 5 bytes Request msg INVITE/cseq=1 (rdata0x1) from UDP 1.2.3.4:5:\ngarbage\n--end msg--\n";
        let items = parse(log);
        assert_eq!(
            items,
            vec![TraceItem::Error(TraceError {
                line: 1,
                kind: TraceErrorKind::BadSipMessage(SipError::BadStartLine)
            })]
        );
        assert_eq!(
            items[0].clone_error().to_string(),
            "line 1: unreadable SIP message: start line is neither a request nor a response"
        );
    }

    /// The searches as first written (memmem, `from_str_radix`): the quicker ones must
    /// find the same.
    fn reference_as_written(message: &[u8]) -> Option<(&[u8], u64)> {
        let open = memchr::memmem::find(message, b" (tdta").or_else(|| memchr::memmem::find(message, b" (rdata"))?;
        let after = &message[open + 2..];
        let close = memchr::memchr(b')', after)?;
        let name = &after[..close];
        let address = address_as_written(name.strip_prefix(b"tdta").or_else(|| name.strip_prefix(b"rdata"))?)?;
        let before = &message[..open];
        let start = memchr::memmem::rfind(before, b"msg ").map(|i| i + 4).unwrap_or(0);
        Some((&before[start..], address))
    }

    fn address_as_written(text: &[u8]) -> Option<u64> {
        let digits = text.strip_prefix(b"0x").unwrap_or(text);
        if digits.is_empty() || digits.len() > 16 {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    }

    proptest::proptest! {
        #[test]
        fn message_references_found_as_first_written(parts in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just(" (tdta".to_owned()), proptest::strategy::Just(" (rdata".to_owned()),
                proptest::strategy::Just("msg ".to_owned()), proptest::strategy::Just(")".to_owned()),
                proptest::strategy::Just("(".to_owned()), proptest::strategy::Just("0x".to_owned()),
                "[0-9a-fA-F+x ]{0,18}", "[ -~]{0,6}",
            ], 0..10)) {
            let message = parts.concat();
            proptest::prop_assert_eq!(find_message_reference(message.as_bytes()), reference_as_written(message.as_bytes()));
            proptest::prop_assert_eq!(parse_address(message.as_bytes()), address_as_written(message.as_bytes()));
        }
    }

    #[test]
    fn a_sent_buffer_wins_over_a_received_one() {
        let line = b"Sending Request msg INVITE/cseq=5 (rdata0x2) (tdta0x1)";
        assert_eq!(
            find_message_reference(line),
            Some((&b"INVITE/cseq=5 (rdata0x2)"[..], 1))
        );
        assert_eq!(find_message_reference(line), reference_as_written(line));
    }

    impl TraceItem {
        fn clone_error(&self) -> TraceError {
            match self {
                TraceItem::Error(e) => e.clone(),
                _ => panic!("not an error"),
            }
        }
    }
}
