//! Live latency and footprint benchmark: `cargo bench --bench live`.
//!
//! Appends real trace entries (the fixtures, Call-IDs renumbered per copy) to a live file
//! at 20 calls/s (`RATE=n` to change, `SECONDS=n` for the length) while a real
//! `callhook run --stdout` process reads it, and prints p50/p99/max of entry written →
//! event printed, events lost and duplicated. Then lets the process idle, watching two
//! files, and prints its RSS and CPU use (Linux: /proc).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callhook::event::SourceKind;
use callhook::parse::log_time::parse_timestamp;
use callhook::source::sip_trace::SipTraceReader;
use callhook::track::sip::TrackerConfig;

fn main() {
    let rate: f64 = env_or("RATE", 20.0);
    let seconds: f64 = env_or("SECONDS", 30.0);
    let calls_wanted = (rate * seconds) as usize;

    // The trace: fixture copies with renumbered Call-IDs, cut into log entries.
    let (trace, calls) = build_trace(calls_wanted);
    let entries = split_entries(&trace);
    // After which entry each event can be known (what a perfect reader would emit).
    let mut reader = SipTraceReader::new(
        jiff::civil::date(2026, 11, 23),
        TrackerConfig::new(SourceKind::SipTrace, "x"),
    );
    let mut due: HashMap<String, usize> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        reader.push(
            entry,
            &mut |e| {
                due.insert(e.id, index);
            },
            &mut |_| {},
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("MicroSIP_log.txt");
    let idle_path = dir.path().join("other.log");
    std::fs::write(&trace_path, b"").unwrap();
    std::fs::write(&idle_path, b"").unwrap();
    let config = dir.path().join("callhook.yaml");
    let receiver = common::Receiver::start();
    std::fs::write(
        &config,
        format!(
            "version: 1\nstate_dir: state\nsources:\n  - kind: sip_trace\n    path: {}\n  - kind: sip_trace\n    path: {}\nrules:\n  - name: hook\n    webhook: {{ url: \"{}/calls\", preset: zammad_cti }}\n",
            trace_path.display(),
            idle_path.display(),
            receiver.url
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
    let stdout = child.stdout.take().unwrap();
    let received: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let sink = received.clone();
    let reader_thread = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let at = Instant::now();
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            sink.lock()
                .unwrap()
                .push((value["id"].as_str().unwrap().to_owned(), at));
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    // Write entries on schedule: `calls` calls spread over calls / rate seconds.
    let duration = Duration::from_secs_f64(calls as f64 / rate);
    let mut file = std::fs::OpenOptions::new().append(true).open(&trace_path).unwrap();
    let mut written = Vec::with_capacity(entries.len());
    let start = Instant::now();
    for (index, entry) in entries.iter().enumerate() {
        let when = start + duration.mul_f64(index as f64 / entries.len() as f64);
        if let Some(wait) = when.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        file.write_all(entry).unwrap();
        written.push(Instant::now());
    }
    std::thread::sleep(Duration::from_secs(2));

    let got = received.lock().unwrap().clone();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut latencies = Vec::new();
    for (id, at) in &got {
        *seen.entry(id.as_str()).or_default() += 1;
        if seen[id.as_str()] == 1
            && let Some(&index) = due.get(id)
        {
            latencies.push(at.saturating_duration_since(written[index]));
        }
    }
    latencies.sort();
    let lost = due.keys().filter(|id| !seen.contains_key(id.as_str())).count();
    let duplicated: usize = seen.values().map(|n| n - 1).sum();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "calls written:           {calls} at {rate} calls/s ({} log entries, {:.1} MB)",
        entries.len(),
        trace.len() as f64 / 1e6
    );
    println!("events expected:         {}", due.len());
    println!("append -> event  p50:    {:.2} ms", pct(0.50).as_secs_f64() * 1e3);
    println!("append -> event  p99:    {:.2} ms", pct(0.99).as_secs_f64() * 1e3);
    println!(
        "append -> event  max:    {:.2} ms",
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!("events lost:             {lost}");
    println!("events duplicated:       {duplicated}");

    // The same, end to end: entry written → webhook (zammad_cti) received.
    let hooks = receiver.requests.lock().unwrap().clone();
    let mut hook_latencies: Vec<Duration> = hooks
        .iter()
        .filter_map(|r| {
            let id = r.header("webhook-id")?.strip_suffix(".hook")?;
            let index = *due.get(id)?;
            Some(r.at.saturating_duration_since(written[index]))
        })
        .collect();
    hook_latencies.sort();
    let hook_ids: std::collections::HashSet<_> = hooks.iter().filter_map(|r| r.header("webhook-id")).collect();
    let hpct = |p: f64| {
        hook_latencies
            .get(((hook_latencies.len() as f64 * p) as usize).min(hook_latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!("append -> webhook p50:   {:.2} ms", hpct(0.50).as_secs_f64() * 1e3);
    println!("append -> webhook p99:   {:.2} ms", hpct(0.99).as_secs_f64() * 1e3);
    println!(
        "append -> webhook max:   {:.2} ms",
        hook_latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!("webhooks lost:           {}", due.len().saturating_sub(hook_ids.len()));

    // Idle footprint, watching both files.
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(1));
    let cpu_before = cpu_ticks(pid);
    let idle = Duration::from_secs(env_or("IDLE", 20));
    std::thread::sleep(idle);
    let cpu_after = cpu_ticks(pid);
    match (rss_kb(pid), cpu_before, cpu_after) {
        (Some(rss), Some(before), Some(after)) => {
            let ticks_per_s = 100.0; // USER_HZ on Linux
            let cpu = (after - before) as f64 / ticks_per_s / idle.as_secs_f64() * 100.0;
            println!("idle RSS (2 files):      {:.1} MB", rss as f64 / 1024.0);
            println!(
                "idle CPU (2 files):      {cpu:.2} % of one core over {}s",
                idle.as_secs()
            );
        }
        _ => println!("idle RSS/CPU:            not measured (no /proc)"),
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader_thread.join();
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Fixture copies, every Call-ID renumbered per copy, until `calls_wanted` calls.
fn build_trace(calls_wanted: usize) -> (Vec<u8>, usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pjsip");
    let cases = ["basic", "burst", "mixed-tcp", "forking-early", "noise", "crlf-date"];
    let mut out = Vec::new();
    let mut calls = 0;
    let mut copy = 0;
    while calls < calls_wanted {
        for case in cases {
            let text = std::fs::read_to_string(root.join(case).join("phone.log")).unwrap();
            let mut ids: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("Call-ID: "))
                .map(|id| id.trim().to_owned())
                .collect();
            ids.sort_by_key(|id| std::cmp::Reverse(id.len()));
            ids.dedup();
            let mut text = text.clone();
            for id in &ids {
                text = text.replace(id.as_str(), &format!("{id}-{copy}"));
            }
            calls += common::expected(case).iter().filter(|(_, t)| t == "ringing").count();
            out.extend_from_slice(text.as_bytes());
        }
        copy += 1;
    }
    (out, calls)
}

/// Log entries: a timestamped line and the untimestamped lines after it.
fn split_entries(trace: &[u8]) -> Vec<&[u8]> {
    let mut entries = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in trace.split_inclusive(|&b| b == b'\n') {
        if offset > start && parse_timestamp(line).is_some() {
            entries.push(&trace[start..offset]);
            start = offset;
        }
        offset += line.len();
    }
    entries.push(&trace[start..]);
    entries
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}
