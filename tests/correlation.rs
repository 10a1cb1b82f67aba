//! Several sources watching one phone: the SIP trace, the call-log CSV and MicroSIP's
//! command hooks (`callhook hook` run as child processes) all report the same 20 calls,
//! in a different order at each step; each rule must fire exactly once per call and
//! event type, and the event stream must carry each once, with the richest data: the
//! trace's, which the other sources' events wait for.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use common::{Daemon, Receiver, Trace, append, hook, invite, request, response, write_ini};

const PHONE: &str = "<sip:101@pbx>";
const NUMBERS: [&str; 5] = ["+4930111111", "5552000", "+4930333333", "5554000", "alice"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    Trace,
    Csv,
    Hook,
}

struct Call {
    index: usize,
    number: &'static str,
    inbound: bool,
    answered: bool,
}

impl Call {
    fn new(index: usize) -> Call {
        Call {
            index,
            number: NUMBERS[index % NUMBERS.len()],
            inbound: index % 4 < 2,
            answered: index % 3 != 1,
        }
    }

    fn remote(&self) -> String {
        format!("\"Caller {}\" <sip:{}@pbx>", self.index, self.number)
    }

    fn call_id(&self) -> String {
        format!("corr-{}@pbx", self.index)
    }

    fn outcome(&self) -> &'static str {
        match (self.answered, self.inbound) {
            (true, _) => "completed",
            (false, true) => "missed",
            (false, false) => "busy",
        }
    }
}

fn now_ms_of_day() -> u64 {
    let now = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC);
    (now.timestamp().as_millisecond() as u64) % 86_400_000
}

fn now_text() -> String {
    callhook::event::rfc3339(&jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC))
}

/// Writes step `step` (0 ringing, 1 answered, 2 ended) of `call` to one source.
fn report(dir: &Path, call: &Call, step: usize, source: Source) {
    let (from, to) = if call.inbound {
        (call.remote(), PHONE.to_owned())
    } else {
        (PHONE.to_owned(), format!("<sip:{}@pbx>", call.number))
    };
    let id = call.call_id();
    match source {
        Source::Trace => {
            let mut t = Trace::new();
            t.at_ms(now_ms_of_day());
            match (step, call.answered, call.inbound) {
                (0, _, inbound) => {
                    t.sip(inbound, &invite(&id, &from, &to, 1));
                }
                (1, _, inbound) => {
                    t.sip(!inbound, &response(200, &id, &from, &to, 1, "INVITE"));
                }
                (2, true, _) => {
                    t.sip(true, &request("BYE", &id, &from, &to, 2, ""));
                }
                (2, false, true) => {
                    t.sip(true, &request("CANCEL", &id, &from, &to, 1, ""))
                        .sip(false, &response(487, &id, &from, &to, 1, "INVITE"));
                }
                (2, false, false) => {
                    t.sip(true, &response(486, &id, &from, &to, 1, "INVITE"));
                }
                _ => unreachable!(),
            }
            append(&dir.join("phone.log"), t.text.as_bytes());
        }
        Source::Csv => {
            let direction = if call.inbound { "inbound" } else { "outbound" };
            let (event, status, outcome) = match step {
                0 => ("ringing", String::new(), ""),
                1 => ("answered", String::new(), ""),
                _ => (
                    "ended",
                    match call.outcome() {
                        "completed" => "200",
                        "missed" => "487",
                        _ => "486",
                    }
                    .to_owned(),
                    call.outcome(),
                ),
            };
            let row = format!(
                "{},{event},{direction},{},Caller {},{status},{outcome}\r\n",
                now_text(),
                call.number,
                call.index
            );
            append(&dir.join("calls.csv"), row.as_bytes());
        }
        Source::Hook => {
            let event = match (step, call.inbound, call.answered) {
                (0, true, _) => "cmdCallRing",
                (0, false, _) => "cmdOutgoingCall",
                (1, true, _) => "cmdCallAnswer",
                (1, false, _) => "cmdCallStart",
                (2, false, false) => "cmdCallBusy",
                _ => "cmdCallEnd",
            };
            // Delivered at once, or spooled when the daemon was slow (a disk stall); both
            // reach the daemon.
            let said = hook(&dir.join("state"), event, call.number);
            assert!(said.contains("delivered") || said.contains("spooled"), "{said}");
            if event == "cmdCallBusy" {
                // MicroSIP runs cmdCallEnd too; it must change nothing.
                hook(&dir.join("state"), "cmdCallEnd", call.number);
            }
        }
    }
}

#[test]
fn trace_csv_and_hooks_fire_each_rule_once_per_call_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    append(
        &dir.path().join("calls.csv"),
        b"time,event,direction,number,name,status_code,outcome\r\n",
    );
    std::fs::write(dir.path().join("phone.log"), b"").unwrap();
    let config = format!(
        "version: 1
state_dir: state
sources:
  - {{ kind: sip_trace, path: phone.log, start_at: beginning, poll_interval: 20ms, time_zone: UTC }}
  - {{ kind: call_log, path: calls.csv, start_at: beginning, poll_interval: 20ms, time_zone: UTC }}
  - {{ kind: hook }}
correlate: {{ wait: 1s }}
rules:
  - name: every
    on: [ringing, answered, ended]
    webhook: {{ url: \"{url}/every\" }}
  - name: ended-only
    on: ended
    webhook: {{ url: \"{url}/ended\" }}
",
        url = receiver.url
    );
    let path = dir.path().join("callhook.yaml");
    std::fs::write(&path, config).unwrap();
    let daemon = Daemon::with_config(callhook::config::Config::load(&path).unwrap());

    let calls: Vec<Call> = (0..20).map(Call::new).collect();
    let orders = [
        [Source::Trace, Source::Hook, Source::Csv],
        [Source::Hook, Source::Csv, Source::Trace],
        [Source::Csv, Source::Trace, Source::Hook],
    ];
    for call in &calls {
        for step in 0..3 {
            if step == 1 && !call.answered {
                continue;
            }
            for source in orders[(call.index + step) % 3] {
                report(dir.path(), call, step, source);
                // Each source's report is taken before the next one's.
                std::thread::sleep(Duration::from_millis(40));
            }
        }
    }

    let answered = calls.iter().filter(|c| c.answered).count();
    let expected = calls.len() * 2 + answered;
    let events = daemon.take(expected);
    daemon.quiet_for(1500);
    let requests = receiver.wait_for(expected + calls.len(), 10);
    std::thread::sleep(Duration::from_millis(500));
    let requests_now = receiver.requests.lock().unwrap().clone();
    assert_eq!(requests_now.len(), requests.len(), "more requests came late");

    // The event stream: per call (its emitted call_id), the types in order, once each.
    let mut per_call: BTreeMap<String, Vec<(String, serde_json::Value)>> = BTreeMap::new();
    for event in &events {
        per_call
            .entry(event["call_id"].as_str().unwrap().to_owned())
            .or_default()
            .push((event["type"].as_str().unwrap().to_owned(), event.clone()));
    }
    assert_eq!(per_call.len(), calls.len(), "calls seen: {:#?}", per_call.keys());
    let mut by_number: HashMap<&str, Vec<&Vec<(String, serde_json::Value)>>> = HashMap::new();
    for list in per_call.values() {
        by_number
            .entry(NUMBERS.iter().find(|n| same(n, &list[0].1)).expect("a known number"))
            .or_default()
            .push(list);
    }
    for number in NUMBERS {
        let mut seen = by_number.remove(number).unwrap_or_default();
        seen.sort_by_key(|list| list[0].1["at"].as_str().unwrap().to_owned());
        let wanted: Vec<&Call> = calls.iter().filter(|c| c.number == number).collect();
        assert_eq!(seen.len(), wanted.len(), "calls of {number}");
        for (list, call) in seen.iter().zip(wanted) {
            let types: Vec<&str> = list.iter().map(|(t, _)| t.as_str()).collect();
            let want: &[&str] = if call.answered {
                &["ringing", "answered", "ended"]
            } else {
                &["ringing", "ended"]
            };
            assert_eq!(types, want, "call {}", call.index);
            let ended = &list.last().unwrap().1;
            assert_eq!(ended["outcome"], call.outcome(), "call {}: {ended}", call.index);
            let direction = if call.inbound { "inbound" } else { "outbound" };
            assert!(
                list.iter().all(|(_, e)| e["direction"] == direction),
                "call {}",
                call.index
            );
        }
    }

    // The rules: each fired once per (call, type).
    let mut fired: HashMap<(String, String, String), usize> = HashMap::new();
    for request in &requests {
        let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        let key = (
            request.path.clone(),
            body["call_id"].as_str().unwrap().to_owned(),
            body["type"].as_str().unwrap().to_owned(),
        );
        *fired.entry(key).or_default() += 1;
    }
    assert!(fired.values().all(|&n| n == 1), "fired twice: {fired:?}");
    assert_eq!(fired.keys().filter(|k| k.0 == "/every").count(), expected);
    assert_eq!(fired.keys().filter(|k| k.0 == "/ended").count(), calls.len());
    assert_eq!(requests.len(), expected + calls.len());
    daemon.stop();
}

fn same(number: &str, event: &serde_json::Value) -> bool {
    callhook::correlate::same_number(number, event["remote_number"].as_str().unwrap())
}

fn trace_and_hooks(dir: &Path, wait: &str) -> callhook::config::Config {
    std::fs::write(dir.join("phone.log"), b"").unwrap();
    let path = dir.join("callhook.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1
state_dir: state
sources:
  - {{ kind: sip_trace, path: phone.log, start_at: beginning, poll_interval: 20ms, time_zone: UTC }}
  - {{ kind: hook }}
correlate: {{ wait: {wait} }}
"
        ),
    )
    .unwrap();
    callhook::config::Config::load(&path).unwrap()
}

#[test]
fn a_hook_the_trace_never_reports_goes_out_after_the_wait_or_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::with_config(trace_and_hooks(dir.path(), "200ms"));
    hook(&dir.path().join("state"), "ring", "5550001");
    let event = &daemon.take(1)[0];
    assert_eq!(
        (event["source"].as_str(), event["type"].as_str()),
        (Some("hook"), Some("ringing"))
    );
    daemon.stop();

    // Held when the daemon stops: emitted before it is gone, not lost, not repeated.
    let daemon = Daemon::with_config(trace_and_hooks(dir.path(), "60s"));
    hook(&dir.path().join("state"), "end", "5550001");
    daemon.quiet_for(300);
    let ended = daemon.stop_then_take();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(
        (ended[0]["type"].as_str(), ended[0]["outcome"].as_str()),
        (Some("ended"), Some("missed"))
    );
    let daemon = Daemon::with_config(trace_and_hooks(dir.path(), "60s"));
    daemon.quiet_for(300);
    daemon.stop();
}

#[test]
fn call_history_and_hooks_without_the_trace_fire_once_with_the_history_data() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("microsip.ini");
    write_ini(&ini, &[] as &[&str]);
    let path = dir.path().join("callhook.yaml");
    std::fs::write(
        &path,
        "version: 1
state_dir: state
sources:
  - { kind: history, path: microsip.ini, poll_interval: 20ms, time_zone: UTC }
  - { kind: hook }
correlate: { wait: 1s }
",
    )
    .unwrap();
    let daemon = Daemon::with_config(callhook::config::Config::load(&path).unwrap());
    let state = dir.path().join("state");
    let pause = || std::thread::sleep(Duration::from_millis(40));
    // (number, name, inbound, answered, info when unanswered)
    let calls = [
        ("+4930700001", "Anna", true, true, ""),
        ("+4930700002", "Ben", true, false, "Missed Call"),
        ("5557003", "", false, true, ""),
        ("5557004", "", false, false, "Busy Here"),
    ];
    let mut entries: Vec<String> = Vec::new();
    for (i, (number, name, inbound, answered, info)) in calls.iter().enumerate() {
        let start = jiff::Timestamp::now().as_second();
        let entry = |kind: u8, duration: u32, info: &str| format!("{number};{name};{kind};{start};{duration};{info}");
        // ringing: hook first for even calls, the ini first for odd ones
        let ring_hook = if *inbound { "cmdCallRing" } else { "cmdOutgoingCall" };
        let ring_kind = if *inbound { 2 } else { 0 };
        if i % 2 == 0 {
            hook(&state, ring_hook, number);
            pause();
        }
        entries.push(entry(ring_kind, 0, ""));
        write_ini(&ini, &entries);
        pause();
        if i % 2 == 1 {
            hook(&state, ring_hook, number);
            pause();
        }
        if *answered {
            hook(&state, if *inbound { "cmdCallAnswer" } else { "cmdCallStart" }, number);
            pause();
            if *inbound {
                *entries.last_mut().unwrap() = entry(1, 0, "");
                write_ini(&ini, &entries);
                pause();
            }
            *entries.last_mut().unwrap() = entry(if *inbound { 1 } else { 0 }, 3, "");
        } else {
            *entries.last_mut().unwrap() = entry(ring_kind, 0, info);
        }
        write_ini(&ini, &entries);
        pause();
        hook(
            &state,
            if !*inbound && !*answered {
                "cmdCallBusy"
            } else {
                "cmdCallEnd"
            },
            number,
        );
        pause();
    }
    let answered = calls.iter().filter(|c| c.3).count();
    let events = daemon.take(calls.len() * 2 + answered);
    daemon.quiet_for(1500);
    daemon.stop();
    for (number, _, inbound, answered, _) in calls {
        let mine: Vec<&serde_json::Value> = events.iter().filter(|e| e["remote_number"] == number).collect();
        let types: Vec<&str> = mine.iter().map(|e| e["type"].as_str().unwrap()).collect();
        let want: &[&str] = if answered {
            &["ringing", "answered", "ended"]
        } else {
            &["ringing", "ended"]
        };
        assert_eq!(types, want, "{number}: {mine:#?}");
        let outcome = match (answered, inbound) {
            (true, _) => "completed",
            (false, true) => "missed",
            (false, false) => "busy",
        };
        assert_eq!(mine.last().unwrap()["outcome"], outcome, "{number}");
        let ids: std::collections::HashSet<&str> = mine.iter().map(|e| e["call_id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 1, "{number}: one call id");
        // The history knew more than the hooks (the name) and was waited for, except
        // an outbound call's answer, which the history shows only at the end.
        for event in &mine {
            if event["type"] != "answered" || inbound {
                assert_eq!(event["source"], "history", "{number}: {event}");
            }
        }
    }
}
