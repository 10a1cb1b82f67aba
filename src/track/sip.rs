//! Per-call state: SIP signals in, `ringing` / `answered` / `ended` events out.
//!
//! Calls are keyed by Call-ID. The first INVITE without a To tag starts a call (received:
//! inbound, sent: outbound); only the 2xx to the current initial INVITE answers it; its
//! final error response, a BYE, or the invite session's DISCONNECTED line ends it. So
//! re-INVITEs, UPDATEs, in-dialog errors and retransmissions change nothing, and
//! REGISTER/OPTIONS/SUBSCRIBE dialogs never become calls.
//!
//! Some answers are not final for the call: a 401/407 challenge (the phone re-sends the
//! INVITE with credentials) and a 3xx redirect (the phone may follow it with a new
//! INVITE on the same Call-ID). Such a call waits for its follow-up; it ends with that
//! status when the invite session says DISCONNECTED, or when no follow-up came within
//! [`TrackerConfig::follow_up`] of log time (level-4 logs have no state lines).
//!
//! A call whose INVITE is not in the log (switched on mid-call, or cut) is joined from
//! the first message of its dialog that the log shows (`midway`).

mod ended;
mod midway;

use self::ended::EndedCalls;

// Seeded (Call-IDs are the caller's choice) and quicker than std's SipHash.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, ZonedDateTime};
use serde::{Deserialize, Serialize};

use crate::event::{
    CallFacts, Direction, EndedBy, Ending, Event, EventType, MAX_NAME_CHARS, MAX_NUMBER_CHARS, Outcome, SourceKind,
    clean_text,
};
use crate::parse::pjsip::{Flow, ResumePoint, Signal, SignalKind};
use crate::parse::sip::{Method, NameAddr, Parties, Scanned, SipMessage, StartLine};

use super::open_calls::{CallRows, OpenCalls};

/// Look for calls the log forgot this often (signals).
const LOOK_FOR_FORGOTTEN: usize = 4096;

/// How the tracker turns signals into events.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    pub source: SourceKind,
    /// Written into each event's `source_path`.
    pub source_path: String,
    /// Time zone of the log's local times.
    pub time_zone: TimeZone,
    /// Take an inbound caller's number and name from P-Asserted-Identity (or
    /// Remote-Party-ID) when the INVITE has one, instead of From.
    pub prefer_asserted_identity: bool,
    /// How long a challenged or redirected call waits for the phone's next INVITE.
    pub follow_up: SignedDuration,
    /// A call the log says nothing of for this long (log time) ends as `unknown`: its
    /// end was not logged (the log switched off, a crash). Longer than any real call's
    /// silence: session refreshes and keep-alives come every few minutes.
    pub max_idle: SignedDuration,
    /// At most this many calls are open; beyond it the longest-silent ones end as
    /// `unknown`, so memory and checkpoints stay bounded whatever the log holds.
    pub max_open: usize,
}

impl TrackerConfig {
    pub fn new(source: SourceKind, source_path: impl Into<String>) -> TrackerConfig {
        TrackerConfig {
            source,
            source_path: source_path.into(),
            time_zone: TimeZone::system(),
            prefer_asserted_identity: false,
            follow_up: SignedDuration::from_secs(5),
            max_idle: SignedDuration::from_hours(4),
            max_open: 2_000,
        }
    }
}

/// One call in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Call {
    call_id: String,
    /// Where re-reading must start to see this call from its beginning.
    resume: ResumePoint,
    direction: Direction,
    local_number: String,
    remote_number: String,
    remote_name: Option<String>,
    ringing_at: DateTime,
    answered_at: Option<DateTime>,
    /// When the log last named this call (none in checkpoints of older versions).
    #[serde(default)]
    last_seen: Option<DateTime>,
    /// CSeq of the latest initial INVITE (re-sent after a challenge or redirect).
    invite_cseq: u32,
    /// A 3xx/401/407 waiting for the phone's next INVITE: status and when it came.
    awaiting_follow_up: Option<(u16, DateTime)>,
    /// The INVITE transaction failed in the transport.
    transport_failed: bool,
    /// The callee sent any response to the INVITE (100 Trying included).
    responded: bool,
    /// The phone hung up before the call was answered (outbound: it is cancelling).
    hung_up: bool,
    /// A REFER sent or received and not yet answered.
    refer_pending: Option<PendingRefer>,
    /// Who transferred the call away, once a REFER was accepted.
    transferred_by: Option<EndedBy>,
    /// The consultation call that transfer replaces (attended transfer).
    transfer_replaces: Option<String>,
    /// The log joined the call after its INVITE (switched on mid-call, or cut): what
    /// the INVITE would have told is not known.
    #[serde(default)]
    partial: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingRefer {
    by: EndedBy,
    /// The consultation call an attended transfer replaces.
    replaces: Option<String>,
}

/// The per-call state machine; see the module docs.
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    calls: OpenCalls<Call>,
    ended: EndedCalls,
    /// Calls started because their Call-ID replaced another (attended transfer) → who.
    replaced_by: HashMap<String, EndedBy>,
    /// Calls that may wait for a follow-up INVITE (a superset: each is checked), so a
    /// signal costs the same however many calls are open.
    may_await: HashSet<String>,
    /// Signals since [`Tracker::end_forgotten`] last looked.
    since_look: usize,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Tracker {
        Tracker {
            config,
            calls: OpenCalls::new(),
            ended: EndedCalls::new(),
            replaced_by: HashMap::new(),
            may_await: HashSet::new(),
            since_look: 0,
        }
    }

    /// Number of calls started and not yet ended.
    pub(crate) fn open_calls(&self) -> usize {
        self.calls.len()
    }

    /// Takes one signal, appending the events it causes to `out`.
    pub fn signal(&mut self, signal: &Signal, out: &mut Vec<Event>) {
        self.settle_follow_ups(signal.at, out);
        self.end_forgotten(signal.at, out);
        match &signal.kind {
            SignalKind::Message { flow, message } => self.message_seen(*flow, message, signal.at, signal.resume, out),
            SignalKind::InviteDisconnected { call_id } => self.disconnected(call_id, signal.at, out),
            SignalKind::InviteTransportError { call_id } => {
                if let Some(call) = self.calls.get_mut(call_id) {
                    call.transport_failed = true;
                }
            }
            SignalKind::HangingUp { call_id } => self.hanging_up(call_id, signal.at, out),
            SignalKind::TornDown { call_id } => self.torn_down(call_id, signal.at, out),
            SignalKind::Tick => {}
        }
    }

    /// Takes a SIP message signal given by its parts: what [`Tracker::signal`] does with
    /// a [`SignalKind::Message`] (replay reads the message on the tracking thread and
    /// puts it in no signal). The message is built here, its parties read only when it
    /// may start a call ([`Parties`]): no other message's From or To is looked at.
    pub(crate) fn sip_message(
        &mut self,
        flow: Flow,
        message: Scanned<'_>,
        at: DateTime,
        resume: ResumePoint,
        out: &mut Vec<Event>,
    ) {
        self.settle_follow_ups(at, out);
        self.end_forgotten(at, out);
        // Asked after the calls the two above ended are ended: what `invite` and
        // `join_midway` check before they read a party.
        let call_id = message.call_id();
        let parties = if self.calls.contains_key(call_id) || self.ended.contains(call_id) {
            Parties::ToTagOnly
        } else {
            Parties::Read
        };
        self.message_seen(flow, &message.build_with(parties), at, resume, out);
    }

    fn message_seen(
        &mut self,
        flow: Flow,
        message: &SipMessage,
        at: DateTime,
        resume: ResumePoint,
        out: &mut Vec<Event>,
    ) {
        self.message(flow, message, at, resume, out);
        if let Some(call) = self.calls.get_mut(&message.call_id) {
            call.last_seen = Some(at);
        }
    }

    /// The input is complete (end of a replayed file): calls still waiting for a
    /// follow-up INVITE will not get one.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        let waiting: Vec<String> = self
            .calls
            .values()
            .filter(|c| c.awaiting_follow_up.is_some())
            .map(|c| c.call_id.clone())
            .collect();
        for call_id in waiting {
            if let Some((code, at)) = self.calls.get(&call_id).and_then(|c| c.awaiting_follow_up) {
                self.end_unanswered(&call_id, code, at, out);
            }
        }
    }

    /// The log was truncated or replaced: every open call ends with outcome `unknown`.
    pub fn truncated(&mut self, at: DateTime, out: &mut Vec<Event>) {
        let open: Vec<String> = self.calls.keys().cloned().collect();
        for call_id in open {
            self.end(&call_id, at, Ending::unknown(), out);
        }
    }

    fn message(&mut self, flow: Flow, message: &SipMessage, at: DateTime, resume: ResumePoint, out: &mut Vec<Event>) {
        self.join_midway(flow, message, at, resume, out);
        match &message.start {
            StartLine::Request { method } => match method {
                Method::Invite => self.invite(flow, message, at, resume, out),
                Method::Bye => self.bye(flow, message, at, out),
                Method::Refer => self.refer(flow, message),
                Method::Cancel if flow == Flow::Sent => {
                    if let Some(call) = self.calls.get_mut(&message.call_id)
                        && call.direction == Direction::Outbound
                        && call.answered_at.is_none()
                    {
                        call.hung_up = true;
                    }
                }
                Method::Notify => self.notify(message),
                _ => {}
            },
            StartLine::Response { code } => match message.cseq_method {
                Method::Invite => self.invite_response(flow, message, *code, at, out),
                Method::Refer => self.refer_response(message, *code),
                _ => {}
            },
        }
    }

    fn invite(
        &mut self,
        flow: Flow,
        message: &SipMessage,
        at: DateTime,
        signal_resume: ResumePoint,
        out: &mut Vec<Event>,
    ) {
        if message.to_tagged {
            return; // re-INVITE inside a dialog: hold, unhold, refresh
        }
        if let Some(call) = self.calls.get_mut(&message.call_id) {
            // Same CSeq: a retransmission. New CSeq: the INVITE re-sent with credentials
            // or to a redirect target; the call goes on.
            if message.cseq != call.invite_cseq {
                call.invite_cseq = message.cseq;
                call.awaiting_follow_up = None;
            }
            return;
        }
        if self.ended.contains(&message.call_id) {
            return; // a late retransmission of a call that is over
        }
        let (direction, local, remote) = match flow {
            Flow::Received => {
                let asserted = message.asserted.as_ref().filter(|a| a.user.is_some());
                let remote = match asserted {
                    Some(asserted) if self.config.prefer_asserted_identity => NameAddr {
                        display: asserted.display.clone().or_else(|| message.from.display.clone()),
                        ..asserted.clone()
                    },
                    _ => message.from.clone(),
                };
                (Direction::Inbound, &message.to, remote)
            }
            Flow::Sent => (Direction::Outbound, &message.from, message.to.clone()),
        };
        let call = Call {
            call_id: message.call_id.clone(),
            direction,
            local_number: number(local),
            remote_number: number(&remote),
            remote_name: remote
                .display
                .as_deref()
                .map(|d| clean_text(d, MAX_NAME_CHARS))
                .filter(|d| !d.is_empty()),
            resume: signal_resume,
            ringing_at: at,
            answered_at: None,
            last_seen: Some(at),
            invite_cseq: message.cseq,
            awaiting_follow_up: None,
            transport_failed: false,
            responded: false,
            hung_up: false,
            refer_pending: None,
            transferred_by: self.replaced_by.remove(&message.call_id),
            transfer_replaces: None,
            partial: false,
        };
        out.push(self.config.event(&call, EventType::Ringing, at, None));
        self.calls.insert(call.call_id.clone(), call);
    }

    fn invite_response(&mut self, flow: Flow, message: &SipMessage, code: u16, at: DateTime, out: &mut Vec<Event>) {
        let Some(call) = self.calls.get_mut(&message.call_id) else {
            return;
        };
        // Only the callee answers, and only answers to the current initial INVITE count
        // (not those to re-INVITEs, nor late copies of a challenge).
        let from_callee = match call.direction {
            Direction::Inbound => flow == Flow::Sent,
            Direction::Outbound => flow == Flow::Received,
        };
        if !from_callee || message.cseq != call.invite_cseq || call.answered_at.is_some() {
            return;
        }
        call.responded = true;
        if code < 200 {
            return;
        }
        if code < 300 && call.hung_up && call.direction == Direction::Outbound {
            // A 200 that crossed the phone's CANCEL: the phone acknowledges it and hangs
            // up at once; for the user the call was cancelled, never answered.
            return;
        }
        if code < 300 {
            call.answered_at = Some(at);
            call.awaiting_follow_up = None;
            out.push(self.config.event(call, EventType::Answered, at, None));
            return;
        }
        if call.hung_up && call.direction == Direction::Outbound {
            // A final answer that crossed the phone's CANCEL: for the user the call was
            // cancelled, whatever the far end answered meanwhile.
            let call_id = call.call_id.clone();
            self.end_unanswered(&call_id, 487, at, out);
            return;
        }
        let follow_up_possible = call.direction == Direction::Outbound && (code < 400 || code == 401 || code == 407);
        if follow_up_possible {
            call.awaiting_follow_up = Some((code, at));
            self.may_await.insert(message.call_id.clone());
        } else {
            let call_id = call.call_id.clone();
            self.end_unanswered(&call_id, code, at, out);
        }
    }

    fn bye(&mut self, flow: Flow, message: &SipMessage, at: DateTime, out: &mut Vec<Event>) {
        let Some(call) = self.calls.get(&message.call_id) else {
            return;
        };
        let from_callee = match call.direction {
            Direction::Inbound => flow == Flow::Sent,
            Direction::Outbound => flow == Flow::Received,
        };
        if call.answered_at.is_none() && !from_callee {
            // BYE in an early dialog: the caller gave up.
            self.end_unanswered(&message.call_id, 487, at, out);
            return;
        }
        if call.answered_at.is_none() {
            // The callee can only send BYE in a confirmed dialog: the call was answered,
            // though its 200 OK is not in the log (cut, or logged at another level).
            let call_id = message.call_id.clone();
            if let Some(call) = self.calls.get_mut(&call_id) {
                call.answered_at = Some(at);
                call.awaiting_follow_up = None;
                out.push(self.config.event(call, EventType::Answered, at, None));
            }
        }
        let Some(call) = self.calls.get(&message.call_id) else {
            return;
        };
        let by = match flow {
            Flow::Sent => EndedBy::Local,
            Flow::Received => EndedBy::Remote,
        };
        let ended_by = call.transferred_by.unwrap_or(by);
        self.end(&message.call_id, at, Ending::completed(Some(ended_by)), out);
    }

    fn refer(&mut self, flow: Flow, message: &SipMessage) {
        let Some(call) = self.calls.get_mut(&message.call_id) else {
            return;
        };
        let by = match flow {
            Flow::Sent => EndedBy::Local,
            Flow::Received => EndedBy::Remote,
        };
        call.refer_pending = Some(PendingRefer {
            by,
            replaces: message.refer_to.as_ref().and_then(|r| r.replaces_call_id.clone()),
        });
    }

    fn refer_response(&mut self, message: &SipMessage, code: u16) {
        let Some(call) = self.calls.get_mut(&message.call_id) else {
            return;
        };
        if code < 200 {
            return;
        }
        let Some(refer) = call.refer_pending.take() else {
            return;
        };
        if code >= 300 {
            return; // refused: the call goes on as it was
        }
        call.transferred_by = Some(refer.by);
        call.transfer_replaces = refer.replaces.clone();
        if let Some(replaced) = refer.replaces {
            // An attended transfer by this side also ends the consultation call.
            match self.calls.get_mut(&replaced) {
                Some(consultation) => consultation.transferred_by = Some(refer.by),
                None => {
                    self.replaced_by.insert(replaced, refer.by);
                }
            }
        }
    }

    /// A NOTIFY reporting a failed transfer (sipfrag status >= 300) undoes it.
    fn notify(&mut self, message: &SipMessage) {
        let Some(status) = message.sipfrag_status else {
            return;
        };
        if status < 300 {
            return;
        }
        let Some(call) = self.calls.get_mut(&message.call_id) else {
            return;
        };
        call.transferred_by = None;
        if let Some(replaced) = call.transfer_replaces.take() {
            self.replaced_by.remove(&replaced);
            if let Some(consultation) = self.calls.get_mut(&replaced) {
                consultation.transferred_by = None;
            }
        }
    }

    /// The phone hangs up. An outbound call that got no response at all cannot be
    /// cancelled on the wire yet (PJSIP delays the CANCEL), but for the user it ended
    /// here: cancelled. Otherwise the messages that follow tell how it ends.
    fn hanging_up(&mut self, call_id: &str, at: DateTime, out: &mut Vec<Event>) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.answered_at.is_some() || call.direction != Direction::Outbound {
            return;
        }
        call.hung_up = true;
        if !call.responded {
            self.end_unanswered(call_id, 487, at, out);
        }
    }

    /// pjsua tears the call down. Only news for an outbound call that never got a
    /// response (the INVITE timed out; at log level 4 nothing else says so) or that
    /// waits for a follow-up that will not come.
    fn torn_down(&mut self, call_id: &str, at: DateTime, out: &mut Vec<Event>) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        if call.answered_at.is_some() || call.direction != Direction::Outbound || call.hung_up {
            return;
        }
        if call.awaiting_follow_up.is_some() || !call.responded {
            self.disconnected(call_id, at, out);
        }
    }

    fn disconnected(&mut self, call_id: &str, at: DateTime, out: &mut Vec<Event>) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        if call.answered_at.is_some() {
            // Ended without a BYE on the wire (session timer, lost ACK): the phone did it.
            let ended_by = call.transferred_by.unwrap_or(EndedBy::Local);
            self.end(call_id, at, Ending::completed(Some(ended_by)), out);
            return;
        }
        if call.partial && call.awaiting_follow_up.is_none() {
            // Whether the INVITE got any final answer is not in the log.
            self.end(call_id, at, Ending::unknown(), out);
            return;
        }
        let code = match call.awaiting_follow_up {
            Some((code, _)) => code,
            None if call.transport_failed => 503,
            // No final response at all: the INVITE transaction timed out.
            None => 408,
        };
        self.end_unanswered(call_id, code, at, out);
    }

    /// Ends, as `unknown`, calls silent for longer than [`TrackerConfig::max_idle`] and,
    /// over [`TrackerConfig::max_open`], the longest-silent ones. Looks every
    /// [`LOOK_FOR_FORGOTTEN`] signals (or when over the cap), so a signal costs the same
    /// however many calls are open.
    fn end_forgotten(&mut self, now: DateTime, out: &mut Vec<Event>) {
        self.since_look += 1;
        if self.since_look < LOOK_FOR_FORGOTTEN && self.calls.len() <= self.config.max_open {
            return;
        }
        self.since_look = 0;
        let silent_since = |c: &Call| c.last_seen.unwrap_or(c.ringing_at);
        let mut by_silence: Vec<(DateTime, String)> = self
            .calls
            .values()
            .map(|c| (silent_since(c), c.call_id.clone()))
            .collect();
        by_silence.sort();
        // Down to nine tenths of the cap, so this runs once per many calls, not per call.
        let over = if self.calls.len() > self.config.max_open {
            self.calls.len() - self.config.max_open * 9 / 10
        } else {
            0
        };
        for (index, (since, call_id)) in by_silence.into_iter().enumerate() {
            if index >= over && now.duration_since(since) <= self.config.max_idle {
                break;
            }
            self.end(&call_id, since, Ending::unknown(), out);
        }
    }

    fn settle_follow_ups(&mut self, now: DateTime, out: &mut Vec<Event>) {
        if self.may_await.is_empty() {
            return;
        }
        let limit = self.config.follow_up;
        let calls = &self.calls;
        // Calls ended or no longer waiting leave the set.
        self.may_await
            .retain(|id| calls.get(id).is_some_and(|c| c.awaiting_follow_up.is_some()));
        let mut overdue: Vec<(String, u16, DateTime)> = self
            .may_await
            .iter()
            .filter_map(|id| {
                let (code, since) = calls.get(id)?.awaiting_follow_up?;
                (now.duration_since(since) > limit).then(|| (id.clone(), code, since))
            })
            .collect();
        // In the order they began waiting, as a scan of all calls in time order would.
        overdue.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.cmp(&b.0)));
        for (call_id, code, since) in overdue {
            self.end_unanswered(&call_id, code, since, out);
        }
    }

    fn end_unanswered(&mut self, call_id: &str, code: u16, at: DateTime, out: &mut Vec<Event>) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let ending = Ending::of(Outcome::unanswered(call.direction, code), Some(code));
        self.end(call_id, at, ending, out);
    }

    fn end(&mut self, call_id: &str, at: DateTime, ending: Ending, out: &mut Vec<Event>) {
        let Some(call) = self.calls.remove(call_id) else {
            return;
        };
        out.push(self.config.event(&call, EventType::Ended, at, Some(ending)));
        self.ended.insert(call.call_id, at);
    }

    /// Where a fresh tracker must start reading to rebuild every open call, or `None`
    /// when no call is open.
    pub(crate) fn resume_point(&self) -> Option<ResumePoint> {
        self.calls.values().map(|c| c.resume).min()
    }

    /// Moves every open call's resume point to `start` (their trace moved to a new file).
    pub(crate) fn rebase(&mut self, start: ResumePoint) {
        for call in self.calls.values_mut() {
            call.resume = start;
        }
    }

    /// What must survive a restart besides the open calls (kept as rows, see
    /// [`Tracker::call_rows`]): the recently ended Call-IDs, so retransmissions read
    /// again do not start them anew.
    pub(crate) fn snapshot(&self) -> TrackerSnapshot {
        TrackerSnapshot {
            open: Vec::new(),
            recently_ended: self.ended.newest().cloned().collect(),
        }
    }

    /// The open calls a checkpoint taken now writes (those changed since the last one
    /// committed); [`Tracker::committed`] once it is.
    pub(crate) fn call_rows(&self) -> CallRows {
        self.calls.rows()
    }

    pub(crate) fn committed(&mut self) {
        self.calls.committed();
    }

    /// Takes back the recently ended Call-IDs of a snapshot (the open calls are rebuilt
    /// by reading again from [`Tracker::resume_point`]).
    pub(crate) fn restore_ended(&mut self, snapshot: &TrackerSnapshot) {
        for (call_id, at) in &snapshot.recently_ended {
            self.ended.insert(call_id.clone(), *at);
        }
    }

    /// Ends the open calls of a snapshot as `unknown`, at `at`: the trace they were in
    /// was truncated or replaced while nobody was reading it.
    pub(crate) fn end_lost_calls(&mut self, snapshot: &TrackerSnapshot, at: DateTime, out: &mut Vec<Event>) {
        for call in &snapshot.open {
            self.calls.insert(call.call_id.clone(), call.clone());
            self.end(&call.call_id, at, Ending::unknown(), out);
        }
    }
}

impl TrackerConfig {
    /// The event of `call` of type `kind` at `at`. A method of the configuration, not
    /// of the tracker, so it borrows only that: a call borrowed mutably from the tracker's
    /// map makes its event in place (an `answered` copied the whole call first).
    fn event(&self, call: &Call, kind: EventType, at: DateTime, ending: Option<Ending>) -> Event {
        let ending = ending.map(|ending| {
            let rang_until = call.answered_at.unwrap_or(at);
            let talk = call.answered_at.map(|a| seconds(a, at)).unwrap_or(0.0);
            ending.timed(seconds(call.ringing_at, rang_until), talk)
        });
        let facts = CallFacts {
            source: self.source,
            source_path: &self.source_path,
            call_id: &call.call_id,
            direction: call.direction,
            local_number: &call.local_number,
            remote_number: &call.remote_number,
            remote_name: call.remote_name.as_deref(),
        };
        facts.event(kind, self.zoned(at), ending)
    }

    fn zoned(&self, at: DateTime) -> ZonedDateTime {
        at.to_zoned_datetime(self.time_zone.clone())
            .or_else(|_| at.to_zoned_datetime(TimeZone::UTC))
            .unwrap_or_else(|_| ZonedDateTime::new(jiff::Timestamp::UNIX_EPOCH, TimeZone::UTC))
    }
}

/// The part of a tracker's state kept across restarts; see [`Tracker::snapshot`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrackerSnapshot {
    /// The open calls: stored as rows of their own ([`Tracker::call_rows`]); read here
    /// from checkpoints of earlier versions, or put back with
    /// [`TrackerSnapshot::with_open_calls`].
    #[serde(default, skip_serializing)]
    open: Vec<Call>,
    recently_ended: Vec<(String, DateTime)>,
}

impl TrackerSnapshot {
    /// Number of calls open when the snapshot was taken.
    pub fn open_calls(&self) -> usize {
        self.open.len()
    }

    /// Adds the open calls stored as rows (state JSON each); unreadable rows are
    /// skipped (a checkpoint of another version: those calls are not ended).
    pub(crate) fn with_open_calls<'a>(mut self, rows: impl IntoIterator<Item = &'a str>) -> TrackerSnapshot {
        self.open
            .extend(rows.into_iter().filter_map(|row| serde_json::from_str(row).ok()));
        self
    }
}

fn number(addr: &NameAddr) -> String {
    addr.user
        .as_deref()
        .map(|u| clean_text(u, MAX_NUMBER_CHARS))
        .unwrap_or_default()
}

/// Seconds from `from` to `to`, to the millisecond, never negative.
fn seconds(from: DateTime, to: DateTime) -> f64 {
    let millis = to.duration_since(from).as_millis().max(0);
    millis as f64 / 1000.0
}
