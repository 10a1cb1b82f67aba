//! What the `nats` and `mqtt` sources share: a message read as a contract event, and
//! the commit of a batch of them.
//!
//! A central callhook takes events that desks made: each message must be one contract
//! v1 event as JSON ([`read_event`]). Whatever else arrives (a message some other
//! program published, a truncated one) is refused with a warning, counted, and
//! acknowledged as refused so the broker does not offer it again; the count is kept in
//! the source's checkpoint state. Text fields are cleaned again as a local source
//! cleans them (a desk is trusted no more than a caller). The event keeps the `source`
//! and `source_path` the desk gave it: the broker is only how it came.
//!
//! A batch's events are committed with the checkpoint ([`Intake::commit`]); only once
//! that returned Ok does the source acknowledge the messages to the broker, so an
//! event is never acknowledged before it (and the jobs it made) is stored. A message
//! acknowledged late, or twice, is delivered again; the store knows its id and drops it.

use super::checkpoint::Checkpoint;
use super::{Batch, Sink, SourceError};
use crate::event::{CONTRACT_VERSION, Event, MAX_NAME_CHARS, MAX_NUMBER_CHARS, clean_text};

/// Largest message taken, in bytes (an event is well under 2 KB).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Longest call id or source path kept, in characters.
const MAX_ID_CHARS: usize = 256;

/// One message as a contract event, or why not.
pub fn read_event(payload: &[u8]) -> Result<Event, String> {
    if payload.len() > MAX_MESSAGE {
        return Err(format!("{} bytes, more than {MAX_MESSAGE}", payload.len()));
    }
    let mut event: Event = serde_json::from_slice(payload).map_err(|e| format!("not a call event: {e}"))?;
    if event.v != CONTRACT_VERSION {
        return Err(format!(
            "contract version {} (this callhook reads {CONTRACT_VERSION})",
            event.v
        ));
    }
    if event.id.len() != 32
        || !event
            .id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("its id is not 32 lowercase hex digits".into());
    }
    if event.call_id.is_empty() {
        return Err("empty call_id".into());
    }
    event.call_id = clean_text(&event.call_id, MAX_ID_CHARS);
    event.local_number = clean_text(&event.local_number, MAX_NUMBER_CHARS);
    event.remote_number = clean_text(&event.remote_number, MAX_NUMBER_CHARS);
    event.remote_name = event.remote_name.map(|n| clean_text(&n, MAX_NAME_CHARS));
    event.source_path = clean_text(&event.source_path, MAX_ID_CHARS);
    Ok(event)
}

/// What a broker source keeps in its checkpoint.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct State {
    /// Messages refused since the source was first started.
    #[serde(default)]
    rejected: u64,
}

/// A broker source's side of the pipeline: commits batches with its checkpoint, counts
/// refused messages.
pub struct Intake<'a> {
    key: String,
    state: State,
    sink: &'a mut dyn Sink,
}

impl<'a> Intake<'a> {
    /// For source `key`, going on from its checkpoint `stored`.
    pub fn new(key: String, stored: Option<Checkpoint>, sink: &'a mut dyn Sink) -> Intake<'a> {
        let state = stored
            .and_then(|c| serde_json::from_str(&c.state).ok())
            .unwrap_or_default();
        Intake { key, state, sink }
    }

    /// Reads one message; a refused one is logged (with `origin`: subject or topic) and
    /// counted, and `None` returned.
    pub fn read(&mut self, payload: &[u8], origin: &str) -> Option<Event> {
        match read_event(payload) {
            Ok(event) => Some(event),
            Err(reason) => {
                self.state.rejected += 1;
                tracing::warn!(
                    source = %self.key,
                    from = %crate::event::escape_controls(origin),
                    rejected = self.state.rejected,
                    "message refused and acknowledged as such (it is not offered again): {reason}"
                );
                None
            }
        }
    }

    /// Messages refused so far.
    pub fn rejected(&self) -> u64 {
        self.state.rejected
    }

    /// Stores `events` (and the count of refused messages); returns once durable.
    pub fn commit(&mut self, events: &[Event]) -> Result<(), SourceError> {
        let state = serde_json::to_string(&self.state).expect("state serializes");
        let checkpoint = Checkpoint::state_only(state);
        self.sink
            .commit(Batch {
                key: &self.key,
                checkpoint: &checkpoint,
                events,
                // A desk's append time is not known here.
                appended: None,
            })
            .map_err(SourceError::Downstream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"v":1,"id":"00112233445566778899aabbccddeeff","type":"ringing","at":"2026-11-23T08:00:00+01:00","call_id":"c1","direction":"inbound","local_number":"101","remote_number":"5552001","remote_name":"Al\u0007ice\u202e","source":"sip_trace","source_path":"C:/MicroSIP_log.txt"}"#;

    #[test]
    fn events_are_read_and_cleaned() {
        let event = read_event(GOOD.as_bytes()).unwrap();
        assert_eq!(event.remote_name.as_deref(), Some("Alice"));
        assert_eq!(event.source_path, "C:/MicroSIP_log.txt");
        assert_eq!(event.source.as_str(), "sip_trace");
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "online".to_owned(),
            "{}".to_owned(),
            GOOD.replace("\"v\":1", "\"v\":2"),
            GOOD.replace("00112233445566778899aabbccddeeff", "x"),
            GOOD.replace("\"sip_trace\"", "\"nats\""),
            GOOD.replace("\"c1\"", "\"\""),
            format!("{GOOD}{}", " ".repeat(MAX_MESSAGE)),
        ] {
            assert!(read_event(bad.as_bytes()).is_err(), "{bad:.80}");
        }
    }
}
