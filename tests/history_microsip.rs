//! The history source against a `microsip.ini` rewritten in place the way MicroSIP does,
//! driven by the call states of real PJSIP runs (`tests/fixtures/pjsip/*/truth.json`):
//! a new `[Calls]` entry when a call starts (inbound type 2, outbound 0), 2 → 1 when an
//! inbound call is answered, duration and info when it ends; keys in a ring that wraps
//! around; the whole UTF-16LE file rewritten on every change. The events must match the
//! PJSIP fixture's `expected.ndjson` on what the history knows (type, direction, number,
//! name, outcome, status code), call by call and in order.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use callhook::event::Event;
use callhook::track::history::{HistoryDiffer, HistoryOptions, HistoryState};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::Value;

/// A `microsip.ini` on disk, written as MicroSIP writes it.
struct MicroSipIni {
    path: PathBuf,
    /// The `[Calls]` ring: slot `k` is key `k`; `None` never written.
    slots: Vec<Option<String>>,
    next: usize,
    /// Call-ID → its slot and entry fields.
    calls: HashMap<String, Entry>,
}

#[derive(Clone)]
struct Entry {
    slot: usize,
    number: String,
    name: String,
    call_type: u8,
    time: i64,
    duration: u64,
    info: String,
    confirmed_at: Option<f64>,
    ended: bool,
}

impl Entry {
    fn value(&self) -> String {
        format!(
            "{};{};{};{};{};{}",
            self.number, self.name, self.call_type, self.time, self.duration, self.info
        )
    }
}

impl MicroSipIni {
    fn new(path: PathBuf, keys: usize) -> MicroSipIni {
        let ini = MicroSipIni {
            path,
            slots: vec![None; keys],
            next: 0,
            calls: HashMap::new(),
        };
        ini.rewrite();
        ini
    }

    /// The whole file, UTF-16LE with BOM and CRLF, written over the old one in place
    /// (same file, truncated), as `WritePrivateProfileString` does.
    fn rewrite(&self) {
        let mut text = String::from(
            "[Settings]\r\naccountId=1\r\nenableLog=0\r\ncmdCallRing=\r\n[Account1]\r\nlabel=Office\r\nserver=pbx.example.com\r\n[Calls]\r\n",
        );
        for (key, value) in self.slots.iter().enumerate() {
            if let Some(value) = value {
                text.push_str(&format!("{key}={value}\r\n"));
            }
        }
        text.push_str("[Dialed]\r\n0=5551000\r\n");
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)
            .unwrap();
        file.write_all(&bytes).unwrap();
    }

    fn store(&mut self, call_id: &str) {
        let entry = &self.calls[call_id];
        self.slots[entry.slot] = Some(entry.value());
        self.rewrite();
    }

    /// Applies one call state from `truth.json`; true when the file changed.
    fn apply(&mut self, state: &Value) -> bool {
        let call_id = state["call_id"].as_str().unwrap().to_owned();
        let t = state["t"].as_f64().unwrap();
        match state["state"].as_str().unwrap() {
            "INCOMING" | "CALLING" if !self.calls.contains_key(&call_id) => {
                let slot = self.next;
                self.next = (self.next + 1) % self.slots.len();
                let overwritten = self.calls.values().find(|e| e.slot == slot && !e.ended);
                assert!(
                    overwritten.is_none(),
                    "ring too small: a call in progress would be overwritten"
                );
                self.calls.retain(|_, e| e.slot != slot);
                let inbound = state["role"] == "inbound";
                let entry = Entry {
                    slot,
                    number: state["number"].as_str().unwrap().to_owned(),
                    name: display_name(state["remote_uri"].as_str().unwrap_or_default()),
                    call_type: if inbound { 2 } else { 0 },
                    time: t.floor() as i64,
                    duration: 0,
                    info: String::new(),
                    confirmed_at: None,
                    ended: false,
                };
                self.calls.insert(call_id.clone(), entry);
                self.store(&call_id);
                true
            }
            "CONFIRMED" => {
                let Some(entry) = self.calls.get_mut(&call_id) else {
                    return false;
                };
                entry.confirmed_at = Some(t);
                if entry.call_type == 2 {
                    entry.call_type = 1;
                    self.store(&call_id);
                    return true;
                }
                false
            }
            "DISCONNECTED" => {
                let Some(entry) = self.calls.get_mut(&call_id) else {
                    return false;
                };
                if let Some(confirmed) = entry.confirmed_at {
                    entry.duration = ((t - confirmed).round() as u64).max(1);
                }
                entry.info = state["reason"].as_str().unwrap_or_default().to_owned();
                entry.ended = true;
                self.store(&call_id);
                true
            }
            _ => false,
        }
    }

    /// Deletes the entry of the oldest ended call (MicroSIP writes `null`).
    fn delete_oldest_ended(&mut self) -> bool {
        let Some((call_id, slot)) = self
            .calls
            .iter()
            .filter(|(_, e)| e.ended)
            .min_by_key(|(_, e)| e.time)
            .map(|(id, e)| (id.clone(), e.slot))
        else {
            return false;
        };
        self.calls.remove(&call_id);
        self.slots[slot] = Some("null".to_owned());
        self.rewrite();
        true
    }
}

fn display_name(uri: &str) -> String {
    uri.strip_prefix('"')
        .and_then(|rest| rest.split_once('"'))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_default()
}

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pjsip")
        .join(case)
}

fn truth(case: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture(case).join("truth.json")).unwrap();
    let mut states: Vec<Value> = serde_json::from_str(&text).unwrap();
    states.sort_by(|a, b| a["t"].as_f64().partial_cmp(&b["t"].as_f64()).unwrap());
    states
}

struct Run {
    keys: usize,
    restart_every_step: bool,
    torn_reads: bool,
    delete_ended: bool,
}

/// Plays `case` into a MicroSIP-style ini and reads every rewrite with a differ.
fn play(case: &str, run: &Run) -> Vec<Event> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("microsip.ini");
    let mut ini = MicroSipIni::new(path.clone(), run.keys);
    let options = HistoryOptions {
        time_zone: TimeZone::UTC,
        source_path: path.display().to_string(),
    };
    let mut differ = HistoryDiffer::new(options.clone());
    let mut events = Vec::new();
    let read = |differ: &mut HistoryDiffer, now: Timestamp, events: &mut Vec<Event>| {
        let bytes = std::fs::read(&path).unwrap();
        if run.torn_reads {
            // A read while MicroSIP was writing: the file cut at some byte.
            let cut = bytes.len() * 2 / 3;
            differ.update(&bytes[..cut], now, |e| events.push(e), |e| panic!("{e}"));
        }
        differ.update(&bytes, now, |e| events.push(e), |e| panic!("{e}"));
    };
    read(&mut differ, Timestamp::UNIX_EPOCH, &mut events);
    let mut ended = 0;
    for state in truth(case) {
        let t = state["t"].as_f64().unwrap();
        let now = Timestamp::from_millisecond((t * 1000.0) as i64).unwrap();
        if !ini.apply(&state) {
            continue;
        }
        read(&mut differ, now, &mut events);
        if state["state"] == "DISCONNECTED" {
            ended += 1;
            if run.delete_ended && ended % 3 == 0 && ini.delete_oldest_ended() {
                read(&mut differ, now, &mut events);
            }
        }
        if run.restart_every_step {
            let json = serde_json::to_string(&differ.state()).unwrap();
            let state: HistoryState = serde_json::from_str(&json).unwrap();
            differ = HistoryDiffer::resume(options.clone(), &state);
        }
    }
    // Many more rewrites with nothing new: nothing happens, the state stays small.
    for _ in 0..5 {
        read(&mut differ, Timestamp::MAX, &mut events);
    }
    assert!(
        differ.tracked() <= run.keys,
        "state bounded by the file: {}",
        differ.tracked()
    );
    events
}

/// Compares on the fields the history knows; calls matched by number.
fn check(case: &str, events: &[Event]) -> Result<(), String> {
    let expected_text = std::fs::read_to_string(fixture(case).join("expected.ndjson")).unwrap();
    let mut want: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in expected_text.lines().filter(|l| !l.trim().is_empty()) {
        let event: Value = serde_json::from_str(line).unwrap();
        want.entry(event["remote_number"].as_str().unwrap().to_owned())
            .or_default()
            .push(event);
    }
    let mut got: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for event in events {
        got.entry(event.remote_number.clone())
            .or_default()
            .push(serde_json::to_value(event).unwrap());
    }
    let mut problems = Vec::new();
    for (number, want_events) in &want {
        let got_events = got.get(number).cloned().unwrap_or_default();
        let types = |events: &[Value]| events.iter().map(|e| e["type"].clone()).collect::<Vec<_>>();
        if types(&got_events) != types(want_events) {
            problems.push(format!(
                "{number}: {:?}, expected {:?}",
                types(&got_events),
                types(want_events)
            ));
            continue;
        }
        for (g, w) in got_events.iter().zip(want_events) {
            for field in ["direction", "remote_number", "remote_name", "outcome", "status_code"] {
                let wanted = w.get(field).cloned().unwrap_or(Value::Null);
                if g[field] != wanted {
                    problems.push(format!(
                        "{number} {}: {field} = {}, expected {wanted}",
                        w["type"], g[field]
                    ));
                }
            }
        }
    }
    for number in got.keys().filter(|n| !want.contains_key(*n)) {
        problems.push(format!("{number}: unexpected events"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n  "))
    }
}

#[test]
fn microsip_rewrites_give_the_calls_of_the_trace() {
    let runs = [
        Run {
            keys: 200,
            restart_every_step: false,
            torn_reads: false,
            delete_ended: false,
        },
        // Keys wrap around (burst has 11 calls), reads catch writes halfway, the
        // differ restarts from its saved state after every change, entries get deleted.
        Run {
            keys: 6,
            restart_every_step: true,
            torn_reads: true,
            delete_ended: true,
        },
    ];
    let calls: std::collections::HashSet<_> = truth("burst").iter().map(|s| s["call_id"].to_string()).collect();
    assert!(calls.len() > 6, "burst wraps a ring of 6 keys");
    let mut failures = Vec::new();
    for case in ["basic", "burst"] {
        for (i, run) in runs.iter().enumerate() {
            let events = play(case, run);
            assert!(events.len() >= 10, "{case}: {} events", events.len());
            if let Err(problem) = check(case, &events) {
                failures.push(format!("{case} (run {i}):\n  {problem}"));
            }
            let ids: std::collections::HashSet<_> = events.iter().map(|e| &e.id).collect();
            assert_eq!(ids.len(), events.len(), "{case}: an event repeated");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_same_file_gives_the_same_events_and_ids() {
    let quiet = Run {
        keys: 200,
        restart_every_step: false,
        torn_reads: false,
        delete_ended: false,
    };
    let a = play("burst", &quiet);
    let b = play(
        "burst",
        &Run {
            keys: 6,
            restart_every_step: true,
            torn_reads: true,
            delete_ended: true,
        },
    );
    let ids = |events: &[Event]| {
        let mut ids: Vec<(String, String)> = events.iter().map(|e| (e.remote_number.clone(), e.id.clone())).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&a), ids(&b));
}
