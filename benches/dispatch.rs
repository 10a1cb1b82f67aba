//! Outbox throughput: `cargo bench --bench dispatch`. A trace with thousands of calls is
//! read at once by the daemon (in-process), five rules make five webhook jobs of every
//! event, all durable in SQLite, delivered to a real HTTP receiver on 127.0.0.1.
//! Prints webhooks per second from the first to the last received, and checks none
//! was lost.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::Instant;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = common::Receiver::start();
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
    let rules: String = (1..=5)
        .map(|i| {
            format!(
                "  - name: hook{i}\n    webhook: {{ url: \"{}/r{i}\", concurrency: 16, ordered: false }}\n",
                receiver.url
            )
        })
        .collect();
    let jobs = events * 5;
    let started = Instant::now();
    let daemon = common::Daemon::with_config(common::config_with_rules(dir.path(), &trace, &rules));
    let got = receiver.wait_for(jobs, 120);
    let elapsed = started.elapsed();
    daemon.stop();
    let ids: HashSet<_> = got
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    let first = got.iter().map(|r| r.at).min().unwrap();
    let last = got.iter().map(|r| r.at).max().unwrap();
    let span = last.duration_since(first).as_secs_f64();
    println!("events:                 {events}");
    println!(
        "webhook jobs:           {jobs} (5 rules x every event, durable outbox: committed with their events, results recorded in batches)"
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
        "start to last received: {:.2} s (includes reading the trace)",
        elapsed.as_secs_f64()
    );
}
