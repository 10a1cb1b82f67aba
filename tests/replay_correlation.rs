//! `callhook replay` and `callhook test` drive the same pipeline as `callhook run`:
//! several files of several kinds, merged in event-time order and correlated. A trace,
//! a call-log CSV and a `microsip.ini` of the same calls give each (call, type) once,
//! with the trace's data; a call only the CSV saw is still there; each rule fires once
//! per call and type. A call log replayed alone gives what a `call_log` source read from
//! its start by `run` gives.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use callhook::source::config::{Source, StartAt};
use common::{Daemon, write_ini};

fn callhook() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_callhook"));
    command.env("CALLHOOK_LOG", "warn");
    command
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Runs `callhook replay` (UTC, undated lines on 2026-11-23) on `files`.
fn replay(extra: &[&str], files: &[&Path]) -> Vec<serde_json::Value> {
    let out = callhook()
        .args(["replay", "--quiet", "--tz", "UTC", "--date", "2026-11-23"])
        .args(extra)
        .args(files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A `microsip.ini` holding the calls of `events` (one replayed trace) as MicroSIP
/// writes them when they are over.
fn ini_of(events: &[serde_json::Value], path: &Path) {
    let mut started: BTreeMap<&str, i64> = BTreeMap::new();
    let mut entries = Vec::new();
    for event in events {
        let call_id = event["call_id"].as_str().unwrap();
        let at: jiff::Timestamp = event["at"].as_str().unwrap().parse().unwrap();
        match event["type"].as_str().unwrap() {
            "ringing" => {
                started.insert(call_id, at.as_second());
            }
            "ended" => {
                let inbound = event["direction"] == "inbound";
                let answered = event["outcome"] == "completed";
                let kind = match (inbound, answered) {
                    (true, true) => 1,
                    (true, false) => 2,
                    (false, _) => 0,
                };
                let info = match event["status_code"].as_u64() {
                    Some(603) => "Declined",
                    Some(404) => "Not Found",
                    Some(486) => "Busy Here",
                    Some(487) => "Request Terminated",
                    _ => "",
                };
                entries.push(format!(
                    "{};{};{kind};{};{};{info}",
                    event["remote_number"].as_str().unwrap(),
                    event["remote_name"].as_str().unwrap_or(""),
                    started[call_id],
                    event["talk_s"].as_f64().unwrap().round() as u64,
                ));
            }
            _ => {}
        }
    }
    write_ini(path, &entries);
}

/// (call_id, type) of each event, in order.
fn pairs(events: &[serde_json::Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["call_id"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn trace_csv_and_history_of_the_same_calls_give_each_event_once_with_the_trace_data() {
    let dir = tempfile::tempdir().unwrap();
    let trace = fixtures().join("pjsip/mixed-tcp/phone.log");
    let alone = replay(&[], &[&trace]);
    assert_eq!(alone.len(), 14);
    let csv = dir.path().join("calls.csv");
    let mut rows = std::fs::read_to_string(fixtures().join("csv/state-mixed/calls.csv")).unwrap();
    // A call only the call log saw.
    rows.push_str("2026-11-23T08:40:00.000+00:00,ringing,only-in-csv,inbound,5559999,Nur CSV,,\n");
    rows.push_str("2026-11-23T08:40:07.000+00:00,ended,only-in-csv,inbound,5559999,Nur CSV,487,missed\n");
    std::fs::write(&csv, rows).unwrap();
    let ini = dir.path().join("microsip.ini");
    ini_of(&alone, &ini);

    let merged = replay(&[], &[&trace, &csv, &ini]);
    let from_trace: Vec<&serde_json::Value> = merged.iter().filter(|e| e["call_id"] != "only-in-csv").collect();
    assert_eq!(
        pairs(&from_trace.iter().map(|e| (*e).clone()).collect::<Vec<_>>()),
        pairs(&alone),
        "{merged:#?}"
    );
    for (event, traced) in from_trace.iter().zip(&alone) {
        assert_eq!(*event, traced, "the trace's event, as the trace alone gives it");
    }
    let csv_only: Vec<&serde_json::Value> = merged.iter().filter(|e| e["call_id"] == "only-in-csv").collect();
    assert_eq!(csv_only.len(), 2, "{merged:#?}");
    assert!(csv_only.iter().all(|e| e["source"] == "call_log"));
    assert_eq!(csv_only[1]["outcome"], "missed");

    // The same three files in another order give the same events.
    let reordered = replay(&[], &[&ini, &csv, &trace]);
    assert_eq!(pairs(&reordered), pairs(&merged));
}

#[test]
fn callhook_test_fires_each_rule_once_per_call_and_type_over_three_sources() {
    let dir = tempfile::tempdir().unwrap();
    let trace = fixtures().join("pjsip/mixed-tcp/phone.log");
    let alone = replay(&[], &[&trace]);
    let ini = dir.path().join("microsip.ini");
    ini_of(&alone, &ini);
    let csv = fixtures().join("csv/state-mixed/calls.csv");
    let config = dir.path().join("callhook.yaml");
    std::fs::write(
        &config,
        "version: 1
sources: [{ kind: sip_trace, path: x.log }]
rules:
  - name: every
    on: [ringing, answered, ended]
    webhook: { url: \"https://desk.example.com/cti\" }
  - name: ended-only
    on: ended
    webhook: { url: \"https://desk.example.com/ended\" }
",
    )
    .unwrap();
    let out = callhook()
        .args(["test", "--tz", "UTC", "--date", "2026-11-23", "-c"])
        .arg(&config)
        .args([&trace, &csv, &ini])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches("  fires  every:").count(), alone.len(), "{stdout}");
    let calls = alone.iter().filter(|e| e["type"] == "ended").count();
    assert_eq!(stdout.matches("  fires  ended-only:").count(), calls, "{stdout}");
}

#[test]
fn a_call_log_replayed_gives_what_a_call_log_source_read_from_the_start_gives() {
    for case in ["state-mixed", "record-burst"] {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("calls.csv");
        std::fs::copy(fixtures().join(format!("csv/{case}/calls.csv")), &csv).unwrap();
        let replayed = replay(&["--format", "call_log"], &[&csv]);
        assert!(!replayed.is_empty(), "{case}");

        let mut source = Source::call_log(&csv);
        source.start_at = StartAt::Beginning;
        source.time_zone = jiff::tz::TimeZone::UTC;
        let config = callhook::config::Config::with_sources(dir.path().join("state"), vec![source]);
        let daemon = Daemon::with_config(config);
        let live = daemon.take(replayed.len());
        daemon.quiet_for(300);
        daemon.stop();
        assert_eq!(live, replayed, "{case}");
    }
}
