//! `callhook demo --status-page` as a child process: it prints the page's URL, and the
//! counters `/metrics` serves there equal what the demo printed in its summary.

use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    (
        status,
        answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}

/// The sum of the samples of `name` whose labels hold every one of `labels`.
fn sum(metrics: &str, name: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The number before `word` in `text` (`"10 events"` → 10).
fn count_before(text: &str, word: &str) -> u64 {
    let at = text.find(word).unwrap_or_else(|| panic!("{word:?} not in {text:?}"));
    text[..at]
        .trim_end()
        .rsplit([' ', ':'])
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn demo_metrics_equal_what_the_demo_printed() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_callhook"))
        .args(["demo", "--status-page", "--json", "--speed", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut url = None;
    let mut summary = None;
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(60)) {
        if let Some(rest) = line.strip_prefix("callhook demo: status page: ") {
            url = rest.split_whitespace().next().map(str::to_owned);
            // The page answers during the demo.
            let address = url
                .as_deref()
                .unwrap()
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned();
            assert_eq!(get(&address, "/healthz").0, 200);
        }
        if line.contains("webhooks delivered") {
            summary = Some(line.clone());
        }
        if line.contains("stays up at") {
            break;
        }
    }
    let url = url.expect("the demo printed the status page's URL");
    let summary = summary.expect("the demo printed its summary");
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let (status, metrics) = get(address, "/metrics");
    assert_eq!(status, 200);
    let events = count_before(&summary, " events");
    let webhooks = count_before(&summary, " webhooks delivered");
    let commands = count_before(&summary, " commands run");
    assert_eq!(events, 10, "{summary}");
    assert_eq!(sum(&metrics, "callhook_events_total", &[]), events, "{metrics}");
    assert_eq!(
        sum(
            &metrics,
            "callhook_deliveries_total",
            &["action=\"webhook\"", "result=\"done\""]
        ),
        webhooks,
        "{summary}\n{metrics}"
    );
    assert_eq!(
        sum(
            &metrics,
            "callhook_deliveries_total",
            &["action=\"command\"", "result=\"done\""]
        ),
        commands,
        "{summary}\n{metrics}"
    );
    assert!(webhooks > 0 && commands > 0, "{summary}");
    assert_eq!(
        sum(&metrics, "callhook_rule_firings_total", &[]),
        webhooks + commands,
        "every firing delivered: {metrics}"
    );
    assert!(
        sum(&metrics, "callhook_source_lines_read_total", &[]) > 1000,
        "{metrics}"
    );
    assert!(
        metrics.contains("callhook_append_to_delivery_seconds_count"),
        "{metrics}"
    );
    let (_, page) = get(address, "/");
    assert!(page.contains("<h2>Last calls</h2>"), "{page}");
    // Ctrl-C ends it (SIGTERM does the same).
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let ended = child.wait().unwrap();
    assert!(ended.success(), "{ended:?}");
}
