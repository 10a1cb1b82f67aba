//! callhook: call events from what the MicroSIP softphone writes to disk, and rules that
//! act on them.
//!
//! The stages, one module each, data flowing one way (each names only what lies above
//! it in this list):
//!
//! ```text
//! source ──bytes/snapshots/messages──▶ parse ──typed items──▶ track ──events──▶ (batch)
//!   ──▶ pipeline: correlate ──▶ rules ──jobs──▶ store (one commit) ──▶ output, dispatch
//! ```
//!
//! - [`event`]: the contract (fields, deterministic ids, JSON form) and the one builder
//!   of events ([`event::CallFacts`], [`event::Ending`]) every tracker uses.
//! - [`parse`]: pure, incremental parsers: bytes in, typed items out (PJSIP signals,
//!   call-log rows, `microsip.ini` entries, hook messages), each with its position.
//! - [`track`]: per source kind, typed items → `ringing` / `answered` / `ended` events.
//! - [`source`]: the watched inputs (a growing file, a rewritten ini, the hook channel):
//!   reading, checkpoints, wake-ups; hands batches (key, checkpoint, events) to a sink.
//!   Its `config` says what the configuration holds of a source.
//! - [`pipeline`]: what follows the sources: [`correlate`] (one call seen by several
//!   sources is one call), [`rules`] (YAML rules → jobs), then one [`store`] commit of
//!   the decided rows, then the events go to the output and the outbox is woken.
//! - [`store`]: the SQLite state database; writes decided rows, decides nothing.
//! - [`dispatch`]: the outbox: delivers jobs (webhooks, commands, broker publishes)
//!   with retries.
//! - [`broker`]: what a desk's `nats`/`mqtt` actions and a central callhook's `nats`/
//!   `mqtt` sources share (servers, connections, subject templates); names no stage.
//! - [`config`], [`duration`], [`expand`]: the configuration file, checked once (with
//!   `%NAME%`, `${env:NAME}` and `~` in its paths expanded).
//! - [`memory`]: what a quiet daemon hands back (freed heap, start-up code pages); names
//!   no stage.
//! - [`metrics`]: counts and health every stage reports into (it names no stage);
//!   [`status`] serves them with the status page.
//! - Commands, each driving the pipeline: [`daemon`] (`callhook run`), [`replay`]
//!   (`callhook replay`, any files, correlated), [`dry_run`] (`callhook test`),
//!   [`demo`] (`callhook demo`), [`discover`] (what `run` watches when no
//!   configuration or trace is given: a config file at a default place, else MicroSIP's
//!   own files), [`forward`] (`callhook hook`, which MicroSIP starts),
//!   [`install`] (`callhook install`, `uninstall`, `status`: start at login), [`setup`]
//!   (`callhook setup microsip`: MicroSIP's log and hooks switched on in its ini).

pub mod bounded;
pub mod broker;
pub mod config;
pub mod correlate;
pub mod daemon;
pub mod demo;
pub mod discover;
pub mod dispatch;
pub mod dry_run;
pub mod duration;
pub mod event;
pub mod expand;
pub mod forward;
pub mod install;
pub mod memory;
pub mod metrics;
pub mod parse;
pub mod pipeline;
pub mod private;
pub mod problem;
pub mod replay;
pub mod rules;
pub mod setup;
pub mod source;
pub mod status;
pub mod store;
pub mod track;
pub(crate) mod yaml;
