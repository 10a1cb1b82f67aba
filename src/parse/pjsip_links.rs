//! Which call a PJSIP log line is about, when the line names an object, not a Call-ID.
//!
//! PJSIP's own lines name invite sessions (`inv0x...`), transactions (`tsx0x...`) and
//! pjsua call slots (`Call 3 hanging up`). Only SIP messages carry Call-IDs. This module
//! links the two from what the log shows, so the parser can hand on "the invite session
//! of Call-ID X was disconnected" instead of "inv0x55c1... was".

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::pjsip::{Flow, Signal, SignalKind};

/// Forget links beyond this many (objects whose end was never logged).
const MAX_LINKS: usize = 4096;

/// Which Call-ID each invite session and transaction belongs to.
///
/// An object's log lines mention the message buffers it sends and receives
/// (`Sending Request msg INVITE/cseq=5 (tdta0x1)`); the RX/TX blocks give those buffers'
/// Call-IDs. A sent buffer is mentioned before its block is logged, and buffer addresses
/// are reused, so a mention binds only when its description matches the block's;
/// otherwise it waits for that block.
#[derive(Debug, Default)]
pub(super) struct Bindings {
    /// Last message seen in each buffer: (description, Call-ID, is an INVITE request).
    messages: HashMap<u64, (Vec<u8>, Bound), ByAddress>,
    /// Objects waiting for a buffer's block: buffer → (description, object).
    waiting: HashMap<u64, Vec<(Vec<u8>, u64)>, ByAddress>,
    objects: HashMap<u64, Bound, ByAddress>,
    /// The Call-ID of the last message seen, shared again by the next message of the
    /// same call: a call's messages come one after another (request, provisional and
    /// final responses, ACK), so most need no `Arc` of their own (one allocation a
    /// message of a replayed trace, on the thread that bounds its speed).
    last_call_id: Option<Arc<str>>,
}

/// Hashes object and buffer addresses with one multiplication. A third of the log's
/// lines look an address up; SipHash (the default) cost more than the rest of such a
/// lookup, and its defence against chosen keys buys little here: PJSIP chooses the
/// addresses, and each map holds at most [`MAX_LINKS`] of them.
type ByAddress = BuildHasherDefault<AddressHasher>;

#[derive(Debug, Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        // Addresses are aligned, so the product's low bits (the bucket) vary little:
        // fold the high ones in.
        self.0 ^ (self.0 >> 32)
    }
}

#[derive(Debug, Clone)]
pub(super) struct Bound {
    /// Shared by the buffer and every object bound through it: a bind costs no copy.
    pub(super) call_id: Arc<str>,
    pub(super) invite_request: bool,
}

impl Bindings {
    pub(super) fn mention(&mut self, object: u64, reference: u64, description: &[u8]) {
        match self.messages.get(&reference) {
            Some((seen, bound)) if seen == description => {
                let bound = bound.clone();
                self.bind(object, bound);
            }
            _ => {
                let waiting = self.waiting.entry(reference).or_default();
                if waiting.len() < 16 {
                    waiting.push((description.to_vec(), object));
                }
                if self.waiting.len() > MAX_LINKS {
                    self.waiting.clear();
                }
            }
        }
    }

    pub(super) fn message(&mut self, reference: u64, description: &[u8], call_id: &str, invite_request: bool) {
        let call_id = match &self.last_call_id {
            Some(last) if **last == *call_id => last.clone(),
            _ => {
                let new: Arc<str> = Arc::from(call_id);
                self.last_call_id = Some(new.clone());
                new
            }
        };
        let bound = Bound {
            call_id,
            invite_request,
        };
        if let Some(waiting) = self.waiting.remove(&reference) {
            for (wanted, object) in waiting {
                if wanted == description {
                    self.bind(object, bound.clone());
                }
            }
        }
        if self.messages.len() > MAX_LINKS {
            self.messages.clear();
        }
        // Buffers are reused for message after message: their entry's description
        // buffer is too.
        match self.messages.entry(reference) {
            Entry::Occupied(mut seen) => {
                let (seen_description, seen_bound) = seen.get_mut();
                seen_description.clear();
                seen_description.extend_from_slice(description);
                *seen_bound = bound;
            }
            Entry::Vacant(slot) => {
                slot.insert((description.to_vec(), bound));
            }
        }
    }

    fn bind(&mut self, object: u64, bound: Bound) {
        if self.objects.len() > MAX_LINKS {
            self.objects.clear();
        }
        self.objects.insert(object, bound);
    }

    pub(super) fn forget(&mut self, object: u64) -> Option<Bound> {
        self.objects.remove(&object)
    }

    /// The Call-ID `object` is bound to, if any.
    fn call_id_of(&self, object: u64) -> Option<&str> {
        self.objects.get(&object).map(|b| &*b.call_id)
    }
}

/// Most messages waiting at once for a line that ties them to their call.
const MAX_CUT: usize = 16;
/// Lines a cut message waits for such a line; PJSIP logs them right after the message.
const CUT_WAITS_LINES: u32 = 400;

/// SIP messages the logger cut before their Call-ID (PJSIP cuts entries at 4000 bytes,
/// so a long display name pushes Call-ID out), waiting for a line that ties them to
/// their call: the dialog or transaction that handles the message names its buffer
/// (`dlg0x... Received Request msg BYE/cseq=5 (rdata0x...)`), and that object is bound
/// to a Call-ID by the other messages it sent or received.
#[derive(Debug, Default)]
pub(super) struct CutMessages {
    waiting: Vec<CutMessage>,
}

#[derive(Debug)]
struct CutMessage {
    reference: u64,
    description: Vec<u8>,
    /// Objects whose lines named the message's buffer.
    objects: Vec<u64>,
    lines_left: u32,
    /// The message, its Call-ID empty.
    signal: Signal,
}

impl CutMessages {
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Holds `signal` (a message without Call-ID in buffer `reference`); hands back the
    /// message given up to make room, if any.
    pub(super) fn hold(&mut self, reference: u64, description: &[u8], signal: Signal) -> Option<Signal> {
        let evicted = (self.waiting.len() >= MAX_CUT).then(|| self.waiting.remove(0).signal);
        self.waiting.push(CutMessage {
            reference,
            description: description.to_vec(),
            objects: Vec::new(),
            lines_left: CUT_WAITS_LINES,
            signal,
        });
        evicted
    }

    /// `object`'s line named buffer `reference` holding `description`.
    pub(super) fn mentioned(&mut self, object: u64, reference: u64, description: &[u8]) {
        for cut in &mut self.waiting {
            if cut.reference == reference && cut.description == description && cut.objects.len() < 8 {
                cut.objects.push(object);
            }
        }
    }

    /// Hands on, with their Call-ID, the messages an object bound to a call named.
    pub(super) fn resolve(&mut self, bindings: &Bindings, out: &mut impl FnMut(Signal)) {
        let mut index = 0;
        while index < self.waiting.len() {
            let cut = &self.waiting[index];
            let call_id = cut.objects.iter().find_map(|&o| bindings.call_id_of(o));
            match call_id {
                Some(call_id) => {
                    let call_id = call_id.to_owned();
                    let mut signal = self.waiting.remove(index).signal;
                    if let SignalKind::Message { message, .. } = &mut signal.kind {
                        message.call_id = call_id;
                    }
                    out(signal);
                }
                None => index += 1,
            }
        }
    }

    /// One more line read: hands back the messages that waited long enough in vain.
    pub(super) fn line(&mut self, out: &mut impl FnMut(Signal)) {
        for cut in &mut self.waiting {
            cut.lines_left = cut.lines_left.saturating_sub(1);
        }
        while self.waiting.first().is_some_and(|c| c.lines_left == 0) {
            out(self.waiting.remove(0).signal);
        }
    }

    /// The input ended: every message still waiting is given up.
    pub(super) fn give_up(&mut self, out: &mut impl FnMut(Signal)) {
        for cut in self.waiting.drain(..) {
            out(cut.signal);
        }
    }

    /// Where the oldest waiting message starts.
    pub(super) fn oldest(&self) -> Option<super::pjsip::ResumePoint> {
        self.waiting.iter().map(|c| c.signal.resume).min()
    }
}

/// Which Call-ID each pjsua call slot (`Call 3: ...`) holds now.
///
/// A slot is taken by `Call N: initializing media..`, logged right after a new inbound
/// INVITE was received, or after `Making call with acc #...` and right before the new
/// outbound INVITE is sent. Slots are reused, so each new call overwrites its slot.
#[derive(Debug, Default)]
pub(super) struct CallSlots {
    slots: HashMap<u32, String>,
    /// `Making call` was logged: the next slot taken is for an outbound call.
    making_call: bool,
    /// A slot taken for an outbound call whose INVITE has not been sent yet.
    outbound_slot: Option<u32>,
    /// The newest inbound call not given a slot yet.
    inbound_call: Option<String>,
}

impl CallSlots {
    /// `Making call with acc #N to URI`.
    pub(super) fn making_call(&mut self) {
        self.making_call = true;
    }

    /// `Call N: initializing media..`.
    pub(super) fn media_initializing(&mut self, slot: u32) {
        if std::mem::take(&mut self.making_call) {
            self.outbound_slot = Some(slot);
        } else if let Some(call_id) = self.inbound_call.take() {
            self.link(slot, call_id);
        }
    }

    /// An initial INVITE (no To tag) was sent or received.
    pub(super) fn initial_invite(&mut self, flow: Flow, call_id: &str) {
        match flow {
            Flow::Sent => {
                if let Some(slot) = self.outbound_slot.take() {
                    self.link(slot, call_id.to_owned());
                }
            }
            Flow::Received => self.inbound_call = Some(call_id.to_owned()),
        }
    }

    /// The Call-ID in `slot`, if known.
    pub(super) fn call_id(&self, slot: u32) -> Option<&str> {
        self.slots.get(&slot).map(String::as_str)
    }

    fn link(&mut self, slot: u32, call_id: String) {
        if self.slots.len() > MAX_LINKS {
            self.slots.clear();
        }
        self.slots.insert(slot, call_id);
    }
}

/// What a pjsua line says about a call slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotLine {
    /// `Making call with acc #0 to sip:...`
    MakingCall,
    /// `Call N: initializing media..`
    MediaInitializing(u32),
    /// `Call N hanging up: code=0..`: the phone's user (or app) hangs up.
    HangingUp(u32),
    /// `Call N: deinitializing media..`: the call is being torn down.
    MediaDeinitializing(u32),
}

/// Reads a pjsua line about a call slot; `None` for any other line.
pub(super) fn parse_slot_line(message: &[u8]) -> Option<SlotLine> {
    if message.starts_with(b"Making call with acc #") {
        return Some(SlotLine::MakingCall);
    }
    let rest = message.strip_prefix(b"Call ")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let slot: u32 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = &rest[digits..];
    if rest.starts_with(b": initializing media") {
        Some(SlotLine::MediaInitializing(slot))
    } else if rest.starts_with(b" hanging up") {
        Some(SlotLine::HangingUp(slot))
    } else if rest.starts_with(b": deinitializing media") {
        Some(SlotLine::MediaDeinitializing(slot))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_lines() {
        assert_eq!(
            parse_slot_line(b"Making call with acc #0 to sip:1@h"),
            Some(SlotLine::MakingCall)
        );
        assert_eq!(
            parse_slot_line(b"Call 12: initializing media.."),
            Some(SlotLine::MediaInitializing(12))
        );
        assert_eq!(
            parse_slot_line(b"Call 1 hanging up: code=0.."),
            Some(SlotLine::HangingUp(1))
        );
        assert_eq!(
            parse_slot_line(b"Call 3: deinitializing media.."),
            Some(SlotLine::MediaDeinitializing(3))
        );
        assert_eq!(parse_slot_line(b"Call 3: remote NAT type is 0"), None);
        assert_eq!(parse_slot_line(b"Call x: initializing media.."), None);
    }

    #[test]
    fn slots_follow_new_calls() {
        let mut slots = CallSlots::default();
        // inbound: INVITE received, then the slot
        slots.initial_invite(Flow::Received, "in-1");
        slots.media_initializing(0);
        // outbound: Making call, slot, then the INVITE sent
        slots.making_call();
        slots.media_initializing(1);
        slots.initial_invite(Flow::Sent, "out-1");
        assert_eq!(slots.call_id(0), Some("in-1"));
        assert_eq!(slots.call_id(1), Some("out-1"));
        // slot reuse
        slots.initial_invite(Flow::Received, "in-2");
        slots.media_initializing(1);
        assert_eq!(slots.call_id(1), Some("in-2"));
        assert_eq!(slots.call_id(7), None);
    }
}
