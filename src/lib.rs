//! callhook: call events from what the MicroSIP softphone writes to disk.
//!
//! The pipeline, one module a stage, data flowing one way:
//!
//! ```text
//! source (tail) ──bytes──▶ parse (lines → PJSIP entries → SIP messages)
//!     ──signals──▶ track ──events──▶ store (checkpoint + events, one commit) ──▶ output
//! ```
//!
//! - [`parse`]: incremental parsers; each item carries its line and byte offset.
//! - [`track`]: the per-call state machine, SIP signals in, contract-v1 events out.
//! - [`event`]: the event contract itself (fields, deterministic ids, JSON form).
//! - [`source`]: the watched files: following one as it grows ([`source::tail`]),
//!   checkpoints, and the live task per source ([`source::follow`]).
//! - [`store`]: the SQLite state database (checkpoints and events, one transaction).
//! - [`daemon`]: `callhook run`, every stage wired together; [`demo`] runs it on a
//!   built-in trace.
//! - [`forward`]: `callhook hook`, which MicroSIP starts on call events: hands the
//!   event to the daemon's hook source, or spools it.
//! - [`install`]: `callhook install`, `uninstall`, `status`: start at login.
//! - [`setup`]: `callhook setup microsip`, which edits MicroSIP's ini to switch its
//!   log and hooks on.
//! - [`replay`]: the `callhook replay` command, a file read start to end through the
//!   stages above.

pub mod config;
pub mod correlate;
pub mod daemon;
pub mod demo;
pub mod dispatch;
pub mod dry_run;
pub mod event;
pub mod forward;
pub mod install;
pub mod parse;
pub mod replay;
pub mod rules;
pub mod setup;
pub mod source;
pub mod store;
pub mod track;
