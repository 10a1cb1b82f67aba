//! `callhook run` on a call-log CSV written row by row while it runs: the same events as
//! the shared fixtures' expected ones, a restart that goes on, a truncation with a new
//! header.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, append};

fn csv_fixture(case: &str) -> (String, Vec<(Option<String>, String)>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/csv")
        .join(case);
    let csv = std::fs::read_to_string(root.join("calls.csv")).unwrap();
    let expected = std::fs::read_to_string(root.join("expected.ndjson"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["call_id"].as_str().map(str::to_owned),
                v["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (csv, expected)
}

fn daemon(csv: &Path, state: &Path) -> Daemon {
    let mut source = callhook::source::config::Source::call_log(csv);
    source.poll_interval = Duration::from_millis(20);
    source.time_zone = jiff::tz::TimeZone::UTC;
    source.start_at = callhook::source::config::StartAt::End;
    Daemon::with_config(callhook::config::Config::with_sources(state, vec![source]))
}

fn keys(events: &[serde_json::Value]) -> Vec<(Option<String>, String)> {
    events
        .iter()
        .map(|v| {
            (
                v["call_id"].as_str().map(str::to_owned),
                v["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn rows_written_live_become_events_and_a_restart_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calls.csv");
    let state = dir.path().join("state");
    let (csv, expected) = csv_fixture("state-mixed");
    let mut lines = csv.split_inclusive('\n');
    // the header is there before callhook starts; rows come later, one by one
    append(&path, lines.next().unwrap().as_bytes());
    let rows: Vec<&str> = lines.collect();
    let half = rows.len() / 2;
    let first = daemon(&path, &state);
    for row in &rows[..half] {
        append(&path, row.as_bytes());
        std::thread::sleep(Duration::from_millis(5));
    }
    let got_first = first.take(half);
    first.quiet_for(200);
    first.stop();
    for row in &rows[half..] {
        append(&path, row.as_bytes());
    }
    let second = daemon(&path, &state);
    let got_second = second.take(expected.len() - half);
    second.quiet_for(300);
    let mut all = keys(&got_first);
    all.extend(keys(&got_second));
    assert_eq!(sorted_keys(all), sorted_keys(expected));
}

#[test]
fn truncation_with_a_new_header_ends_open_calls_and_reads_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calls.csv");
    append(&path, b"time,event,call_id,direction,number\n");
    let d = daemon(&path, &dir.path().join("state"));
    append(&path, b"2026-11-23T08:00:00Z,ringing,c1,inbound,5551\n");
    assert_eq!(d.take(1)[0]["type"], "ringing");
    std::fs::write(&path, b"").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    append(&path, b"number;time;event\n5552;2026-11-23T09:00:00Z;ringing\n");
    let events = d.take(2);
    assert_eq!(
        (events[0]["call_id"].as_str(), events[0]["outcome"].as_str()),
        (Some("c1"), Some("unknown"))
    );
    assert_eq!(events[1]["remote_number"], "5552");
}

fn sorted_keys(mut keys: Vec<(Option<String>, String)>) -> Vec<(Option<String>, String)> {
    keys.sort();
    keys
}
