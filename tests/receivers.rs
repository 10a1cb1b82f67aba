//! Receivers get what their own code expects (issue 13): every request of every preset
//! verifies with the official `standardwebhooks` Python package; a Zammad stand-in
//! written from Zammad's `Cti::Log.process` gets every fixture trace whole; hostile
//! display names reach Slack and Mattermost inert; `ordered` holds through failures.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, Received, Receiver, append, config_with_rules, fixture};

/// A 32-byte key written without base64 padding, and the 25-byte key it rotates from
/// (padded): both sign every request.
const NEW_SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const OLD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAA==";

/// The Python with `standardwebhooks` (`SW_PYTHON`, or the venv `scripts/test` makes).
fn python() -> Option<PathBuf> {
    let path = std::env::var_os("SW_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/swh/bin/python"));
    let ok = std::process::Command::new(&path)
        .args(["-c", "import standardwebhooks"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(path)
}

/// Every request verifies with each of `secrets` on its own, by the official library.
fn verify_standard_webhooks(requests: &[Received], secrets: &[&str], label: &str) {
    let Some(python) = python() else {
        eprintln!(
            "skipped: the standardwebhooks Python package is not installed (scripts/test installs it into target/swh)"
        );
        return;
    };
    assert!(!requests.is_empty(), "{label}: nothing to verify");
    let list: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| {
            let headers: BTreeMap<&str, &str> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            serde_json::json!({ "label": format!("{label} {}", r.path), "secrets": secrets, "headers": headers, "body": r.body })
        })
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&list).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/verify_standard_webhooks.py");
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(file.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{label}: {}", stdout.lines().last().unwrap_or_default());
    assert!(
        output.status.success(),
        "{label}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Waits until `receiver` has had no new request for `quiet`, at most `seconds`.
fn settle(requests: &Arc<Mutex<Vec<Received>>>, quiet: Duration, seconds: u64) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut count = usize::MAX;
    let mut since = Instant::now();
    while Instant::now() < deadline {
        let now = requests.lock().unwrap().len();
        if now != count {
            count = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    requests.lock().unwrap().clone()
}

/// Runs the daemon over fixture `case` with `rules` until every event is emitted and
/// the receiver is quiet; returns the number of events.
fn run_case(dir: &Path, case: &str, rules: &str, requests: &Arc<Mutex<Vec<Received>>>) -> usize {
    let trace = dir.join("phone.log");
    append(&trace, &fixture(case));
    let expected = common::expected(case).len();
    let daemon = Daemon::with_config(config_with_rules(dir, &trace, rules));
    daemon.take(expected);
    settle(requests, Duration::from_millis(700), 30);
    daemon.stop();
    expected
}

/// A long rule name with non-ASCII letters and dots.
fn hostile_rule_name(preset: &str) -> String {
    format!("Rückruf für Kunden. {preset} — {}", "sehr langer Name ".repeat(12))
}

#[test]
fn every_preset_signs_requests_the_official_library_verifies() {
    let receiver = Receiver::start();
    let presets = [
        "generic",
        "zammad_cti",
        "slack",
        "mattermost",
        "teams",
        "discord",
        "ntfy",
    ];
    let mut rules = String::new();
    for preset in presets {
        rules.push_str(&format!(
            "  - name: {:?}\n    webhook: {{ url: \"{}/{preset}\", preset: {preset}, secret: [\"{NEW_SECRET}\", \"{OLD_SECRET}\"] }}\n",
            hostile_rule_name(preset),
            receiver.url
        ));
    }
    rules.push_str(&format!(
        "  - name: \"json.ünïcode\"\n    webhook:\n      url: \"{}/json\"\n      secret: \"{NEW_SECRET}\"\n      headers: {{ Content-Type: \"application/vnd.crm+json\", X-Caller: \"{{{{ remote_name }}}}\" }}\n      json: {{ talk: \"{{{{ talk_s }}}}\", number: \"{{{{ remote_number }}}}\", label: \"call {{{{ remote_number }}}}\" }}\n",
        receiver.url
    ));
    for case in ["basic", "redirect"] {
        let dir = tempfile::tempdir().unwrap();
        receiver.requests.lock().unwrap().clear();
        run_case(dir.path(), case, &rules, &receiver.requests);
        let got = receiver.requests.lock().unwrap().clone();
        for preset in presets {
            assert!(
                got.iter().any(|r| r.path == format!("/{preset}")),
                "{case}: no {preset} request"
            );
        }
        let (json, signed_twice): (Vec<Received>, Vec<Received>) = got.into_iter().partition(|r| r.path == "/json");
        verify_standard_webhooks(&signed_twice, &[NEW_SECRET, OLD_SECRET], case);
        verify_standard_webhooks(&json, &[NEW_SECRET], case);
        for request in &json {
            // a header of the rule replaces the default of the same name
            let types: Vec<_> = request
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .collect();
            assert_eq!(types.len(), 1, "{:?}", request.headers);
            assert_eq!(types[0].1, "application/vnd.crm+json");
            assert!(request.header("x-caller").unwrap().is_ascii());
            // a value that is one expression keeps its JSON type
            let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
            assert!(body["talk"].is_number() || body["talk"].is_null(), "{body}");
            assert!(body["number"].is_string() && body["label"].is_string(), "{body}");
        }
    }
}
