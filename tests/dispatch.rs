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
    let request: callhook::rules::action::WebhookRequest = serde_json::from_value(serde_json::json!({
        "method": "POST", "url": url, "headers": [], "content_type": "application/json",
        "body": "{}", "timeout_ms": 30000,
    }))
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let delivery = runtime.block_on(callhook::dispatch::webhook::send(
        &callhook::dispatch::webhook::client(),
        &request,
        "msg_1",
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

#[cfg(unix)]
#[test]
fn a_backlog_for_a_dead_endpoint_does_not_delay_other_endpoints() {
    use callhook::store::{Commit, EventRow, JobRow, Store};
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let dead = format!("http://127.0.0.1:{}", Receiver::free_port());
    let webhook = |url: &str| {
        serde_json::json!({
            "kind": "webhook", "method": "POST", "url": url, "headers": [],
            "content_type": "application/json", "body": "{}", "timeout_ms": 2000,
        })
        .to_string()
    };
    let event = |i: usize| -> callhook::event::Event {
        serde_json::from_value(serde_json::json!({
            "v": 1, "id": format!("e{i}"), "type": "ringing", "at": "2026-11-23T10:00:00.000+00:00",
            "call_id": format!("c{i}"), "direction": "inbound", "local_number": "", "remote_number": "1",
            "remote_name": null, "source": "sip_trace", "source_path": "x",
        }))
        .unwrap()
    };
    let job = |i: usize, rule: &str, endpoint: &str, action: String| EventRow::New {
        event: event(i),
        emit: true,
        duplicate_of: None,
        jobs: vec![JobRow {
            key: format!("k{i}"),
            rule: rule.to_owned(),
            endpoint: endpoint.to_owned(),
            action,
            ordered: true,
        }],
    };
    // 10,000 jobs for a receiver that is down, then one for a healthy one and a command.
    let mut events: Vec<EventRow> = (0..10_000)
        .map(|i| job(i, "dead", &dead, webhook(&format!("{dead}/x"))))
        .collect();
    events.push(job(
        10_000,
        "healthy",
        &receiver.url,
        webhook(&format!("{}/ok", receiver.url)),
    ));
    let ran = dir.path().join("command-ran");
    let command = serde_json::json!({
        "kind": "command", "argv": ["touch", ran], "env": [], "cwd": null, "stdin": null, "timeout_ms": 5000,
    })
    .to_string();
    events.push(job(10_001, "screen-pop", "touch", command));
    let mut store = Store::open(&dir.path().join("state")).unwrap();
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
    let started = std::time::Instant::now();
    let outbox = runtime.spawn(callhook::dispatch::outbox::run(
        Store::open(&dir.path().join("state")).unwrap(),
        wake,
        stop.clone(),
        callhook::metrics::Metrics::new(),
    ));
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
