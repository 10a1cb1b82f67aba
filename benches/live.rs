//! Live latency and footprint benchmark: `cargo bench --bench live`.
//!
//! Appends real trace entries (the fixtures, Call-IDs renumbered per copy) to a live file
//! at 20 calls/s (`RATE=n` to change, `SECONDS=n` for the length; `CALLHOOK_BIN` measures
//! another build) while a real `callhook run --stdout` process reads it, and prints
//! p50/p99/max of entry written → event printed, events lost and duplicated. The process watches three files: the
//! trace, a call-log CSV and a `microsip.ini` (both left alone). Before the calls and
//! after them it lets the process idle and prints its RSS, CPU use and wake-ups per
//! minute (voluntary context switches of all its threads; Linux: /proc). `LIVE_SMAPS=file`
//! saves the process's `/proc/PID/smaps` after the calls.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/live_trace.rs"]
mod live_trace;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use live_trace::{build_trace, cpu_ticks, due_entries, env_or, split_entries, status_kb, wakeups};

fn main() {
    let rate: f64 = env_or("RATE", 20.0);
    let seconds: f64 = env_or("SECONDS", 30.0);
    let calls_wanted = (rate * seconds) as usize;

    // The trace: fixture copies with renumbered Call-IDs, cut into log entries.
    let (trace, calls) = build_trace(calls_wanted, |case| {
        common::expected(case).iter().filter(|(_, t)| t == "ringing").count()
    });
    let entries = split_entries(&trace);
    // After which entry each event can be known (what a perfect reader would emit).
    let due: HashMap<String, usize> = due_entries(&entries);

    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("MicroSIP_log.txt");
    let csv_path = dir.path().join("calls.csv");
    let ini_path = dir.path().join("microsip.ini");
    std::fs::write(&trace_path, b"").unwrap();
    std::fs::write(&csv_path, b"time,event,call_id,direction,number\n").unwrap();
    common::write_ini(&ini_path, &[] as &[&str]);
    let config = dir.path().join("callhook.yaml");
    let receiver = common::Receiver::start();
    std::fs::write(
        &config,
        format!(
            "version: 1\nstate_dir: state\nsources:\n  - kind: sip_trace\n    path: {}\n  - kind: call_log\n    path: {}\n  - kind: history\n    path: {}\nrules:\n  - name: hook\n    webhook: {{ url: \"{}/calls\", preset: zammad_cti }}\n",
            trace_path.display(),
            csv_path.display(),
            ini_path.display(),
            receiver.url
        ),
    )
    .unwrap();
    let mut child = Command::new(live_trace::callhook_binary())
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
    let idle = Duration::from_secs(env_or("IDLE", 20));
    idle_footprint(child.id(), idle, "before any call");

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
    // A job is sent with a webhook-id made from its key (event id and rule).
    let by_webhook_id: HashMap<String, usize> = due
        .iter()
        .map(|(id, &index)| (callhook::dispatch::signing::message_id(&format!("{id}.hook")), index))
        .collect();
    let mut first_arrival: HashMap<&str, Instant> = HashMap::new();
    for request in &hooks {
        if let Some(id) = request.header("webhook-id") {
            first_arrival.entry(id).or_insert(request.at);
        }
    }
    let mut hook_latencies: Vec<Duration> = first_arrival
        .iter()
        .filter_map(|(id, at)| Some(at.saturating_duration_since(written[*by_webhook_id.get(*id)?])))
        .collect();
    hook_latencies.sort();
    let hooks_lost = by_webhook_id
        .keys()
        .filter(|id| !first_arrival.contains_key(id.as_str()))
        .count();
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
    println!("webhooks lost:           {hooks_lost}");

    idle_footprint(child.id(), idle, &format!("after {calls} calls"));
    // `LIVE_SMAPS=file` keeps the process's memory map after the calls, to see what
    // holds its resident set.
    if let Ok(path) = std::env::var("LIVE_SMAPS") {
        let _ = std::fs::copy(format!("/proc/{}/smaps", child.id()), path);
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader_thread.join();
}

/// Lets the process idle for `idle` and prints its RSS, CPU use and wake-ups.
fn idle_footprint(pid: u32, idle: Duration, when: &str) {
    std::thread::sleep(Duration::from_secs(1));
    let before = (cpu_ticks(pid), wakeups(pid));
    std::thread::sleep(idle);
    let after = (cpu_ticks(pid), wakeups(pid));
    let kb = |field| status_kb(pid, field).map_or(f64::NAN, |kb| kb as f64 / 1024.0);
    match (status_kb(pid, "VmRSS:"), before, after) {
        (Some(rss), (Some(cpu_before), Some(wakeups_before)), (Some(cpu_after), Some(wakeups_after))) => {
            let ticks_per_s = 100.0; // USER_HZ on Linux
            let cpu = (cpu_after - cpu_before) as f64 / ticks_per_s / idle.as_secs_f64() * 100.0;
            let per_minute = (wakeups_after - wakeups_before) as f64 * 60.0 / idle.as_secs_f64();
            // The program's pages in RSS depend on how the system caches its file (a
            // file just written maps in larger pieces than one read back from disk, up
            // to 3 MB more): the split shows what callhook itself holds.
            println!(
                "idle, 3 files, {when}: RSS {:.1} MB (anonymous {:.1} MB, files {:.1} MB), CPU {cpu:.2} % of one core, {per_minute:.0} wake-ups/min ({}s window)",
                rss as f64 / 1024.0,
                kb("RssAnon:"),
                kb("RssFile:"),
                idle.as_secs()
            );
        }
        _ => println!("idle, {when}: not measured (no /proc)"),
    }
}
