//! Calls the log joins after their INVITE: the log was switched on mid-call, or its
//! start was cut away. Responses to the INVITE, its ACK and CANCEL, and the requests
//! inside the call's dialog (BYE, re-INVITE, UPDATE) carry the Call-ID, From, To and
//! CSeq, so the call is reported from the first of them, with what can be known:
//!
//! - who is who: the party that sent the message's request (the request's sender, or
//!   the receiver of a response) is taken as the caller. For a response, an ACK or a
//!   CANCEL that is certain; for a BYE, re-INVITE or UPDATE (either side may send them)
//!   it is the best guess the log allows. Local and remote numbers do not depend on it.
//! - `ringing` at that first message; `answered` at once when the message can only
//!   exist in a confirmed dialog (ACK, BYE, re-INVITE, UPDATE), else when a 2xx comes.
//! - the end from what follows, as for any call; `unknown` when only the invite
//!   session's end shows and not whether the INVITE was answered.

use super::{
    Call, Direction, Event, EventType, Flow, MAX_NAME_CHARS, NameAddr, ResumePoint, Tracker, clean_text, number,
};
use crate::parse::sip::{Method, SipMessage, StartLine};
use jiff::civil::DateTime;

/// Whether `message` belongs to an INVITE dialog, and whether it shows the call
/// answered already; `None` for messages that start nothing (the initial INVITE is the
/// tracker's own business; NOTIFY and REFER may belong to subscriptions).
fn dialog_of_call(message: &SipMessage) -> Option<bool> {
    match &message.start {
        StartLine::Response { .. } => (message.cseq_method == Method::Invite).then_some(false),
        StartLine::Request { method } => match method {
            Method::Invite => message.to_tagged.then_some(true),
            Method::Ack | Method::Bye | Method::Update => Some(true),
            Method::Cancel => Some(false),
            _ => None,
        },
    }
}

impl Tracker {
    /// Starts the call of `message` if the log shows it for the first time after its
    /// INVITE; see the module docs.
    pub(super) fn join_midway(
        &mut self,
        flow: Flow,
        message: &SipMessage,
        at: DateTime,
        resume: ResumePoint,
        out: &mut Vec<Event>,
    ) {
        if self.calls.contains_key(&message.call_id) || self.ended.contains(&message.call_id) {
            return;
        }
        let Some(answered) = dialog_of_call(message) else {
            return;
        };
        let request = matches!(message.start, StartLine::Request { .. });
        // The party that sent this transaction's request is named in From.
        let phone_is_from = request == (flow == Flow::Sent);
        let (direction, local, remote): (Direction, &NameAddr, &NameAddr) = if phone_is_from {
            (Direction::Outbound, &message.from, &message.to)
        } else {
            (Direction::Inbound, &message.to, &message.from)
        };
        let mut call = Call {
            call_id: message.call_id.clone(),
            resume,
            direction,
            local_number: number(local),
            remote_number: number(remote),
            remote_name: remote
                .display
                .as_deref()
                .map(|d| clean_text(d, MAX_NAME_CHARS))
                .filter(|d| !d.is_empty()),
            ringing_at: at,
            answered_at: None,
            last_seen: Some(at),
            // An ACK or CANCEL carries the CSeq number of the INVITE it is about.
            invite_cseq: match message.cseq_method {
                Method::Invite | Method::Ack | Method::Cancel => message.cseq,
                _ => 0,
            },
            awaiting_follow_up: None,
            transport_failed: false,
            responded: !request,
            hung_up: false,
            refer_pending: None,
            transferred_by: self.replaced_by.remove(&message.call_id),
            transfer_replaces: None,
            partial: true,
        };
        out.push(self.config.event(&call, EventType::Ringing, at, None));
        if answered {
            call.answered_at = Some(at);
            out.push(self.config.event(&call, EventType::Answered, at, None));
        }
        self.calls.insert(call.call_id.clone(), call);
    }
}
