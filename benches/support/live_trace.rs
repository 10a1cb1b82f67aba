//! Shared by the live benchmarks (`live`, `peer`, and `open_calls` for /proc figures): a trace of real log entries to append
//! on schedule, when each event can be known, and the process figures from /proc.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use callhook::event::SourceKind;
use callhook::parse::log_time::parse_timestamp;
use callhook::source::sip_trace::SipTraceReader;
use callhook::track::sip::TrackerConfig;

/// The `callhook` binary to measure: this build's, or `CALLHOOK_BIN` (to measure another
/// build, such as the previous release, with the same benchmark).
pub fn callhook_binary() -> std::path::PathBuf {
    std::env::var_os("CALLHOOK_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_callhook").into())
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Fixture copies, every Call-ID renumbered per copy, until `calls_wanted` calls;
/// returns the trace and its number of calls.
pub fn build_trace(calls_wanted: usize, expected: impl Fn(&str) -> usize) -> (Vec<u8>, usize) {
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
            calls += expected(case);
            out.extend_from_slice(text.as_bytes());
        }
        copy += 1;
    }
    (out, calls)
}

/// Log entries: a timestamped line and the untimestamped lines after it.
pub fn split_entries(trace: &[u8]) -> Vec<&[u8]> {
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

/// Event id → the index of the entry after which a perfect reader knows it.
pub fn due_entries(entries: &[&[u8]]) -> HashMap<String, usize> {
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
    due
}

/// The `p` quantile of sorted durations, in ms.
pub fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        * 1e3
}

/// A memory figure of a process's `/proc/PID/status`, kB (Linux): `field` is e.g.
/// `"VmRSS:"`, `"RssAnon:"` (heap, stacks) or `"RssFile:"` (mapped files, mostly the
/// program's own pages).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU ticks of a process (Linux).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Voluntary context switches of all a process's threads: each is a thread going to
/// sleep, so one per wake-up (Linux).
pub fn wakeups(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
        for line in status.lines() {
            if let Some(n) = line.strip_prefix("voluntary_ctxt_switches:") {
                total += n.trim().parse::<u64>().ok()?;
            }
        }
    }
    Some(total)
}
