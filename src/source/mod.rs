//! Sources: the watched files, each turned into call events.
//!
//! `sip_trace` reads a PJSIP log (MicroSIP's SIP trace) from bytes to events by
//! composing the parser and the tracker; how the bytes arrive (a replayed file, a
//! live tail) is the caller's business.

pub mod checkpoint;
pub mod follow;
pub mod sip_trace;
pub mod tail;
pub mod watch;
