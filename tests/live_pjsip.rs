//! End to end with a real SIP stack: two PJSIP agents (`tests/tools/pjsip/run.sh`, copied from the generator in `../shared/tools/pjsip`)
//! play calls on loopback while `callhook run` (in-process) tails the phone's log as it
//! is written; the events must match what the stack itself reports (`expect.py`).
//!
//! Needs the pjsua2 wheel: `PJ_PYTHON` names a Python that has it (`scripts/test` sets
//! one up). Without it the test says so and passes without running.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use callhook::source::config::StartAt;
use common::{Daemon, keys, sorted};

fn tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/pjsip")
}

fn pj_python() -> Option<String> {
    let python = std::env::var("PJ_PYTHON").ok()?;
    let ok = Command::new(&python)
        .args(["-c", "import pjsua2"])
        .output()
        .ok()?
        .status
        .success();
    ok.then_some(python)
}

#[test]
fn live_calls_from_a_real_pjsip_stack() {
    let Some(python) = pj_python() else {
        eprintln!("skipped: set PJ_PYTHON to a Python with pjsua2 (scripts/test does)");
        return;
    };
    if !tools().join("run.sh").is_file() {
        eprintln!("skipped: tests/tools/pjsip is missing from this checkout");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let scenario = dir.path().join("scenario.json");
    // Ports from this process id, so parallel runs do not collide.
    let base = 20000 + (std::process::id() % 2000) as u16 * 10;
    std::fs::write(
        &scenario,
        format!(
            r#"{{"phone_port": {}, "peer_port": {}, "phone_user": "101", "tail": 3,
 "calls": [
  {{"dir": "in", "number": "5552001", "name": "Live \"Quoted\" Caller", "at": 0.0, "ring": 0.6, "final": 200, "talk": 0.8, "hangup_by": "caller"}},
  {{"dir": "in", "number": "5552002", "name": "Bob", "at": 0.2, "ring": 5, "final": null, "cancel_after": 0.8}},
  {{"dir": "out", "number": "5551003", "at": 0.4, "ring": 0.5, "final": 200, "talk": 0.6, "hangup_by": "callee"}},
  {{"dir": "out", "number": "5551004", "at": 0.6, "ring": 0.3, "final": 486}}
 ]}}"#,
            base,
            base + 5
        ),
    )
    .unwrap();
    let trace = out.join("phone.log");
    let daemon = Daemon::start(&trace, &dir.path().join("state"), StartAt::End);
    let status = Command::new(tools().join("run.sh"))
        .arg(&scenario)
        .arg(&out)
        .env("PJ_PYTHON", &python)
        .status()
        .expect("run.sh starts");
    assert!(status.success(), "run.sh failed");
    let expected = Command::new("python3")
        .arg(tools().join("expect.py"))
        .arg(&scenario)
        .arg(out.join("truth.json"))
        .output()
        .unwrap();
    let expected: Vec<serde_json::Value> = String::from_utf8(expected.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!expected.is_empty());
    let events = daemon.take(expected.len());
    daemon.quiet_for(500);
    assert_eq!(keys(&events), sorted(keys(&expected)));
    for want in &expected {
        let got = events
            .iter()
            .find(|e| e["call_id"] == want["call_id"] && e["type"] == want["type"])
            .unwrap();
        for (field, value) in want.as_object().unwrap() {
            assert_eq!(&got[field], value, "{field} of {want}");
        }
    }
}
