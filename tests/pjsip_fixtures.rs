//! Golden tests: every `tests/fixtures/pjsip/<case>/phone.log` (real PJSIP traces, made
//! by `../shared/tools/pjsip`) must give exactly its `expected.ndjson`, compared on the
//! fields listed there, call by call and in order.

mod common;

use std::collections::BTreeMap;

use serde_json::Value;

/// Events grouped by call, each call's events in the order produced.
fn by_call(events: impl IntoIterator<Item = Value>) -> BTreeMap<String, Vec<Value>> {
    let mut calls: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for event in events {
        let id = event["call_id"].as_str().expect("call_id is a string").to_owned();
        calls.entry(id).or_default().push(event);
    }
    calls
}

fn check_case(dir: &std::path::Path) -> Result<(), String> {
    let log = std::fs::read(dir.join("phone.log")).unwrap();
    let expected_text = std::fs::read_to_string(dir.join("expected.ndjson")).unwrap();
    let expected: Vec<Value> = expected_text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Chunk size that splits lines and SIP blocks anywhere, as a live tail would.
    for chunk in [1 << 20, 777] {
        let (events, errors) = common::replay_chunked(&log, chunk, |_| {});
        if !errors.is_empty() {
            return Err(format!("parse errors: {errors:?}"));
        }
        let got = by_call(events.iter().map(|e| serde_json::to_value(e).unwrap()));
        let want = by_call(expected.iter().cloned());
        let mut problems = Vec::new();
        for (call_id, want_events) in &want {
            let Some(got_events) = got.get(call_id) else {
                problems.push(format!("call {call_id}: no events, expected {}", want_events.len()));
                continue;
            };
            if got_events.len() != want_events.len() {
                let types: Vec<_> = got_events.iter().map(|e| e["type"].clone()).collect();
                problems.push(format!(
                    "call {call_id}: {} events {types:?}, expected {}",
                    got_events.len(),
                    want_events.len()
                ));
                continue;
            }
            for (g, w) in got_events.iter().zip(want_events) {
                for (field, value) in w.as_object().unwrap() {
                    if &g[field] != value {
                        problems.push(format!(
                            "call {call_id} {}: {field} = {}, expected {value}",
                            w["type"], g[field]
                        ));
                    }
                }
            }
        }
        for call_id in got.keys().filter(|c| !want.contains_key(*c)) {
            problems.push(format!("call {call_id}: unexpected events {:?}", got[call_id]));
        }
        if !problems.is_empty() {
            return Err(format!("(chunk {chunk})\n  {}", problems.join("\n  ")));
        }
    }
    Ok(())
}

#[test]
fn every_fixture_gives_its_expected_events() {
    let cases = common::pjsip_fixtures();
    assert!(cases.len() >= 5, "fixtures missing: {cases:?}");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|dir| {
            check_case(dir)
                .err()
                .map(|e| format!("{}: {e}", dir.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn the_shared_fixtures_are_all_here() {
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/pjsip");
    let Ok(entries) = std::fs::read_dir(&shared) else {
        return; // a checkout without ../shared: the copies in tests/fixtures are tested
    };
    for entry in entries {
        let dir = entry.unwrap().path();
        if !dir.join("phone.log").is_file() {
            continue;
        }
        let name = dir.file_name().unwrap();
        let copy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pjsip")
            .join(name);
        for file in ["phone.log", "expected.ndjson"] {
            assert_eq!(
                std::fs::read(dir.join(file)).unwrap(),
                std::fs::read(copy.join(file)).unwrap_or_default(),
                "tests/fixtures/pjsip/{} differs from ../shared: copy it again",
                name.to_string_lossy()
            );
        }
    }
}

#[test]
fn event_ids_are_deterministic() {
    for dir in common::pjsip_fixtures() {
        let log = std::fs::read(dir.join("phone.log")).unwrap();
        let first: Vec<String> = common::replay(&log).0.into_iter().map(|e| e.id).collect();
        let second: Vec<String> = common::replay_chunked(&log, 4096, |_| {})
            .0
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(first, second, "{}", dir.display());
        let unique: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(unique.len(), first.len(), "ids unique within {}", dir.display());
    }
}

/// `callhook replay` reads a trace on two threads: the parser scans each SIP message,
/// the tracking thread builds it, reading its parties (From, To, asserted identity)
/// only when the message may start a call. Every fixture must give the events the
/// live reader gives (one thread, every message read whole), field for field.
#[test]
fn replay_gives_the_live_readers_events() {
    use callhook::replay::{Input, ReplayOptions, events};
    // The source path differs (the live reader here names none); all else must not.
    let comparable = |event: &callhook::event::Event| {
        let mut value = serde_json::to_value(event).unwrap();
        value["source_path"] = Value::Null;
        value
    };
    for dir in common::pjsip_fixtures() {
        let path = dir.join("phone.log");
        let live: Vec<Value> = common::replay(&std::fs::read(&path).unwrap())
            .0
            .iter()
            .map(comparable)
            .collect();
        let mut options = ReplayOptions::default();
        options.read.date = Some(jiff::civil::date(2026, 11, 23));
        options.read.time_zone = jiff::tz::TimeZone::UTC;
        let mut replayed = Vec::new();
        let input = Input::from_arg(path.to_str().unwrap());
        events(&[input], &options, &mut |_| {}, &mut |event| {
            replayed.push(comparable(event));
            true
        });
        assert!(!live.is_empty(), "{}", dir.display());
        assert_eq!(replayed, live, "{}", dir.display());
    }
}
