//! callhook: call events from what the MicroSIP softphone writes to disk.
//!
//! The pipeline, one module a stage, data flowing one way:
//!
//! ```text
//! parse (lines → PJSIP entries → SIP messages) ──signals──▶ track ──events──▶ output
//! ```
//!
//! - [`parse`]: incremental parsers; each item carries its line and byte offset.
//! - [`track`]: the per-call state machine, SIP signals in, contract-v1 events out.
//! - [`event`]: the event contract itself (fields, deterministic ids, JSON form).
//! - [`replay`]: the `callhook replay` command, a file read start to end through the
//!   stages above.

pub mod config;
pub mod daemon;
pub mod event;
pub mod parse;
pub mod replay;
pub mod source;
pub mod store;
pub mod track;
