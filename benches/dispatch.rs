//! Outbox throughput: `cargo bench --bench dispatch`. A trace with thousands of calls is
//! read at once by the daemon (in-process), five rules make five webhook jobs of every
//! event, all durable in SQLite, delivered to a real HTTP receiver on 127.0.0.1.
//! Prints webhooks per second from the first to the last received, and checks none
//! was lost.
//!
//! The receiver is a hyper server on a thread and a single-threaded tokio runtime of
//! its own (as a receiver elsewhere would be: one core at most). Its ceiling is
//! measured first and printed beside the outbox's figure: the same HTTP client as the
//! outbox's (`webhook::Client`: hyper, keep-alive), as many requests in flight as the rules allow, no
//! database. The outbox cannot be faster than that on this machine; `RECEIVER=simple`
//! uses the tests' thread-per-connection receiver instead.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Rules (endpoints), and each one's `concurrency`.
const RULES: usize = 5;
const CONCURRENCY: usize = 16;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let simple = std::env::var("RECEIVER").is_ok_and(|r| r == "simple");
    let receiver = if simple { Receiver::simple() } else { Receiver::fast() };
    let ceiling = ceiling(&receiver, 20_000);
    receiver.clear();
    let trace = dir.path().join("log");
    // Many calls: the fixtures, every Call-ID renumbered per copy.
    let mut text = Vec::new();
    for copy in 0..40 {
        for case in ["basic", "burst", "mixed-tcp", "forking-early"] {
            let log = String::from_utf8(common::fixture(case)).unwrap();
            let ids: HashSet<String> = log
                .lines()
                .filter_map(|l| l.strip_prefix("Call-ID: "))
                .map(|s| s.trim().to_owned())
                .collect();
            let mut log = log;
            for id in ids {
                log = log.replace(&id, &format!("{id}-{copy}"));
            }
            text.extend_from_slice(log.as_bytes());
        }
    }
    let events = common::replay(&text).0.len();
    common::append(&trace, &text);
    let rules: String = (1..=RULES)
        .map(|i| {
            format!(
                "  - name: hook{i}\n    webhook: {{ url: \"{}/r{i}\", concurrency: {CONCURRENCY}, ordered: false }}\n",
                receiver.url()
            )
        })
        .collect();
    let jobs = events * RULES;
    let cpu_before = cpu::threads();
    let started = Instant::now();
    let daemon = common::Daemon::with_config(common::config_with_rules(dir.path(), &trace, &rules));
    let got = receiver.wait_for(jobs, 120);
    let elapsed = started.elapsed();
    let cpu_used = cpu::since(&cpu_before);
    daemon.stop();
    let ids: HashSet<_> = got.iter().map(|(id, _)| id.as_str()).collect();
    let first = got.iter().map(|(_, at)| *at).min().unwrap();
    let last = got.iter().map(|(_, at)| *at).max().unwrap();
    let span = last.duration_since(first).as_secs_f64();
    println!("events:                 {events}");
    println!(
        "webhook jobs:           {jobs} ({RULES} rules x every event, durable outbox: committed with their events, results recorded in batches)"
    );
    println!(
        "received:               {} ({} distinct webhook-ids, {} lost)",
        got.len(),
        ids.len(),
        jobs.saturating_sub(ids.len())
    );
    println!(
        "delivery rate:          {:.0} webhooks/s (first to last received, {:.2} s)",
        got.len() as f64 / span,
        span
    );
    println!(
        "receiver ceiling:       {ceiling:.0} requests/s ({} receiver; the outbox's client, {} in flight, no outbox)",
        if simple { "thread-per-connection" } else { "hyper" },
        RULES * CONCURRENCY
    );
    println!(
        "start to last received: {:.2} s (includes reading the trace)",
        elapsed.as_secs_f64()
    );
    // The simple receiver's threads (one per connection) would count as callhook's.
    if let Some(used) = cpu_used.filter(|_| !simple) {
        println!(
            "callhook's CPU:         {:.3} s, {:.1} us per webhook (its threads, start to last received: reading the trace, rules, outbox, recorder)",
            used.as_secs_f64(),
            used.as_secs_f64() * 1e6 / got.len() as f64
        );
    }
}

/// CPU time of the daemon's threads, from each thread's `/proc/self/task/*/schedstat`
/// (nanoseconds on a CPU): every thread but the bench's main thread and its receiver's,
/// so the figure is callhook's own work. Linux only; elsewhere nothing is printed.
mod cpu {
    use std::collections::HashMap;
    use std::time::Duration;

    /// Nanoseconds run so far, by thread id, of the threads that are not the bench's.
    pub fn threads() -> HashMap<String, u64> {
        let mut found = HashMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return found;
        };
        let main = std::process::id().to_string();
        for task in tasks.flatten() {
            let tid = task.file_name().to_string_lossy().into_owned();
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if tid == main || comm.trim() == super::RECEIVER_THREAD {
                continue;
            }
            let ran = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            if let Some(ns) = ran.split_whitespace().next().and_then(|n| n.parse().ok()) {
                found.insert(tid, ns);
            }
        }
        found
    }

    /// CPU those threads used since `before` (threads started since count from zero);
    /// `None` where `/proc` has no such figures.
    pub fn since(before: &HashMap<String, u64>) -> Option<Duration> {
        let now = threads();
        let used: u64 = now
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
            .sum();
        (!now.is_empty()).then(|| Duration::from_nanos(used))
    }
}

/// The name of the receiver's thread, whose CPU is not callhook's.
const RECEIVER_THREAD: &str = "receiver";

/// What the receiver got: each request's `webhook-id` and when it came.
type Log = Arc<Mutex<Vec<(String, Instant)>>>;

enum Receiver {
    Fast { url: String, log: Log },
    Simple(common::Receiver),
}

impl Receiver {
    /// A hyper server (axum) on its own thread, single-threaded runtime.
    fn fast() -> Receiver {
        let log: Log = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let kept = log.clone();
        let thread = std::thread::Builder::new().name(RECEIVER_THREAD.into());
        let spawned = thread.spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new()
                    .route("/{path}", axum::routing::post(take))
                    .with_state(kept);
                axum::serve(listener, app).await.unwrap();
            });
        });
        spawned.unwrap();
        Receiver::Fast { url, log }
    }

    fn simple() -> Receiver {
        Receiver::Simple(common::Receiver::start())
    }

    fn url(&self) -> String {
        match self {
            Receiver::Fast { url, .. } => url.clone(),
            Receiver::Simple(receiver) => receiver.url.clone(),
        }
    }

    fn count(&self) -> usize {
        match self {
            Receiver::Fast { log, .. } => log.lock().unwrap().len(),
            Receiver::Simple(receiver) => receiver.requests.lock().unwrap().len(),
        }
    }

    fn clear(&self) {
        match self {
            Receiver::Fast { log, .. } => log.lock().unwrap().clear(),
            Receiver::Simple(receiver) => receiver.requests.lock().unwrap().clear(),
        }
    }

    /// Waits until at least `n` requests came (at most `seconds`), returns them all.
    fn wait_for(&self, n: usize, seconds: u64) -> Vec<(String, Instant)> {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while self.count() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        match self {
            Receiver::Fast { log, .. } => log.lock().unwrap().clone(),
            Receiver::Simple(receiver) => receiver
                .requests
                .lock()
                .unwrap()
                .iter()
                .map(|r| (r.header("webhook-id").unwrap_or_default().to_owned(), r.at))
                .collect(),
        }
    }
}

async fn take(
    axum::extract::State(log): axum::extract::State<Log>,
    headers: axum::http::HeaderMap,
    _body: axum::body::Bytes,
) -> &'static str {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    log.lock().unwrap().push((id, Instant::now()));
    "ok"
}

/// Requests/s the receiver takes from the outbox's HTTP client with as many requests
/// in flight as the bench's rules allow, and nothing else to do: `n` requests.
fn ceiling(receiver: &Receiver, n: usize) -> f64 {
    let url = receiver.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    runtime.block_on(async move {
        let client = callhook::dispatch::webhook::client();
        let senders = RULES * CONCURRENCY;
        let tasks: Vec<_> = (0..senders)
            .map(|s| {
                let (client, url) = (client.clone(), format!("{url}/r{}", s % RULES + 1));
                tokio::spawn(async move {
                    for i in (s..n).step_by(senders) {
                        let request = http::Request::post(url.as_str())
                            .header("webhook-id", format!("ceiling-{i}"))
                            .body(callhook::dispatch::webhook::Body::from("{\"type\":\"ringing\"}"))
                            .unwrap();
                        let answer = client.request(request).await.unwrap();
                        assert!(answer.status().is_success());
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let rate = n as f64 / started.elapsed().as_secs_f64();
    assert_eq!(receiver.count(), n);
    rate
}
