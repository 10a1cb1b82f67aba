//! Correlation: one call seen by several sources is one call for the rules.
//!
//! The SIP trace, the call-log CSV, the call history and the command hooks can all
//! report the same call, each in its own words: the trace knows the SIP Call-ID, the
//! others often only the number and a time. Every event passes the [`Correlator`] after
//! it is stored and before the rules see it. It finds the call the event belongs to:
//!
//! 1. the same call id in the same direction (the SIP Call-ID, or the synthetic id that
//!    number and start time make, which the history and the hooks share), else
//! 2. within `window`: the same number (compared by its digits, so `+49 30 1234567` is
//!    `030 1234567`), the same direction, a time that overlaps the call (a `ringing`
//!    within `window` of its start; another event between its start and its end, give or
//!    take `window`), and a call this source has not reported yet (a source reports a
//!    call once, so two calls in a row from one number stay two), else
//! 3. a new call.
//!
//! The first event of each type of a call is emitted (stdout, rules), with what the
//! other sources already said filled in (name, local number); a later one of the same
//! type, or one that would break the order `ringing` → `answered` → `ended`, is kept in
//! the database as a duplicate and fires nothing.
//!
//! Richest data first: sources rank `sip_trace` (Call-ID, status codes, who hung up),
//! `call_log`, `history`, `hook` (a number only). When a better-ranked source is
//! configured, an event of a lower-ranked one is held for `wait` (stored, not yet
//! emitted): if the better source reports the same call and type meanwhile, its event is
//! emitted and the held one becomes its duplicate; else the held one is emitted when the
//! wait is over ([`Correlator::due`]). On Windows the trace is polled, so a hook often
//! arrives first; the wait lets the trace's event win. A call's events all carry the
//! call id of its first emitted event.
//!
//! What the correlator knows, held events included, is stored with each commit
//! (`correlated_calls`), so a restart keeps a call's types fired once and releases what
//! was held.

// Seeded (Call-IDs are the caller's choice) and quicker than std's SipHash.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use crate::event::{Direction, Event, EventType, SourceKind};

/// The default `correlate.window`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// How long after its last event a call is remembered (by event time).
const REMEMBER: SignedDuration = SignedDuration::from_hours(1);
/// A call with no event for this long is forgotten even if it never ended.
pub const REMEMBER_OPEN: SignedDuration = SignedDuration::from_hours(12);
/// At most this many calls are remembered; the oldest go first.
const MAX_CALLS: usize = 10_000;
/// Numbers compare by their last digits only when both have at least this many.
const MIN_DIGITS: usize = 6;
/// A number's calls looked at, newest first, to match an event by number: a caller
/// with more calls than this after the one an event belongs to (a flood from one
/// number) makes that event a call of its own, and matching costs the same however many
/// calls one number made.
const SCAN_PER_NUMBER: usize = 64;

/// A call's name in the correlator's maps, shared by all of them (a call's key is in up
/// to five places; a daemon remembers up to [`MAX_CALLS`] calls).
type Key = Arc<str>;

/// What becomes of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// The first of its type for its call: emit [`Decision::event`] (which carries the
    /// call's id and the fields other sources filled in).
    Emit,
    /// Another source reported this already (the id of the event emitted or held for it).
    Duplicate { of: String },
    /// Held for a better-ranked source's event; emitted later by [`Correlator::due`]
    /// unless that event comes first.
    Hold,
}

/// What a commit does for one new event.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Events held before and emitted now, ahead of this one (an earlier type of the
    /// same call), as emitted.
    pub released: Vec<Event>,
    /// Held events this one takes the place of: (their id, this event's id).
    pub superseded: Vec<(String, String)>,
    pub fate: Fate,
    /// The event decided for, handed back: as emitted when its fate is [`Fate::Emit`],
    /// else as given. The correlator takes events by value and returns them, so the
    /// emitted form is the event itself with its call id set (replay emits every event
    /// of a 200 MB trace: a copy of each was ~15 % of the tracking thread's `malloc`s).
    pub event: Event,
}

impl Decision {
    fn only(fate: Fate, event: Event) -> Decision {
        Decision {
            released: Vec::new(),
            superseded: Vec::new(),
            fate,
            event,
        }
    }
}

/// How much a source kind knows of a call: lower is richer.
pub(crate) fn rank(kind: SourceKind) -> u8 {
    match kind {
        SourceKind::SipTrace => 0,
        SourceKind::CallLog => 1,
        SourceKind::History => 2,
        SourceKind::Hook => 3,
    }
}

/// An event held for a richer one.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Held {
    event: Event,
    /// When it is emitted anyway (wall clock, Unix milliseconds).
    deadline_ms: i64,
}

/// A call as the correlator knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorrelatedCall {
    /// The correlator's name for it (the first call id a source gave it).
    pub key: Key,
    /// The call id its emitted events carry: that of the first one emitted.
    public_id: Option<Arc<str>>,
    direction: Direction,
    number: String,
    name: Option<String>,
    local_number: String,
    /// Every call id the sources gave it.
    call_ids: Vec<Arc<str>>,
    /// The sources that reported it (`kind:path`), shared by every call of the source.
    sources: Vec<Arc<str>>,
    first_ms: i64,
    last_ms: i64,
    ended_ms: Option<i64>,
    /// Per type (ringing, answered, ended), the id of the event emitted.
    emitted: [Option<EmittedId>; 3],
    /// Per type, the event held for a richer one. Boxed: an event is a few hundred
    /// bytes and rarely held, and every remembered call (up to [`MAX_CALLS`], each a slot
    /// of the map) carried three of them inline: ~2 KB a slot, 50 MB of heap when the map
    /// last grew on the way to 10,000 open calls.
    #[serde(default)]
    held: [Option<Box<Held>>; 3],
}

impl CorrelatedCall {
    /// When it was last heard of (event time, Unix milliseconds): stored with it.
    pub(crate) fn last_ms(&self) -> i64 {
        self.last_ms
    }

    fn holds(&self) -> bool {
        self.held.iter().any(Option::is_some)
    }

    /// Marks `event` emitted and returns it as emitted: the call's id, and the name and
    /// local number other sources gave when it has none.
    fn emit(&mut self, mut event: Event) -> Event {
        let public_id = self.public_id.get_or_insert_with(|| {
            // The call id is among the call's (correlate adds it first): shared.
            let known = self.call_ids.iter().find(|id| &***id == event.call_id.as_str());
            known.cloned().unwrap_or_else(|| event.call_id.as_str().into())
        });
        // Usually the event's own id already (one source, or the first to report).
        if **public_id != *event.call_id {
            // `String::from`, not `to_string`: one allocation of the right size.
            event.call_id = String::from(&**public_id);
        }
        if event.remote_name.is_none() {
            event.remote_name = self.name.clone();
        }
        if event.local_number.is_empty() {
            event.local_number = self.local_number.clone();
        }
        self.emitted[type_index(event.kind)] = Some(EmittedId::new(&event.id));
        event
    }

    /// Emits the events held of the types before `index`, in order.
    fn release_before(&mut self, index: usize) -> Vec<Event> {
        let mut released = Vec::new();
        for i in 0..index {
            if let Some(held) = self.held[i].take() {
                released.push(self.emit(held.event));
            }
        }
        released
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Correlator {
    window_ms: i64,
    /// How long events of sources ranked below `hold_below` are held.
    wait_ms: i64,
    /// The best rank configured: events of a worse rank are held.
    hold_below: u8,
    /// Keys of the calls that hold events.
    holding: HashSet<Key>,
    /// Boxed: the map's table has room for up to twice its calls, and a slot holds the
    /// value (a call is ~300 bytes, a box 8).
    calls: HashMap<Key, Box<CorrelatedCall>>,
    /// Per call id, the key of its call in each direction ([`direction_index`]).
    by_id: HashMap<Arc<str>, [Option<Key>; 2]>,
    /// Keys of the calls per [`Correlator::number_bucket`], for matching by number.
    by_number: HashMap<u64, Vec<Key>>,
    /// Hashes the numbers that are text (SIP user names) into their bucket; seeded, so
    /// nobody can pick names that share a bucket with another caller's.
    text_buckets: foldhash::fast::RandomState,
    /// The sources' `kind:path` names, one copy each.
    source_names: HashSet<Arc<str>>,
    /// Events since old calls were last forgotten.
    since_forget: usize,
    /// Keys changed since [`Correlator::take_changes`].
    changed: HashSet<Key>,
    forgotten: Vec<Key>,
    latest_ms: i64,
}

/// The correlator's changes to store: calls to write, keys to delete.
#[derive(Debug, Default)]
pub struct Changes {
    pub changed: Vec<CorrelatedCall>,
    pub forgotten: Vec<String>,
}

impl Correlator {
    /// A correlator matching by number within `window` (zero: by call id only).
    pub fn new(window: Duration) -> Correlator {
        Correlator {
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            wait_ms: 0,
            hold_below: u8::MAX,
            holding: HashSet::new(),
            calls: HashMap::new(),
            by_id: HashMap::new(),
            by_number: HashMap::new(),
            source_names: HashSet::new(),
            text_buckets: foldhash::fast::RandomState::default(),
            since_forget: 0,
            changed: HashSet::new(),
            forgotten: Vec::new(),
            latest_ms: i64::MIN,
        }
    }

    /// Holds events of sources ranked below the best of `kinds` (the configured sources)
    /// for `wait`; see the module docs. Zero, or sources of one rank only: nothing is
    /// held.
    pub fn hold(mut self, wait: Duration, kinds: impl IntoIterator<Item = SourceKind>) -> Correlator {
        let ranks: Vec<u8> = kinds.into_iter().map(rank).collect();
        let (best, worst) = (ranks.iter().min().copied(), ranks.iter().max().copied());
        if let (Some(best), Some(worst)) = (best, worst)
            && best < worst
        {
            self.wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            self.hold_below = best;
        }
        self
    }

    /// Whether events can be held at all (then [`Correlator::due`] must be called).
    pub(crate) fn holds_events(&self) -> bool {
        self.wait_ms > 0
    }

    /// Goes on with calls stored by an earlier run.
    pub(crate) fn restore(&mut self, calls: impl IntoIterator<Item = CorrelatedCall>) {
        for mut call in calls {
            self.latest_ms = self.latest_ms.max(call.last_ms);
            for id in &call.call_ids {
                self.by_id.entry(id.clone()).or_default()[direction_index(call.direction)] = Some(call.key.clone());
            }
            for source in &mut call.sources {
                *source = self.share_source_name(source);
            }
            let bucket = self.number_bucket(&call.number);
            push_one(self.by_number.entry(bucket).or_default(), call.key.clone());
            if call.holds() {
                self.holding.insert(call.key.clone());
            }
            self.calls.insert(call.key.clone(), Box::new(call));
        }
    }

    /// Starts a call for `event`, which no known call takes; returns its key.
    fn new_call(&mut self, event: &Event, at_ms: i64) -> Key {
        let key = self.unused_key(event);
        self.calls.insert(
            key.clone(),
            Box::new(CorrelatedCall {
                key: key.clone(),
                public_id: None,
                direction: event.direction,
                number: event.remote_number.clone(),
                name: None,
                local_number: String::new(),
                call_ids: Vec::new(),
                sources: Vec::new(),
                first_ms: at_ms,
                last_ms: at_ms,
                ended_ms: None,
                emitted: [None, None, None],
                held: [None, None, None],
            }),
        );
        let bucket = self.number_bucket(&event.remote_number);
        push_one(self.by_number.entry(bucket).or_default(), key.clone());
        key
    }

    /// The one copy of `event`'s source's `kind:path` name, found without writing it
    /// out (a daemon has a few sources, and this runs for every event).
    fn source_name(&mut self, event: &Event) -> Arc<str> {
        match self.source_names.iter().find(|name| is_source(name, event)) {
            Some(known) => known.clone(),
            None => self.share_source_name(&format!("{}:{}", event.source.as_str(), event.source_path)),
        }
    }

    /// The one copy of the source name `name`.
    fn share_source_name(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.source_names.get(name) {
            return known.clone();
        }
        let name: Arc<str> = name.into();
        self.source_names.insert(name.clone());
        name
    }

    /// How many events are held for a richer source's.
    pub fn held(&self) -> usize {
        self.holding
            .iter()
            .filter_map(|key| self.calls.get(key))
            .map(|call| call.held.iter().flatten().count())
            .sum()
    }

    /// How many calls are remembered.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Decides for one newly stored event, which arrived at `now_ms` (wall clock, Unix
    /// milliseconds); see the module docs.
    pub fn correlate(&mut self, event: Event, now_ms: i64) -> Decision {
        let at_ms = event.at.timestamp().as_millisecond();
        let source = self.source_name(&event);
        let key = match self.find(&event, at_ms, &source) {
            Some(key) => key,
            None => self.new_call(&event, at_ms),
        };
        self.changed.insert(key.clone());
        self.latest_ms = self.latest_ms.max(at_ms);
        let holdable = self.wait_ms > 0 && rank(event.source) > self.hold_below;
        let call = self.calls.get_mut(&key).expect("call just found or made");
        if !call.call_ids.iter().any(|id| **id == *event.call_id.as_str()) {
            // Usually the key itself: one copy.
            let id: Arc<str> = if *key == *event.call_id.as_str() {
                key.clone()
            } else {
                event.call_id.as_str().into()
            };
            push_one(&mut call.call_ids, id.clone());
            self.by_id.entry(id).or_default()[direction_index(event.direction)] = Some(key.clone());
        }
        if !call.sources.contains(&source) {
            push_one(&mut call.sources, source);
        }
        call.first_ms = call.first_ms.min(at_ms);
        call.last_ms = call.last_ms.max(at_ms);
        if event.kind == EventType::Ended {
            call.ended_ms = Some(call.ended_ms.map_or(at_ms, |e| e.min(at_ms)));
        }
        if call.name.is_none() {
            call.name = event.remote_name.clone().filter(|n| !n.is_empty());
        }
        if call.local_number.is_empty() {
            call.local_number = event.local_number.clone();
        }
        let index = type_index(event.kind);
        // The same type again, or one the call is already past: a duplicate.
        if let Some(of) = call.emitted[index..].iter().flatten().next() {
            return Decision::only(Fate::Duplicate { of: of.to_string() }, event);
        }
        let mut superseded = Vec::new();
        let mut deadline_ms = now_ms.saturating_add(self.wait_ms);
        if let Some(held) = call.held[index].take() {
            if rank(event.source) >= rank(held.event.source) {
                let of = held.event.id.clone();
                call.held[index] = Some(held);
                return Decision::only(Fate::Duplicate { of }, event);
            }
            superseded.push((held.event.id, event.id.clone()));
            deadline_ms = held.deadline_ms;
        }
        let decision = if holdable {
            call.held[index] = Some(Box::new(Held {
                event: event.clone(),
                deadline_ms,
            }));
            self.holding.insert(key);
            Decision {
                released: Vec::new(),
                superseded,
                fate: Fate::Hold,
                event,
            }
        } else {
            let released = call.release_before(index);
            let emitted = call.emit(event);
            if !call.holds() {
                self.holding.remove(&key);
            }
            Decision {
                released,
                superseded,
                fate: Fate::Emit,
                event: emitted,
            }
        };
        self.since_forget += 1;
        if self.since_forget >= 256 || self.calls.len() > MAX_CALLS {
            self.since_forget = 0;
            self.forget_old();
        }
        decision
    }

    /// Emits the held events whose wait is over at `now_ms` (all of them with
    /// `i64::MAX`), each call's in order.
    pub fn due(&mut self, now_ms: i64) -> Vec<Event> {
        let mut released = Vec::new();
        let mut keys: Vec<Key> = self.holding.iter().cloned().collect();
        keys.sort();
        for key in keys {
            let Some(call) = self.calls.get_mut(&key) else {
                self.holding.remove(&key);
                continue;
            };
            let last_due = (0..3)
                .rev()
                .find(|&i| call.held[i].as_ref().is_some_and(|h| h.deadline_ms <= now_ms));
            if let Some(last) = last_due {
                released.extend(call.release_before(last + 1));
                self.changed.insert(key.clone());
            }
            if !call.holds() {
                self.holding.remove(&key);
            }
        }
        released
    }

    /// When the earliest held event's wait is over (Unix ms), if any is held.
    pub(crate) fn next_due(&self) -> Option<i64> {
        self.holding
            .iter()
            .filter_map(|key| self.calls.get(key))
            .flat_map(|call| call.held.iter().flatten().map(|held| held.deadline_ms))
            .min()
    }

    /// Forgets the changes since the last call (nothing is stored).
    pub(crate) fn discard_changes(&mut self) {
        self.changed.clear();
        self.forgotten.clear();
    }

    /// The changes since the last call, to store with the events that made them.
    pub(crate) fn take_changes(&mut self) -> Changes {
        let changed = self
            .changed
            .drain()
            .filter_map(|key| self.calls.get(&key).map(|call| CorrelatedCall::clone(call)))
            .collect();
        Changes {
            changed,
            forgotten: self.forgotten.drain(..).map(|key| key.to_string()).collect(),
        }
    }

    /// The call `event` belongs to, if it is known.
    fn find(&self, event: &Event, at_ms: i64, source: &str) -> Option<Key> {
        let by_id = self.by_id.get(event.call_id.as_str());
        if let Some(key) = by_id.and_then(|keys| keys[direction_index(event.direction)].as_ref()) {
            return Some(key.clone());
        }
        if self.window_ms == 0 {
            return None;
        }
        let window = self.window_ms;
        self.by_number
            .get(&self.number_bucket(&event.remote_number))?
            .iter()
            .rev()
            .take(SCAN_PER_NUMBER)
            .filter_map(|key| self.calls.get(key))
            .filter(|call| {
                call.direction == event.direction
                    && !call.sources.iter().any(|s| **s == *source)
                    && same_number(&call.number, &event.remote_number)
                    && if event.kind == EventType::Ringing {
                        at_ms.abs_diff(call.first_ms) <= window as u64
                    } else {
                        at_ms >= call.first_ms.saturating_sub(window)
                            && call.ended_ms.is_none_or(|end| at_ms <= end.saturating_add(window))
                    }
            })
            .min_by_key(|call| {
                let anchor = match event.kind {
                    EventType::Ringing => call.first_ms,
                    _ => call.ended_ms.unwrap_or(call.last_ms),
                };
                at_ms.abs_diff(anchor)
            })
            .map(|call| call.key.clone())
    }

    /// A new call's key: its own call id, unless a call of the other direction has it.
    fn unused_key(&self, event: &Event) -> Key {
        if !self.calls.contains_key(event.call_id.as_str()) {
            return event.call_id.as_str().into();
        }
        format!("{}#{}", event.call_id, event.direction.as_str()).into()
    }

    /// Forgets calls long over, so memory stays bounded.
    fn forget_old(&mut self) {
        let over = |call: &CorrelatedCall, latest: i64| {
            let quiet = SignedDuration::from_millis(latest.saturating_sub(call.last_ms));
            !call.holds() && (quiet > REMEMBER_OPEN || (call.ended_ms.is_some() && quiet > REMEMBER))
        };
        let latest = self.latest_ms;
        let mut gone: Vec<Key> = self
            .calls
            .values()
            .filter(|c| over(c, latest))
            .map(|c| c.key.clone())
            .collect();
        // Over the cap, down to three quarters of it: sorting all calls then happens once
        // per thousands of events, not on every one.
        if self.calls.len() - gone.len() > MAX_CALLS {
            let mut rest: Vec<(i64, Key)> = self
                .calls
                .values()
                .filter(|c| !over(c, latest))
                .map(|c| (c.last_ms, c.key.clone()))
                .collect();
            rest.sort();
            let extra = rest.len() - MAX_CALLS * 3 / 4;
            gone.extend(rest.into_iter().take(extra).map(|(_, key)| key));
        }
        // Each bucket is filtered once, however many of its calls go.
        let mut buckets: HashMap<u64, HashSet<Key>> = HashMap::new();
        for key in gone {
            if let Some(call) = self.calls.remove(&key) {
                for id in &call.call_ids {
                    self.forget_id(id, call.direction);
                }
                buckets
                    .entry(self.number_bucket(&call.number))
                    .or_default()
                    .insert(key.clone());
                self.changed.remove(&key);
                self.forgotten.push(key);
            }
        }
        for (bucket, gone) in buckets {
            if let Some(keys) = self.by_number.get_mut(&bucket) {
                keys.retain(|k| !gone.contains(k));
                if keys.is_empty() {
                    self.by_number.remove(&bucket);
                }
            }
        }
    }

    /// Numbers that can be [`same_number`] share a bucket: the value of their last
    /// [`MIN_DIGITS`] digits when they have that many, else a hash of their text in
    /// lowercase (with the top bit set, apart from every digits' bucket). Calls of one
    /// bucket are only candidates: [`same_number`] decides, so a hash collision costs a
    /// comparison, never a wrong match.
    fn number_bucket(&self, number: &str) -> u64 {
        let digits = || number.bytes().filter(u8::is_ascii_digit);
        let count = digits().count();
        if count >= MIN_DIGITS {
            digits()
                .skip(count - MIN_DIGITS)
                .fold(0, |value, digit| value * 10 + u64::from(digit - b'0'))
        } else {
            use std::hash::BuildHasher;
            let text = number.trim().to_ascii_lowercase();
            self.text_buckets.hash_one(text) | 1 << 63
        }
    }

    /// Forgets `id`'s call in `direction`, and `id` once no call of either has it.
    fn forget_id(&mut self, id: &str, direction: Direction) {
        if let Some(keys) = self.by_id.get_mut(id) {
            keys[direction_index(direction)] = None;
            if keys.iter().all(Option::is_none) {
                self.by_id.remove(id);
            }
        }
    }
}

/// An emitted event's id, as its 16 bytes when it is one of ours (32 lowercase hex
/// digits, [`crate::event::event_id`]): each remembered call holds up to three. Stored as
/// the text it was.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EmittedId {
    Digest([u8; 16]),
    Text(Box<str>),
}

impl EmittedId {
    fn new(id: &str) -> EmittedId {
        match lower_hex_digest(id) {
            Some(digest) => EmittedId::Digest(digest),
            None => EmittedId::Text(id.into()),
        }
    }
}

/// The 16 bytes a 32-digit lowercase hexadecimal id writes; `None` for any other text.
/// One pass, a digit at a time (the `hex` crate's decoder and a check before it were
/// 1.5 % of a replay's samples).
fn lower_hex_digest(id: &str) -> Option<[u8; 16]> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let pairs = id.as_bytes().as_chunks::<2>();
    if pairs.0.len() != 16 || !pairs.1.is_empty() {
        return None;
    }
    let mut digest = [0u8; 16];
    for (byte, &[high, low]) in digest.iter_mut().zip(pairs.0) {
        *byte = digit(high)? << 4 | digit(low)?;
    }
    Some(digest)
}

impl fmt::Display for EmittedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmittedId::Digest(digest) => f.write_str(&hex::encode(digest)),
            EmittedId::Text(text) => f.write_str(text),
        }
    }
}

impl Serialize for EmittedId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EmittedId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<EmittedId, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(EmittedId::new(&text))
    }
}

/// Whether a source name (`kind:path`) names `event`'s source; compared in place.
fn is_source(name: &str, event: &Event) -> bool {
    name.strip_prefix(event.source.as_str())
        .and_then(|rest| rest.strip_prefix(':'))
        == Some(event.source_path.as_str())
}

fn direction_index(direction: Direction) -> usize {
    match direction {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    }
}

fn type_index(kind: EventType) -> usize {
    match kind {
        EventType::Ringing => 0,
        EventType::Answered => 1,
        EventType::Ended => 2,
    }
}

/// Adds `item` to a list that mostly holds one or two: room for it alone (a `Vec`
/// would make room for four), as each remembered call has a few such lists.
fn push_one<T>(list: &mut Vec<T>, item: T) {
    list.reserve_exact(1);
    list.push(item);
}

/// Whether two numbers name one party: the same digits (leading zeros and a country
/// code aside, when both have at least [`MIN_DIGITS`]), or the same text (SIP user
/// names) in any letter case.
pub fn same_number(a: &str, b: &str) -> bool {
    // Called for each candidate call of a number (up to SCAN_PER_NUMBER per event), so it
    // walks the digits in place instead of collecting them. Bytes, not chars: an ASCII
    // digit byte is never part of a multi-byte UTF-8 character.
    fn digits(s: &str) -> impl DoubleEndedIterator<Item = u8> + '_ {
        s.bytes().filter(u8::is_ascii_digit)
    }
    let (count_a, count_b) = (digits(a).count(), digits(b).count());
    if count_a >= MIN_DIGITS && count_b >= MIN_DIGITS {
        let (short, long) = if count_a <= count_b { (a, b) } else { (b, a) };
        // The short number's digits without its leading zeros must end the long one's.
        let significant = digits(short).skip_while(|&d| d == b'0').count();
        return significant >= MIN_DIGITS
            && digits(short)
                .rev()
                .take(significant)
                .eq(digits(long).rev().take(significant));
    }
    a.trim().eq_ignore_ascii_case(b.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CONTRACT_VERSION, SourceKind, event_id};

    /// The one-pass decoder keeps what the check and the `hex` crate kept.
    #[test]
    fn emitted_ids_decode_as_with_the_hex_crate() {
        let as_before = |id: &str| {
            let mut digest = [0u8; 16];
            let lower_hex = id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            (lower_hex && hex::decode_to_slice(id, &mut digest).is_ok()).then_some(digest)
        };
        let id = event_id(SourceKind::SipTrace, Direction::Inbound, "a@b", EventType::Ringing);
        for text in [
            id.as_str(),
            &id[1..],
            &format!("{id}0"),
            &format!("{id}00"),
            &id.to_uppercase(),
            &format!("g{}", &id[1..]),
            "",
            "0123456789abcdef0123456789abcdeF",
            "0123456789abcdef0123456789abcdef",
            "ff",
        ] {
            assert_eq!(lower_hex_digest(text), as_before(text), "{text}");
        }
    }

    fn event(source: SourceKind, call_id: &str, kind: EventType, number: &str, ms: i64) -> Event {
        Event {
            v: CONTRACT_VERSION,
            id: event_id(source, Direction::Inbound, call_id, kind),
            kind,
            at: jiff::Timestamp::from_millisecond(1_795_000_000_000 + ms)
                .unwrap()
                .to_zoned_datetime(jiff::tz::TimeZone::UTC),
            call_id: call_id.to_owned(),
            direction: Direction::Inbound,
            local_number: if source == SourceKind::SipTrace {
                "200".into()
            } else {
                String::new()
            },
            remote_number: number.to_owned(),
            remote_name: (source == SourceKind::SipTrace).then(|| "Alice".to_owned()),
            outcome: None,
            status_code: None,
            ended_by: None,
            ring_s: None,
            talk_s: None,
            source,
            source_path: source.as_str().to_owned(),
        }
    }

    fn fates(correlator: &mut Correlator, events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                let decision = correlator.correlate(e.clone(), 0);
                match decision.fate {
                    Fate::Emit => format!("emit {} {}", e.kind.as_str(), decision.event.call_id),
                    Fate::Duplicate { .. } => format!("dup {}", e.kind.as_str()),
                    Fate::Hold => format!("hold {}", e.kind.as_str()),
                }
            })
            .collect()
    }

    #[test]
    fn numbers() {
        assert!(same_number("+4930123456", "030123456"));
        assert!(same_number("+49 30 123456", "004930123456"));
        assert!(same_number("100", "100"));
        assert!(same_number("Alice", "alice"));
        assert!(!same_number("100", "1100"));
        assert!(!same_number("+4930123456", "+4930123457"));
        assert!(!same_number("0000123", "123"));
    }

    #[test]
    fn three_sources_one_call() {
        use EventType::*;
        use SourceKind::*;
        let mut c = Correlator::new(DEFAULT_WINDOW);
        let got = fates(
            &mut c,
            &[
                event(SipTrace, "abc@pbx", Ringing, "+4930123456", 0),
                event(Hook, "syn-1", Ringing, "030123456", 30),
                event(CallLog, "syn-2", Ringing, "+4930123456", 900),
                event(Hook, "syn-1", Answered, "030123456", 5_000),
                event(SipTrace, "abc@pbx", Answered, "+4930123456", 4_990),
                event(CallLog, "syn-2", Answered, "+4930123456", 5_000),
                event(CallLog, "syn-2", Ended, "+4930123456", 60_000),
                event(SipTrace, "abc@pbx", Ended, "+4930123456", 59_990),
                event(Hook, "syn-1", Ended, "030123456", 60_010),
            ],
        );
        assert_eq!(
            got,
            [
                "emit ringing abc@pbx",
                "dup ringing",
                "dup ringing",
                "emit answered abc@pbx",
                "dup answered",
                "dup answered",
                "emit ended abc@pbx",
                "dup ended",
                "dup ended"
            ]
        );
    }

    #[test]
    fn emitted_events_take_what_others_knew() {
        use SourceKind::*;
        let mut c = Correlator::new(DEFAULT_WINDOW);
        c.correlate(event(SipTrace, "abc@pbx", EventType::Ringing, "100200300", 0), 0);
        let decision = c.correlate(event(Hook, "syn-1", EventType::Answered, "100200300", 10), 0);
        assert_eq!(decision.fate, Fate::Emit);
        let answered = decision.event;
        assert_eq!(answered.call_id, "abc@pbx");
        assert_eq!(answered.remote_name.as_deref(), Some("Alice"));
        assert_eq!(answered.local_number, "200");
        assert_eq!(answered.source, Hook);
    }

    #[test]
    fn calls_in_a_row_from_one_number_stay_apart() {
        use EventType::*;
        use SourceKind::*;
        let mut c = Correlator::new(DEFAULT_WINDOW);
        let got = fates(
            &mut c,
            &[
                event(SipTrace, "one", Ringing, "100200300", 0),
                event(Hook, "h1", Ringing, "100200300", 20),
                event(SipTrace, "one", Ended, "100200300", 3_000),
                event(Hook, "h1", Ended, "100200300", 3_010),
                // Called again at once: the trace's new Call-ID is a new call, and the
                // hooks' second call joins it, not the first.
                event(SipTrace, "two", Ringing, "100200300", 4_000),
                event(Hook, "h2", Ringing, "100200300", 4_020),
                event(Hook, "h2", Ended, "100200300", 5_000),
                event(SipTrace, "two", Ended, "100200300", 4_990),
                // Far apart in time: not the same call.
                event(Hook, "h3", Ringing, "100200300", 600_000),
            ],
        );
        assert_eq!(
            got,
            [
                "emit ringing one",
                "dup ringing",
                "emit ended one",
                "dup ended",
                "emit ringing two",
                "dup ringing",
                "emit ended two",
                "dup ended",
                "emit ringing h3"
            ]
        );
    }

    #[test]
    fn order_is_kept_and_directions_stay_apart() {
        use EventType::*;
        use SourceKind::*;
        let mut c = Correlator::new(Duration::ZERO);
        let mut outbound = event(SipTrace, "x", Ringing, "100", 0);
        outbound.direction = Direction::Outbound;
        outbound.id = "out".into();
        let got = fates(
            &mut c,
            &[
                event(SipTrace, "x", Ringing, "100", 0),
                outbound,
                event(SipTrace, "x", Ended, "100", 10),
                event(CallLog, "x", Answered, "100", 5),
                // Window 0: the same number is not enough.
                event(Hook, "y", Ringing, "100", 1),
            ],
        );
        assert_eq!(
            got,
            [
                "emit ringing x",
                "emit ringing x",
                "emit ended x",
                "dup answered",
                "emit ringing y"
            ]
        );
    }

    #[test]
    fn restored_calls_keep_what_fired() {
        use SourceKind::*;
        let mut c = Correlator::new(DEFAULT_WINDOW);
        c.correlate(event(SipTrace, "abc", EventType::Ringing, "100200300", 0), 0);
        let changes = c.take_changes();
        assert_eq!(changes.changed.len(), 1);
        let stored: Vec<CorrelatedCall> = changes
            .changed
            .iter()
            .map(|call| serde_json::from_str(&serde_json::to_string(call).unwrap()).unwrap())
            .collect();
        let mut again = Correlator::new(DEFAULT_WINDOW);
        again.restore(stored);
        assert!(matches!(
            again
                .correlate(event(Hook, "h", EventType::Ringing, "100200300", 50), 0)
                .fate,
            Fate::Duplicate { .. }
        ));
    }

    #[test]
    fn poorer_sources_wait_for_the_trace() {
        use EventType::*;
        use SourceKind::*;
        let wait = Duration::from_millis(300);
        let mut c = Correlator::new(DEFAULT_WINDOW).hold(wait, [SipTrace, CallLog, Hook]);
        assert!(c.holds_events());
        let hook_ring = event(Hook, "syn-1", Ringing, "100200300", 0);
        assert_eq!(c.correlate(hook_ring.clone(), 0).fate, Fate::Hold);
        // The CSV is richer than the hook but still waits; the hook's is now its duplicate.
        let csv_ring = event(CallLog, "syn-2", Ringing, "100200300", 10);
        let decision = c.correlate(csv_ring.clone(), 20);
        assert_eq!(decision.fate, Fate::Hold);
        assert_eq!(decision.superseded, [(hook_ring.id.clone(), csv_ring.id.clone())]);
        // The trace comes within the wait: its event is emitted, the CSV's superseded.
        let decision = c.correlate(event(SipTrace, "abc@pbx", Ringing, "+100200300", 40), 150);
        assert_eq!(decision.fate, Fate::Emit);
        let ringing = decision.event;
        assert_eq!((ringing.call_id.as_str(), ringing.source), ("abc@pbx", SipTrace));
        assert_eq!(decision.superseded, [(csv_ring.id.clone(), ringing.id.clone())]);
        // No trace for the answer: the hook's is emitted after the wait, under the
        // trace's Call-ID.
        assert_eq!(
            c.correlate(event(Hook, "syn-1", Answered, "100200300", 2_000), 2_000)
                .fate,
            Fate::Hold
        );
        assert!(c.due(2_299).is_empty());
        let released = c.due(2_300);
        assert_eq!(released.len(), 1);
        assert_eq!((released[0].kind, released[0].call_id.as_str()), (Answered, "abc@pbx"));
        assert!(c.due(i64::MAX).is_empty());
        // A held earlier type goes out before a later one from the trace.
        let mut c = Correlator::new(DEFAULT_WINDOW).hold(wait, [SipTrace, Hook]);
        c.correlate(event(Hook, "syn-9", Ringing, "999888777", 0), 0);
        let decision = c.correlate(event(SipTrace, "x@pbx", Answered, "999888777", 5), 5);
        assert_eq!(decision.released.len(), 1);
        assert_eq!(decision.released[0].kind, Ringing);
        assert!(decision.fate == Fate::Emit);
        // Only one kind configured: nothing waits.
        let mut c = Correlator::new(DEFAULT_WINDOW).hold(wait, [Hook]);
        assert!(!c.holds_events());
        assert!(
            !Correlator::new(DEFAULT_WINDOW)
                .hold(wait, [SipTrace, SipTrace])
                .holds_events()
        );
        assert!(c.correlate(hook_ring, 0).fate == Fate::Emit);
    }

    #[test]
    fn held_events_survive_a_restart() {
        use SourceKind::*;
        let wait = Duration::from_millis(300);
        let mut c = Correlator::new(DEFAULT_WINDOW).hold(wait, [SipTrace, Hook]);
        c.correlate(event(Hook, "syn-1", EventType::Ringing, "100200300", 0), 0);
        let stored: Vec<CorrelatedCall> = c
            .take_changes()
            .changed
            .iter()
            .map(|call| serde_json::from_str(&serde_json::to_string(call).unwrap()).unwrap())
            .collect();
        let mut again = Correlator::new(DEFAULT_WINDOW).hold(wait, [SipTrace, Hook]);
        again.restore(stored);
        let released = again.due(i64::MAX);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].call_id, "syn-1");
    }

    #[test]
    fn memory_is_bounded() {
        let mut c = Correlator::new(DEFAULT_WINDOW);
        for i in 0..600 {
            let mut e = event(
                SourceKind::SipTrace,
                &format!("c{i}"),
                EventType::Ended,
                "1",
                i * 600_000,
            );
            e.remote_number = format!("{i}");
            c.correlate(e, 0);
        }
        assert!(c.len() < 100, "{}", c.len());
        assert!(!c.take_changes().forgotten.is_empty());
    }
}
