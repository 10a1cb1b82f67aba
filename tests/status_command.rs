//! `callhook status -c FILE [--json]` against the state database of a real `callhook
//! run` child process: while it runs and after it was killed, read-only.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Child, Receiver, Trace, append, invite, response};

/// Kills the daemon child also when an assertion fails.
struct Killed(Option<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            child.kill();
        }
    }
}

fn status(config: &Path, json: bool) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_callhook"));
    command.args(["status", "-c"]).arg(config);
    if json {
        command.arg("--json");
    }
    let out = command.env("CALLHOOK_LOG", "error").output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

fn state(config: &Path) -> serde_json::Value {
    let (ok, text) = status(config, true);
    assert!(ok, "{text}");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(value["install"].is_array(), "{value}");
    value["state"].clone()
}

#[test]
fn status_reads_sources_outbox_and_errors_running_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    receiver.answers.lock().unwrap().push_back(400); // the delivery dies
    let trace_path = dir.path().join("phone.log");
    std::fs::write(&trace_path, b"").unwrap();
    let config = dir.path().join("callhook.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1
state_dir: state
sources:
  - {{ kind: sip_trace, path: phone.log, start_at: beginning, poll_interval: 20ms, time_zone: UTC }}
rules:
  - name: desk
    on: ringing
    webhook: {{ url: \"{}/in\" }}
",
            receiver.url
        ),
    )
    .unwrap();
    // Before any run: no database, nothing created by looking.
    let before = state(&config);
    assert_eq!(before["database"], false);
    assert_eq!(before["daemon"]["running"], false);
    assert!(!dir.path().join("state/callhook.db").exists());

    let mut child = Killed(Some(Child::run(
        Path::new(env!("CARGO_BIN_EXE_callhook")),
        &trace_path,
        &dir.path().join("state"),
        Some(&config),
    )));
    // A call that ends (declined), so the checkpoint moves past it.
    let (from, to) = ("\"Ann\" <sip:5550123@pbx>", "<sip:101@pbx>");
    let mut trace = Trace::new();
    trace.at("09:00:00").sip(true, &invite("st-1@pbx", from, to, 1));
    trace
        .wait(500)
        .sip(false, &response(486, "st-1@pbx", from, to, 1, "INVITE"));
    append(&trace_path, trace.text.as_bytes());
    let size = std::fs::metadata(&trace_path).unwrap().len();
    receiver.wait_for(1, 10);
    let mut running = serde_json::Value::Null;
    for _ in 0..200 {
        running = state(&config);
        if running["outbox"]["dead"] == 1 && running["sources"][0]["updated_at"].is_string() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(running["daemon"]["running"], true, "{running:#}");
    assert_eq!(
        running["daemon"]["pid"],
        child.0.as_ref().unwrap().process.id(),
        "{running:#}"
    );
    let source = &running["sources"][0];
    assert_eq!(source["kind"], "sip_trace");
    // The offset is the checkpoint: where a restart reads again (before calls it may
    // still need), so it is at most the size; the rest is lag.
    let offset = source["offset"].as_u64().unwrap();
    assert!(offset <= size, "{running:#}");
    assert_eq!(source["size"], size);
    assert_eq!(source["lag"], size - offset);
    assert_eq!(running["outbox"]["dead"], 1, "{running:#}");
    assert_eq!(running["outbox"]["by_rule"][0]["rule"], "desk");
    assert_eq!(running["last_errors"][0]["rule"], "desk");
    assert!(
        running["last_errors"][0]["error"].as_str().unwrap().contains("400"),
        "{running:#}"
    );

    child.0.take().unwrap().kill();
    // Not running: the same facts, from the database alone; more bytes are lag now.
    append(&trace_path, b"09:00:01.000 more\n");
    let stopped = state(&config);
    assert_eq!(stopped["daemon"]["running"], false, "{stopped:#}");
    assert_eq!(stopped["sources"][0]["offset"], offset);
    assert_eq!(stopped["sources"][0]["lag"], size + 18 - offset);
    assert_eq!(stopped["outbox"]["dead"], 1);
    let (ok, text) = status(&config, false);
    assert!(ok);
    for expected in [
        "daemon: not running",
        &format!("read {offset} of {} bytes, {} behind", size + 18, size + 18 - offset),
        "outbox: 0 waiting, 0 retrying, 0 delivered, 1 dead",
        "last error: job 1 (desk, dead)",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
}
