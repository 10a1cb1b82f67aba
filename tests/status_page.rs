//! The status page and metrics, over real HTTP on loopback: a hostile caller name stays
//! inert text, a dead job is shown with a retry button that works only with the page's
//! CSRF token, and the metrics count what happened.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Daemon, Receiver, Trace, append, invite};

/// One HTTP/1.1 request with `Connection: close`; the status code and the body.
fn http(address: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn the_page_shows_calls_and_deliveries_and_retries_a_dead_job() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    receiver.answers.lock().unwrap().push_back(400); // the first delivery dies
    let port = Receiver::free_port();
    let address = format!("127.0.0.1:{port}");
    std::fs::write(dir.path().join("phone.log"), b"").unwrap();
    let path = dir.path().join("callhook.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1
state_dir: state
sources:
  - {{ kind: sip_trace, path: phone.log, start_at: beginning, poll_interval: 20ms, time_zone: UTC }}
status: {{ listen: \"{address}\" }}
rules:
  - name: hook
    on: ringing
    webhook: {{ url: \"{}/in\" }}
",
            receiver.url
        ),
    )
    .unwrap();
    let daemon = Daemon::with_config(callhook::config::Config::load(&path).unwrap());
    let mut trace = Trace::new();
    trace.at("09:00:00").sip(
        true,
        &invite(
            "page-1@pbx",
            "\"<script>alert(1)</script>\" <sip:5550123@pbx>",
            "<sip:101@pbx>",
            1,
        ),
    );
    append(&dir.path().join("phone.log"), trace.text.as_bytes());
    assert_eq!(daemon.take(1).len(), 1);
    wait_for("the dead job", || {
        http(&address, "GET", "/?partial=1", "").1.contains("retry</button>")
    });

    let (status, page) = http(&address, "GET", "/", "");
    assert_eq!(status, 200);
    assert!(page.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"), "{page}");
    assert!(!page.contains("<script>alert(1)"));
    assert!(page.contains("5550123") && page.contains("hook: dead"), "{page}");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let job = page
        .split("name=\"id\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();

    // Another site's form (no or a wrong token) does nothing.
    let (status, _) = http(&address, "POST", "/retry", &format!("csrf=forged&id={job}"));
    assert_eq!(status, 403);
    assert_eq!(receiver.requests.lock().unwrap().len(), 1);
    let (status, _) = http(&address, "POST", "/retry", &format!("csrf={csrf}&id={job}"));
    assert_eq!(status, 303);
    let requests = receiver.wait_for(2, 10);
    assert_eq!(requests.len(), 2, "retried and delivered");
    wait_for("the job done", || {
        http(&address, "GET", "/?partial=1", "").1.contains("hook: done")
    });

    let (status, metrics) = http(&address, "GET", "/metrics", "");
    assert_eq!(status, 200);
    for line in [
        "callhook_events_total{source=\"sip_trace\",type=\"ringing\",outcome=\"\"} 1",
        "callhook_outbox_jobs{rule=\"hook\",state=\"done\"} 1",
        "callhook_rule_firings_total{rule=\"hook\"} 1",
        "callhook_deliveries_total{rule=\"hook\",action=\"webhook\",result=\"dead\"} 1",
        "callhook_deliveries_total{rule=\"hook\",action=\"webhook\",result=\"done\"} 1",
        "callhook_source_behind_bytes{kind=\"sip_trace\",path=",
        "callhook_source_up{kind=\"sip_trace\",path=",
        "callhook_append_to_event_seconds_count 1",
        "callhook_correlator_held_events 0",
        "callhook_outbox_oldest_waiting_seconds 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    let bytes = std::fs::metadata(dir.path().join("phone.log")).unwrap().len();
    assert!(
        metrics.contains(&format!(
            "callhook_source_bytes_read_total{{kind=\"sip_trace\",path=\"{}\"}} {bytes}",
            dir.path().join("phone.log").display()
        )),
        "{metrics}"
    );
    assert_eq!(http(&address, "GET", "/healthz", ""), (200, "ok\n".to_owned()));
    daemon.stop();
}

#[test]
fn the_page_listens_beyond_loopback_only_with_a_token() {
    let yaml = "version: 1\nsources: [{ kind: sip_trace, path: x.log }]\nstatus: { listen: \"0.0.0.0:8089\" }\n";
    let error = callhook::config::Config::from_yaml(yaml, std::path::Path::new("c.yaml"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("status.token"), "{error}");
    let yaml = "version: 1\nsources: [{ kind: sip_trace, path: x.log }]\nstatus: { listen: \"0.0.0.0:8089\", token: \"0123456789abcdef0123\" }\n";
    assert!(callhook::config::Config::from_yaml(yaml, std::path::Path::new("c.yaml")).is_ok());
}

#[test]
fn healthz_turns_503_naming_a_trace_whose_folder_is_gone_and_200_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("MicroSIP");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(logs.join("phone.log"), b"").unwrap();
    let address = format!("127.0.0.1:{}", Receiver::free_port());
    let path = dir.path().join("callhook.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1
state_dir: state
sources:
  - {{ kind: sip_trace, path: MicroSIP/phone.log, poll_interval: 20ms, time_zone: UTC }}
status: {{ listen: \"{address}\" }}
"
        ),
    )
    .unwrap();
    let daemon = Daemon::with_config(callhook::config::Config::load(&path).unwrap());
    wait_for("the status page", || std::net::TcpStream::connect(&address).is_ok());
    assert_eq!(http(&address, "GET", "/healthz", ""), (200, "ok\n".to_owned()));

    std::fs::remove_dir_all(&logs).unwrap();
    wait_for("503", || http(&address, "GET", "/healthz", "").0 == 503);
    let (_, body) = http(&address, "GET", "/healthz", "");
    assert!(
        body.contains(&format!("folder {} is gone", logs.display())) && body.contains("sip_trace"),
        "{body}"
    );
    let (_, metrics) = http(&address, "GET", "/metrics", "");
    assert!(
        metrics.contains("callhook_source_up{kind=\"sip_trace\"") && metrics.contains("} 0\n"),
        "{metrics}"
    );
    assert!(http(&address, "GET", "/?partial=1", "").1.contains("is gone"));

    std::fs::create_dir(&logs).unwrap();
    wait_for("200 again", || {
        http(&address, "GET", "/healthz", "") == (200, "ok\n".to_owned())
    });
    daemon.stop();
}
