//! `callhook run` on real files that change while it runs: appends in odd pieces,
//! partial lines, truncation mid-call, rotation, deletion, a file that appears later,
//! restarts. The daemon runs in-process; events come through a channel.

mod common;

use std::path::Path;
use std::time::Duration;

use callhook::source::config::StartAt;
use common::{Daemon, append, expected, fixture, keys, sorted};

/// Appends `bytes` in uneven pieces with short pauses, as a live logger would.
fn trickle(path: &Path, bytes: &[u8]) {
    let mut rest = bytes;
    let mut size = 1;
    while !rest.is_empty() {
        let n = size.min(rest.len());
        append(path, &rest[..n]);
        rest = &rest[n..];
        size = (size * 7 + 13) % 9000 + 1;
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Splits a trace at the start of the first timestamped line at or after `fraction`
/// of its length (never inside a SIP message block).
fn split_at_line(bytes: &[u8], fraction: f64) -> (&[u8], &[u8]) {
    let mut at = (bytes.len() as f64 * fraction) as usize;
    loop {
        let line_start = bytes[..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let line = &bytes[line_start..];
        if line.len() > 2 && line[0].is_ascii_digit() && line[2] == b':' && line_start == at {
            return bytes.split_at(at);
        }
        at = bytes[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| at + i + 1)
            .unwrap();
    }
}

/// Events a whole replay of `bytes` gives, as (call_id, type).
fn replayed(bytes: &[u8]) -> Vec<(String, String)> {
    common::replay(bytes)
        .0
        .iter()
        .map(|e| (e.call_id.clone(), e.kind.as_str().to_owned()))
        .collect()
}

#[test]
fn file_that_appears_later_and_grows_in_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("MicroSIP_log.txt");
    let daemon = Daemon::start(&trace, &dir.path().join("state"), StartAt::End);
    std::thread::sleep(Duration::from_millis(100));
    trickle(&trace, &fixture("basic"));
    let events = daemon.take(10);
    assert_eq!(keys(&events), sorted(expected("basic")));
    daemon.quiet_for(200);
    // per call, in order
    for call in events.iter().map(|e| e["call_id"].clone()) {
        let types: Vec<_> = events
            .iter()
            .filter(|e| e["call_id"] == call)
            .map(|e| e["type"].clone())
            .collect();
        assert_eq!(types.first().unwrap(), "ringing");
        assert_eq!(types.last().unwrap(), "ended");
    }
}

#[test]
fn an_unfinished_message_waits_for_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("log");
    append(&trace, b"");
    let daemon = Daemon::start(&trace, &dir.path().join("state"), StartAt::End);
    let log = fixture("basic");
    let text = String::from_utf8_lossy(&log);
    let first_end = text.find("--end msg--").unwrap();
    let first_invite = text[..first_end].rfind(".RX ").unwrap();
    let line_start = text[..first_invite].rfind('\n').unwrap() + 1;
    let block = &text[line_start..first_end];
    append(&trace, block.as_bytes());
    daemon.quiet_for(300);
    append(&trace, b"--end msg");
    daemon.quiet_for(100);
    append(&trace, b"--\n");
    let events = daemon.take(1);
    assert_eq!(events[0]["type"], "ringing");
}

#[test]
fn truncation_mid_call_ends_open_calls_as_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("log");
    append(&trace, b"");
    let daemon = Daemon::start(&trace, &dir.path().join("state"), StartAt::End);
    let log = fixture("burst");
    let (head, _) = split_at_line(&log, 0.45);
    let before = replayed(head);
    let open: Vec<String> = before
        .iter()
        .filter(|(c, t)| t == "ringing" && !before.contains(&(c.clone(), "ended".into())))
        .map(|(c, _)| c.clone())
        .collect();
    assert!(!open.is_empty(), "the cut leaves calls open");
    trickle(&trace, head);
    daemon.take(before.len());
    // MicroSIP restarts: truncates and writes a new log
    std::fs::write(&trace, b"").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let after = fixture("basic");
    trickle(&trace, &after);
    let events = daemon.take(open.len() + 10);
    let unknown: Vec<_> = events.iter().filter(|e| e["outcome"] == "unknown").collect();
    assert_eq!(unknown.len(), open.len(), "{events:#?}");
    for e in &unknown {
        assert!(open.contains(&e["call_id"].as_str().unwrap().to_owned()));
        assert_eq!(e["type"], "ended");
    }
    let rest: Vec<_> = events.iter().filter(|e| e["outcome"] != "unknown").cloned().collect();
    assert_eq!(keys(&rest), sorted(expected("basic")));
}

#[test]
fn rotation_keeps_calls_going() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("log");
    append(&trace, b"");
    let daemon = Daemon::start(&trace, &dir.path().join("state"), StartAt::End);
    let log = fixture("basic");
    let (head, tail) = split_at_line(&log, 0.5);
    trickle(&trace, head);
    let first = daemon.take(replayed(head).len());
    std::fs::rename(&trace, dir.path().join("log.1")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    trickle(&trace, tail);
    let rest = daemon.take(10 - first.len());
    let mut all = first;
    all.extend(rest);
    assert_eq!(keys(&all), sorted(expected("basic")));
}

#[test]
fn deleted_and_recreated_file_is_read_anew() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("log");
    append(&trace, b"");
    let daemon = Daemon::start(&trace, &dir.path().join("state"), StartAt::End);
    trickle(&trace, &fixture("crlf-date"));
    daemon.take(7);
    std::fs::remove_file(&trace).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    trickle(&trace, &fixture("basic"));
    let events = daemon.take(10);
    assert_eq!(keys(&events), sorted(expected("basic")));
}

#[test]
fn restart_goes_on_without_losing_or_repeating() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("log");
    let state = dir.path().join("state");
    append(&trace, b"");
    let log = fixture("burst");
    let (head, tail) = split_at_line(&log, 0.4);
    let daemon = Daemon::start(&trace, &state, StartAt::End);
    trickle(&trace, head);
    let first = daemon.take(replayed(head).len());
    daemon.quiet_for(100);
    daemon.stop();
    // MicroSIP writes on while callhook is down
    append(&trace, tail);
    let daemon = Daemon::start(&trace, &state, StartAt::End);
    let rest = daemon.take(expected("burst").len() - first.len());
    daemon.quiet_for(300);
    let mut all = first;
    all.extend(rest);
    assert_eq!(keys(&all), sorted(expected("burst")));
}

#[test]
fn truncated_while_stopped_ends_the_lost_calls() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("log");
    let state = dir.path().join("state");
    append(&trace, b"");
    let log = fixture("burst");
    let (head, _) = split_at_line(&log, 0.45);
    let before = replayed(head);
    let open = before
        .iter()
        .filter(|(c, t)| t == "ringing" && !before.contains(&(c.clone(), "ended".into())))
        .count();
    let daemon = Daemon::start(&trace, &state, StartAt::End);
    trickle(&trace, head);
    daemon.take(before.len());
    daemon.stop();
    std::fs::write(&trace, fixture("basic")).unwrap(); // MicroSIP restarted meanwhile
    let daemon = Daemon::start(&trace, &state, StartAt::End);
    let events = daemon.take(open + 10);
    assert_eq!(events.iter().filter(|e| e["outcome"] == "unknown").count(), open);
    daemon.quiet_for(200);
}

#[test]
fn start_at_end_does_not_replay_old_calls() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("log");
    append(&trace, &fixture("basic"));
    let daemon = Daemon::start(&trace, &dir.path().join("state"), StartAt::End);
    daemon.quiet_for(300);
    trickle(&trace, &fixture("crlf-date"));
    let events = daemon.take(7);
    assert_eq!(keys(&events), sorted(expected("crlf-date")));
}

#[test]
fn start_at_beginning_reads_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("log");
    append(&trace, &fixture("basic"));
    let daemon = Daemon::start(&trace, &dir.path().join("state"), StartAt::Beginning);
    let events = daemon.take(10);
    assert_eq!(keys(&events), sorted(expected("basic")));
}
