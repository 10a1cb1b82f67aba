//! Calls that never end: `cargo bench --bench open_calls`.
//!
//! 1. `callhook replay` of a trace of never-ended calls against a trace of ended calls
//!    of about the same size: MB/s of each (the bound: within 2×).
//! 2. A `callhook run` daemon that has read a trace of 50,000 never-ended calls (the
//!    tracker keeps at most 2,000 open per source and ends the rest as `unknown`), then
//!    gets one new call at a time: append → event latency and the daemon's RSS.
//!
//! `CALLS=n` sets the number of never-ended calls (default 100,000 for replay; the
//! daemon reads half of them).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/live_trace.rs"]
mod live_trace;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Trace, invite, request, response};

const FROM: &str = "sip:5550100@pbx";
const TO: &str = "sip:201@pbx";

/// `calls` inbound calls that ring and are never heard of again.
fn never_ended(calls: usize, first: usize) -> Vec<u8> {
    let mut trace = Trace::new();
    for i in first..first + calls {
        trace.at_ms(8 * 3_600_000 + i as u64 * 100);
        let id = format!("open-{i}@pbx");
        trace.sip(true, &invite(&id, FROM, TO, 1));
        trace.sip(false, &response(180, &id, FROM, TO, 1, "INVITE"));
    }
    trace.text.into_bytes()
}

/// Inbound calls answered and hung up, until the trace is `bytes` long.
fn ended(bytes: usize) -> Vec<u8> {
    let mut trace = Trace::new();
    let mut i = 0u64;
    while trace.text.len() < bytes {
        trace.at_ms(8 * 3_600_000 + i * 100);
        let id = format!("done-{i}@pbx");
        trace.sip(true, &invite(&id, FROM, TO, 1));
        trace.sip(false, &response(200, &id, FROM, TO, 1, "INVITE"));
        trace.sip(true, &request("BYE", &id, FROM, TO, 2, ""));
        i += 1;
    }
    trace.text.into_bytes()
}

/// Runs `callhook replay FILE` to /dev/null; MB/s.
fn replay_speed(path: &Path) -> f64 {
    let size = std::fs::metadata(path).unwrap().len() as f64;
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .arg("replay")
        .arg(path)
        .env("CALLHOOK_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    size / 1e6 / started.elapsed().as_secs_f64()
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    live_trace::status_kb(pid, field).unwrap_or(0)
}

fn main() {
    let calls: usize = std::env::var("CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();

    let open_path = dir.path().join("open.log");
    std::fs::write(&open_path, never_ended(calls, 0)).unwrap();
    let size = std::fs::metadata(&open_path).unwrap().len() as usize;
    let ended_path = dir.path().join("ended.log");
    std::fs::write(&ended_path, ended(size)).unwrap();
    let open_speed = replay_speed(&open_path);
    let ended_speed = replay_speed(&ended_path);
    println!(
        "replay, {calls} never-ended calls ({:.1} MB): {open_speed:.0} MB/s",
        size as f64 / 1e6
    );
    println!("replay, ended calls, same size:          {ended_speed:.0} MB/s");
    println!(
        "never-ended / ended:                    {:.2}x the time",
        ended_speed / open_speed
    );

    daemon_with_open_calls(dir.path(), calls / 2);
}

/// Starts a daemon on a trace of `calls` never-ended calls, waits until it has read
/// them, then appends new calls one by one and times each one's event.
fn daemon_with_open_calls(dir: &Path, calls: usize) {
    let trace_path = dir.join("MicroSIP_log.txt");
    std::fs::write(&trace_path, never_ended(calls, 1_000_000)).unwrap();
    let config = dir.join("callhook.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nstate_dir: state\nsources:\n  - kind: sip_trace\n    path: {}\n    start_at: beginning\n    time_zone: UTC\nrules: []\n",
            trace_path.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(["run", "--stdout", "-c"])
        .arg(&config)
        .env("CALLHOOK_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let lines: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let sink = lines.clone();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push((line, Instant::now()));
        }
    });
    // Read up: every call rang; quiet for a second.
    let started = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let count = lines.lock().unwrap().len();
        if count != last.0 {
            last = (count, Instant::now());
        } else if count >= calls && last.1.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "read-up took over 10 min ({count} lines)"
        );
    }
    let read_up = last.1.duration_since(started);
    let mut latencies = Vec::new();
    let mut file = std::fs::OpenOptions::new().append(true).open(&trace_path).unwrap();
    for n in 0..50 {
        let id = format!("next-{n}@pbx");
        let mut trace = Trace::new();
        trace.at_ms(8 * 3_600_000 + (1_000_000 + calls as u64) * 100 + n * 1000);
        trace.sip(true, &invite(&id, FROM, TO, 1));
        let written = Instant::now();
        file.write_all(trace.text.as_bytes()).unwrap();
        let deadline = written + Duration::from_secs(10);
        loop {
            if let Some((_, at)) = lines.lock().unwrap().iter().rev().find(|(l, _)| l.contains(&id)) {
                latencies.push(at.duration_since(written));
                break;
            }
            assert!(Instant::now() < deadline, "no event for {id}");
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    latencies.sort();
    let (rss, peak) = (rss_kb(pid, "VmRSS:"), rss_kb(pid, "VmHWM:"));
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "daemon read {calls} never-ended calls in {:.1} s",
        read_up.as_secs_f64()
    );
    println!(
        "next call, append -> event: p50 {:.2} ms, max {:.2} ms (50 calls)",
        latencies[latencies.len() / 2].as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "daemon RSS {:.1} MB (peak {:.1} MB)",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
}
