//! Receivers get what their own code expects (issue 13): every request of every preset
//! verifies with the official `standardwebhooks` Python package; a Zammad stand-in
//! written from Zammad's `Cti::Log.process` gets every fixture trace whole; hostile
//! display names reach Slack and Mattermost inert; `ordered` holds through failures.

mod common;

use std::collections::{BTreeMap, HashMap};
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

/// A call as Zammad's `Cti::Log` keeps it (`app/models/cti/log.rb`).
#[derive(Debug, Clone)]
struct ZammadLog {
    direction: String,
    state: String,
    done: bool,
    comment: Option<String>,
}

/// A stand-in for Zammad's generic CTI endpoint, from `Cti::Log.process` and
/// `Cti::Driver::Base`: `newCall` of a known callId → 500 "call_id … already
/// exists!"; `answer`/`hangup` of an unknown one → 500 "No such call_id"; `answer`
/// after `hangup` ignored; an inbound `hangup` of a call still in `newCall` is not done
/// (missed) unless the cause is `forwarded`; an inbound `answer` with `user[]` (an
/// array) and an `answeringNumber` of no agent → 500 (`.downcase` on an array).
/// Causes outside Zammad's documented list → 500 here, to catch them. Answers the
/// `slow`-th request only after `delay` (it is processed first), once.
struct ZammadStandIn {
    calls: Mutex<HashMap<(String, String), ZammadLog>>,
    errors: Mutex<Vec<String>>,
    count: Mutex<usize>,
}

impl ZammadStandIn {
    fn process(&self, path: &str, body: &str) -> (u16, String) {
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let event = get("event").unwrap_or_default();
        let call_id = get("callId").unwrap_or_default();
        let direction = get("direction").unwrap_or_default();
        let cause = get("cause");
        let mut calls = self.calls.lock().unwrap();
        let key = (path.to_owned(), call_id.clone());
        let fail = |text: String| (500u16, text);
        let result = match event.as_str() {
            "newCall" if calls.contains_key(&key) => fail(format!("call_id {call_id} already exists!")),
            "newCall" => {
                let log = ZammadLog {
                    direction: direction.clone(),
                    state: "newCall".into(),
                    done: direction != "in",
                    comment: None,
                };
                calls.insert(key, log);
                (200, "{}".into())
            }
            "answer" | "hangup" if !calls.contains_key(&key) => fail(format!("No such call_id {call_id}")),
            "answer" if get("user[]").is_some() && direction == "in" => {
                fail("undefined method `downcase' for Array".into())
            }
            "answer" => {
                let log = calls.get_mut(&key).unwrap();
                if log.state != "hangup" {
                    log.state = "answer".into();
                    log.done = true;
                }
                (200, "{}".into())
            }
            "hangup" => {
                const CAUSES: [&str; 7] = [
                    "normalClearing",
                    "busy",
                    "cancel",
                    "noAnswer",
                    "congestion",
                    "notFound",
                    "forwarded",
                ];
                if cause.as_deref().is_some_and(|c| !CAUSES.contains(&c)) {
                    return fail(format!("cause {cause:?} is not one Zammad documents"));
                }
                let log = calls.get_mut(&key).unwrap();
                log.done = true;
                if log.direction == "in" && log.state == "newCall" && cause.as_deref() != Some("forwarded") {
                    log.done = false;
                }
                log.state = "hangup".into();
                log.comment = cause;
                (200, "{}".into())
            }
            other => fail(format!("Unknown event {other:?}")),
        };
        if result.0 != 200 && !result.1.contains("already exists") {
            self.errors.lock().unwrap().push(format!("{path} {body}: {}", result.1));
        }
        result
    }
}

/// Serves `stand_in` on 127.0.0.1; requests are recorded in `requests`. The third
/// `newCall` is answered only after `slow` (processed at once), so callhook's attempt
/// times out and is made again.
fn serve_zammad(stand_in: Arc<ZammadStandIn>, requests: Arc<Mutex<Vec<Received>>>, slow: Duration) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (stand_in, requests) = (stand_in.clone(), requests.clone());
            std::thread::spawn(move || {
                use std::io::{BufRead, Read, Write};
                let mut writer = stream.try_clone().unwrap();
                let mut reader = std::io::BufReader::new(stream);
                loop {
                    let mut first = String::new();
                    if reader.read_line(&mut first).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = first.split(' ').nth(1).unwrap_or("/").to_owned();
                    let mut headers = Vec::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            headers.push((k.trim().to_owned(), v.trim().to_owned()));
                        }
                    }
                    let length: usize = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let body = String::from_utf8_lossy(&body).into_owned();
                    let (status, answer) = stand_in.process(&path, &body);
                    let nth_new_call = {
                        let mut count = stand_in.count.lock().unwrap();
                        if body.starts_with("event=newCall") {
                            *count += 1;
                        }
                        *count
                    };
                    requests.lock().unwrap().push(Received {
                        path,
                        headers,
                        body: body.clone(),
                        at: Instant::now(),
                    });
                    if nth_new_call == 3 && body.starts_with("event=newCall") && status == 200 {
                        std::thread::sleep(slow);
                    }
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if writer.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Zammad's state for a call of this outcome when it was sent whole: (done, comment),
/// written out from Zammad's rules, not from the preset: the hangup causes of the
/// generic CTI docs (`api/generic-cti/hangup-event.rst`) and `Cti::Log`'s `done`
/// (`app/models/cti/log.rb`: outbound calls are done; an inbound one only when it was
/// answered, or forwarded).
fn zammad_expectation(call: &callhook::event::Event) -> (bool, Option<&'static str>) {
    use callhook::event::{Direction, Outcome};
    let inbound = call.direction == Direction::Inbound;
    let redirected = call.status_code.is_some_and(|code| (300..400).contains(&code));
    //   direction  outcome                      status        done    comment (cause)
    let (done, cause) = match (inbound, call.outcome) {
        (_, Some(Outcome::Completed)) => (true, Some("normalClearing")),
        (true, Some(_)) if redirected => (true, Some("forwarded")),
        (_, Some(Outcome::Missed)) => (false, Some("cancel")),
        (_, Some(Outcome::Cancelled)) => (false, Some("cancel")),
        (_, Some(Outcome::Busy)) => (false, Some("busy")),
        (_, Some(Outcome::Declined)) => (false, Some("noAnswer")),
        (_, Some(Outcome::NoAnswer)) => (false, Some("notFound")),
        (_, Some(Outcome::Failed)) if matches!(call.status_code, Some(404 | 410 | 484 | 604)) => {
            (false, Some("notFound"))
        }
        (_, Some(Outcome::Failed)) => (false, Some("congestion")),
        (_, Some(Outcome::Unknown) | None) => (false, None),
    };
    // Zammad marks every outbound call done, whatever its end.
    (done || !inbound, cause)
}

#[test]
fn zammad_stand_in_gets_every_fixture_whole_with_a_window_opening_mid_trace() {
    let stand_in = Arc::new(ZammadStandIn {
        calls: Mutex::default(),
        errors: Mutex::default(),
        count: Mutex::default(),
    });
    let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
    let url = serve_zammad(stand_in.clone(), requests.clone(), Duration::from_millis(900));
    let mut checked = 0;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for case_dir in common::pjsip_fixtures() {
        let case = case_dir.file_name().unwrap().to_str().unwrap().to_owned();
        let (events, _) = common::replay(&fixture(&case));
        let ringing: Vec<_> = events
            .iter()
            .filter(|e| e.kind == callhook::event::EventType::Ringing)
            .collect();
        let Some(middle) = ringing.get(ringing.len() / 2) else {
            continue;
        };
        // The window opens at the middle call's ringing (to the second): calls that
        // rang before are not sent at all, even the parts inside the window.
        let opens = middle.at.time().strftime("%H:%M:%S").to_string();
        let opens_at = middle.at.time().with().subsec_nanosecond(0).build().unwrap();
        let rules = format!(
            "  - name: zammad\n    during: {{ hours: \"{opens}-24:00\", tz: UTC }}\n    webhook: {{ url: \"{url}/api/v1/cti/{case}\", preset: zammad_cti, user: \"Emma Taylor\", timeout: 500ms, secret: [\"{NEW_SECRET}\", \"{OLD_SECRET}\"], retry: {{ first: 100ms, factor: 1 }} }}\n"
        );
        let dir = tempfile::tempdir().unwrap();
        run_case(dir.path(), &case, &rules, &requests);
        let calls = stand_in.calls.lock().unwrap().clone();
        for ended in events.iter().filter(|e| e.kind == callhook::event::EventType::Ended) {
            let rang = events
                .iter()
                .find(|e| e.call_id == ended.call_id && e.kind == callhook::event::EventType::Ringing);
            let key = (format!("/api/v1/cti/{case}"), ended.call_id.clone());
            let sent = rang.is_some_and(|r| r.at.time() >= opens_at);
            let log = calls.get(&key);
            assert_eq!(
                log.is_some(),
                sent,
                "{case} {}: sent whole or not at all",
                ended.call_id
            );
            if let Some(log) = log {
                let (done, comment) = zammad_expectation(ended);
                assert_eq!(log.state, "hangup", "{case} {}", ended.call_id);
                assert_eq!(
                    (log.done, log.comment.as_deref()),
                    (done, comment),
                    "{case} {} {:?}",
                    ended.call_id,
                    ended.outcome
                );
                *outcomes
                    .entry(format!("{:?} {:?}", ended.direction, ended.outcome))
                    .or_default() += 1;
                checked += 1;
            }
        }
    }
    let errors = stand_in.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "Zammad answered 500: {errors:#?}");
    assert!(*stand_in.count.lock().unwrap() >= 3, "the slow answer was given");
    // the newCall answered too late was sent again, met "already exists", and was
    // taken as delivered: the call's answer and hangup followed (checked above)
    let new_calls: Vec<String> = requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.body.starts_with("event=newCall"))
        .map(|r| format!("{} {}", r.path, r.body))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = new_calls.iter().collect();
    assert!(
        new_calls.len() > distinct.len(),
        "no newCall was sent again after the time-out"
    );
    eprintln!("{checked} calls checked: {outcomes:?}");
    assert!(checked > 30, "{checked}");
    verify_standard_webhooks(&requests.lock().unwrap(), &[NEW_SECRET, OLD_SECRET], "zammad");
}

#[test]
fn hostile_display_name_reaches_slack_and_mattermost_inert() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let mut trace = common::Trace::new();
    trace.sip(
        true,
        &common::invite(
            "hostile",
            "\"<!channel> <https://x.example|y> & @here\" <sip:5551@pbx>",
            "<sip:101@pbx>",
            1,
        ),
    );
    let path = dir.path().join("log");
    append(&path, trace.text.as_bytes());
    let rules = format!(
        "  - name: slack\n    webhook: {{ url: \"{0}/slack\", preset: slack, secret: \"{NEW_SECRET}\" }}\n  - name: mattermost\n    webhook: {{ url: \"{0}/mattermost\", preset: mattermost, secret: \"{NEW_SECRET}\" }}\n",
        receiver.url
    );
    let daemon = Daemon::with_config(config_with_rules(dir.path(), &path, &rules));
    let mut got = receiver.wait_for(2, 10);
    daemon.stop();
    got.sort_by(|a, b| b.path.cmp(&a.path));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].path, "/slack");
    assert_eq!(
        got[0].body,
        r#"{"text":"Incoming call from &lt;!channel&gt; &lt;https://x.example|y&gt; &amp; @here 5551"}"#
    );
    assert_eq!(
        got[1].body,
        "{\"text\":\"Incoming call from &lt;!channel&gt; &lt;https://x.example|y&gt; &amp; @\u{2060}here 5551\"}"
    );
    verify_standard_webhooks(&got, &[NEW_SECRET], "chat");
}

#[test]
fn ordered_delivery_holds_through_failures() {
    let receiver = Receiver::start();
    // ringing delivered, then `answered` fails three times
    receiver.answers.lock().unwrap().extend([200, 500, 500, 500]);
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = ("\"Caller\" <sip:5551@pbx>", "<sip:101@pbx>");
    let mut trace = common::Trace::new();
    trace
        .sip(true, &common::invite("ordered", from, to, 1))
        .wait(20)
        .sip(false, &common::response(200, "ordered", from, to, 1, "INVITE"))
        .wait(20)
        .sip(true, &common::request("BYE", "ordered", from, to, 2, ""))
        .sip(false, &common::response(200, "ordered", from, to, 2, "BYE"));
    let path = dir.path().join("log");
    append(&path, trace.text.as_bytes());
    let rules = format!(
        "  - name: desk\n    webhook: {{ url: \"{}/{{{{ type }}}}\", retry: {{ first: 200ms, factor: 1 }} }}\n",
        receiver.url
    );
    let daemon = Daemon::with_config(config_with_rules(dir.path(), &path, &rules));
    let got = receiver.wait_for(6, 15);
    std::thread::sleep(Duration::from_millis(300));
    daemon.stop();
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/ringing", "/answered", "/answered", "/answered", "/answered", "/ended"]
    );
}

/// Waits until `receiver` holds `n` requests (at most `seconds`), else fails with what
/// it got.
fn wait_for_exactly(receiver: &Receiver, n: usize, seconds: u64, what: &str) -> Vec<Received> {
    let got = receiver.wait_for(n, seconds);
    assert!(
        got.len() >= n,
        "{what}: {} of {n} requests: {:?}",
        got.len(),
        got.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    got
}

/// Writes a configuration file for `callhook run -c` with `rules`; returns its path.
fn config_file(dir: &Path, trace: &Path, rules: &str) -> PathBuf {
    config_with_rules(dir, trace, rules);
    dir.join("callhook.yaml")
}

/// `scope: call` decisions outlive kill -9 (issue 13): call A passed the rule at its
/// ringing and call B was throttled; the daemon is killed -9 after A's ringing was
/// delivered; A's answer and end, written while it was down, are delivered after the
/// restart (A sent whole), B's are not (B sent not at all, although the throttle,
/// which lives in memory, would now let it through).
#[test]
fn call_scope_decisions_survive_kill_9() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("MicroSIP_log.txt");
    let a = ("\"A\" <sip:5551@pbx>", "<sip:101@pbx>");
    let b = ("\"B\" <sip:5552@pbx>", "<sip:101@pbx>");
    let mut trace = common::Trace::new();
    trace
        .sip(true, &common::invite("call-a", a.0, a.1, 1))
        .wait(100)
        .sip(true, &common::invite("call-b", b.0, b.1, 1));
    append(&path, trace.text.as_bytes());
    let rules = format!(
        "  - name: desk\n    scope: call\n    throttle: {{ per: 1h }}\n    webhook: {{ url: \"{}/{{{{ type }}}}/{{{{ call_id }}}}\" }}\n",
        receiver.url
    );
    let config = config_file(dir.path(), &path, &rules);
    let state = dir.path().join("state");
    let binary = Path::new(env!("CARGO_BIN_EXE_callhook"));
    let child = common::Child::run(binary, &path, &state, Some(&config));
    wait_for_exactly(&receiver, 1, 15, "A's ringing");
    // B's ringing is stored (and judged) too before the kill
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::stored_ids(&state).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        common::stored_ids(&state).len(),
        2,
        "both ringing events stored before the kill"
    );
    child.kill();
    let mut rest = common::Trace::new();
    rest.wait(200)
        .sip(false, &common::response(200, "call-a", a.0, a.1, 1, "INVITE"))
        .sip(false, &common::response(200, "call-b", b.0, b.1, 1, "INVITE"))
        .wait(500)
        .sip(true, &common::request("BYE", "call-a", a.0, a.1, 2, ""))
        .sip(false, &common::response(200, "call-a", a.0, a.1, 2, "BYE"))
        .sip(true, &common::request("BYE", "call-b", b.0, b.1, 2, ""))
        .sip(false, &common::response(200, "call-b", b.0, b.1, 2, "BYE"));
    append(&path, rest.text.as_bytes());
    let child = common::Child::run(binary, &path, &state, Some(&config));
    wait_for_exactly(&receiver, 3, 15, "A's answered and ended");
    let got = settle(&receiver.requests, Duration::from_millis(700), 10);
    child.kill();
    // A delivery the kill cut off before it was recorded is made again, with the same
    // webhook-id (at least once): count each job once.
    let mut seen = std::collections::HashSet::new();
    let paths: Vec<&str> = got
        .iter()
        .filter(|r| seen.insert(r.header("webhook-id").unwrap().to_owned()))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(paths, ["/ringing/call-a", "/answered/call-a", "/ended/call-a"]);
    // both calls ended: no decision is kept for them any more
    let db = rusqlite::Connection::open(state.join("callhook.db")).unwrap();
    let left: i64 = db
        .query_row("SELECT COUNT(*) FROM call_scope", [], |row| row.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

/// `ordered` holds across kill -9 (issue 13): the receiver fails `answered` three
/// times and the daemon is killed -9 after each failure and started again; `ended` of
/// the call still arrives only after `answered` got through, each with its own
/// `webhook-id` every time.
#[test]
fn ordered_delivery_holds_across_kill_9_between_failures() {
    let receiver = Receiver::start();
    receiver.answers.lock().unwrap().extend([200, 500, 500, 500]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("MicroSIP_log.txt");
    let (from, to) = ("\"Caller\" <sip:5551@pbx>", "<sip:101@pbx>");
    let mut trace = common::Trace::new();
    trace
        .sip(true, &common::invite("ordered", from, to, 1))
        .wait(20)
        .sip(false, &common::response(200, "ordered", from, to, 1, "INVITE"))
        .wait(20)
        .sip(true, &common::request("BYE", "ordered", from, to, 2, ""))
        .sip(false, &common::response(200, "ordered", from, to, 2, "BYE"));
    append(&path, trace.text.as_bytes());
    let rules = format!(
        "  - name: desk\n    webhook: {{ url: \"{}/{{{{ type }}}}\", retry: {{ first: 300ms, factor: 1 }} }}\n",
        receiver.url
    );
    let config = config_file(dir.path(), &path, &rules);
    let state = dir.path().join("state");
    let binary = Path::new(env!("CARGO_BIN_EXE_callhook"));
    for failures in 1..=3 {
        let child = common::Child::run(binary, &path, &state, Some(&config));
        // ringing, then `failures` failed attempts at answered: kill -9 at once
        wait_for_exactly(&receiver, 1 + failures, 15, "answered failing");
        child.kill();
    }
    let child = common::Child::run(binary, &path, &state, Some(&config));
    wait_for_exactly(&receiver, 6, 15, "answered, then ended");
    let got = settle(&receiver.requests, Duration::from_millis(700), 10);
    child.kill();
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/ringing", "/answered", "/answered", "/answered", "/answered", "/ended"]
    );
    let ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id").unwrap()).collect();
    assert!(ids[1..5].iter().all(|id| *id == ids[1]), "one job, retried: {ids:?}");
    assert!(ids[0] != ids[1] && ids[5] != ids[1], "{ids:?}");
}

/// Teams, Discord and ntfy bodies and headers, byte for byte, for a hostile caller
/// whose call is missed (issue 13). Teams: the Adaptive Card message Microsoft
/// documents for webhooks; Discord: `content` with every mention off
/// (`allowed_mentions.parse: []`) and Markdown escaped, so no masked link; ntfy: the
/// text as `text/plain`, with `Title`, `Tags` and `Priority` headers from the event's
/// type and outcome only.
#[test]
fn teams_discord_and_ntfy_bodies_are_what_their_docs_say() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let from = "\"[Pay](https://evil.example) @everyone <@&1> ~~x~~\" <sip:5551234@pbx>";
    let to = "<sip:101@pbx>";
    let mut trace = common::Trace::new();
    trace
        .sip(true, &common::invite("missed", from, to, 1))
        .sip(false, &common::response(180, "missed", from, to, 1, "INVITE"))
        .wait(4000)
        .sip(true, &common::request("CANCEL", "missed", from, to, 1, ""))
        .sip(false, &common::response(200, "missed", from, to, 1, "CANCEL"))
        .sip(false, &common::response(487, "missed", from, to, 1, "INVITE"));
    let path = dir.path().join("log");
    append(&path, trace.text.as_bytes());
    let rules = format!(
        "  - name: teams\n    webhook: {{ url: \"{0}/teams\", preset: teams }}\n  - name: discord\n    webhook: {{ url: \"{0}/discord\", preset: discord }}\n  - name: ntfy\n    webhook: {{ url: \"{0}/ntfy\", preset: ntfy }}\n",
        receiver.url
    );
    let daemon = Daemon::with_config(config_with_rules(dir.path(), &path, &rules));
    receiver.wait_for(6, 15);
    let got = settle(&receiver.requests, Duration::from_millis(500), 5);
    daemon.stop();
    let find = |path: &str, n: usize| {
        got.iter()
            .filter(|r| r.path == path)
            .nth(n)
            .unwrap_or_else(|| panic!("no request {n} to {path}: {got:?}"))
    };
    let name = r"\[Pay\]\(https://evil\.example\) @everyone \<@&1\> \~\~x\~\~";
    let teams = |text: &str| {
        format!(
            r#"{{"attachments":[{{"content":{{"$schema":"http://adaptivecards.io/schemas/adaptive-card.json","body":[{{"text":{},"type":"TextBlock","wrap":true}}],"type":"AdaptiveCard","version":"1.4"}},"contentType":"application/vnd.microsoft.card.adaptive","contentUrl":null}}],"type":"message"}}"#,
            serde_json::to_string(text).unwrap()
        )
    };
    let discord = |text: &str| {
        format!(
            r#"{{"allowed_mentions":{{"parse":[]}},"content":{}}}"#,
            serde_json::to_string(text).unwrap()
        )
    };
    let ringing = format!("Incoming call from {name} 5551234");
    let missed = format!("Missed call from {name} 5551234");
    for (n, text) in [(0, &ringing), (1, &missed)] {
        let request = find("/teams", n);
        assert_eq!(request.body, teams(text));
        assert_eq!(request.header("content-type"), Some("application/json"));
        let request = find("/discord", n);
        assert_eq!(request.body, discord(text));
        assert_eq!(request.header("content-type"), Some("application/json"));
    }
    let plain = "[Pay](https://evil.example) @everyone <@&1> ~~x~~";
    let request = find("/ntfy", 0);
    assert_eq!(request.body, format!("Incoming call from {plain} 5551234"));
    assert_eq!(request.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(
        (
            request.header("title"),
            request.header("tags"),
            request.header("priority")
        ),
        (Some("Incoming call"), Some("telephone_receiver"), None)
    );
    let request = find("/ntfy", 1);
    assert_eq!(request.body, format!("Missed call from {plain} 5551234"));
    assert_eq!(
        (
            request.header("title"),
            request.header("tags"),
            request.header("priority")
        ),
        (Some("Missed call"), Some("telephone_receiver,warning"), Some("4"))
    );
}
