//! Trackers: the typed items of `parse` in, contract events out, one file per source
//! kind. Each keeps the calls it has seen open (by Call-ID, or by number and start time
//! where the input has no Call-ID) and builds every event through the one builder next
//! to the contract ([`crate::event::CallFacts`], [`crate::event::Ending`]).
//!
//! - [`sip`]: SIP signals of a PJSIP trace (the richest source).
//! - [`call_log`]: rows of a call-log CSV (state rows and record rows).
//! - [`history`]: snapshots of MicroSIP's call history (`microsip.ini` `[Calls]`).
//! - [`hook`]: messages from MicroSIP's command hooks.

pub mod call_log;
pub mod history;
pub mod hook;
pub mod open_calls;
pub mod sip;
