//! Golden tests: every `tests/fixtures/csv/<case>/calls.csv` (copied from
//! `../shared/fixtures/csv`) must give its `expected.ndjson`, compared on the fields
//! listed there, call by call and in order; in every encoding, delimiter and line ending
//! the call-log source accepts, and fed in chunks that split rows anywhere.
//! A `call_id` of null in the expected events means "not compared": those calls (record
//! rows, which have no Call-ID) are matched by number.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use callhook::event::Event;
use callhook::source::call_log::{CallLogError, CallLogOptions, CallLogReader, ColumnMapping};
use jiff::tz::TimeZone;
use serde_json::Value;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/csv");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fixtures/csv exists")
        .map(|e| e.unwrap().path())
        .filter(|d| d.join("calls.csv").is_file() && d.join("expected.ndjson").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn read(bytes: &[u8], chunk: usize) -> (Vec<Event>, Vec<CallLogError>) {
    // The fixtures' local times are UTC (fixtures README).
    let options = CallLogOptions {
        columns: ColumnMapping::default(),
        time_zone: TimeZone::UTC,
        source_path: "calls.csv".to_owned(),
    };
    let mut reader = CallLogReader::new(options);
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for piece in bytes.chunks(chunk) {
        reader.push(piece, |e| events.push(e), |e| errors.push(e));
    }
    reader.finish(|e| events.push(e), |e| errors.push(e));
    assert_eq!(reader.position().byte, bytes.len() as u64, "position covers the file");
    (events, errors)
}

/// The same text in the other forms the source accepts, each with a name.
fn variants(text: &str) -> Vec<(String, Vec<u8>)> {
    let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let utf16 = |t: &str| {
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(t.encode_utf16().flat_map(u16::to_le_bytes));
        bytes
    };
    // Another delimiter: quote every field, so delimiters inside values stay data.
    let redelimit = |delimiter: u8| {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes());
        let mut writer = csv::WriterBuilder::new()
            .delimiter(delimiter)
            .quote_style(csv::QuoteStyle::Necessary)
            .from_writer(Vec::new());
        for record in reader.records() {
            writer.write_record(&record.unwrap()).unwrap();
        }
        writer.into_inner().unwrap()
    };
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(text.as_bytes());
    vec![
        ("as is".to_owned(), text.as_bytes().to_vec()),
        ("CRLF".to_owned(), crlf.clone().into_bytes()),
        ("UTF-8 BOM".to_owned(), bom),
        ("UTF-16LE BOM".to_owned(), utf16(text)),
        ("UTF-16LE BOM CRLF".to_owned(), utf16(&crlf)),
        ("';'".to_owned(), redelimit(b';')),
        ("tab".to_owned(), redelimit(b'\t')),
        ("no final newline".to_owned(), text.trim_end().as_bytes().to_vec()),
    ]
}

/// Events grouped by call: by Call-ID, or by number when `by_number`.
fn by_call(events: impl IntoIterator<Item = Value>, by_number: bool) -> BTreeMap<String, Vec<Value>> {
    let mut calls: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for event in events {
        let key = if by_number { "remote_number" } else { "call_id" };
        let id = event[key].as_str().expect("key is a string").to_owned();
        calls.entry(id).or_default().push(event);
    }
    calls
}

fn compare(got: &[Event], expected: &[Value]) -> Vec<String> {
    let by_number = expected.iter().any(|e| e["call_id"].is_null());
    let got = by_call(got.iter().map(|e| serde_json::to_value(e).unwrap()), by_number);
    let want = by_call(expected.iter().cloned(), by_number);
    let mut problems = Vec::new();
    for (call, want_events) in &want {
        let Some(got_events) = got.get(call) else {
            problems.push(format!("call {call}: no events, expected {}", want_events.len()));
            continue;
        };
        if got_events.len() != want_events.len() {
            let types: Vec<_> = got_events.iter().map(|e| e["type"].clone()).collect();
            problems.push(format!(
                "call {call}: {} events {types:?}, expected {}",
                got_events.len(),
                want_events.len()
            ));
            continue;
        }
        for (g, w) in got_events.iter().zip(want_events) {
            for (field, value) in w.as_object().unwrap() {
                if value.is_null() && field == "call_id" {
                    continue;
                }
                if &g[field] != value {
                    problems.push(format!(
                        "call {call} {}: {field} = {}, expected {value}",
                        w["type"], g[field]
                    ));
                }
            }
        }
    }
    for call in got.keys().filter(|c| !want.contains_key(*c)) {
        problems.push(format!("call {call}: unexpected events {:?}", got[call]));
    }
    problems
}

#[test]
fn every_fixture_gives_its_expected_events() {
    let cases = fixtures();
    assert!(cases.len() >= 2, "fixtures missing: {cases:?}");
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(dir.join("calls.csv")).unwrap();
        let expected: Vec<Value> = std::fs::read_to_string(dir.join("expected.ndjson"))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for (variant, bytes) in variants(&text) {
            for chunk in [1 << 20, 7, 1] {
                let (events, errors) = read(&bytes, chunk);
                let mut problems: Vec<String> = errors.iter().map(|e| format!("error: {e}")).collect();
                problems.extend(compare(&events, &expected));
                if !problems.is_empty() {
                    failures.push(format!(
                        "{name} ({variant}, chunk {chunk}):\n  {}",
                        problems.join("\n  ")
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn record_rows_get_stable_distinct_ids() {
    for dir in fixtures() {
        let bytes = std::fs::read(dir.join("calls.csv")).unwrap();
        let first: Vec<String> = read(&bytes, 1 << 20).0.into_iter().map(|e| e.id).collect();
        let second: Vec<String> = read(&bytes, 5).0.into_iter().map(|e| e.id).collect();
        assert_eq!(first, second, "{}", dir.display());
        let unique: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(unique.len(), first.len(), "ids unique within {}", dir.display());
    }
}

#[test]
fn the_shared_fixtures_are_all_here() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/csv");
    let Ok(entries) = std::fs::read_dir(&shared) else {
        return; // a checkout without ../shared: the copies in tests/fixtures are tested
    };
    for entry in entries {
        let dir = entry.unwrap().path();
        if !dir.join("calls.csv").is_file() {
            continue;
        }
        let name = dir.file_name().unwrap();
        let copy = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/csv")
            .join(name);
        for file in ["calls.csv", "expected.ndjson"] {
            assert_eq!(
                std::fs::read(dir.join(file)).unwrap(),
                std::fs::read(copy.join(file)).unwrap_or_default(),
                "tests/fixtures/csv/{} differs from ../shared: copy it again",
                name.to_string_lossy()
            );
        }
    }
}
