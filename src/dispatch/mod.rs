//! Dispatch: jobs from the outbox, delivered: webhooks (`webhook`, signed per Standard
//! Webhooks by `signing`, sent through `http_client`), commands (`command`) and broker publishes (`nats`, `mqtt`),
//! driven by `outbox`, which reads the jobs' actions through `actions` and whose results
//! `recorder` commits on a thread of its own.

mod actions;
pub mod command;
mod http_client;
pub mod mqtt;
pub mod nats;
pub mod outbox;
mod recorder;
pub mod signing;
pub mod webhook;

/// How one delivery attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered (the status or exit code, for the log).
    Done(String),
    /// Failed for now; try again (after the receiver's `Retry-After` if it gave one).
    Retry {
        reason: String,
        after: Option<std::time::Duration>,
    },
    /// Failed for good (4xx, a command's failure, a refused address).
    GiveUp(String),
    /// The endpoint answered 410 Gone: stop sending it anything.
    Disable(String),
}
