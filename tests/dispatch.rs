//! Delivery through the durable outbox to real receivers on 127.0.0.1 and real child
//! processes: signing, order per call, retries, receivers that are down, final errors,
//! and caller IDs that try to break out.

mod common;

use std::collections::{BTreeMap, HashSet};

use callhook::dispatch::signing;
use common::{Daemon, Receiver, append, config_with_rules, fixture};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn webhooks_are_signed_and_in_order_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let trace = dir.path().join("log");
    append(&trace, &fixture("basic"));
    let config = config_with_rules(
        dir.path(),
        &trace,
        &format!(
            "  - name: desk\n    webhook: {{ url: \"{}/hook/{{{{ type }}}}\", secret: \"{SECRET}\" }}\n",
            receiver.url
        ),
    );
    let daemon = Daemon::with_config(config);
    let got = receiver.wait_for(10, 10);
    daemon.stop();
    assert_eq!(got.len(), 10);
    let mut per_call: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for request in &got {
        let id = request.header("webhook-id").unwrap();
        let timestamp: i64 = request.header("webhook-timestamp").unwrap().parse().unwrap();
        let expected = signing::sign(SECRET, id, timestamp, request.body.as_bytes()).unwrap();
        assert_eq!(request.header("webhook-signature"), Some(expected.as_str()));
        let event: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(
            id,
            signing::message_id(&format!("{}.desk", event["id"].as_str().unwrap()))
        );
        assert_eq!(request.path, format!("/hook/{}", event["type"].as_str().unwrap()));
        per_call
            .entry(event["call_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(event["type"].as_str().unwrap().to_owned());
    }
    for (call, types) in per_call {
        let mut sorted = types.clone();
        sorted.sort_by_key(|t| ["ringing", "answered", "ended"].iter().position(|x| x == t));
        assert_eq!(types, sorted, "call {call} delivered out of order");
    }
}

#[test]
fn receiver_down_for_the_whole_run_gets_everything_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = Receiver::free_port();
    let trace = dir.path().join("log");
    append(&trace, &fixture("basic"));
    let rules = format!(
        "  - name: desk\n    webhook: {{ url: \"http://127.0.0.1:{port}/x\", retry: {{ attempts: 1000, first: 100ms, factor: 1.5, max_delay: 300ms }} }}\n"
    );
    let config = config_with_rules(dir.path(), &trace, &rules);
    let daemon = Daemon::with_config(config.clone());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    daemon.stop();
    // Up now; callhook starts again and delivers what waited in its outbox.
    let receiver = Receiver::on(port);
    let daemon = Daemon::with_config(config);
    let got = receiver.wait_for(10, 15);
    std::thread::sleep(std::time::Duration::from_millis(300));
    daemon.stop();
    let ids: HashSet<_> = receiver
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(got.len(), 10, "each job once");
    assert_eq!(ids.len(), 10);
}

#[test]
fn server_errors_are_retried_and_client_errors_are_final() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    // the first two deliveries fail with 503 (Retry-After: 1) and 500, then one with 404
    receiver.answers.lock().unwrap().extend([503, 500, 404]);
    let trace = dir.path().join("log");
    append(&trace, &fixture("basic"));
    let rules = format!(
        "  - name: desk\n    webhook: {{ url: \"{}/x\", concurrency: 1, retry: {{ first: 100ms, factor: 1 }} }}\n",
        receiver.url
    );
    let daemon = Daemon::with_config(config_with_rules(dir.path(), &trace, &rules));
    let got = receiver.wait_for(12, 15);
    std::thread::sleep(std::time::Duration::from_millis(300));
    daemon.stop();
    assert_eq!(got.len(), 12, "10 jobs, 2 of them retried once, 1 failed for good");
    let mut store = callhook::store::Store::open(&dir.path().join("state")).unwrap();
    let stats = store.job_stats().unwrap();
    assert_eq!((stats[0].done, stats[0].dead), (9, 1), "{stats:?}");
    let dead = store.jobs(Some("dead"), 10).unwrap();
    assert!(
        dead[0].last_error.as_deref().unwrap().starts_with("HTTP 404"),
        "{dead:?}"
    );
    // Retry-After was honoured: the retry after the 503 came a second later
    let first_retry = got
        .iter()
        .skip(1)
        .find(|r| r.header("webhook-id") == got[0].header("webhook-id"))
        .unwrap();
    assert!(first_retry.at.duration_since(got[0].at) >= std::time::Duration::from_millis(900));
}

#[test]
fn gone_disables_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    receiver.answers.lock().unwrap().push_back(410);
    let trace = dir.path().join("log");
    append(&trace, &fixture("basic"));
    let rules = format!(
        "  - name: desk\n    webhook: {{ url: \"{}/x\", concurrency: 1 }}\n",
        receiver.url
    );
    let daemon = Daemon::with_config(config_with_rules(dir.path(), &trace, &rules));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    daemon.stop();
    assert_eq!(receiver.requests.lock().unwrap().len(), 1);
    let mut store = callhook::store::Store::open(&dir.path().join("state")).unwrap();
    assert_eq!(store.job_stats().unwrap()[0].dead, 10);
    assert_eq!(store.disabled_endpoints().unwrap().len(), 1);

    // Still disabled after a restart: a new call's jobs go dead without a request.
    let daemon = Daemon::with_config(config_with_rules(dir.path(), &trace, &rules));
    let mut call = common::Trace::new();
    call.sip(true, &common::invite("after-410", "<sip:5559@pbx>", "<sip:101@pbx>", 1))
        .wait(500)
        .sip(
            false,
            &common::response(486, "after-410", "<sip:5559@pbx>", "<sip:101@pbx>", 1, "INVITE"),
        );
    append(&trace, call.text.as_bytes());
    daemon.take(2);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert_eq!(receiver.requests.lock().unwrap().len(), 1);
    assert_eq!(store.job_stats().unwrap()[0].dead, 12);
    // `callhook outbox retry --all-dead` (another process) enables it for the running
    // daemon: everything is delivered.
    assert_eq!(store.retry_jobs(None).unwrap(), 12);
    assert_eq!(receiver.wait_for(13, 5).len(), 13);
    daemon.stop();
    assert!(store.disabled_endpoints().unwrap().is_empty());
}

#[test]
fn hostile_caller_ids_arrive_byte_exact_and_never_reach_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let marker = dir.path().join("pwned");
    let names = [
        format!("$(touch {})", marker.display()),
        format!("`touch {}`; touch {} &", marker.display(), marker.display()),
        "a \"quoted\" name \\ with {{ 7*7 }} and ${env:HOME}".to_owned(),
        "Jörg 李 🙂 </script>".to_owned(),
    ];
    let mut trace_text = common::Trace::new();
    for (i, name) in names.iter().enumerate() {
        let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
        trace_text
            .sip(
                true,
                &common::invite(
                    &format!("h{i}"),
                    &format!("\"{quoted}\" <sip:5550{i}@pbx>"),
                    "<sip:101@pbx>",
                    1,
                ),
            )
            .wait(10);
    }
    let trace = dir.path().join("log");
    append(&trace, trace_text.text.as_bytes());
    let out = dir.path().join("argv.ndjson");
    let script = format!(
        "import json,os,sys; open({:?},'a').write(json.dumps({{'argv': sys.argv[1:], 'env': os.environ.get('CALLHOOK_REMOTE_NAME'), 'stdin': json.loads(sys.stdin.read())['remote_name']}})+'\\n')",
        out.display().to_string()
    );
    let rules = format!(
        "  - name: desk\n    webhook: {{ url: \"{}/calls/{{{{ remote_name }}}}\" }}\n  - name: pop\n    run: {{ argv: [\"python3\", \"-c\", {}, \"{{{{ remote_name }}}}\"] }}\n",
        receiver.url,
        serde_json::to_string(&script).unwrap()
    );
    let daemon = Daemon::with_config(config_with_rules(dir.path(), &trace, &rules));
    let got = receiver.wait_for(names.len(), 10);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0) < names.len()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    daemon.stop();
    let received_names: HashSet<String> = got
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["remote_name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let expected: HashSet<String> = names.iter().cloned().collect();
    assert_eq!(received_names, expected);
    for request in &got {
        assert!(
            request.path.starts_with("/calls/") && !request.path[7..].contains('/'),
            "{}",
            request.path
        );
    }
    let runs: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(runs.len(), names.len());
    for run in runs {
        let name = run["argv"][0].as_str().unwrap();
        assert!(expected.contains(name), "{run}");
        assert_eq!(run["env"], name);
        assert_eq!(run["stdin"], name);
    }
    assert!(!marker.exists(), "a caller ID reached a shell");
}

#[test]
fn rules_reload_when_their_file_changes_and_bad_files_keep_the_old_rules() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let trace = dir.path().join("log");
    append(&trace, b"");
    let rules = |path: &str| {
        format!(
            "  - name: desk\n    on: ringing\n    webhook: {{ url: \"{}/{path}\" }}\n",
            receiver.url
        )
    };
    let config = config_with_rules(dir.path(), &trace, &rules("first"));
    let config_path = dir.path().join("callhook.yaml");
    let daemon = Daemon::with_config(config);
    let log = fixture("basic");
    let text = String::from_utf8_lossy(&log);
    // the first call, under the first rules
    let second_invite = text
        .match_indices(".RX ")
        .nth(1)
        .map(|(i, _)| text[..i].rfind('\n').unwrap() + 1)
        .unwrap();
    append(&trace, &log[..second_invite]);
    assert_eq!(receiver.wait_for(1, 10)[0].path, "/first");
    // a broken file: the old rules stay
    let good = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, good.replace("name: desk", "nmae: desk")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // a valid change: the next event uses it
    std::fs::write(&config_path, good.replace("/first", "/second")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    append(&trace, &log[second_invite..]);
    let got = receiver.wait_for(4, 10);
    daemon.stop();
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths[0], "/first");
    assert!(paths[1..].iter().all(|p| *p == "/second"), "{paths:?}");
    assert_eq!(paths.len(), 4);
}

#[test]
fn an_endless_error_body_is_not_read_to_its_end() {
    // A receiver that answers 500 and then streams a body that never ends.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        let mut request = [0u8; 4096];
        let _ = std::io::Read::read(&mut stream, &mut request);
        let _ = std::io::Write::write_all(
            &mut stream,
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 1000000000000\r\n\r\n",
        );
        let chunk = vec![b'x'; 64 * 1024];
        while std::io::Write::write_all(&mut stream, &chunk).is_ok() {}
    });
    let request: callhook::rules::action::WebhookRequest = {
        let mut json = post_to(&url);
        json["timeout_ms"] = 30_000.into();
        serde_json::from_value(json).unwrap()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let delivery = runtime.block_on(callhook::dispatch::webhook::send(
        &callhook::dispatch::webhook::client(),
        &request,
        "msg_1",
        &Default::default(),
    ));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    match delivery {
        callhook::dispatch::Delivery::Retry { reason, .. } => {
            assert!(reason.starts_with("HTTP 500: xxx") && reason.len() < 400, "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// One delivery of a webhook request written as the job holds it (`json`).
/// A job's webhook request as stored: an empty JSON object POSTed to `url`, 5 s to answer.
fn post_to(url: &str) -> serde_json::Value {
    serde_json::json!({
        "method": "POST", "url": url, "headers": [], "content_type": "application/json",
        "body": "{}", "timeout_ms": 5000,
    })
}

fn send_once(json: serde_json::Value) -> callhook::dispatch::Delivery {
    let request: callhook::rules::action::WebhookRequest = serde_json::from_value(json).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(callhook::dispatch::webhook::send(
        &callhook::dispatch::webhook::client(),
        &request,
        "msg_1",
        &Default::default(),
    ))
}

/// The default headers go out once each, a rule's own header replacing a default of
/// the same name, beside the Standard Webhooks headers.
#[test]
fn default_headers_are_sent_and_a_rule_header_replaces_its_default() {
    let receiver = Receiver::start();
    let delivery = send_once(serde_json::json!({
        "method": "PUT", "url": format!("{}/h?q=1", receiver.url),
        "headers": [["User-Agent", "crm-bridge/2"], ["X-Desk", "7"]],
        "content_type": "application/json", "body": "{\"a\":1}", "timeout_ms": 5000,
    }));
    assert!(
        matches!(delivery, callhook::dispatch::Delivery::Done(_)),
        "{delivery:?}"
    );
    let requests = receiver.requests.lock().unwrap();
    let got = &requests[0];
    assert_eq!(got.path, "/h?q=1");
    assert_eq!(got.body, "{\"a\":1}");
    let count = |name: &str| got.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).count();
    for name in [
        "user-agent",
        "content-type",
        "accept",
        "webhook-id",
        "webhook-timestamp",
        "x-desk",
    ] {
        assert_eq!(count(name), 1, "{name}: {:?}", got.headers);
    }
    assert_eq!(got.header("user-agent"), Some("crm-bridge/2"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("x-desk"), Some("7"));
    assert_eq!(got.header("webhook-id"), Some(signing::message_id("msg_1").as_str()));
    assert_eq!(count("webhook-signature"), 0);
}

/// A 3xx is the answer: its Location is not called, and the job gives up.
#[test]
fn a_redirect_is_not_followed() {
    let elsewhere = Receiver::start();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x", listener.local_addr().unwrap());
    let location = format!("{}/y", elsewhere.url);
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        let mut request = [0u8; 4096];
        let _ = std::io::Read::read(&mut stream, &mut request);
        let answer = format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
        let _ = std::io::Write::write_all(&mut stream, answer.as_bytes());
    });
    let delivery = send_once(post_to(&url));
    match delivery {
        callhook::dispatch::Delivery::GiveUp(reason) => {
            assert!(
                reason.starts_with("HTTP 302") && reason.contains("redirects are not followed"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(elsewhere.requests.lock().unwrap().len(), 0);
}

/// Link-local and metadata addresses written in the URL are refused before any
/// connection, in every form of them.
#[test]
fn literal_metadata_addresses_are_refused() {
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/x",
        "http://[fd00:ec2::254]/x",
        "https://0xa9.0xfe.0xa9.0xfe/x",
    ] {
        let delivery = send_once(post_to(url));
        match delivery {
            callhook::dispatch::Delivery::GiveUp(reason) => {
                assert!(
                    reason.ends_with("is a link-local or metadata address, which is refused"),
                    "{url}: {reason}"
                )
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}

/// A URL that cannot be parsed gives up at once, saying so.
#[test]
fn a_bad_url_gives_up() {
    let delivery = send_once(post_to("http://exa mple.com/x"));
    match delivery {
        callhook::dispatch::Delivery::GiveUp(reason) => assert!(reason.starts_with("bad URL: "), "{reason}"),
        other => panic!("{other:?}"),
    }
}

/// A webhook job's action, as the rules would store it.
fn webhook_action(url: &str, retry: Option<serde_json::Value>) -> String {
    let mut action = serde_json::json!({
        "kind": "webhook", "method": "POST", "url": url, "headers": [],
        "content_type": "application/json", "body": "{}", "timeout_ms": 2000,
    });
    if let Some(retry) = retry {
        action["retry"] = retry;
    }
    action.to_string()
}

/// An event row with one job (`i` numbers the event, its call and the job).
fn event_with_job(i: usize, rule: &str, endpoint: &str, action: String) -> callhook::store::EventRow {
    let event: callhook::event::Event = serde_json::from_value(serde_json::json!({
        "v": 1, "id": format!("e{i}"), "type": "ringing", "at": "2026-11-23T10:00:00.000+00:00",
        "call_id": format!("c{i}"), "direction": "inbound", "local_number": "", "remote_number": "1",
        "remote_name": null, "source": "sip_trace", "source_path": "x",
    }))
    .unwrap();
    callhook::store::EventRow::New {
        event,
        emit: true,
        duplicate_of: None,
        jobs: vec![callhook::store::JobRow {
            key: format!("k{i}"),
            rule: rule.to_owned(),
            endpoint: endpoint.to_owned(),
            action,
            body: None,
            ordered: true,
        }],
    }
}

/// Commits `events` into a state database under `dir`, then runs the outbox on it;
/// returns the runtime, the outbox task and its stop signal.
fn outbox_on(
    dir: &std::path::Path,
    events: Vec<callhook::store::EventRow>,
) -> (
    tokio::runtime::Runtime,
    tokio::task::JoinHandle<Result<(), callhook::store::StoreError>>,
    std::sync::Arc<tokio::sync::Notify>,
) {
    use callhook::store::{Commit, Store};
    let mut store = Store::open(&dir.join("state")).unwrap();
    store
        .commit(&Commit {
            events,
            ..Commit::default()
        })
        .unwrap();
    drop(store);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let outbox = runtime.spawn(callhook::dispatch::outbox::run(
        Store::open(&dir.join("state")).unwrap(),
        wake,
        stop.clone(),
        Default::default(),
        callhook::metrics::Metrics::new(),
    ));
    (runtime, outbox, stop)
}

#[cfg(unix)]
#[test]
fn a_backlog_for_a_dead_endpoint_does_not_delay_other_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let dead = format!("http://127.0.0.1:{}", Receiver::free_port());
    // 10,000 jobs for a receiver that is down, then one for a healthy one and a command.
    let mut events: Vec<_> = (0..10_000)
        .map(|i| event_with_job(i, "dead", &dead, webhook_action(&format!("{dead}/x"), None)))
        .collect();
    events.push(event_with_job(
        10_000,
        "healthy",
        &receiver.url,
        webhook_action(&format!("{}/ok", receiver.url), None),
    ));
    let ran = dir.path().join("command-ran");
    let command = serde_json::json!({
        "kind": "command", "argv": ["touch", ran], "env": [], "cwd": null, "stdin": null, "timeout_ms": 5000,
    })
    .to_string();
    events.push(event_with_job(10_001, "screen-pop", "touch", command));
    let started = std::time::Instant::now();
    let (runtime, outbox, stop) = outbox_on(dir.path(), events);
    let delivered = receiver.wait_for(1, 10);
    let webhook_after = started.elapsed();
    while !ran.exists() && started.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let command_after = started.elapsed();
    eprintln!("healthy webhook after {webhook_after:?}, command after {command_after:?}");
    assert_eq!(delivered.len(), 1);
    assert!(ran.exists(), "the command never ran");
    // Without fair scheduling both would wait behind the backlog for hours; a loose
    // bound keeps this from depending on the machine's speed.
    assert!(command_after < std::time::Duration::from_secs(5), "{command_after:?}");
    stop.notify_one();
    let _ = runtime.block_on(outbox);
}

#[test]
fn a_backlog_for_an_endpoint_down_longer_than_the_retry_span_goes_dead_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", Receiver::free_port());
    // Three attempts 100 ms apart: a span of 0.2 s. One attempt per breaker rest (30 s)
    // would take hours for 500 jobs.
    let retry = serde_json::json!({ "attempts": 3, "first_ms": 100, "factor": 1.0, "max_ms": 100 });
    let events = (0..500)
        .map(|i| {
            event_with_job(
                i,
                "dead",
                &dead,
                webhook_action(&format!("{dead}/x"), Some(retry.clone())),
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let (runtime, outbox, stop) = outbox_on(dir.path(), events);
    let state = dir.path().join("state");
    let dead_jobs = || {
        callhook::store::Store::open(&state)
            .unwrap()
            .jobs(Some("dead"), 1000)
            .unwrap()
    };
    while dead_jobs().len() < 500 && started.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let jobs = dead_jobs();
    eprintln!("500 jobs dead after {:?}", started.elapsed());
    assert_eq!(jobs.len(), 500);
    let at_once = jobs
        .iter()
        .filter(|j| {
            j.last_error
                .as_deref()
                .is_some_and(|e| e.contains("longer than this job's retry span"))
        })
        .count();
    assert!(
        at_once > 400,
        "{at_once} of 500 went dead in one step: {:?}",
        jobs[499].last_error
    );
    stop.notify_one();
    let _ = runtime.block_on(outbox);
}
