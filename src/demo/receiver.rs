//! The demo's webhook receiver: a real HTTP server on a loopback port (axum), which
//! answers every POST with 200 and reports what arrived and when, so the demo can show
//! each delivery with its latency.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// One request the receiver took.
#[derive(Debug, Clone)]
pub struct Received {
    /// The URL path, e.g. `/helpdesk`.
    pub path: String,
    /// The event's time of day in milliseconds (as its log line says), when the body
    /// is the event itself (`generic` preset).
    pub event_ms_of_day: Option<u32>,
    pub at: Instant,
}

/// Starts the receiver on `127.0.0.1`, any free port; returns its base URL and what it
/// receives. It runs until the runtime stops.
pub async fn start() -> std::io::Result<(String, UnboundedReceiver<Received>)> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (sender, receiver) = unbounded_channel();
    let app = Router::new().route("/{*path}", post(take)).with_state(sender);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, receiver))
}

async fn take(State(sender): State<UnboundedSender<Received>>, Path(path): Path<String>, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let event_ms_of_day = serde_json::from_slice::<crate::event::Event>(&body).ok().map(|event| {
        let time = event.at.time();
        ((i32::from(time.hour()) * 60 + i32::from(time.minute())) * 60 + i32::from(time.second())) as u32 * 1000
            + time.subsec_nanosecond() as u32 / 1_000_000
    });
    let _ = sender.send(Received {
        path: format!("/{path}"),
        event_ms_of_day,
        at,
    });
    StatusCode::OK
}
