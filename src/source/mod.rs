//! Sources: the watched files, each turned into call events.
//!
//! `sip_trace` reads a PJSIP log (MicroSIP's SIP trace) from bytes to events by
//! composing the parser and the tracker, `call_log` a call-log CSV alike; `reader` puts
//! the two behind one enum; `tail`, `checkpoint` and `watch` follow one file; `follow`
//! is the live task of one source. `snapshot` follows `microsip.ini`, rewritten whole; `hook`
//! takes messages from `callhook hook` over loopback and from the spool (`hook_inbox`).

pub mod call_log;
pub mod checkpoint;
pub mod follow;
pub mod hook;
pub mod hook_inbox;
pub(crate) mod reader;
pub mod sip_trace;
pub mod snapshot;
pub mod tail;
pub mod watch;
