//! `callhook hook` as MicroSIP runs it: real child processes, in bursts, with the daemon
//! up (loopback) and down (spool), copies, wrong tokens, and the program named after
//! its event.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use callhook::config::Config;
use callhook::parse::hook::HookEvent;
use callhook::source::config::Source;
use callhook::source::hook_inbox::Inbox;
use common::Daemon;

fn hook_only(state: &Path) -> Config {
    let mut source = Source::hook(state);
    source.poll_interval = std::time::Duration::from_millis(50);
    Config::with_sources(state, vec![source])
}

/// Starts `callhook hook EVENT NUMBER` for every number at once, waits for all; returns
/// how many said they delivered to the daemon and how many spooled.
fn burst(state: &Path, event: &str, numbers: &[String]) -> (usize, usize) {
    let children: Vec<_> = numbers
        .iter()
        .map(|number| {
            Command::new(env!("CARGO_BIN_EXE_callhook"))
                .args(["hook", event, number, "--state-dir"])
                .arg(state)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("callhook hook starts")
        })
        .collect();
    let (mut delivered, mut spooled) = (0, 0);
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let said = String::from_utf8_lossy(&output.stdout);
        if said.contains("delivered") {
            delivered += 1;
        } else {
            assert!(said.contains("spooled"), "{said}");
            spooled += 1;
        }
    }
    (delivered, spooled)
}

fn numbers(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("+49301000{i:03}")).collect()
}

fn summary(events: &[serde_json::Value]) -> BTreeSet<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            assert_eq!(e["source"], "hook");
            (
                e["type"].as_str().unwrap().to_owned(),
                e["remote_number"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_burst_of_100_hooks_with_the_daemon_up() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let daemon = Daemon::with_config(hook_only(&state));
    let numbers = numbers(100);
    let (delivered, spooled) = burst(&state, "cmdCallRing", &numbers);
    eprintln!("ring burst: {delivered} delivered, {spooled} spooled");
    let ringing = daemon.take(100);
    daemon.quiet_for(500);
    let want: BTreeSet<_> = numbers
        .iter()
        .map(|n| ("ringing".to_owned(), n.clone(), "-".to_owned()))
        .collect();
    assert_eq!(summary(&ringing), want);
    assert!(ringing.iter().all(|e| e["direction"] == "inbound"));

    let (delivered, spooled) = burst(&state, "cmdCallEnd", &numbers);
    eprintln!("end burst: {delivered} delivered, {spooled} spooled");
    let ended = daemon.take(100);
    daemon.quiet_for(500);
    let want: BTreeSet<_> = numbers
        .iter()
        .map(|n| ("ended".to_owned(), n.clone(), "missed".to_owned()))
        .collect();
    assert_eq!(summary(&ended), want);
    daemon.stop();
    assert!(Inbox::new(&state).spooled().is_empty());
    assert_eq!(Inbox::new(&state).daemon_address(), None, "hook.addr left after stop");
}

#[test]
fn hooks_are_spooled_while_the_daemon_is_down_and_taken_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let numbers = numbers(100);
    let (delivered, spooled) = burst(&state, "ring", &numbers);
    assert_eq!((delivered, spooled), (0, 100));
    assert_eq!(Inbox::new(&state).spooled().len(), 100);

    let daemon = Daemon::with_config(hook_only(&state));
    let ringing = daemon.take(100);
    daemon.quiet_for(300);
    assert_eq!(summary(&ringing).len(), 100);
    daemon.stop();
    assert!(Inbox::new(&state).spooled().is_empty(), "spool not emptied");

    // A restart repeats nothing, and the calls are still open for their end.
    let daemon = Daemon::with_config(hook_only(&state));
    daemon.quiet_for(300);
    burst(&state, "end", &numbers[..3]);
    let ended = daemon.take(3);
    daemon.quiet_for(300);
    assert!(ended.iter().all(|e| e["type"] == "ended"));
    daemon.stop();
}

#[test]
fn an_unreadable_spool_file_is_set_aside_and_the_rest_flows() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let inbox = Inbox::new(&state);
    inbox
        .spool(&callhook::forward::message(HookEvent::Ring, "5550111", None).unwrap())
        .unwrap();
    let garbage = inbox.spool_dir().join("000000000000001-garbage.json");
    std::fs::write(&garbage, b"\x00\xff not json").unwrap();
    inbox
        .spool(&callhook::forward::message(HookEvent::Ring, "5550222", None).unwrap())
        .unwrap();
    let daemon = Daemon::with_config(hook_only(&state));
    let events = daemon.take(2);
    daemon.quiet_for(300);
    daemon.stop();
    assert_eq!(summary(&events).len(), 2);
    assert!(inbox.spooled().is_empty());
    assert!(
        garbage.with_extension("bad").is_file(),
        "the unreadable file is kept aside"
    );
}

#[test]
fn a_copy_sent_both_ways_makes_one_event_and_a_wrong_token_none() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let daemon = Daemon::with_config(hook_only(&state));
    let inbox = Inbox::new(&state);

    // The daemon answered late: the message was spooled too.
    let message = callhook::forward::message(HookEvent::Outgoing, "sip:5551234@pbx", Some("Bob")).unwrap();
    inbox.spool(&message).unwrap();
    // Delivered, or (the daemon being slow under test load) spooled a second time.
    callhook::forward::forward(&state, &message).unwrap();
    let events = daemon.take(1);
    assert_eq!(events[0]["remote_number"], "5551234");
    assert_eq!(events[0]["direction"], "outbound");
    daemon.quiet_for(400);

    // Another local program without the token makes no event: it gets the daemon's
    // challenge, but cannot answer it.
    let address = inbox.daemon_address().unwrap();
    let stream = std::net::TcpStream::connect(address).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    writeln!(writer, "{}", serde_json::json!({ "hello": "1".repeat(64) })).unwrap();
    let mut challenge = String::new();
    reader.read_line(&mut challenge).unwrap();
    let challenge: serde_json::Value = serde_json::from_str(&challenge).unwrap();
    assert_eq!(challenge["proof"].as_str().unwrap().len(), 64);
    let forged = serde_json::json!({
        "proof": "0".repeat(64),
        "message": callhook::forward::message(HookEvent::Ring, "666", None).unwrap(),
    });
    writeln!(writer, "{forged}").unwrap();
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    assert_eq!(answer.trim(), "error: wrong token");
    // The old protocol (the token itself on the wire) is refused too.
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    writeln!(
        stream,
        "{}",
        serde_json::json!({ "token": "0".repeat(64), "message": {} })
    )
    .unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    assert_eq!(answer.trim(), "error: not a hook request");
    // Nor does garbage.
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(b"\x00\xffGET / HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    assert_eq!(answer.trim(), "error: not a hook request");
    daemon.quiet_for(300);
    daemon.stop();
}

#[test]
fn a_copy_named_after_its_event_needs_no_arguments_but_the_number() {
    // A hard link, not a copy: a copy's file is open for writing while other tests start
    // children, which can then hold it open ("text file busy").
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let program = dir
        .path()
        .join(format!("callhook-cmdCallRing{}", std::env::consts::EXE_SUFFIX));
    std::fs::hard_link(env!("CARGO_BIN_EXE_callhook"), &program).unwrap();
    std::fs::write(
        dir.path().join("callhook.yaml"),
        "version: 1\nstate_dir: st\nrules: [oops\n",
    )
    .unwrap();
    let output = Command::new(&program).arg("5550100").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // The rules are broken, but the hook only needs state_dir: the event is kept.
    let spooled = Inbox::new(dir.path().join("st")).spooled();
    assert_eq!(spooled.len(), 1, "{}", String::from_utf8_lossy(&output.stdout));
    let message = Inbox::read_spooled(&spooled[0]).unwrap();
    assert_eq!((message.event, message.number.as_str()), (HookEvent::Ring, "5550100"));
}

#[test]
fn unknown_event_names_are_explained() {
    let output = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(["hook", "hangup", "100", "--state-dir", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("unknown hook event \"hangup\"") && error.contains("cmdCallRing"),
        "{error}"
    );
}

#[test]
fn a_flood_of_idle_connections_does_not_stop_the_next_hook() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let daemon = Daemon::with_config(hook_only(&state));
    let address = Inbox::new(&state).daemon_address().unwrap();
    // Far more than the listener serves at once, none saying anything.
    let held: Vec<std::net::TcpStream> = (0..500)
        .filter_map(|_| std::net::TcpStream::connect(address).ok())
        .collect();
    assert!(held.len() > callhook::source::hook::MAX_CONNECTIONS);
    let said = common::hook(&state, "ring", "5550777");
    assert!(said.contains("delivered") || said.contains("spooled"), "{said}");
    let events = daemon.take(1);
    assert_eq!(events[0]["remote_number"], "5550777");
    drop(held);
    // Served again once the flood is gone.
    let said = common::hook(&state, "end", "5550777");
    assert!(said.contains("delivered") || said.contains("spooled"), "{said}");
    assert_eq!(daemon.take(1)[0]["type"], "ended");
    daemon.stop();
}
